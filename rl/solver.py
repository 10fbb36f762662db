"""The ``rl`` solver: play mallocGame with the trained agent and search; return the plan.

``solve_rl(problem, seed=, time_limit_s=, options=RLSolverOptions(checkpoint, simulations))``.
The checkpoint defaults to the one shipped in the package (``memmap/rl/data/checkpoints/``).
The schedule is the graph's default schedule. Time budget: search runs while less than 60% of
``time_limit_s`` is spent (moves after that use the network's prior without search), and past
85% the episode is finished at once (slow memory where legal, else the first offset), so the
solver returns within the limit plus the time to decode. Deterministic (Gumbel noise off) unless
the budget cuts the search short.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from importlib import resources
from pathlib import Path

from memmap.errors import BadInputError
from memmap.plan import Plan
from memmap.problem import Problem

SHIPPED = "tiered-v0.npz"

__all__ = ["RLSolverOptions", "solve_rl", "default_checkpoint"]


@dataclasses.dataclass(frozen=True)
class RLSolverOptions:
    """``checkpoint``: a ``memmap-train`` checkpoint (default: the shipped one);
    ``simulations``: search simulations per move (default: the checkpoint's; 0: no search)."""

    checkpoint: str | None = None
    simulations: int | None = None

    def __post_init__(self):
        if self.simulations is not None and self.simulations < 0:
            raise BadInputError(f"--simulations must be >= 0, got {self.simulations}")
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise BadInputError(f"{self.checkpoint}: no such checkpoint file")


def default_checkpoint() -> Path:
    return Path(str(resources.files("memmap.rl").joinpath("data", "checkpoints", SHIPPED)))


@functools.lru_cache(maxsize=4)
def _policy(path: str):
    from memmap.rl.train import load_policy

    try:
        return load_policy(path)
    except ValueError as e:
        raise BadInputError(str(e)) from None


def solve_rl(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None,
             options: RLSolverOptions | None = None, progress=None) -> Plan:
    import jax

    from memmap.rl import game

    t0 = time.monotonic()
    opts = options or RLSolverOptions()
    problem.check_feasible()
    path = Path(opts.checkpoint) if opts.checkpoint else default_checkpoint()
    if not path.is_file():
        raise BadInputError(f"{path}: no RL checkpoint (train one with memmap-train, pass --checkpoint)")
    agent, params = _policy(str(path))
    sims = agent.cfg.num_simulations if opts.simulations is None else opts.simulations
    inst = game.make_instance(problem, num_offsets=agent.cfg.num_offsets)
    deadline = finish = None
    if time_limit_s is not None:
        deadline = t0 + 0.6 * time_limit_s
        finish = t0 + 0.85 * time_limit_s
    if progress:
        progress(f"rl: {inst.num_moves} moves, {sims} simulations each")
    if inst.num_moves:
        trs, counters = agent.play(params, jax.random.PRNGKey(seed), [inst], gumbel_scale=0.0, num_simulations=sims,
                                   search=sims > 0, deadline=deadline, finish_deadline=finish)
        state = trs[0].state
    else:
        state, counters = game.initial_state(inst), {"moves": 0, "simulations": 0, "finished_fast": 0}
    info = {"checkpoint": str(path), "simulations": sims, "moves": inst.num_moves,
            "searched_moves": counters["simulations"] // sims if sims else 0,
            "finished_without_network": counters.get("finished_fast", 0), "game_time_s": state.time_s,
            "all_slow_time_s": inst.time0_s}
    return game.decode(inst, state, solver="rl", info=info)
