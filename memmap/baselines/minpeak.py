"""Baseline (c): a minimum-peak-memory schedule + Belady replacement + best-fit allocation
(COSMA's strongest baseline family)."""

from __future__ import annotations

from memmap.baselines.common import belady_plan
from memmap.plan import Plan
from memmap.problem import Problem
from memmap.scheduling import min_peak_schedule


def solve_minpeak(problem: Problem, *, seed: int = 0) -> Plan:
    problem.check_feasible()
    sched, peak = min_peak_schedule(problem, seed=seed)
    return belady_plan(problem, sched, solver="minpeak", info={"schedule_peak_live_bytes": peak})
