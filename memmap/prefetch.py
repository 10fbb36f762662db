"""Prefetch hoisting: a plan transformation shared by every solver.

A load or reload at step ``s`` stalls the pipeline unless it is issued early enough. This pass
moves each copy (and the start of its residency) to an earlier step ``s' < s`` when the value's
address range is free over ``[s', s - 1]`` and its off-chip copy already exists, going back only
as far as needed to hide the transfer behind the operators in between (their roofline times),
and at most ``max_steps`` steps. Traffic is unchanged; the scratchpad is occupied longer.
The result is a new plan (verify it like any other)."""

from __future__ import annotations

from collections import defaultdict

from memmap.cost import step_times
from memmap.plan import Plan, Residency, Transfer


def hoist_prefetches(plan: Plan, *, max_steps: int = 64) -> Plan:
    p = plan.problem
    g = p.graph
    asz = p.alloc_size
    n = len(plan.schedule)
    if n == 0 or not plan.residencies:
        return plan
    times = step_times(plan)
    dma_bw = p.target.offchip_bandwidth_bytes_per_s / p.target.dma_engines
    occ: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for r in plan.residencies:
        for t in range(r.start, r.end + 1):
            occ[t].append((r.offset, r.offset + asz[r.value]))
    write_step = {t.value: t.step for t in plan.transfers if t.kind in ("spill", "writeback")}
    by_value = defaultdict(list)
    for r in plan.residencies:
        by_value[r.value].append(r)
    prev_end = {}
    for v, rs in by_value.items():
        rs.sort(key=lambda r: r.start)
        for a, b in zip(rs, rs[1:]):
            prev_end[(v, b.start)] = a.end
    pos = {o: t for t, o in enumerate(plan.schedule)}
    slow_born = set()
    if p.mode == "tiered":
        for v, rs in by_value.items():
            prod = g.values[v].producer
            if prod is not None and not any(r.start == pos[prod] for r in rs):
                slow_born.add(v)   # produced straight into slow memory: off-chip from then on
    moved: dict[tuple[int, int], int] = {}
    loads = sorted((t for t in plan.transfers if t.kind in ("load", "reload")), key=lambda t: t.step)
    res_at = {(r.value, r.start): r for r in plan.residencies}
    for tr in loads:
        r = res_at.get((tr.value, tr.step))
        if r is None or tr.step == 0:
            continue
        lo_bound = prev_end.get((tr.value, r.start), -1) + 1
        if g.values[tr.value].producer is not None:
            ready = pos[g.values[tr.value].producer] if tr.value in slow_born else write_step.get(tr.value, n)
            lo_bound = max(lo_bound, ready + 1)
        need = tr.size_bytes / dma_bw
        hidden = 0.0
        lo, hi = r.offset, r.offset + asz[tr.value]
        new_start = r.start
        k = r.start - 1
        while k >= lo_bound and r.start - k <= max_steps and hidden < need:
            if any(a < hi and lo < b for a, b in occ[k]):
                break
            new_start = k
            hidden += times[k]
            k -= 1
        if new_start < r.start:
            for t in range(new_start, r.start):
                occ[t].append((lo, hi))
            moved[(tr.value, r.start)] = new_start
    if not moved:
        return plan
    res = [Residency(r.value, moved.get((r.value, r.start), r.start), r.end, r.offset)
           for r in plan.residencies]
    trs = [Transfer(moved.get((t.value, t.step), t.step), t.kind, t.value, t.size_bytes)
           if t.kind in ("load", "reload") else t for t in plan.transfers]
    info = dict(plan.info, prefetches_hoisted=len(moved))
    return Plan.assemble(p, plan.schedule, res, trs, solver=plan.solver, status=plan.status,
                         solve_time_s=plan.solve_time_s, info=info)
