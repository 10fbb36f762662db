"""Replacement by byte count, then a linear (static) allocator: COSMA's baseline recipe.

1. Walk the fixed schedule keeping the resident *bytes* under an effective capacity ``C'``:
   bring each operator's values in, evict Belady victims (furthest next read; clean before
   dirty; larger first) when over ``C'``; free values after their last use. This fixes every
   residency segment ``[start, end]`` and every transfer.
2. Give the segments offsets with a TFLite-style greedy-by-size best-fit allocator
   (:func:`memmap.static_alloc.greedy_allocate`, several orders, lowest height kept).
3. If the height exceeds the real capacity, lower ``C'`` (binary search between M_R and the
   capacity, to within 1% of the capacity) and repeat; keep the largest ``C'`` whose allocation
   fits.

Tiered mode uses Belady bypass: a value only enters when room can be made by evicting values
read later than it; otherwise the operator uses slow memory.
Returns None when no ``C'`` yields an allocation that fits (the caller falls back to the online
best-fit engine).

In-place pairs (docs/semantics.md): an output whose paired input is resident and not needed
afterwards takes the input's bytes (its segment starts where the input's ends, and the allocator
places both at one offset). In strict mode, when evicting every other value still leaves no room,
pairs whose input is read later share too (the input is spilled first if it has no off-chip copy),
so the replacement fits down to M_R, which counts each pair once.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict

from memmap import limits
from memmap.plan import Plan, Residency, Transfer
from memmap.problem import Problem
from memmap.scheduling import inplace_links
from memmap.static_alloc import greedy_allocate


def _replace_by_bytes(problem: Problem, schedule, cap: int):
    g = problem.graph
    asz = problem.alloc_size
    managed = problem.managed
    strict = problem.mode == "strict"
    reads: dict[int, list[int]] = defaultdict(list)
    for t, o in enumerate(schedule):
        for v in g.ops[o].inputs:
            if managed[v]:
                reads[v].append(t)

    def next_read(v, t):
        r = reads.get(v, ())
        i = bisect.bisect_right(r, t)
        return r[i] if i < len(r) else math.inf

    has_copy = [v.producer is None for v in g.values]
    loaded = [False] * len(g.values)
    created_at: dict[int, int] = {}
    start: dict[int, int] = {}
    live = 0
    segs: list[tuple[int, int, int]] = []
    transfers: list[Transfer] = []
    n = len(schedule)

    def evict(u, t):
        nonlocal live
        if not has_copy[u] and next_read(u, t - 1) != math.inf:
            val = g.values[u]
            transfers.append(Transfer(created_at.get(u, start[u]), "writeback" if val.is_output else "spill",
                                      u, val.size_bytes))
            has_copy[u] = True
        segs.append((u, start.pop(u), t - 1))
        live -= asz[u]

    def bring(v, t, o):
        nonlocal live
        start[v] = t
        live += asz[v]
        val = g.values[v]
        if val.producer == o:
            created_at[v] = t
            if val.is_output:
                transfers.append(Transfer(t, "writeback", v, val.size_bytes))
                has_copy[v] = True
        else:
            kind = "reload" if loaded[v] or val.producer is not None else "load"
            loaded[v] = True
            transfers.append(Transfer(t, kind, v, val.size_bytes))

    def victim_key(u, t):
        return (next_read(u, t - 1), has_copy[u] or next_read(u, t - 1) == math.inf, asz[u], -u)

    def free_after(v, t):
        return next_read(v, t) == math.inf and (has_copy[v] or not g.values[v].is_output)

    def hand_over(vi, t):
        """vi's segment ends at t: its operator writes an in-place output into its buffer."""
        nonlocal live
        if not has_copy[vi] and next_read(vi, t) != math.inf:
            val = g.values[vi]
            transfers.append(Transfer(created_at.get(vi, start[vi]), "writeback" if val.is_output else "spill",
                                      vi, val.size_bytes))
            has_copy[vi] = True
        segs.append((vi, start.pop(vi), t))
        live -= asz[vi]

    for t, o in enumerate(schedule):
        limits.checkpoint("the baseline's replacement")
        req = problem.op_values[o]
        pinned = set(req)
        pairs = problem.inplace_pairs[o]
        owner = {vo: vi for vo, vi in pairs}
        # in-place outputs after the other values (their inputs are resident by then)
        todo = sorted((v for v in req if v not in start), key=lambda v: (v in owner, -asz[v], v))
        if strict:
            need = sum(asz[v] for v in todo)
            shared = [vi for vo, vi in pairs if free_after(vi, t)]
            need -= sum(asz[vi] for vi in shared)
            if live + need > cap:
                cands = sorted((u for u in start if u not in pinned), key=lambda u: victim_key(u, t), reverse=True)
                for u in cands:
                    if live + need <= cap:
                        break
                    evict(u, t)
                # then inputs read later give their buffer to their in-place output (latest read first)
                forced = sorted((vi for vo, vi in pairs if vi not in shared),
                                key=lambda vi: (next_read(vi, t), asz[vi], -vi), reverse=True)
                for vi in forced:
                    if live + need <= cap:
                        break
                    shared.append(vi)
                    need -= asz[vi]
                if live + need > cap:
                    return None
            for v in todo:
                bring(v, t, o)
            for vi in shared:
                hand_over(vi, t)
        else:
            for v in todo:
                created = g.values[v].producer == o
                vi = owner.get(v)
                if vi is not None and vi in start and free_after(vi, t):
                    bring(v, t, o)               # written into its input's buffer: no new bytes
                    hand_over(vi, t)
                    continue
                if live + asz[v] > cap:
                    mine = next_read(v, t)
                    cands = sorted((u for u in start if u not in pinned and next_read(u, t - 1) > mine),
                                   key=lambda u: victim_key(u, t), reverse=True)
                    if live + asz[v] - sum(asz[u] for u in cands) <= cap:
                        for u in cands:
                            if live + asz[v] <= cap:
                                break
                            evict(u, t)
                if live + asz[v] > cap:
                    if created:
                        has_copy[v] = True   # produced straight into slow memory
                    continue
                bring(v, t, o)
        if t < n - 1:
            for v in list(start):
                if next_read(v, t) == math.inf and (has_copy[v] or not g.values[v].is_output):
                    segs.append((v, start.pop(v), t))
                    live -= asz[v]
    for v in list(start):
        segs.append((v, start.pop(v), n - 1))
    return segs, transfers


