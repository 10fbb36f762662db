"""Baseline (b): XLA's schedule + Belady replacement + best-fit allocation."""

from __future__ import annotations

from memmap.baselines.common import belady_plan
from memmap.plan import Plan
from memmap.problem import Problem


def solve_belady(problem: Problem, *, schedule=None) -> Plan:
    """Keep the graph's default schedule (XLA's when the module is scheduled); Belady
    replacement with best-fit allocation (online, or linear/static: the better one)."""
    problem.check_feasible()
    sched = tuple(schedule) if schedule is not None else problem.graph.default_schedule
    return belady_plan(problem, sched, solver="belady", info={"schedule": problem.graph.schedule_origin})
