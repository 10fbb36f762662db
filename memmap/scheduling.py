"""Schedules and liveness: full-residency live ranges, peak live bytes, a depth-first
(post-order) scheduler, and a memory-aware list scheduler; together they search for a
minimum-peak schedule (an upper bound on the true minimum;
exact minimisation is NP-hard and is the ILP's job)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memmap import limits
from memmap.problem import Problem


def live_ranges(problem: Problem, schedule: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Value -> ``(first, last)`` steps if it stays resident from its first to its last use
    (no spill): produced values from their producer's step, parameters/constants from their
    first use. Unmanaged and never-touched values are absent."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t, o in enumerate(schedule):
        for v in problem.op_values[o]:
            if v not in first:
                first[v] = t
            last[v] = t
    return {v: (first[v], last[v]) for v in first}


def inplace_links(problem: Problem, schedule: Sequence[int],
                  segments: Sequence[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """``(i, j)`` index pairs of residency segments ``(value, first, last)`` that may be one
    buffer: segment ``i`` of an in-place pair's input ends at the step ``t`` of its operator and
    segment ``j`` of the pair's output starts there (docs/semantics.md, "In-place pairs").
    Placing both at one offset makes the operator write the output into the input's buffer; a
    caller must not write the input off-chip at ``t`` itself (every solver here writes a value
    off-chip at its creation or at the start of its residency, both before ``t``)."""
    pairs = problem.inplace_pairs
    if not any(pairs):
        return []
    ends = {(v, b): k for k, (v, a, b) in enumerate(segments)}
    starts = {(v, a): k for k, (v, a, b) in enumerate(segments)}
    links = []
    for t, o in enumerate(schedule):
        for vo, vi in pairs[o]:
            i = ends.get((vi, t))
            j = starts.get((vo, t))
            if i is not None and j is not None:
                links.append((i, j))
    return links


def peak_live_bytes(problem: Problem, schedule: Sequence[int]) -> int:
    """Largest sum of allocated sizes of values live at one step under full residency, an
    in-place pair counted once at its operator's step when the input's live range ends there."""
    n = len(schedule)
    delta = np.zeros(n + 1, dtype=np.int64)
    asz = problem.alloc_size
    segs = [(v, a, b) for v, (a, b) in live_ranges(problem, schedule).items()]
    for v, a, b in segs:
        delta[a] += asz[v]
        delta[b + 1] -= asz[v]
    for i, _ in inplace_links(problem, schedule, segs):
        v, _, b = segs[i]
        delta[b] -= asz[v]
        delta[b + 1] += asz[v]
    return int(np.cumsum(delta)[:n].max()) if n else 0


def _greedy(problem: Problem, rank: Sequence[int], variant: str, rng: np.random.Generator | None):
    """One memory-aware list schedule. ``rank[o]``: tie-break position of op o."""
    g = problem.graph
    asz = problem.alloc_size
    managed = problem.managed
    pairs = problem.inplace_pairs
    n_ops = len(g.ops)
    preds_left = [0] * n_ops
    succs: list[list[int]] = [[] for _ in range(n_ops)]
    for op in g.ops:
        ps = {g.values[v].producer for v in op.inputs if g.values[v].producer is not None}
        preds_left[op.id] = len(ps)
        for q in ps:
            succs[q].append(op.id)
    readers_left = [len(v.consumers) for v in g.values]
    live = [False] * len(g.values)
    ready = [o for o in range(n_ops) if preds_left[o] == 0]
    order: list[int] = []
    cur = 0

    def score(o: int):
        op = g.ops[o]
        alloc = 0
        free = 0
        shared = 0   # in-place outputs written into an input that dies here
        for vo, vi in pairs[o]:
            if readers_left[vi] == 1:
                shared += asz[vo]
        for v in op.inputs:
            if not managed[v]:
                continue
            if not live[v]:
                alloc += asz[v]
            if readers_left[v] == 1:
                free += asz[v]
        for v in op.outputs:
            if managed[v]:
                alloc += asz[v]
                if not g.values[v].consumers:
                    free += asz[v]
        step_peak = cur + alloc - shared
        net = alloc - free
        noise = rng.random() if rng is not None else 0.0
        if variant == "net":
            return (net, step_peak, noise, rank[o])
        if variant == "peak":
            return (step_peak, net, noise, rank[o])
        return (net + step_peak // 2, noise, rank[o])   # "mixed"

    while ready:
        limits.checkpoint("list scheduling")
        best = min(ready, key=score)
        ready.remove(best)
        order.append(best)
        op = g.ops[best]
        for v in op.inputs:
            if managed[v] and not live[v]:
                live[v] = True
                cur += asz[v]
        for v in op.outputs:
            if managed[v]:
                live[v] = True
                cur += asz[v]
        for v in op.inputs:
            readers_left[v] -= 1
            if readers_left[v] == 0 and live[v]:
                live[v] = False
                cur -= asz[v]
        for v in op.outputs:
            if live[v] and not g.values[v].consumers:
                live[v] = False
                cur -= asz[v]
        for q in succs[best]:
            preds_left[q] -= 1
            if preds_left[q] == 0:
                ready.append(q)
    return tuple(order)


def dfs_schedule(problem: Problem, *, largest_first: bool = True) -> tuple[int, ...]:
    """A depth-first post-order schedule (the idea of XLA's DFS memory scheduler): starting from
    the operators nobody depends on (in default-schedule order), each operator runs right after
    the operators producing its inputs, which are visited deepest-need first: the producer whose
    cone of not-yet-scheduled ancestors allocates the most bytes goes first (Sethi-Ullman), or
    the least with ``largest_first=False``. Cheap producers (broadcasts, constants feeding an
    elementwise op) thus run just before their reader instead of early in textual order, which
    shortens live ranges; iterative (no recursion limit)."""
    g = problem.graph
    n = g.num_ops
    asz = problem.alloc_size
    managed = problem.managed
    preds: list[list[int]] = [[] for _ in range(n)]
    has_succ = [False] * n
    for op in g.ops:
        seen: set[int] = set()
        for v in op.inputs:
            p = g.values[v].producer
            if p is not None and p not in seen:
                seen.add(p)
                preds[op.id].append(p)
                has_succ[p] = True
    default = tuple(g.default_schedule)
    rank = [0] * n
    for i, o in enumerate(default):
        rank[o] = i
    # cone bytes: bytes allocated by an op and its ancestors (shared ancestors counted in each
    # path, an estimate of the memory a subtree needs, as in Sethi-Ullman numbering)
    cone = [0] * n
    for o in default:
        own = sum(asz[v] for v in g.ops[o].outputs if managed[v])
        cone[o] = own + sum(cone[p] for p in preds[o])
    sign = -1 if largest_first else 1
    done = [False] * n
    order: list[int] = []
    for root in (o for o in default if not has_succ[o]):
        if done[root]:
            continue
        stack = [(root, False)]
        while stack:
            o, expanded = stack.pop()
            if done[o]:
                continue
            if expanded:
                done[o] = True
                order.append(o)
                continue
            stack.append((o, True))
            kids = sorted((p for p in preds[o] if not done[p]), key=lambda p: (sign * cone[p], rank[p]))
            for p in reversed(kids):   # the first in ``kids`` is popped (visited) first
                stack.append((p, False))
    assert len(order) == n and g.check_schedule(order) is None
    return tuple(order)


def min_peak_schedule(problem: Problem, *, restarts: int = 4, seed: int = 0) -> tuple[tuple[int, ...], int]:
    """Search for a schedule with a small peak of live bytes, as XLA's default memory scheduler
    does (the best of its list, DFS and post-order schedulers): tries the default schedule, three
    greedy list-scheduling rules (least net allocation, least step peak, a mix), the depth-first
    schedules of :func:`dfs_schedule` (deepest cone first, and shallowest first) and
    ``restarts`` randomised tie-breaks of the best list rule when a list rule wins; returns
    ``(schedule, peak_live_bytes)`` of the best (ties: the earlier candidate)."""
    g = problem.graph
    default = tuple(g.default_schedule)
    rank = [0] * len(g.ops)
    for i, o in enumerate(default):
        rank[o] = i
    names = ["default", "net", "peak", "mixed", "dfs", "dfs-shallow"]
    candidates = [default]
    for variant in ("net", "peak", "mixed"):
        candidates.append(_greedy(problem, rank, variant, None))
    candidates.append(dfs_schedule(problem, largest_first=True))
    candidates.append(dfs_schedule(problem, largest_first=False))
    scored = [(peak_live_bytes(problem, s), i, s) for i, s in enumerate(candidates)]
    best_peak, best_i, best = min(scored)
    best_variant = names[best_i]
    rng = np.random.default_rng(seed)
    if best_variant in ("net", "peak", "mixed"):
        for _ in range(restarts):
            s = _greedy(problem, rank, best_variant, rng)
            pk = peak_live_bytes(problem, s)
            if pk < best_peak:
                best_peak, best = pk, s
    assert problem.graph.check_schedule(best) is None
    return best, best_peak


__all__ = ["live_ranges", "peak_live_bytes", "inplace_links", "min_peak_schedule", "dfs_schedule"]
