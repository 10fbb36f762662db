"""A schedule-independent (global) lower bound on strict-mode non-compulsory traffic.

The fixed-schedule model proves bounds for ONE schedule only. This module bounds every plan,
whatever its schedule, from facts that hold in every topological order.

Forced values. For an operator ``X`` and a value ``v`` that ``X`` does not touch:

* ``v`` is produced (``producer(v)`` is a strict ancestor of ``X``) and some consumer of ``v``
  is a strict descendant of ``X``; or
* ``v`` is a parameter/constant with one consumer that is a strict ancestor of ``X`` and one
  that is a strict descendant of ``X``.

Dependencies fix these relations in every topological order, so in every plan ``v`` has been
created or loaded before ``X``'s step and is read again after it. At ``X``'s step ``v`` is
therefore either resident, or off-chip and reloaded later. Call ``F(X)`` the forced set.

Costs. If ``v`` is not resident at some step where it is forced, the plan moves at least
``c(v)`` non-compulsory bytes for it (counted once however many steps it is away):

* a parameter/constant: a reload (its first load was before ``X``, that one is compulsory):
  ``c = size``;
* a produced output: a reload (its writeback is compulsory anyway): ``c = size``;
* any other produced value: a spill and a reload: ``c = 2 * size`` (strict mode creates every
  output in the scratchpad, so the only off-chip copy comes from a spill).

Capacity. At ``X``'s step, ``X``'s working set ``W(X)`` is resident, plus the resident part of
``F(X)``; in allocated (aligned) bytes this is at most the capacity. Hence the values of
``F(X)`` that are away weigh at least ``excess(X) = alloc(W(X)) + alloc(F(X)) - capacity``.

The covering problem ``min sum c(v) e(v)`` s.t. ``sum_{v in F(X)} alloc(v) e(v) >= excess(X)``
for every ``X``, ``e`` binary, is a relaxation: every plan yields a feasible ``e`` (``e(v) = 1``
when ``v`` is away at a step where it is forced) of cost at most its traffic. Any lower bound on
this covering problem (CP-SAT's best bound, or its optimum) is therefore a valid global bound.
Fragmentation, values that are live only in some orders, and transfers of values that are not
forced are all ignored, so the bound can be far below the optimum; it is never above it
(tests/test_ilp_lower_bound.py checks it against exhaustively solved small instances).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time

from ortools.sat.python import cp_model

from memmap.problem import Problem


@dataclasses.dataclass(frozen=True)
class GlobalBound:
    """Result of :func:`global_lower_bound`.

    Attributes:
      bound_bytes: valid lower bound on non-compulsory bytes over every plan and schedule.
      status: ``trivial`` (no operator forces any eviction), ``OPTIMAL``/``FEASIBLE`` (CP-SAT
        status of the covering problem; the bound is its best bound either way), ``greedy``
        (only the single-operator bound), ``not strict``.
      tight_ops: operators whose capacity forces evictions (excess > 0).
      rows, terms: size of the covering problem (after removing duplicate rows).
      wall_s: seconds spent.
      single_op_bytes: the best bound from one operator alone (fractional cover).
    """

    bound_bytes: int
    status: str
    tight_ops: int = 0
    rows: int = 0
    terms: int = 0
    wall_s: float = 0.0
    single_op_bytes: int = 0


def _reach(problem: Problem) -> tuple[list[int], list[int]]:
    """Strict ancestor and descendant bitsets (Python ints, bit ``o`` = operator ``o``)."""
    g = problem.graph
    n = g.num_ops
    preds: list[set[int]] = [g.predecessors(o) for o in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for o in range(n):
        for p in preds[o]:
            succs[p].append(o)
    order = list(g.default_schedule)   # a topological order
    anc = [0] * n
    for o in order:
        a = 0
        for p in preds[o]:
            a |= anc[p] | (1 << p)
        anc[o] = a
    desc = [0] * n
    for o in reversed(order):
        d = 0
        for s in succs[o]:
            d |= desc[s] | (1 << s)
        desc[o] = d
    return anc, desc


def _bits(x: int):
    while x:
        low = x & -x
        yield low.bit_length() - 1
        x ^= low


def covering_rows(problem: Problem) -> tuple[dict[int, int], list[tuple[int, tuple[int, ...]]]]:
    """``(cost per value, rows)``: each row is ``(excess, forced values)`` of one operator whose
    capacity forces evictions (rows with the same forced set keep the largest excess)."""
    g = problem.graph
    managed = problem.managed
    alloc = problem.alloc_size
    cap = problem.target.capacity_bytes
    anc, desc = _reach(problem)
    forced_at: list[list[int]] = [[] for _ in range(g.num_ops)]
    cost: dict[int, int] = {}
    for v in g.values:
        if not managed[v.id] or not v.consumers:
            continue
        cons_anc = 0   # ops that are strict ancestors of some consumer
        for c in v.consumers:
            cons_anc |= anc[c]
        if v.producer is not None:
            where = desc[v.producer] & cons_anc
            c_v = v.size_bytes if v.is_output else 2 * v.size_bytes
        else:
            cons_desc = 0
            for c in v.consumers:
                cons_desc |= desc[c]
            where = cons_desc & cons_anc
            c_v = v.size_bytes
        if not where:
            continue
        cost[v.id] = c_v
        for o in _bits(where):
            forced_at[o].append(v.id)
    ws = problem.working_set_bytes
    best_rows: dict[tuple[int, ...], int] = {}
    for o in range(g.num_ops):
        touched = set(problem.op_values[o])
        fv = tuple(sorted(v for v in forced_at[o] if v not in touched))
        excess = ws[o] + sum(alloc[v] for v in fv) - cap
        if excess > 0 and fv:
            if excess > best_rows.get(fv, 0):
                best_rows[fv] = excess
    rows = sorted(((ex, fv) for fv, ex in best_rows.items()), key=lambda r: (-r[0], r[1]))
    return cost, rows


def _fractional_cover(excess: int, values, cost, alloc) -> float:
    """Cheapest fractional choice of ``values`` weighing ``excess`` allocated bytes."""
    left, total = excess, 0.0
    for v in sorted(values, key=lambda v: (cost[v] / alloc[v], v)):
        take = min(left, alloc[v])
        total += take * cost[v] / alloc[v]
        left -= take
        if left <= 0:
            return total
    return math.inf   # cannot be covered: strict mode is infeasible at this capacity


def global_lower_bound(problem: Problem, *, time_limit_s: float = 5.0, seed: int = 0, workers: int = 2,
                       deterministic: bool = True, det_per_wall_s: float = 0.06) -> GlobalBound:
    """A lower bound on non-compulsory bytes valid for EVERY plan (any schedule); see the module
    docstring for the argument. Strict mode only (tiered: ``bound_bytes = 0``).

    The covering problem is solved by CP-SAT under a deterministic time limit
    (``det_per_wall_s * time_limit_s`` units), so the bound depends only on the inputs, seed and
    workers; the wall limit is a safety net (if it stops the search, the best bound so far is
    still valid, just possibly weaker).
    """
    t0 = time.perf_counter()
    if problem.mode != "strict":
        return GlobalBound(0, "not strict")
    cost, rows = covering_rows(problem)
    if not rows:
        return GlobalBound(0, "trivial", wall_s=time.perf_counter() - t0)
    alloc = problem.alloc_size
    single = max(_fractional_cover(ex, fv, cost, alloc) for ex, fv in rows)
    if math.isinf(single):
        raise ValueError("global_lower_bound: the capacity cannot hold some operator's working set "
                         "(check problem.infeasibility() first)")
    single_b = math.ceil(single - 1e-6)
    used = sorted({v for _, fv in rows for v in fv})
    terms = sum(len(fv) for _, fv in rows)
    # scale costs and weights by their GCDs (exact: both sides of every row and the objective
    # are divided by positive constants; row right-hand sides are rounded up, which is valid
    # for integer left-hand sides)
    gc = 0
    for v in used:
        gc = math.gcd(gc, cost[v])
    ga = 0
    for v in used:
        ga = math.gcd(ga, alloc[v])
    m = cp_model.CpModel()
    e = {v: m.new_bool_var(f"away_{v}") for v in used}
    for k, (ex, fv) in enumerate(rows):
        m.add(sum((alloc[v] // ga) * e[v] for v in fv) >= -(-ex // ga)).with_name(f"cover_op_row_{k}")
    m.minimize(sum((cost[v] // gc) * e[v] for v in used))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    solver.parameters.max_time_in_seconds = max(0.2, time_limit_s)
    if deterministic:
        solver.parameters.interleave_search = True
        solver.parameters.max_deterministic_time = max(0.01, det_per_wall_s * time_limit_s)
    timer = threading.Timer(max(0.5, 1.5 * time_limit_s), solver.stop_search)
    timer.start()
    try:
        st = solver.solve(m)
    finally:
        timer.cancel()
    if st in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raw = solver.objective_value if st == cp_model.OPTIMAL else solver.best_objective_bound
        bound = math.ceil(raw - 1e-6) * gc
        status = solver.status_name(st)
    else:
        bound, status = 0, "greedy"
    return GlobalBound(max(bound, single_b), status, tight_ops=len(rows), rows=len(rows), terms=terms,
                       wall_s=time.perf_counter() - t0, single_op_bytes=single_b)


__all__ = ["global_lower_bound", "covering_rows", "GlobalBound"]
