"""The one cost model (roofline + DMA queues) and simulator. Every solver is scored here.

Traffic (bytes between off-chip memory and the chip, managed values only):

* ``load`` / ``reload`` / ``spill`` / ``writeback`` transfers, by their sizes;
* tiered mode only: an input read straight from slow memory (``slow_read``), and a result
  produced straight into slow memory (``slow_write``).

``compulsory_bytes`` is a property of the problem (first load of each used input/weight + final
write of each output); ``noncompulsory_bytes`` = all traffic - compulsory (never negative for a
valid plan).

Time: operators run one per step. Step ``t`` takes
``max(flops / compute_rate, fast_bytes / onchip_bw + slow_bytes / offchip_bw)`` where the bytes
are the op's inputs and outputs, fast when in the scratchpad at ``t`` (unmanaged values are
always slow). Transfers run on ``dma_engines`` FIFO queues, each at ``offchip_bw / dma_engines``:

* a load/reload at step ``s`` is issued when step ``s`` starts and must finish before the first
  step of its residency that reads the value (else the pipeline stalls): issuing it earlier than
  that step is a *prefetch* and hides its latency behind the operators in between;
* a spill/writeback at step ``t`` is issued when step ``t`` ends and must finish before the
  scratchpad space is reused, i.e. before the step after its residency ends (or the end of the
  program).

The modelled time is when the last operator and the last transfer have finished. Bandwidth
contention between DMA and slow-memory operand reads is not modelled (documented limitation).

In-place pairs (docs/semantics.md): where an operator writes an output into its input's buffer
(:func:`inplace_shares`), the two residencies are one buffer at that step: counted once in the
peak of live bytes, and a spill/writeback of the input must finish before that step starts (the
operator overwrites the buffer).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import defaultdict

from memmap.plan import Plan, Residency


def _intervals(plan: Plan) -> dict[int, list]:
    by_value: dict[int, list] = defaultdict(list)
    for r in plan.residencies:
        by_value[r.value].append(r)
    for rs in by_value.values():
        rs.sort(key=lambda r: r.start)
    return by_value


def residency_lookup(by_value):
    """``(value, step) -> Residency | None`` over per-value residencies sorted by start."""
    starts = {v: [r.start for r in rs] for v, rs in by_value.items()}

    def residency_at(v: int, t: int):
        rs = by_value.get(v)
        if not rs:
            return None
        i = bisect.bisect_right(starts[v], t) - 1
        if i >= 0 and rs[i].end >= t:
            return rs[i]
        return None

    return residency_at


def inplace_shares(plan: Plan) -> list[tuple[int, Residency, Residency]]:
    """``(step, input residency, output residency)`` of every in-place pair that shares one
    buffer in the plan: at step ``t`` the op's pair ``(output, input)`` (both managed) has a
    residency of the input that ends at ``t`` and a residency of the output that starts at
    ``t`` (its creation) at the same offset. Pairs are per op (``Problem.inplace_pairs``), so
    the list is empty for graphs without them."""
    p = plan.problem
    pairs = p.inplace_pairs
    if not any(pairs):
        return []
    ending = {(r.value, r.end): r for r in plan.residencies}
    starting = {(r.value, r.start): r for r in plan.residencies}
    out = []
    for t, o in enumerate(plan.schedule):
        for vo, vi in pairs[o]:
            ri = ending.get((vi, t))
            ro = starting.get((vo, t))
            if ri is not None and ro is not None and ri.offset == ro.offset:
                out.append((t, ri, ro))
    return out


def load_deadlines(plan: Plan, residency_at=None) -> list[tuple]:
    """``[(transfer, first_read_step)]`` for every load/reload: the first step of the residency
    it starts that reads the value (the transfer's step when none does). A load/reload is a
    *prefetch* when ``first_read_step > transfer.step``."""
    g = plan.problem.graph
    if residency_at is None:
        residency_at = residency_lookup(_intervals(plan))
    uses_at: dict[int, list[int]] = defaultdict(list)
    for t, o in enumerate(plan.schedule):
        for v in g.ops[o].inputs:
            uses_at[v].append(t)
    out = []
    for tr in plan.transfers:
        if tr.kind in ("load", "reload"):
            r = residency_at(tr.value, tr.step)
            end = r.end if r is not None else tr.step
            us = uses_at.get(tr.value, [])
            i = bisect.bisect_left(us, tr.step)
            out.append((tr, us[i] if i < len(us) and us[i] <= end else tr.step))
    return out


def traffic(plan: Plan) -> dict:
    """Byte counts by kind, compulsory and non-compulsory bytes."""
    p = plan.problem
    g = p.graph
    managed = p.managed
    out = {"load_bytes": 0, "reload_bytes": 0, "spill_bytes": 0, "writeback_bytes": 0,
           "slow_read_bytes": 0, "slow_write_bytes": 0}
    for tr in plan.transfers:
        if tr.kind != "evict":
            out[f"{tr.kind}_bytes"] += tr.size_bytes
    if p.mode == "tiered":
        by_value = _intervals(plan)
        residency_at = residency_lookup(by_value)
        for t, o in enumerate(plan.schedule):
            op = g.ops[o]
            for v in op.inputs:
                if managed[v] and residency_at(v, t) is None:
                    out["slow_read_bytes"] += g.values[v].size_bytes
            for v in op.outputs:
                if managed[v] and residency_at(v, t) is None:
                    out["slow_write_bytes"] += g.values[v].size_bytes
    total = sum(out.values())
    out["offchip_bytes"] = total
    out["compulsory_bytes"] = p.compulsory_bytes
    out["noncompulsory_bytes"] = total - p.compulsory_bytes
    return out


def step_times(plan: Plan, residency_at=None) -> list[float]:
    """``[num_steps]`` roofline time of each step's operator under the plan's residencies."""
    p = plan.problem
    g = p.graph
    tgt = p.target
    managed = p.managed
    if residency_at is None:
        residency_at = residency_lookup(_intervals(plan))
    out = []
    for t, o in enumerate(plan.schedule):
        op = g.ops[o]
        fast = slow = 0
        for v in op.inputs + op.outputs:
            size = g.values[v].size_bytes
            if managed[v] and residency_at(v, t) is not None:
                fast += size
            else:
                slow += size
        compute = op.flops / tgt.compute_flops_per_s
        memory = fast / tgt.onchip_bandwidth_bytes_per_s + slow / tgt.offchip_bandwidth_bytes_per_s
        out.append(max(compute, memory))
    return out


def simulate(plan: Plan) -> dict:
    """Score a (verified) plan: traffic, peak scratchpad use and modelled time."""
    p = plan.problem
    g = p.graph
    tgt = p.target
    managed = p.managed
    asz = p.alloc_size
    n = len(plan.schedule)
    metrics = traffic(plan)
    by_value = _intervals(plan)
    residency_at = residency_lookup(by_value)

    # peaks
    peak_addr = max((r.offset + asz[r.value] for r in plan.residencies), default=0)
    delta = [0] * (n + 1)
    for r in plan.residencies:
        delta[r.start] += asz[r.value]
        delta[r.end + 1] -= asz[r.value]
    overwritten = set()       # input residencies an operator writes its output into
    for t, ri, _ in inplace_shares(plan):
        delta[t] -= asz[ri.value]           # one buffer at step t (the input's ends there)
        delta[t + 1] += asz[ri.value]
        overwritten.add(ri)
    live, peak_live = 0, 0
    for t in range(n):
        live += delta[t]
        peak_live = max(peak_live, live)

    op_time = step_times(plan, residency_at)
    compute_total = sum(op_time)

    # transfers: deadlines
    loads_at: dict[int, list] = defaultdict(list)
    writes_at: dict[int, list] = defaultdict(list)
    prefetches = 0
    for tr, first_use in load_deadlines(plan, residency_at):
        prefetches += first_use > tr.step
        loads_at[tr.step].append((tr, first_use))
    for tr in plan.transfers:
        if tr.kind in ("spill", "writeback"):
            r = residency_at(tr.value, tr.step)
            end = r.end if r is not None else tr.step
            # the space is reused after the residency ends, or overwritten in place during it
            writes_at[tr.step].append((tr, end if r in overwritten else end + 1))

    engines = [0.0] * tgt.dma_engines
    heapq.heapify(engines)
    dma_bw = tgt.offchip_bandwidth_bytes_per_s / tgt.dma_engines
    due: dict[int, float] = defaultdict(float)   # step -> latest completion that must precede it
    final_due = 0.0
    now = 0.0
    stall = 0.0

    def issue(at: float, size: int) -> float:
        free = heapq.heappop(engines)
        done = max(at, free) + size / dma_bw
        heapq.heappush(engines, done)
        return done

    for t in range(n):
        for tr, first_use in loads_at.get(t, ()):
            done = issue(now, tr.size_bytes)
            due[first_use] = max(due[first_use], done)
        need = due.pop(t, 0.0)
        if need > now:
            stall += need - now
            now = need
        now += op_time[t]
        for tr, deadline in writes_at.get(t, ()):
            done = issue(now, tr.size_bytes)
            if deadline >= n:
                final_due = max(final_due, done)
            else:
                due[deadline] = max(due[deadline], done)
    for v in due.values():
        final_due = max(final_due, v)
    end = max(now, final_due)
    stall += end - now

    metrics.update({
        "peak_scratchpad_bytes": peak_addr,
        "peak_live_bytes": peak_live,
        "capacity_bytes": tgt.capacity_bytes,
        "num_steps": n,
        "num_spills": sum(1 for t in plan.transfers if t.kind == "spill"),
        "num_reloads": sum(1 for t in plan.transfers if t.kind == "reload"),
        "num_prefetches": prefetches,
        "operator_time_s": compute_total,
        "stall_time_s": stall,
        "modeled_time_s": end,
    })
    return metrics


def memory_boundedness(problem: Problem, schedule) -> dict[int, float]:
    """Value -> roofline seconds saved by having it in fast memory at every step that touches
    it (all other values slow), divided by sqrt(allocated size)."""
    g = problem.graph
    tgt = problem.target
    asz = problem.alloc_size
    benefit: dict[int, float] = {}
    for o in schedule:
        op = g.ops[o]
        total = sum(g.values[v].size_bytes for v in op.inputs + op.outputs)
        compute = op.flops / tgt.compute_flops_per_s
        slow_t = max(compute, total / tgt.offchip_bandwidth_bytes_per_s)
        for v in problem.op_values[o]:
            sz = g.values[v].size_bytes
            fast_t = max(compute, (total - sz) / tgt.offchip_bandwidth_bytes_per_s
                         + sz / tgt.onchip_bandwidth_bytes_per_s)
            benefit[v] = benefit.get(v, 0.0) + max(0.0, slow_t - fast_t)
    return {v: b / math.sqrt(asz[v]) for v, b in benefit.items()}
