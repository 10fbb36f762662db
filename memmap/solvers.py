"""Solver registry: name -> function(problem, *, seed, time_limit_s) -> Plan.

Solvers are looked up by the names the CLI exposes (``msa``, ``belady``, ``minpeak``; later
issues add ``ilp`` and ``rl``). A solver returns an unverified plan or raises
:class:`~memmap.errors.InfeasibleError`; the pipeline verifies and scores every plan."""

from __future__ import annotations

from collections.abc import Callable

from memmap.plan import Plan
from memmap.problem import Problem

SolverFn = Callable[..., Plan]


def _msa(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None) -> Plan:
    from memmap.baselines import solve_msa

    return solve_msa(problem)


def _belady(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None) -> Plan:
    from memmap.baselines import solve_belady

    return solve_belady(problem)


def _minpeak(problem: Problem, *, seed: int = 0, time_limit_s: float | None = None) -> Plan:
    from memmap.baselines import solve_minpeak

    return solve_minpeak(problem, seed=seed)


SOLVERS: dict[str, SolverFn] = {"msa": _msa, "belady": _belady, "minpeak": _minpeak}
BASELINES: tuple[str, ...] = ("msa", "belady", "minpeak")


def register(name: str, fn: SolverFn) -> None:
    SOLVERS[name] = fn
