"""Helpers shared by the Belady-family baselines."""

from __future__ import annotations

from memmap.baselines.engine import run_engine
from memmap.baselines.linear import solve_linear
from memmap.cost import simulate
from memmap.plan import Plan
from memmap.problem import Problem


def belady_plan(problem: Problem, schedule, *, solver: str, info: dict) -> Plan:
    """Belady replacement over ``schedule`` with the better of two allocators: the linear
    (static best-fit) allocator of the byte-level replacement, and the online best-fit engine.
    Strict mode ranks by non-compulsory bytes, tiered by modelled time."""
    cands = [run_engine(problem, schedule, solver=solver, info=dict(info, allocator="online best-fit"))]
    lin = solve_linear(problem, schedule, solver=solver)
    if lin is not None:
        lin.info.update(info)
        cands.append(lin)

    def key(p: Plan):
        m = simulate(p)
        if problem.mode == "strict":
            return (m["noncompulsory_bytes"], m["modeled_time_s"])
        return (m["modeled_time_s"], m["noncompulsory_bytes"])

    return min(cands, key=key)
