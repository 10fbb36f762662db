"""Solver registry: name -> function(problem, *, seed, time_limit_s, workers, progress, given)
-> Plan.

Solvers are looked up by the names the CLI exposes (``msa``, ``belady``, ``minpeak``, ``ilp``,
``rl``). A solver returns an unverified plan or raises :class:`~memmap.errors.InfeasibleError`;
the pipeline verifies and scores every plan. Every solver stops at the deadline of
:mod:`memmap.limits` (the baselines raise :class:`memmap.limits.TimeLimitReached`, the ILP
returns its best plan so far, ``rl`` finishes its episode without the network). ``given``:
plans of other solvers on the same problem, already verified and scored (the ILP starts from
them); ``options``: a solver's own options object, only for the solvers that have one."""

from __future__ import annotations

from collections.abc import Callable

from memmap.plan import Plan
from memmap.problem import Problem

SolverFn = Callable[..., Plan]

# ilp_nominal_s: the ILP's nominal budget is ILP_SHARE of a command's time limit less
# ILP_OVERHEAD_S_PER_OP per operator (the baselines and the ILP's candidate starts, which no
# nominal budget covers), and at least ILP_MIN_SHARE of it. The rest (importing, verifying,
# writing) is also the slack that lets the deterministic budgets, not the deadline, end the
# searches on a machine a few times slower than the one they were calibrated on (this shared
# 2-core machine at load 5-10): then the plan does not depend on the machine's speed
ILP_SHARE = 0.5
ILP_OVERHEAD_S_PER_OP = 0.02
ILP_MIN_SHARE = 0.2


def _msa(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None, workers: int = 1,
         progress=None, given=()) -> Plan:
    from memmap.baselines import solve_msa

    return solve_msa(problem)


def _belady(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None, workers: int = 1,
            progress=None, given=()) -> Plan:
    from memmap.baselines import solve_belady

    return solve_belady(problem)


def _minpeak(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None, workers: int = 1,
             progress=None, given=()) -> Plan:
    from memmap.baselines import solve_minpeak

    return solve_minpeak(problem, seed=seed)


def ilp_nominal_s(time_limit_s: float, problem: Problem) -> float:
    """The ILP's nominal (deterministic) budget inside a command limited to ``time_limit_s``:
    ``ILP_SHARE`` of the limit (the rest goes to importing, verifying and writing) less
    ``ILP_OVERHEAD_S_PER_OP`` seconds per operator (the baselines and the ILP's candidate
    starts), and at least ``ILP_MIN_SHARE`` of the limit. A function of the inputs only,
    so the plan is the same whenever the deterministic budgets, not the deadline, end the
    searches."""
    return max(ILP_MIN_SHARE * time_limit_s,
               ILP_SHARE * time_limit_s - ILP_OVERHEAD_S_PER_OP * problem.graph.num_ops)


def _ilp(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None, workers: int = 2,
         progress=None, given=()) -> Plan:
    """CP-SAT (memmap.ilp) warm-started from the baselines: the best baseline plan is the hint,
    every baseline plan and the M_P schedule are candidate schedules, and (strict mode) the ILP
    searches further schedules itself (memmap.ilp.schedule_search, 30% of its budget); on each
    schedule without a plan, Belady replacement + best fit gives one more starting plan. The
    baseline plans come from ``given`` when the pipeline ran them already (``--solver best``),
    else they run here. The ILP's nominal budget is :func:`ilp_nominal_s` (deterministic); the
    deadline of :mod:`memmap.limits` cuts everything (the ILP then returns its best plan so
    far, at worst the best baseline's). ``workers``: CP-SAT threads (the plan is deterministic
    for a given seed AND worker count when no deadline cuts a search)."""
    from memmap.baselines import solve_belady, solve_minpeak, solve_msa
    from memmap.budgets import compute_budgets
    from memmap.cost import simulate
    from memmap.ilp import solve_ilp
    from memmap.prefetch import hoist_prefetches

    limit = ilp_nominal_s(60.0 if time_limit_s is None else float(time_limit_s), problem)
    problem.check_feasible()
    have = {p.solver: p for p in given if p.problem is problem and p.metrics}
    base = []
    for name, fn in (("msa", lambda: solve_msa(problem)), ("belady", lambda: solve_belady(problem)),
                     ("minpeak", lambda: solve_minpeak(problem, seed=seed))):
        plan = have.get(name)
        if plan is None:
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
        progress=None, given=(), options=None) -> Plan:
    """mallocGame played by the shipped (or ``options.checkpoint``) MuZero-style agent with search
    (memmap.rl.solver; docs/rl.md). It finishes within ``time_limit_s``: search stops at 60% of it,
    the episode is completed without the network past 85%."""
    from memmap.rl.solver import solve_rl

    return solve_rl(problem, seed=seed, time_limit_s=time_limit_s, options=options, progress=progress)


SOLVERS: dict[str, SolverFn] = {"msa": _msa, "belady": _belady, "minpeak": _minpeak, "ilp": _ilp, "rl": _rl}
BASELINES: tuple[str, ...] = ("msa", "belady", "minpeak")


def register(name: str, fn: SolverFn) -> None:
    SOLVERS[name] = fn
