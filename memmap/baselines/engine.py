"""Time-forward replacement engine shared by the baselines.

It walks a fixed schedule one step at a time, keeps a best-fit address map of the scratchpad,
and at every step brings the running operator's values in:

* inputs that are not resident are loaded (first copy of a parameter/constant) or reloaded;
* outputs are created at a best-fit offset; program outputs are written back at once (the write
  is compulsory, and writing early overlaps it with compute and makes the copy free to drop);
* when no hole fits, a victim is evicted. The victim policy is Belady's: the resident value whose
  next use is furthest away (never used again first), preferring values that already have an
  off-chip copy (clean) on ties, then larger ones. A dirty victim with future uses is spilled;
  the spill is issued at its creation step so that it overlaps with compute;
* strict mode, when evicting every unpinned value still leaves no hole large enough (address
  fragmentation), the operator's working set is compacted: resident inputs are dropped (spilled if
  dirty) and everything the operator touches is re-placed from offset 0 (its total fits by M_R).
* tiered mode: a value is only brought into the scratchpad when a hole is free or when evicting
  values whose next use is later than its own makes room (Belady bypass); otherwise the operator
  reads it from (or writes it to) slow memory.

Optional *bookings* (used by the MSA-like baseline) reserve ``[offset, offset + size)`` for a
value over its whole lifetime; they are never victims. When a booking starts and its range is
held by a value the current operator needs, the booking is dropped and the value is managed
like any other (unless that value is the booking's in-place partner, below).

In-place pairs (docs/semantics.md): an output whose paired input is resident and not needed
afterwards (never read again, and not an output still owing its writeback) is written into the
input's buffer: no new space. Compaction places every pair of the operator as one buffer, also
when the input is read later (it is then spilled first if it has no off-chip copy, and reloaded
at its next read): that is what makes strict mode feasible down to M_R, which counts each pair
once.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections import defaultdict

from memmap import limits
from memmap.baselines.space import Space
from memmap.plan import Plan, Residency, Transfer
from memmap.problem import Problem


@dataclasses.dataclass(frozen=True)
class Booking:
    value: int
    start: int
    end: int
    offset: int


class _State:
    def __init__(self, problem: Problem, schedule):
        g = problem.graph
        self.p = problem
        self.g = g
        self.schedule = list(schedule)
        self.n = len(schedule)
        self.asz = problem.alloc_size
        self.managed = problem.managed
        self.pos = [0] * len(g.ops)
        for t, o in enumerate(schedule):
            self.pos[o] = t
        self.uses: dict[int, list[int]] = defaultdict(list)
        for t, o in enumerate(schedule):
            for v in problem.op_values[o]:
                self.uses[v].append(t)   # every step the value must be present (strict)
        self.reads: dict[int, list[int]] = defaultdict(list)
        for t, o in enumerate(schedule):
            for v in g.ops[o].inputs:
                if self.managed[v]:
                    self.reads[v].append(t)
        self.space = Space(problem.target.capacity_bytes)
        self.start: dict[int, int] = {}        # resident value -> residency start
        self.has_copy = [v.producer is None for v in g.values]
        self.loaded_once = [False] * len(g.values)
        self.created_step: dict[int, int] = {}
        self.residencies: list[Residency] = []
        self.transfers: list[Transfer] = []
        self.booked: set[int] = set()

    def next_read(self, v: int, t: int) -> float:
        """First step > t at which v is read (inf if never)."""
        r = self.reads.get(v, ())
        i = bisect.bisect_right(r, t)
        return r[i] if i < len(r) else math.inf

    def needs_copy(self, v: int, t: int) -> bool:
        return not self.has_copy[v] and self.next_read(v, t - 1) != math.inf

    def end_residency(self, v: int, end: int) -> None:
        off = self.space.offset_of(v)
        self.space.remove(v)
        self.residencies.append(Residency(v, self.start.pop(v), end, off))

    def evict(self, v: int, t: int) -> None:
        """Drop v before step t (its residency ends at t-1), spilling it when needed."""
        if self.needs_copy(v, t):
            val = self.g.values[v]
            step = self.created_step.get(v, self.start[v])
            self.transfers.append(Transfer(step, "writeback" if val.is_output else "spill", v, val.size_bytes))
            self.has_copy[v] = True
        self.booked.discard(v)
        self.end_residency(v, t - 1)

    def free_after(self, v: int, t: int) -> bool:
        """Nothing needs v's scratchpad copy after step t (no later read, no writeback owed)."""
        return self.next_read(v, t) == math.inf and (self.has_copy[v] or not self.g.values[v].is_output)

    def hand_over(self, vi: int, vo: int, t: int) -> None:
        """The operator at step t writes vo into vi's buffer: vi's residency ends at t (after a
        spill, issued at its creation, if it is read later and has no off-chip copy) and vo is
        created at the same offset."""
        off = self.space.offset_of(vi)
        if not self.has_copy[vi] and self.next_read(vi, t) != math.inf:
            val = self.g.values[vi]
            step = self.created_step.get(vi, self.start[vi])
            self.transfers.append(Transfer(step, "writeback" if val.is_output else "spill", vi, val.size_bytes))
            self.has_copy[vi] = True
        self.booked.discard(vi)
        self.end_residency(vi, t)
        self.place(vo, off, t, created=True)

    def unplace_created(self, v: int, t: int) -> None:
        """Undo the creation of v at step t (a compaction re-places it with its in-place input)."""
        self.space.remove(v)
        del self.start[v]
        self.created_step.pop(v, None)
        if self.g.values[v].is_output:
            self.transfers = [tr for tr in self.transfers
                              if not (tr.value == v and tr.step == t and tr.kind == "writeback")]
            self.has_copy[v] = False

    def place(self, v: int, offset: int, t: int, *, created: bool) -> None:
        self.space.add(v, offset, self.asz[v])
        self.start[v] = t
        if created:
            self.created_step[v] = t
            val = self.g.values[v]
            if val.is_output:
                self.transfers.append(Transfer(t, "writeback", v, val.size_bytes))
                self.has_copy[v] = True
        else:
            kind = "reload" if self.loaded_once[v] or self.g.values[v].producer is not None else "load"
            self.loaded_once[v] = True
            self.transfers.append(Transfer(t, kind, v, self.g.values[v].size_bytes))


