"""The independent plan verifier. It imports no solver and trusts nothing in the plan.

Rules checked (docs/semantics.md gives the reasoning):

1. The schedule is a permutation of all operators in dependency order.
2. Every residency is of a managed value, inside ``[0, num_steps)``, starts no earlier than the
   value's producer, has an aligned offset and fits the capacity; residencies of one value do
   not overlap in time; no two co-resident values overlap in address.
3. Operands: in strict mode every managed input and output of the op at step ``t`` is resident
   at ``t`` (outputs from their producer's step on). In tiered mode an input that is not
   resident must have a valid off-chip copy.
4. Transfers: every residency that does not start with its value's creation starts with exactly
   one ``load`` (first copy of a parameter/constant) or ``reload`` (any later copy), and a
   reload needs an off-chip copy written at an earlier step; ``spill``/``writeback`` is the first
   (only) write of a produced value, while it is resident; every output ends off-chip; every
   residency ending before the last step ends with one ``evict``; sizes match the values.
5. If the plan states metrics, the recomputed non-compulsory bytes must match them.

In-place pairs (docs/semantics.md): at the step of an operator with a pair ``(output, input)``,
an input residency that ends there and an output residency that starts there at the same offset
are one buffer (the operator writes the output into it): they do not count as an address
overlap, and the input may not be written off-chip at that step (its buffer is overwritten).
Nothing else changes: the input's value stays valid off-chip only if it has a copy there, which
rule 4 already requires of any later reload or (tiered) slow read.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import defaultdict

from memmap.cost import inplace_shares, residency_lookup, traffic
from memmap.ir.serialize import same_structure
from memmap.plan import TRANSFER_KINDS, Plan

MAX_ERRORS = 20


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    ok: bool
    errors: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.ok

    @property
    def reason(self) -> str:
        return self.errors[0] if self.errors else "valid"


class _Errors(list):
    def add(self, msg: str) -> None:
        if len(self) < MAX_ERRORS:
            self.append(msg)


def verify_plan(plan: Plan, *, graph=None) -> VerifyResult:
    """Check every rule; with ``graph`` also check that the plan was made for that graph."""
    errs = _Errors()
    p = plan.problem
    g = p.graph
    if graph is not None:
        diff = same_structure(graph, g)
        if diff:
            return VerifyResult(False, (f"plan was made for a different graph: {diff}",))
    reason = g.check_schedule(plan.schedule)
    if reason:
        return VerifyResult(False, (f"schedule: {reason}",))
    n = len(plan.schedule)
    pos = [0] * len(g.ops)
    for t, o in enumerate(plan.schedule):
        pos[o] = t
    cap = p.target.capacity_bytes
    align = p.target.alignment_bytes
    managed = p.managed
    asz = p.alloc_size
    vals = g.values

    def vname(v: int) -> str:
        return repr(vals[v].name)

    # -- 2. residencies: bounds, alignment, capacity, per-value disjointness ----------------
    by_value: dict[int, list] = defaultdict(list)
    for r in plan.residencies:
        if not (0 <= r.value < len(vals)):
            errs.add(f"residency of unknown value id {r.value}")
            continue
        if not managed[r.value]:
            errs.add(f"value {vname(r.value)} is not managed in this problem "
                     f"({'activations only' if p.activations_only else 'zero size'}) but has a residency")
            continue
        if not (0 <= r.start <= r.end < n):
            errs.add(f"value {vname(r.value)}: residency steps [{r.start}, {r.end}] outside [0, {n - 1}]")
            continue
        prod = vals[r.value].producer
        if prod is not None and r.start < pos[prod]:
            errs.add(f"value {vname(r.value)}: resident from step {r.start} before its producer "
                     f"{g.ops[prod].name!r} runs (step {pos[prod]})")
        if r.offset < 0 or r.offset % align:
            errs.add(f"value {vname(r.value)}: offset {r.offset} is not a non-negative multiple of the alignment {align}")
        if r.offset + asz[r.value] > cap:
            errs.add(f"value {vname(r.value)}: [{r.offset}, {r.offset + asz[r.value]}) exceeds the capacity {cap} "
                     f"at steps {r.start}..{r.end}")
        by_value[r.value].append(r)
    for v, rs in by_value.items():
        rs.sort(key=lambda r: r.start)
        for a, b in zip(rs, rs[1:]):
            if b.start <= a.end:
                errs.add(f"value {vname(v)}: residencies [{a.start}, {a.end}] and [{b.start}, {b.end}] overlap in time")
    if errs:
        return VerifyResult(False, tuple(errs))

    # -- 2b. address overlap among co-resident values (sweep over steps) --------------------
    # an input residency overwritten in place by its operator's output leaves the active set at
    # that step, before the output's residency (same offset, same size) enters it
    shares = inplace_shares(plan)
    handed_over: dict[int, list] = defaultdict(list)
    for t, ri, _ in shares:
        handed_over[t].append(ri)
    starts: dict[int, list] = defaultdict(list)
    for r in plan.residencies:
        starts[r.start].append(r)
    active_offsets: list[int] = []   # sorted offsets of active residencies
    active: list = []                # residencies, parallel to active_offsets
    ending: dict[int, list] = defaultdict(list)
    gone: set[int] = set()           # id() of residencies already removed (handed over)
    entered: set[int] = set()        # id() of residencies that entered the active set

    def deactivate(r) -> None:
        if id(r) not in entered or id(r) in gone:
            return                   # never entered (an overlap was reported) or already left
        i = bisect.bisect_left(active_offsets, r.offset)
        while active[i] is not r:
            i += 1
        del active_offsets[i], active[i]
        gone.add(id(r))

    for t in range(n):
        for r in ending.pop(t - 1, ()):
            deactivate(r)
        skip = set()
        for r in handed_over.get(t, ()):
            if r.start < t:
                deactivate(r)
            else:
                skip.add(id(r))      # lives only at t: the output's residency stands for it
        for r in sorted(starts.get(t, ()), key=lambda r: (r.offset, r.value)):
            if id(r) in skip:
                continue
            lo, hi = r.offset, r.offset + asz[r.value]
            i = bisect.bisect_left(active_offsets, lo)
            clash = None
            if i > 0 and active_offsets[i - 1] + asz[active[i - 1].value] > lo:
                clash = active[i - 1]
            elif i < len(active) and active_offsets[i] < hi:
                clash = active[i]
            if clash is not None:
                errs.add(f"step {t}: value {vname(r.value)} at [{lo}, {hi}) overlaps value "
                         f"{vname(clash.value)} at [{clash.offset}, {clash.offset + asz[clash.value]})")
                continue
            active_offsets.insert(i, lo)
            active.insert(i, r)
            entered.add(id(r))
            ending[r.end].append(r)
    if errs:
        return VerifyResult(False, tuple(errs))

    # -- 4. transfers ------------------------------------------------------------------------
    loads: dict[tuple[int, int], list] = defaultdict(list)   # (value, step) -> load/reload transfers
    writes: dict[int, list] = defaultdict(list)
    evicts: dict[tuple[int, int], int] = defaultdict(int)
    for tr in plan.transfers:
        if tr.kind not in TRANSFER_KINDS:
            errs.add(f"transfer at step {tr.step}: unknown kind {tr.kind!r}")
            continue
        if not (0 <= tr.value < len(vals)) or not managed[tr.value]:
            errs.add(f"{tr.kind} at step {tr.step}: value id {tr.value} is not a managed value")
            continue
        if not (0 <= tr.step < n):
            errs.add(f"{tr.kind} of {vname(tr.value)}: step {tr.step} outside [0, {n - 1}]")
            continue
        want = 0 if tr.kind == "evict" else vals[tr.value].size_bytes
        if tr.size_bytes != want:
            errs.add(f"{tr.kind} of {vname(tr.value)} at step {tr.step}: size {tr.size_bytes} != {want}")
        if tr.kind in ("load", "reload"):
            loads[(tr.value, tr.step)].append(tr)
        elif tr.kind in ("spill", "writeback"):
            writes[tr.value].append(tr)
        else:
            evicts[(tr.value, tr.step)] += 1
    if errs:
        return VerifyResult(False, tuple(errs))

    residency_at = residency_lookup(by_value)

    def resident(v: int, t: int) -> bool:
        return residency_at(v, t) is not None

    write_step: dict[int, int] = {}
    for v, ws in writes.items():
        val = vals[v]
        if val.producer is None:
            errs.add(f"{ws[0].kind} of {vname(v)} at step {ws[0].step}: a {val.kind} already has an off-chip copy")
            continue
        if len(ws) > 1:
            errs.add(f"value {vname(v)} is written off-chip {len(ws)} times (steps "
                     f"{', '.join(str(w.step) for w in ws)}); it is immutable, once is enough")
        w = min(ws, key=lambda w: w.step)
        want_kind = "writeback" if val.is_output else "spill"
        if w.kind != want_kind:
            errs.add(f"value {vname(v)} ({val.kind}) is written off-chip as {w.kind!r}; expected {want_kind!r}")
        if not resident(v, w.step):
            errs.add(f"{w.kind} of {vname(v)} at step {w.step}: the value is not in the scratchpad then")
        write_step[v] = w.step
    for t, ri, ro in shares:
        if write_step.get(ri.value) == t:
            errs.add(f"{vname(ri.value)} is written off-chip at step {t}, where operator "
                     f"{g.ops[plan.schedule[t]].name!r} overwrites it in place with {vname(ro.value)}; "
                     f"write it at an earlier step")

    created_on_chip = {v for v, rs in by_value.items()
                       if vals[v].producer is not None and any(r.start == pos[vals[v].producer] for r in rs)}

    def offchip_copy_before(v: int, t: int) -> bool:
        """Does a produced value have a valid off-chip copy by the start of step ``t``?"""
        ws = write_step.get(v)
        if ws is not None and ws < t:
            return True
        # tiered mode: a value produced straight into slow memory is off-chip from then on
        return p.mode == "tiered" and v not in created_on_chip and pos[vals[v].producer] < t

    for v in write_step:
        if p.mode == "tiered" and vals[v].producer is not None and v not in created_on_chip:
            errs.add(f"value {vname(v)} was produced in off-chip memory; writing it off-chip again is redundant")

    seen_loads = set()
    for v, rs in sorted(by_value.items()):
        val = vals[v]
        first_load_done = False
        for r in rs:
            prod = val.producer
            if prod is not None and r.start == pos[prod]:
                if loads.get((v, r.start)):
                    errs.add(f"value {vname(v)}: a load at step {r.start} but it is created there")
                    seen_loads.add((v, r.start))
                continue
            trs = loads.get((v, r.start), [])
            seen_loads.add((v, r.start))
            if len(trs) != 1:
                errs.add(f"value {vname(v)}: residency [{r.start}, {r.end}] starts with "
                         f"{len(trs)} load/reload transfers; expected exactly one")
                continue
            kind = trs[0].kind
            if prod is None:
                want = "reload" if first_load_done else "load"
                first_load_done = True
            else:
                want = "reload"
                if not offchip_copy_before(v, r.start):
                    errs.add(f"reload of {vname(v)} at step {r.start}: no off-chip copy was written before")
            if kind != want:
                errs.add(f"value {vname(v)}: residency from step {r.start} starts with {kind!r}; expected {want!r}")
        for r in rs:
            if r.end < n - 1 and evicts.get((v, r.end), 0) != 1:
                errs.add(f"value {vname(v)}: residency [{r.start}, {r.end}] must end with exactly one evict at step {r.end}")
    for key in loads:
        if key not in seen_loads:
            errs.add(f"{loads[key][0].kind} of {vname(key[0])} at step {key[1]} starts no residency")
    for (v, t), c in evicts.items():
        if not any(r.end == t for r in by_value.get(v, ())):
            errs.add(f"evict of {vname(v)} at step {t} ends no residency")
    if errs:
        return VerifyResult(False, tuple(errs))

    # -- 3. operands resident / valid ---------------------------------------------------------
    for t, o in enumerate(plan.schedule):
        op = g.ops[o]
        for v in op.outputs:
            if not managed[v]:
                continue
            if p.mode == "strict" and v not in created_on_chip:
                errs.add(f"step {t}: output {vname(v)} of operator {op.name!r} is not in the scratchpad (strict mode)")
        for v in op.inputs:
            if not managed[v] or resident(v, t):
                continue
            if p.mode == "strict":
                errs.add(f"step {t}: input {vname(v)} of operator {op.name!r} is not in the scratchpad (strict mode)")
                continue
            if vals[v].producer is not None and not offchip_copy_before(v, t):
                errs.add(f"step {t}: input {vname(v)} of operator {op.name!r} is neither in the scratchpad "
                         f"nor off-chip (it was dropped without a spill)")
    for val in vals:
        if val.is_output and val.producer is not None and managed[val.id]:
            if val.id not in write_step and not (p.mode == "tiered" and val.id not in created_on_chip):
                errs.add(f"output {vname(val.id)} never reaches off-chip memory (no writeback)")
    if errs:
        return VerifyResult(False, tuple(errs))

    # -- 5. stated metrics -------------------------------------------------------------------
    if "noncompulsory_bytes" in plan.metrics:
        got = traffic(plan)["noncompulsory_bytes"]
        if got != plan.metrics["noncompulsory_bytes"]:
            errs.add(f"plan states {plan.metrics['noncompulsory_bytes']} non-compulsory bytes; "
                     f"recomputed {got}")
    return VerifyResult(not errs, tuple(errs))
