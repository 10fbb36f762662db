"""``MallocGameEnv``: mallocGame as a Gymnasium environment (``memmap/MallocGame-v0``)."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from memmap.ir.graph import Graph
from memmap.problem import Problem
from memmap.rl import game, instances, observation

ENV_ID = "memmap/MallocGame-v0"

__all__ = ["MallocGameEnv", "ENV_ID", "register"]


class MallocGameEnv(gym.Env):
    """Map a program's tensors to a scratchpad and slow memory, one use segment at a time.

    ## Description
    mallocGame (after mallocMuZero, arXiv 2305.07440) poses memory mapping as a single-player
    game. A program (an XLA HLO graph) runs its operators in a fixed order; a small scratchpad
    makes operand reads and writes faster. Each value is split into items, one per touch (its
    creation, then each read), and the items are presented one at a time: in tiered mode in the
    order of XLA memory space assignment (most memory-bound per sqrt(size) first, each value's
    items in time order), in strict mode in time order. The player puts the current item in
    slow memory, keeps the value where it was at its previous touch, or places it at one of
    ``num_offsets`` candidate offsets (best-fit free chunks). Time is ``memmap.cost``'s model:
    roofline operator times plus DMA queues for loads, reloads, spills and write-backs.
    The exact rules are in ``memmap.rl.game`` and docs/rl.md.

    ## Action Space
    ``Discrete(2 + num_offsets)``: ``0`` slow memory (tiered only), ``1`` keep at the previous
    offset, ``2 + k`` place at candidate offset ``k`` (a use is prefetched as early as the range
    is free and needed to hide the copy; when the item's in-place partner is already placed,
    candidate ``0`` is the partner's buffer, shared). Illegal actions are masked in
    ``info["action_mask"]``; an illegal action is replaced by the lowest legal one and
    ``info["illegal_action"]`` is set.

    ## Observation Space
    ``Dict``: ``values`` ``Box(0, 1, (max_values, 8))`` per-value features; ``occupancy``
    ``Box(0, 1, (32, 32))`` scratchpad use over the 32 steps around the current touch x 32
    address bins; ``current`` ``Box(-8, 8, (14,))`` the current item; ``candidates``
    ``Box(-8, 8, (2 + num_offsets, 5))`` per action: legal, offset, chunk waste, prefetch lead,
    immediate time saving (see ``memmap.rl.observation``).

    ## Rewards
    Dense: the modelled time the decision saves, divided by the all-slow time ``T0``:
    ``(T(before) - T(after)) / T0``. An episode's return is ``1 - T_final / T0``.

    ## Starting State
    A program drawn (with the env's ``np_random``) from the shipped graphs of ``split``
    (``train`` or ``heldout``: whole programs and 48-operator windows of the workload zoo, split
    by family), or a random graph of ``num_ops`` operators (``split="random"``), or from
    ``graphs``; the scratchpad is a fraction (drawn from ``capacity_fractions``) of the default
    schedule's peak live bytes on the ``target`` preset. ``reset(options={"problem": p})`` plays
    a given :class:`memmap.Problem`.

    ## Episode End
    Terminated when every item has been decided (``len(order)`` moves). Never truncated.
    ``env.unwrapped.plan()`` decodes the final state to a plan that ``memmap.verify_plan``
    accepts.

    ## Arguments
    ``split="train"``, ``mode="tiered"`` (or ``"strict"``), ``graphs=None`` (a sequence of
    ``Graph`` or ``Problem``), ``capacity_fractions=(0.125, 0.25, 0.5)``,
    ``target="npu-4mib"``, ``num_offsets=6``, ``num_ops=32`` (random graphs),
    ``max_values=512``, ``render_mode=None`` or ``"ansi"``.

    ## Version History
    * v0: initial version. In-place pairs (``Op.inplace``) are shared buffers of the game since
      they entered the IR; episodes on graphs without pairs are unchanged.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, split: str = "train", mode: str = "tiered", graphs: Sequence[Graph | Problem] | None = None,
                 capacity_fractions: Sequence[float] = instances.CAPACITY_FRACTIONS, target: str = instances.DEFAULT_TARGET,
                 num_offsets: int = game.DEFAULT_NUM_OFFSETS, num_ops: int = 32, max_values: int = 512,
                 render_mode: str | None = None):
        if split not in instances.SPLITS + ("random",):
            raise ValueError(f"unknown split {split!r}; expected train, heldout or random")
        if mode not in ("tiered", "strict"):
            raise ValueError(f"unknown mode {mode!r}; expected tiered or strict")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        if not capacity_fractions or any(not 0 < f for f in capacity_fractions):
            raise ValueError("capacity_fractions must be positive")
        self.split, self.mode, self.target = split, mode, target
        self.graphs = list(graphs) if graphs is not None else None
        self.capacity_fractions = tuple(float(f) for f in capacity_fractions)
        self.num_offsets, self.num_ops, self.max_values = int(num_offsets), int(num_ops), int(max_values)
        self.render_mode = render_mode
        A = game.num_actions(self.num_offsets)
        self.action_space = spaces.Discrete(A)
        self.observation_space = spaces.Dict({
            "values": spaces.Box(0.0, 1.0, (self.max_values, observation.VALUE_FEATURES), np.float32),
            "occupancy": spaces.Box(0.0, 1.0, (observation.OCC_STEPS, observation.OCC_BINS), np.float32),
            "current": spaces.Box(-8.0, 8.0, (observation.CURRENT_FEATURES,), np.float32),
            "candidates": spaces.Box(-8.0, 8.0, (A, observation.CANDIDATE_FEATURES), np.float32),
        })
        self._cache: dict = {}
        self.inst: game.GameInstance | None = None
        self.state: game.GameState | None = None
        self.opts: game.Options | None = None
        self.name = ""

    # -- instance choice ------------------------------------------------------------------
    def _draw_problem(self) -> tuple[str, Problem]:
        rng = self.np_random
        frac = float(self.capacity_fractions[int(rng.integers(len(self.capacity_fractions)))])
        if self.graphs is not None:
            k = int(rng.integers(len(self.graphs)))
            item = self.graphs[k]
            if isinstance(item, Problem):
                return f"problem{k}", item
            return f"{item.name}@{frac}", instances.make_problem(item, frac, mode=self.mode, target=self.target)
        if self.split == "random":
            seed = int(rng.integers(2**31))
            g = instances.random_instance_graph(seed, self.num_ops)
            return f"random{seed}@{frac}", instances.make_problem(g, frac, mode=self.mode, target=self.target)
        specs = instances.shipped(self.split)
        spec = specs[int(rng.integers(len(specs)))]
        return (f"{spec.name}@{frac}",
                instances.make_problem(instances.load_graph(spec.name), frac, mode=self.mode, target=self.target))

    def _instance(self, key, problem: Problem) -> game.GameInstance:
        inst = self._cache.get(key) if key is not None else None
        if inst is None:
            inst = game.make_instance(problem, num_offsets=self.num_offsets)
            if key is not None:
                if len(self._cache) > 64:
                    self._cache.clear()
                self._cache[key] = inst
        return inst

    # -- gymnasium API --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        if "problem" in options:
            self.name, problem = "problem", options["problem"]
            self.inst = self._instance(None, problem)
        else:
            while True:
                self.name, problem = self._draw_problem()
                key = None if self.split == "random" and self.graphs is None else self.name
                self.inst = self._instance(key, problem)
                if self.inst.num_moves > 0:
                    break
        self.state = game.initial_state(self.inst)
        self.opts = game.options(self.inst, self.state)
        return self._obs(), self._info()

    def step(self, action):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        if game.is_terminal(self.inst, self.state):
            raise RuntimeError("the episode is over; call reset()")
        a = int(action)
        illegal = not (0 <= a < len(self.opts.mask) and self.opts.mask[a])
        if illegal:
            a = int(np.flatnonzero(self.opts.mask)[0])
        self.state, reward = game.step(self.inst, self.state, a, self.opts)
        self.opts = game.options(self.inst, self.state)
        terminated = game.is_terminal(self.inst, self.state)
        info = self._info()
        if illegal:
            info["illegal_action"] = True
        return self._obs(), float(reward), terminated, False, info

    def _obs(self):
        return observation.observe(self.inst, self.state, self.opts, max_values=self.max_values)

    def _info(self) -> dict:
        return {"action_mask": self.opts.mask.astype(np.int8), "modeled_time_s": self.state.time_s,
                "time0_s": self.inst.time0_s, "instance": self.name, "move": self.state.move,
                "num_moves": self.inst.num_moves}

    def plan(self):
        """The plan the current state decodes to (verified plans at the end of an episode)."""
        return game.decode(self.inst, self.state, solver="rl-env")

    def render(self):
        if self.render_mode != "ansi" or self.state is None:
            return None
        inst, s = self.inst, self.state
        lines = [f"{self.name}: move {s.move}/{inst.num_moves}, modelled time {s.time_s:.6g} s "
                 f"({s.time_s / inst.time0_s:.3f} of all-slow)"]
        if not game.is_terminal(inst, s):
            i = game.current_item(inst, s)
            v = inst.problem.graph.values[int(inst.item_value[i])]
            kind = "creation" if inst.item_creation[i] else "use"
            lines.append(f"current: {v.name} ({v.size_bytes} B) {kind} at step {inst.item_step[i]}; "
                         f"legal actions {np.flatnonzero(self.opts.mask).tolist()}")
        occ = self._obs()["occupancy"]
        shades = " .:-=+*#%@"
        lines.append("occupancy (rows: steps around the current touch, columns: address bins):")
        for row in occ:
            lines.append("|" + "".join(shades[min(9, int(x * 9.999))] for x in row) + "|")
        return "\n".join(lines)


def register() -> None:
    """Register ``memmap/MallocGame-v0`` (idempotent)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="memmap.rl.env:MallocGameEnv")
