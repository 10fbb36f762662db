"""The ``rl`` solver: play mallocGame with the trained agent and search; return the plan.

``solve_rl(problem, seed=, time_limit_s=, options=RLSolverOptions(checkpoint, simulations, search))``.
The checkpoint defaults to the one shipped in the package (``memmap/rl/data/checkpoints/``).
The schedule is the graph's default schedule. ``search`` picks the model the search steps:
``"true"`` (default) the game's own transitions, ``"learned"`` the checkpoint's MuZero dynamics
network (docs/rl.md compares them).

Time budget, decided from *nominal* costs so that the plan does not depend on the machine's
speed (as the ILP's deterministic time limit): with ``B = 0.6 * time_limit_s``, the agent
searches every move when ``B >= JAX_ALLOWANCE_S + moves * (SEARCH_MOVE_S + sims * SIM_S)``,
else plays the network's prior without search when ``B >= JAX_ALLOWANCE_S + moves * PRIOR_MOVE_S``,
else plays the greedy one-step policy without the network (no JAX at all). The nominal costs are
those of the true-model search, also used for the learned one (which is cheaper per simulation). A wall-clock safety
net finishes the episode at once (slow memory where legal, else the first candidate) past 85% of
the limit or at the deadline of :mod:`memmap.limits` (the command's), whichever comes first, so
the solver returns in time even on a machine far slower than the nominal costs.
No Gumbel noise: the same input, options and seed give the same plan unless the safety net fires.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import numpy as np
from importlib import resources
from pathlib import Path

from memmap import limits
from memmap.errors import BadInputError
from memmap.plan import Plan
from memmap.problem import Problem

SHIPPED = "tiered-v0.npz"
JAX_ALLOWANCE_S = 20.0   # importing jax and compiling the networks and the search, nominal
PRIOR_MOVE_S = 0.003     # one move without search (observation + network), nominal
SEARCH_MOVE_S = 0.003    # one move with search, besides its simulations, nominal
SIM_S = 0.0015           # one simulation (a true game transition + the networks), nominal
SEARCH_MODELS = ("true", "learned")   # = memmap.rl.agent.SEARCH_MODELS, without importing jax

__all__ = ["RLSolverOptions", "solve_rl", "default_checkpoint", "plan_policy"]


@dataclasses.dataclass(frozen=True)
class RLSolverOptions:
    """``checkpoint``: a ``memmap-train`` checkpoint (default: the shipped one);
    ``simulations``: search simulations per move (default: the checkpoint's; 0: no search);
    ``search``: the model the search steps, ``"true"`` (the game's own transitions, exact
    rewards and legal masks at every node; default) or ``"learned"`` (the checkpoint's dynamics
    network, MuZero proper; legal masks at the root only)."""

    checkpoint: str | None = None
    simulations: int | None = None
    search: str = "true"

    def __post_init__(self):
        if self.search not in SEARCH_MODELS:
            raise BadInputError(f"--search must be one of {', '.join(SEARCH_MODELS)}, got {self.search!r}")
        if self.simulations is not None and self.simulations < 0:
            raise BadInputError(f"--simulations must be >= 0, got {self.simulations}")
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise BadInputError(f"{self.checkpoint}: no such checkpoint file")


def default_checkpoint() -> Path:
    return Path(str(resources.files("memmap.rl").joinpath("data", "checkpoints", SHIPPED)))


@functools.lru_cache(maxsize=4)
def _config(path: str):
    """``(num_simulations, num_offsets)`` of a checkpoint (numpy only: no JAX import)."""
    import json

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
        agent = meta["config"]["agent"]
        return int(agent["num_simulations"]), int(agent["num_offsets"])
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise BadInputError(f"{path}: not a memmap-train checkpoint ({type(e).__name__}: {e})") from None


@functools.lru_cache(maxsize=4)
def _policy(path: str, search: str):
    """The checkpoint's agent with its search model set to ``search``, and its parameters."""
    from memmap.rl.agent import Agent
    from memmap.rl.train import load_policy

    try:
        agent, params = load_policy(path)
    except ValueError as e:
        raise BadInputError(str(e)) from None
    if agent.cfg.search != search:
        agent = Agent(dataclasses.replace(agent.cfg, search=search))
    return agent, params


def plan_policy(moves: int, sims: int, time_limit_s: float | None) -> str:
    """``search``, ``prior`` or ``greedy`` from the nominal costs (module docstring)."""
    if time_limit_s is None:
        return "search" if sims > 0 else "prior"
    budget = 0.6 * time_limit_s
    if sims > 0 and budget >= JAX_ALLOWANCE_S + moves * (SEARCH_MOVE_S + sims * SIM_S):
        return "search"
    if budget >= JAX_ALLOWANCE_S + moves * PRIOR_MOVE_S:
        return "prior"
    return "greedy"


def _finish(inst, state, counters, finish):
    """Greedy one-step play; past ``finish`` the rest is decided at once (slow where legal)."""
    from memmap.rl import game

    while not game.is_terminal(inst, state):
        o = game.options(inst, state)
        if finish is not None and time.monotonic() >= finish:
            a = int(np.flatnonzero(o.mask)[0])
            counters["finished_fast"] += 1
        else:
            a = game.greedy_action(inst, state, o)
        state, _ = game.step(inst, state, a, o)
    return state


def solve_rl(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None,
             options: RLSolverOptions | None = None, progress=None) -> Plan:
    from memmap.rl import game

    t0 = time.monotonic()
    opts = options or RLSolverOptions()
    problem.check_feasible()
    path = Path(opts.checkpoint) if opts.checkpoint else default_checkpoint()
    if not path.is_file():
        raise BadInputError(f"{path}: no RL checkpoint (train one with memmap-train, pass --checkpoint)")
    ck_sims, num_offsets = _config(str(path))
    sims = ck_sims if opts.simulations is None else opts.simulations
    inst = game.make_instance(problem, num_offsets=num_offsets)
    finish = None if time_limit_s is None else t0 + 0.85 * time_limit_s
    if limits.remaining_s() < math.inf:       # and the command's deadline (memmap.limits)
        end = time.monotonic() + limits.remaining_s()
        finish = end if finish is None else min(finish, end)
    policy = plan_policy(inst.num_moves, sims, time_limit_s)
    if progress:
        progress(f"rl: {inst.num_moves} moves, policy {policy}"
                 + (f", {sims} simulations each ({opts.search} model)" if policy == "search" else ""))
    counters = {"moves": 0, "simulations": 0, "finished_fast": 0}
    state = game.initial_state(inst)
    if inst.num_moves and policy in ("search", "prior"):
        import jax

        agent, params = _policy(str(path), opts.search)
        trs, counters = agent.play(params, jax.random.PRNGKey(seed), [inst], gumbel_scale=0.0, num_simulations=sims,
                                   search=policy == "search", finish_deadline=finish)
        state = trs[0].state
    elif inst.num_moves:
        state = _finish(inst, state, counters, finish)
    # search: the model the search stepped ("true" or "learned"), None when there was no search;
    # search_transitions: game transitions made inside the search (0 with the learned model)
    info = {"checkpoint": str(path), "policy": policy, "search": opts.search if policy == "search" else None,
            "simulations": sims if policy == "search" else 0,
            "moves": inst.num_moves, "searched_moves": counters["simulations"] // sims if sims else 0,
            "search_transitions": counters.get("transitions", 0),
            "finished_without_network": counters.get("finished_fast", 0), "game_time_s": state.time_s,
            "all_slow_time_s": inst.time0_s}
    return game.decode(inst, state, solver="rl", info=info)
