"""Baseline (a): an XLA memory-space-assignment-like greedy.

As XLA's MSA (openxla/xla, xla/service/memory_space_assignment): values are sorted by
*memory boundedness* (the roofline time they save in fast memory, divided by the square root of
their size; then larger first, then shorter live range); each in turn is given a scratchpad range
for its whole live range at a best-fit offset if one is free over the whole range (time x
address), which keeps it in fast memory with no copies at all. Values that do not get a whole
range are handled per use segment by the replacement engine (best-fit placement, Belady
eviction, reload before use), and every reload is then hoisted as an early prefetch where the
address range is free.

In strict mode the whole-range reservations keep headroom: at every step they leave room (in
bytes) for the running operator's values that are not reserved, so the engine can always place
them; it compacts when fragmentation still gets in the way.
"""

from __future__ import annotations

import numpy as np

from memmap import limits
from memmap.baselines.engine import Booking, run_engine
from memmap.cost import memory_boundedness
from memmap.plan import Plan
from memmap.problem import Problem
from memmap.scheduling import live_ranges
from memmap.static_alloc import best_fit_offset


def plan_reservations(problem: Problem, schedule) -> list[Booking]:
    """Whole-live-range reservations in memory-boundedness order (see module docstring)."""
    n = len(schedule)
    cap = problem.target.capacity_bytes
    asz = problem.alloc_size
    strict = problem.mode == "strict"
    lr = live_ranges(problem, schedule)
    prio = memory_boundedness(problem, schedule)
    points: dict[int, list[int]] = {v: [] for v in lr}
    req_unbooked = np.zeros(n, dtype=np.int64)
    for t, o in enumerate(schedule):
        for v in problem.op_values[o]:
            points[v].append(t)
            req_unbooked[t] += asz[v]
    booked = np.zeros(n, dtype=np.int64)
    # in-place pairs whose input's live range ends at the operator's step: the second of the two
    # to be reserved tries its partner's offset first (one buffer, as the engine then shares it)
    partner: dict[int, int] = {}
    for t, o in enumerate(schedule):
        for vo, vi in problem.inplace_pairs[o]:
            if vi in lr and vo in lr and lr[vi][1] == t:
                partner[vo] = vi
                partner[vi] = vo
    where: dict[int, int] = {}      # reserved value -> index in b_*
    order = sorted(lr, key=lambda v: (-prio.get(v, 0.0), -asz[v], lr[v][1] - lr[v][0], v))
    b_lo: list[int] = []
    b_hi: list[int] = []
    b_off: list[int] = []
    b_end: list[int] = []
    out: list[Booking] = []
    for v in order:
        limits.checkpoint("the msa baseline")
        a, b = lr[v]
        if not strict and prio.get(v, 0.0) <= 0.0:
            continue
        if strict:
            if b - a + 1 == len(points[v]):
                continue   # needed at every step of its life: the engine keeps it anyway
            extra = np.full(b - a + 1, asz[v], dtype=np.int64)
            extra[np.asarray(points[v]) - a] = 0
            if int((booked[a:b + 1] + req_unbooked[a:b + 1] + extra).max()) > cap:
                continue
        off = None
        if b_lo:
            lo_arr, hi_arr = np.asarray(b_lo), np.asarray(b_hi)
            mask = (lo_arr <= b) & (hi_arr >= a)
            k = where.get(partner.get(v, -1))
            if k is not None:
                others = mask.copy()
                others[k] = False
                x = b_off[k]
                if not np.any(others & (np.asarray(b_off) < x + asz[v]) & (np.asarray(b_end) > x)):
                    off = x          # in place: the partner's offset is free over the whole range
            if off is None:
                offs = np.asarray(b_off)[mask]
                off = best_fit_offset(offs, np.asarray(b_end)[mask], asz[v], cap)
        else:
            off = 0 if asz[v] <= cap else None
        if off is None:
            continue
        where[v] = len(b_lo)
        b_lo.append(a)
        b_hi.append(b)
        b_off.append(off)
        b_end.append(off + asz[v])
        booked[a:b + 1] += asz[v]
        req_unbooked[np.asarray(points[v])] -= asz[v]
        out.append(Booking(v, a, b, off))
    return out


def solve_msa(problem: Problem) -> Plan:
    problem.check_feasible()
    sched = tuple(problem.graph.default_schedule)
    bookings = plan_reservations(problem, sched)
    return run_engine(problem, sched, solver="msa", bookings=bookings,
                      info={"reservations": len(bookings)})
