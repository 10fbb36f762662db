"""Solver registry: name -> function(problem, *, seed, time_limit_s, workers, progress) -> Plan.

Solvers are looked up by the names the CLI exposes (``msa``, ``belady``, ``minpeak``; later
``ilp``, ``rl``). A solver returns an unverified plan or raises
:class:`~memmap.errors.InfeasibleError`; the pipeline verifies and scores every plan."""

from __future__ import annotations

from collections.abc import Callable

from memmap.plan import Plan
from memmap.problem import Problem

SolverFn = Callable[..., Plan]


def _msa(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None, workers: int = 1,
         progress=None) -> Plan:
    from memmap.baselines import solve_msa

    return solve_msa(problem)


def _belady(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None, workers: int = 1,
            progress=None) -> Plan:
    from memmap.baselines import solve_belady

    return solve_belady(problem)


def _minpeak(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None, workers: int = 1,
             progress=None) -> Plan:
    from memmap.baselines import solve_minpeak

    return solve_minpeak(problem, seed=seed)


def _ilp(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None, workers: int = 2,
         progress=None) -> Plan:
    """CP-SAT (memmap.ilp) warm-started from the baselines: the best baseline plan is the hint,
    every baseline plan and the M_P schedule are candidate schedules, and (strict mode) the ILP
    searches further schedules itself (memmap.ilp.schedule_search, 30% of its budget); on each
    schedule without a plan, Belady replacement + best fit gives one more starting plan. The time
    limit is the ILP's nominal budget (deterministic); the baselines run before it. ``workers``:
    CP-SAT threads (the plan is deterministic for a given seed AND worker count)."""
    from memmap.baselines import solve_belady, solve_minpeak, solve_msa
    from memmap.budgets import compute_budgets
    from memmap.cost import simulate
    from memmap.ilp import solve_ilp
    from memmap.prefetch import hoist_prefetches

    limit = 60.0 if time_limit_s is None else float(time_limit_s)
    problem.check_feasible()
    base = []
    for fn in (lambda: solve_msa(problem), lambda: solve_belady(problem), lambda: solve_minpeak(problem, seed=seed)):
        plan = hoist_prefetches(fn())
        plan.metrics = simulate(plan)
        base.append(plan)
    if problem.mode == "strict":
        best = min(base, key=lambda p: (p.metrics["noncompulsory_bytes"], p.metrics["modeled_time_s"]))
    else:
        best = min(base, key=lambda p: (p.metrics["modeled_time_s"], p.metrics["noncompulsory_bytes"]))
    m_p_schedule = compute_budgets(problem, seed=seed).schedule
    # the ILP's budget is nominal (never derived from elapsed time) so the plan is deterministic
    return solve_ilp(problem, time_limit_s=limit, seed=seed, workers=workers, hint=best,
                     hint_schedules=[p for p in base if p is not best] + [m_p_schedule], progress=progress,
                     start_plan=lambda sched: solve_belady(problem, schedule=sched))


def _rl(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None, workers: int = 1,
        progress=None, options=None) -> Plan:
    """mallocGame played by the shipped (or ``options.checkpoint``) MuZero-style agent with search
    (memmap.rl.solver; docs/rl.md). It finishes within ``time_limit_s``: search stops at 60% of it,
    the episode is completed without the network past 85%."""
    from memmap.rl.solver import solve_rl

    return solve_rl(problem, seed=seed, time_limit_s=time_limit_s, options=options, progress=progress)


SOLVERS: dict[str, SolverFn] = {"msa": _msa, "belady": _belady, "minpeak": _minpeak, "ilp": _ilp, "rl": _rl}
BASELINES: tuple[str, ...] = ("msa", "belady", "minpeak")


def register(name: str, fn: SolverFn) -> None:
    SOLVERS[name] = fn
