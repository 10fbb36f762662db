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
``F(X)``; in allocated (aligned) bytes this is at most the capacity. ``alloc(W(X))`` is
``Problem.working_set_bytes``, which counts each in-place pair of ``X`` once: a plan may share
it, so that is the least ``X`` occupies (the reload a shared input read later costs is ignored,
which only weakens the bound). Hence the values of
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
import time

from ortools.sat.python import cp_model

from memmap import limits
from memmap.problem import Problem


@dataclasses.dataclass(frozen=True)
class GlobalBound:
    """Result of :func:`global_lower_bound`.

    Attributes:
      bound_bytes: valid lower bound on non-compulsory bytes over every plan and schedule.
      status: ``trivial`` (no operator forces any eviction), ``chain`` / ``cut`` (no covering
        row; the chain or position-cut bound decides), ``OPTIMAL``/``FEASIBLE`` (CP-SAT
        status of the covering problem; the bound is its best bound either way), ``greedy``
        (only the single-operator bound), ``not strict``.
      rows, terms: size of the covering problem (after removing duplicate rows).
      wall_s: seconds spent.
      single_op_bytes: the best bound from one operator alone (fractional cover).
      chain_bytes: the order-disjunction bound of :func:`chain_bound`.
      cut_bytes: the position min-cut bound of :func:`cut_bound`.
    """

    bound_bytes: int
    status: str
    rows: int = 0
    terms: int = 0
    wall_s: float = 0.0
    single_op_bytes: int = 0
    chain_bytes: int = 0
    cut_bytes: int = 0

    @property
    def decided_by(self) -> str:
        """Which bound gives ``bound_bytes``, in words."""
        if self.bound_bytes <= 0:
            return "no eviction is forced"
        if self.bound_bytes == self.cut_bytes:
            return "position min-cut bound"
        if self.bound_bytes == self.chain_bytes:
            return "order-disjunction chain bound"
        return "forced-eviction covering bound"


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


# -- position cuts: the cheapest place for one operator, and pairs of operators -------------------

_INF = 1 << 30          # "infinite" arc capacity for scipy's int32 max-flow


