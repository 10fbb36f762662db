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
      status: ``trivial`` (no operator forces any eviction), ``chain`` (only the chain bound is
        non-zero), ``OPTIMAL``/``FEASIBLE`` (CP-SAT
        status of the covering problem; the bound is its best bound either way), ``greedy``
        (only the single-operator bound), ``not strict``.
      rows, terms: size of the covering problem (after removing duplicate rows).
      wall_s: seconds spent.
      single_op_bytes: the best bound from one operator alone (fractional cover).
      chain_bytes: the order-disjunction bound of :func:`chain_bound`.
    """

    bound_bytes: int
    status: str
    rows: int = 0
    terms: int = 0
    wall_s: float = 0.0
    single_op_bytes: int = 0
    chain_bytes: int = 0


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


def _value_cost(v) -> int:
    """Least non-compulsory bytes a value costs if it is away while forced (module docstring)."""
    if v.producer is not None and not v.is_output:
        return 2 * v.size_bytes
    return v.size_bytes


def _forced(problem: Problem):
    """``(anc, desc, forced_at, cost)``: reachability bitsets, the forced values of each
    operator (touched ones included) and the cost of every forced value."""
    g = problem.graph
    managed = problem.managed
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
        else:
            cons_desc = 0
            for c in v.consumers:
                cons_desc |= desc[c]
            where = cons_desc & cons_anc
        if not where:
            continue
        cost[v.id] = _value_cost(v)
        for o in _bits(where):
            forced_at[o].append(v.id)
    return anc, desc, forced_at, cost


def covering_rows(problem: Problem, forced=None) -> tuple[dict[int, int], list[tuple[int, tuple[int, ...]]]]:
    """``(cost per value, rows)``: each row is ``(excess, forced values)`` of one operator whose
    capacity forces evictions (rows with the same forced set keep the largest excess)."""
    g = problem.graph
    alloc = problem.alloc_size
    cap = problem.target.capacity_bytes
    _, _, forced_at, cost = forced if forced is not None else _forced(problem)
    ws = problem.working_set_bytes
    best_rows: dict[tuple[int, ...], int] = {}
    for o in range(g.num_ops):
        touched = set(problem.op_values[o])
        fv = tuple(sorted(v for v in forced_at[o] if v not in touched))
        excess = ws[o] + sum(alloc[v] for v in fv) - cap
        if excess > 0 and fv:
            if excess > best_rows.get(fv, 0):
                best_rows[fv] = excess
    used = {v for fv in best_rows for v in fv}
    rows = sorted(((ex, fv) for fv, ex in best_rows.items()), key=lambda r: (-r[0], r[1]))
    return {v: cost[v] for v in sorted(used)}, rows


def chain_bound(problem: Problem, forced=None, max_ops: int = 64) -> int:
    """A second schedule-independent bound, from order disjunctions the covering rows miss.

    For an operator ``X`` with an output ``T`` read by ``C``, and a dependency chain
    ``Q_1 -> ... -> Q_k -> C`` (``Q_{i+1}`` reads ``e_i``, an output of ``Q_i``; ``e_k`` is
    read by ``C``): in every schedule ``X`` runs either before ``Q_1`` - then ``T`` is live at
    every ``Q_i``'s step (made before, read by ``C`` after) - or between ``Q_j`` and ``Q_{j+1}``
    (or ``C``) - then ``e_j``, and every value made by ``Q_j`` or its ancestors and read by
    ``Q_{j+1}`` or its descendants, is live at ``X``'s step, and ``T`` at the steps of
    ``Q_{j+1} .. Q_k``. Cases that dependencies rule out (``Q_1`` an
    ancestor of ``X``, ``Q_j`` a descendant) are dropped. In each case that step's resident
    bytes exceed the capacity by a known excess, which the forced values there (plus ``T`` or
    ``e_j``) must cover; a case costs at least the largest of its steps' cheapest fractional
    covers, and the cheapest case is a lower bound for every plan. Example: GPT-2's tied embedding ``transpose(wte)`` needs the whole M_R, so
    whenever it runs, either its 147 MiB result waits while the embedding gather runs, or the
    residual stream (1.5 MiB) waits off-chip: at least 3 MiB of spill + reload. Tried for the
    ``max_ops`` operators with the least slack (capacity minus working set minus forced bytes),
    each output and consumer, one chain per consumer (backwards along the input whose producer
    has the most ancestors: the trunk of the network). Returns the best bound in bytes (0 if none)."""
    g = problem.graph
    alloc = problem.alloc_size
    managed = problem.managed
    cap = problem.target.capacity_bytes
    ws = problem.working_set_bytes
    anc, desc, forced_at, _ = forced if forced is not None else _forced(problem)
    values = g.values
    slack = []
    for o in range(g.num_ops):
        touched = set(problem.op_values[o])
        fb = sum(alloc[v] for v in forced_at[o] if v not in touched)
        slack.append((cap - ws[o] - fb, o))
    slack.sort()
    biggest = max((alloc[v.id] for v in values if managed[v.id]), default=0)

    live_cands = [v.id for v in values if managed[v.id] and v.consumers]
    consmask = {}
    for v in live_cands:
        m = 0
        for c in values[v].consumers:
            m |= 1 << c
        consmask[v] = m
    prod = {v: values[v].producer for v in live_cands}

    def between(a: int, b: int) -> set[int]:
        """Values live at any step after ``a`` and before ``b`` (``a`` precedes ``b``): made by
        ``a`` or an ancestor of it (or a parameter read there) and read by ``b`` or a
        descendant of it."""
        am = anc[a] | (1 << a)
        dm = desc[b] | (1 << b)
        out = set()
        for v in live_cands:
            cm = consmask[v]
            if not cm & dm:
                continue
            p = prod[v]
            if (p is not None and (am >> p) & 1) or (p is None and cm & am):
                out.add(v)
        return out

    def cover(op: int, extra) -> float:
        touched = set(problem.op_values[op])
        vals = [v for v in forced_at[op] if v not in touched]
        have = set(vals)
        for e in extra:
            if e not in touched and e not in have:
                vals.append(e)
                have.add(e)
        excess = ws[op] + sum(alloc[v] for v in vals) - cap
        if excess <= 0:
            return 0.0
        cst = {v: _value_cost(values[v]) for v in vals}
        return _fractional_cover(excess, vals, cst, alloc)

    best = 0.0
    for sl, x in slack[:max_ops]:
        if sl >= biggest:
            break
        for t in g.ops[x].outputs:
            if not managed[t]:
                continue
            for c in values[t].consumers:
                # walk back from C along the largest managed input produced outside X's descendants
                chain: list[tuple[int, int]] = []      # (Q_i, e_i), from C backwards
                cur = c
                seen = {x, c}
                while True:
                    cands = [v for v in g.ops[cur].inputs if managed[v] and v != t
                             and values[v].producer is not None and values[v].producer not in seen]
                    if cur == c:
                        cands = [v for v in cands if not (desc[x] >> values[v].producer) & 1]
                    if not cands:
                        break
                    # follow the trunk: the producer with the most ancestors (longest way back)
                    e = max(cands, key=lambda v: (anc[values[v].producer].bit_count(), alloc[v], -v))
                    q = values[e].producer
                    chain.append((q, e))
                    seen.add(q)
                    if (anc[x] >> q) & 1:
                        break
                    cur = q
                if not chain:
                    continue
                chain.reverse()                          # Q_1 .. Q_k with e_i read by Q_{i+1} / C
                k = len(chain)
                # T is live at every Q_i that runs after X: suffix maxima of its cover there
                suf = [0.0] * (k + 1)
                for i in range(k - 1, -1, -1):
                    suf[i] = max(suf[i + 1], cover(chain[i][0], (t,)))
                case_costs = []
                if not (anc[x] >> chain[0][0]) & 1:
                    case_costs.append(suf[0])            # X before Q_1: T waits at every Q_i
                for j, (q, e) in enumerate(chain):
                    if (desc[x] >> q) & 1:
                        break                            # X precedes Q_j and everything after it
                    nxt = chain[j + 1][0] if j + 1 < k else c
                    if (anc[x] >> nxt) & 1:
                        continue                         # X cannot precede Q_{j+1}
                    # Q_j before X before Q_{j+1}: e_j waits at X, T waits at Q_{j+1} .. Q_k
                    case_costs.append(max(cover(x, between(q, nxt) | {e}), suf[j + 1]))
                    if min(case_costs) <= best:
                        break
                if case_costs:
                    best = max(best, min(case_costs))
    return 0 if math.isinf(best) else math.ceil(best - 1e-6)


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
    forced = _forced(problem)
    chain_b = chain_bound(problem, forced)
    cost, rows = covering_rows(problem, forced)
    if not rows:
        return GlobalBound(chain_b, "chain" if chain_b else "trivial", wall_s=time.perf_counter() - t0,
                           chain_bytes=chain_b)
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
    return GlobalBound(max(bound, single_b, chain_b), status, rows=len(rows), terms=terms,
                       wall_s=time.perf_counter() - t0, single_op_bytes=single_b, chain_bytes=chain_b)


__all__ = ["global_lower_bound", "covering_rows", "chain_bound", "GlobalBound"]