def solve_linear(problem: Problem, schedule, *, solver: str, max_iters: int = 8,
                 tolerance: float = 0.01) -> Plan | None:
    cap = problem.target.capacity_bytes
    align = problem.target.alignment_bytes
    lo = problem.m_r_bytes if problem.mode == "strict" else 0
    hi = cap

    def attempt(c):
        r = _replace_by_bytes(problem, schedule, c)
        if r is None:
            return None
        segs, transfers = r
        # the allocator is quadratic in the number of segments: one order on big instances
        orders = ("size", "area", "length") if len(segs) <= 3000 else ("size",)
        offs, height = greedy_allocate([s[1] for s in segs], [s[2] for s in segs],
                                       [problem.alloc_size[s[0]] for s in segs], orders=orders,
                                       same_offset=inplace_links(problem, schedule, segs))
        if height > cap:
            return None
        res = [Residency(v, a, b, int(off)) for (v, a, b), off in zip(segs, offs)]
        return Plan.assemble(problem, schedule, res, transfers, solver=solver,
                             info={"effective_capacity_bytes": c, "allocator": "linear"})

    best = attempt(hi)
    if best is not None:
        return best
    # binary search for the largest effective capacity whose allocation fits
    lo_c, hi_c = lo, hi
    for _ in range(max_iters):
        if hi_c - lo_c <= max(align, int(tolerance * cap)):
            break
        mid = (lo_c + hi_c) // 2 // align * align
        plan = attempt(mid)
        if plan is not None:
            best, lo_c = plan, mid
        else:
            hi_c = mid
    if best is None and lo_c == lo:
        best = attempt(lo)
    return best