class PositionCuts:
    """Min-cut bound on the traffic an operator's position forces, over EVERY topological order.

    In a schedule, let ``S`` be the set of operators that run before ``X``. ``S`` contains
    ``X``'s ancestors, none of its descendants, and is closed under predecessors. A value ``v``
    that ``X`` does not touch *crosses* ``X`` when it exists at ``X``'s step and is read after
    it: ``v`` is produced in ``S`` and read outside ``S + {X}``, or it is a parameter read both
    inside ``S`` and outside ``S + {X}``. Each crossing value is resident at ``X``'s step or
    away, and away costs at least ``c(v)`` (:func:`_value_cost`). The resident crossing values
    fit in ``free(X) = capacity - alloc(W(X))`` bytes, and ``c(v) <= 2 * alloc(v)``, so the
    away ones cost at least ``price(S) - 2 * free(X)``, where ``price(S)`` is the total ``c``
    of the crossing set. A crossing value larger than ``free(X)`` cannot be resident at all, so
    the crossing values above that size cost at least their full price: the larger of the two
    minima is the operator's bound (integrality the first, fractional, form loses: at M_H a
    1.5 MiB value cannot use 0.75 MiB of room).

    ``min over S of price(S)`` is a minimum closure problem, solved as an s-t min cut: one node
    per operator (source side = runs before ``X``), infinite arcs for the closure
    (``q`` before ``X`` => its predecessors before ``X``), infinite arcs pinning ``X``'s
    predecessors to the source and its successors to the sink; a produced value is one node
    ``a`` with an arc ``producer -> a`` of capacity ``c`` and infinite arcs ``a -> consumer``
    (cut exactly when the producer is before ``X`` and some consumer is not); a parameter with
    consumers ``C`` is two nodes charging ``c`` when some consumer of ``C`` is before ``X`` plus
    ``c`` when some is not, minus the constant ``c``. Capacities are floored to a common unit
    when their sum would overflow scipy's int32 max-flow; flooring only lowers the bound.

    Pairs. For two operators ``X``, ``Y`` that no path orders, every schedule runs ``X`` before
    ``Y`` or ``Y`` before ``X``. In the first case ``Y`` is pinned to the sink of ``X``'s cut
    and ``X`` to the source of ``Y``'s (the second case likewise), so the smaller of the two
    cases' larger cut bounds every schedule. This is what proves GPT-2's tied-embedding rows:
    ``transpose(wte)`` needs the whole M_R, so it runs either before the embedding gather (then
    its 147 MiB result waits across the gather) or after it (then the 1.5 MiB residual stream
    waits across the transpose).
    """

    def __init__(self, problem: Problem, anc: list[int], desc: list[int]):
        import numpy as np

        g = problem.graph
        self.problem = problem
        self.anc, self.desc = anc, desc
        n = self.n = g.num_ops
        self.src, self.snk = n, n + 1
        managed = problem.managed
        tails, heads, caps, owner = [], [], [], []   # owner: value id of a gadget arc, -1 closure
        for q in range(n):
            for r in sorted(g.predecessors(q)):
                tails.append(q); heads.append(r); caps.append(-1); owner.append(-1)
        node = n + 2
        self.param_cost: dict[int, int] = {}
        prices = []
        for v in g.values:
            if not managed[v.id] or not v.consumers:
                continue
            cons = sorted(set(v.consumers))
            c = _value_cost(v)
            if v.producer is not None:
                a = node; node += 1
                tails.append(v.producer); heads.append(a); caps.append(c); owner.append(v.id)
                for x in cons:
                    tails.append(a); heads.append(x); caps.append(-1); owner.append(v.id)
                prices.append(c)
            elif len(cons) >= 2:
                a, b = node, node + 1; node += 2
                for x in cons:
                    tails.append(x); heads.append(b); caps.append(-1); owner.append(v.id)
                    tails.append(a); heads.append(x); caps.append(-1); owner.append(v.id)
                tails.append(b); heads.append(self.snk); caps.append(c); owner.append(v.id)
                tails.append(self.src); heads.append(a); caps.append(c); owner.append(v.id)
                self.param_cost[v.id] = c
                prices.extend((c, c))
        self.num_nodes = node
        unit = 0
        for c in prices:
            unit = math.gcd(unit, c)
        self.gcd = max(1, unit)
        self.tails = np.asarray(tails, dtype=np.int64)
        self.heads = np.asarray(heads, dtype=np.int64)
        self.raw_caps = np.asarray(caps, dtype=np.int64)       # -1: infinite
        self.owner = np.asarray(owner, dtype=np.int64)
        alloc = problem.alloc_size
        self.owner_alloc = np.asarray([alloc[v] if v >= 0 else -1 for v in owner], dtype=np.int64)
        self.free = [problem.target.capacity_bytes - w for w in problem.working_set_bytes]
        # for the capacity unit of each cut: an upper bound on its value
        self.live = [(v.id, v.producer, sum(1 << x for x in set(v.consumers)), _value_cost(v))
                     for v in g.values if managed[v.id] and v.consumers]

    def _unit(self, x: int, before, touched: set[int]) -> int:
        """Capacity unit of ``x``'s cut: exact (the prices' GCD) unless the value of an easy
        feasible cut (``S`` = the ancestors that must run first), which bounds the minimum,
        would overflow int32; then a coarser unit (every capacity floored: a lower bound)."""
        s_mask = self.anc[x]
        for b in before:
            s_mask |= self.anc[b] | (1 << b)
        out_mask = ~(s_mask | (1 << x))
        upper = 0
        for vid, prod, cmask, c in self.live:
            if vid in touched:
                continue
            if prod is not None:
                upper += c if (s_mask >> prod) & 1 and cmask & out_mask else 0
            elif vid in self.param_cost:
                upper += c if cmask & s_mask and cmask & out_mask else 0
                upper += c                     # the constant the parameter gadget adds
        limit = _INF // 4
        return max(self.gcd, -(-upper // limit))

    def bound(self, x: int, before: tuple[int, ...] = (), after: tuple[int, ...] = ()):
        """``(bytes, source)``: a lower bound on the traffic that ``x``'s step forces in every
        schedule running ``before`` before ``x`` and ``after`` after it, and the source side of
        the full-price cut. The larger of ``price - 2 free(x)`` (class docstring) and the price
        of the crossing values too large to be resident at all (``alloc > free(x)``: each of
        those is away, whatever else is)."""
        price, source = self.cut(x, before, after)
        if math.isinf(price):
            return math.inf, None
        free = self.free[x]
        big, _ = self.cut(x, before, after, min_alloc=free)
        return max(0, price - 2 * free, big), source

    def cut(self, x: int, before: tuple[int, ...] = (), after: tuple[int, ...] = (), min_alloc: int = -1):
        """``(price, source)``: a lower bound (bytes) on the cheapest crossing set at ``x`` over
        the schedules that run ``before`` before ``x`` and ``after`` after it, and the operators
        on the source side of a minimum cut (``None`` when no schedule allows it). Only values
        whose allocated size exceeds ``min_alloc`` are priced."""
        import numpy as np
        import scipy.sparse as sp
        from scipy.sparse.csgraph import breadth_first_order, maximum_flow

        if any((self.desc[x] >> b) & 1 for b in before) or any((self.anc[x] >> a) & 1 for a in after):
            return math.inf, None
        touched_set = set(self.problem.op_values[x])
        unit = self._unit(x, before, touched_set)
        keep = ~np.isin(self.owner, np.asarray(sorted(touched_set), dtype=np.int64))
        keep &= (self.owner < 0) | (self.owner_alloc > min_alloc)
        t = self.tails[keep].copy()
        h = self.heads[keep].copy()
        raw = self.raw_caps[keep]
        c = np.where(raw < 0, _INF, np.minimum(raw // unit, _INF - 1))
        t[t == x] = self.src               # x -> its predecessor r: r runs before x
        h[h == x] = self.snk               # successor q -> x: q runs after x
        extra_t = [self.src] * len(before) + list(after)
        extra_h = list(before) + [self.snk] * len(after)
        t = np.concatenate([t, np.asarray(extra_t, dtype=np.int64)])
        h = np.concatenate([h, np.asarray(extra_h, dtype=np.int64)])
        c = np.concatenate([c, np.full(len(extra_t), _INF, dtype=np.int64)])
        ok = t != h
        t, h, c = t[ok], h[ok], c[ok]
        n = self.num_nodes
        m = sp.coo_matrix((c, (t, h)), shape=(n, n)).tocsr()
        m.sum_duplicates()
        m.data = np.minimum(m.data, _INF).astype(np.int32)
        flow = maximum_flow(m, self.src, self.snk)
        alloc = self.problem.alloc_size
        offset = sum(c // unit for v, c in self.param_cost.items()
                     if v not in touched_set and alloc[v] > min_alloc)
        if flow.flow_value >= _INF:
            return math.inf, None              # not reached: pins are checked above
        resid = m.astype(np.int64) - flow.flow
        resid.data = np.where(resid.data > 0, 1, 0)
        resid.eliminate_zeros()
        reach = breadth_first_order(resid, self.src, directed=True, return_predecessors=False)
        source = frozenset(int(q) for q in reach if q < self.n)
        return max(0, flow.flow_value - offset) * unit, source


def cut_bound(problem: Problem, forced=None, max_ops: int = 8) -> int:
    """Best bound of :class:`PositionCuts`: each of the ``max_ops`` operators with the least
    free capacity alone, then every pair of them that no path orders (both orders tried).
    Deterministic (a fixed number of cuts). Returns bytes (0 if none)."""
    g = problem.graph
    cap = problem.target.capacity_bytes
    ws = problem.working_set_bytes
    alloc = problem.alloc_size
    managed = problem.managed
    anc, desc, _, _ = forced if forced is not None else _forced(problem)
    biggest = max((alloc[v.id] for v in g.values if managed[v.id] and v.consumers), default=0)
    cands = sorted((o for o in range(g.num_ops) if cap - ws[o] < biggest), key=lambda o: (cap - ws[o], o))
    cands = cands[:max_ops]
    if not cands:
        return 0
    net = PositionCuts(problem, anc, desc)

    base = {o: net.bound(o) for o in cands}
    best = max(base[o][0] for o in cands)
    for i, x in enumerate(cands):
        for y in cands[i + 1:]:
            if (anc[x] >> y) & 1 or (desc[x] >> y) & 1:
                continue                         # a path orders them: the single cuts know it
            sx, sy = base[x][1], base[y][1]
            if (y in sx) != (x in sy):
                continue                         # both minimum cuts agree on one order
            cases = []
            for first, second in ((x, y), (y, x)):
                a = net.bound(first, after=(second,))[0]
                b = net.bound(second, before=(first,))[0]
                cases.append(max(a, b))
            best = max(best, min(cases))
    return 0 if math.isinf(best) else int(best)


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
    cut_b = cut_bound(problem, forced)
    cost, rows = covering_rows(problem, forced)
    if not rows:
        best = max(chain_b, cut_b)
        status = "trivial" if not best else ("cut" if cut_b >= chain_b else "chain")
        return GlobalBound(best, status, wall_s=time.perf_counter() - t0, chain_bytes=chain_b,
                           cut_bytes=cut_b)
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
    st = limits.solve_cpsat(solver, m)      # cut by the deadline (the bound stays valid) and Ctrl-C
    if st in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raw = solver.objective_value if st == cp_model.OPTIMAL else solver.best_objective_bound
        bound = math.ceil(raw - 1e-6) * gc
        status = solver.status_name(st)
    else:
        bound, status = 0, "greedy"
    return GlobalBound(max(bound, single_b, chain_b, cut_b), status, rows=len(rows), terms=terms,
                       wall_s=time.perf_counter() - t0, single_op_bytes=single_b, chain_bytes=chain_b,
                       cut_bytes=cut_b)


__all__ = ["global_lower_bound", "covering_rows", "chain_bound", "cut_bound", "PositionCuts",
           "GlobalBound"]