def run_engine(problem: Problem, schedule, *, solver: str, bookings=(), info=None) -> Plan:
    """Run the replacement engine over ``schedule``; returns an (unverified) plan."""
    s = _State(problem, schedule)
    g, n, asz = s.g, s.n, s.asz
    strict = problem.mode == "strict"
    bookings_at: dict[int, list[Booking]] = defaultdict(list)
    for b in bookings:
        bookings_at[b.start].append(b)
    booking_end: dict[int, int] = {}
    future_bookings = sorted(bookings, key=lambda b: b.start)
    fb_starts = [b.start for b in future_bookings]

    def conflicts_soon(offset: int, size: int, t: int, until: float) -> float:
        """Earliest start in (t, until] of a booking overlapping [offset, offset+size)."""
        i = bisect.bisect_right(fb_starts, t)
        while i < len(future_bookings) and future_bookings[i].start <= until:
            b = future_bookings[i]
            if b.offset < offset + size and offset < b.offset + asz[b.value]:
                return b.start
            i += 1
        return math.inf

    def choose_hole(v: int, t: int) -> int | None:
        size = asz[v]
        horizon = s.uses[v][-1] if s.uses.get(v) else t
        best = None
        for lo, hi in s.space.holes():
            if hi - lo < size:
                continue
            c = conflicts_soon(lo, size, t, horizon) if future_bookings else math.inf
            key = (0 if c == math.inf else 1, -c if c != math.inf else 0, hi - lo, lo)
            if best is None or key < best[0]:
                best = (key, lo)
        return None if best is None else best[1]

    def victim_key(u: int, t: int):
        nr = s.next_read(u, t - 1)
        dirty = s.needs_copy(u, t)
        return (nr, not dirty, asz[u], -u)

    for t, o in enumerate(schedule):
        limits.checkpoint("the baseline's replacement")
        op = g.ops[o]
        req = problem.op_values[o]
        pinned = set(req)
        partner = dict(problem.inplace_pairs[o])     # in-place output -> its input
        pending: dict[int, int] = {}                 # output -> input it is written into (end of step)
        # 0. bookings that start now claim their range
        for b in bookings_at.get(t, ()):
            lo, hi = b.offset, b.offset + asz[b.value]
            occ = s.space.overlapping(lo, hi)
            vi = partner.get(b.value)
            if vi is not None and occ == [vi] and s.space.offset_of(vi) == lo and s.free_after(vi, t):
                pending[b.value] = vi                # booked at its input's offset: in place
                s.booked.add(b.value)
                booking_end[b.value] = b.end
                continue
            if b.value in s.space or any(u in pinned for u in occ):
                continue   # dropped: the value is managed like any other
            for u in occ:
                s.evict(u, t)
            created = g.values[b.value].producer is not None and s.pos[g.values[b.value].producer] == t
            s.place(b.value, b.offset, t, created=created)
            s.booked.add(b.value)
            booking_end[b.value] = b.end
        # 1. bring the working set in (in-place outputs last: their inputs are resident then)
        todo = [v for v in req if v not in s.space and v not in pending]
        todo.sort(key=lambda v: (v in partner, -asz[v], v))
        for v in todo:
            if v in pending:
                continue                             # placed with its input by a compaction
            created = g.values[v].producer == o
            vi = partner.get(v)
            if vi is not None and vi in s.space and s.free_after(vi, t):
                pending[v] = vi                      # written into its input's buffer
                continue
            if not strict:
                # tiered: bring in only when a hole is free, or when evicting values read later
                # than this one's next read makes room (Belady bypass); else use slow memory
                off = choose_hole(v, t)
                if off is None:
                    mine = s.next_read(v, t)
                    cands = sorted((u for u in s.space.owners() if u not in pinned and u not in s.booked
                                    and s.next_read(u, t - 1) > mine),
                                   key=lambda u: victim_key(u, t), reverse=True)
                    room = sum(hi - lo for lo, hi in s.space.holes()) + sum(asz[u] for u in cands)
                    if room >= asz[v]:
                        for u in cands:
                            s.evict(u, t)
                            off = choose_hole(v, t)
                            if off is not None:
                                break
                if off is None:
                    if created:
                        s.has_copy[v] = True   # produced straight into slow memory
                    continue
                s.place(v, off, t, created=created)
                continue
            off = choose_hole(v, t)
            while off is None:
                cands = [u for u in s.space.owners() if u not in pinned and u not in s.booked]
                if not cands:
                    cands = [u for u in s.space.owners() if u not in pinned]  # give up bookings
                if vi is not None and vi in s.space:
                    # writing v into its input's buffer evicts the input after this step: a
                    # Belady candidate like the others, keyed by its next read after t
                    nr = s.next_read(vi, t)
                    key = (nr, s.has_copy[vi] or nr == math.inf, asz[vi], -vi)
                    if not cands or key >= max(victim_key(u, t) for u in cands):
                        pending[v] = vi
                        break
                if not cands:
                    break
                u = max(cands, key=lambda u: victim_key(u, t))
                s.evict(u, t)
                off = choose_hole(v, t)
            if v in pending:
                continue
            if off is None:
                # compaction: re-place the whole working set from offset 0, each in-place pair
                # as one buffer (the working set, pairs once, fits: it is at most M_R)
                for u in s.space.owners():
                    if u in partner and s.start[u] == t:
                        s.unplace_created(u, t)      # claimed by its booking: re-placed in place
                placed_now = [u for u in s.space.owners() if s.start[u] == t]
                for u in list(s.space.owners()):
                    if u in placed_now:
                        continue
                    s.evict(u, t)
                for u in placed_now:
                    s.space.remove(u)
                cursor = 0
                written_into = {vi: vo for vo, vi in partner.items()}
                pending.clear()
                for u in sorted(req, key=lambda u: (-asz[u], u)):
                    if u in partner:
                        continue                     # placed with its input
                    if u in placed_now:
                        s.space.add(u, cursor, asz[u])
                    else:
                        s.place(u, cursor, t, created=g.values[u].producer == o)
                    if u in written_into:
                        pending[written_into[u]] = u
                    cursor += asz[u]
                break
            s.place(v, off, t, created=created)
        for vo, vi in pending.items():
            s.hand_over(vi, vo, t)
        # 2. free what is dead
        for v in list(s.space.owners()):
            if v in s.booked and booking_end.get(v, n) > t:
                continue
            if s.next_read(v, t) == math.inf and (s.has_copy[v] or not g.values[v].is_output) and t < n - 1:
                s.booked.discard(v)
                s.end_residency(v, t)
    for v in list(s.space.owners()):
        s.end_residency(v, n - 1)
    return Plan.assemble(problem, schedule, s.residencies, s.transfers, solver=solver, info=info)
