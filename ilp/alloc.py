"""Fixed-lifetime allocation (the MiniMalloc problem): give every buffer an offset.

Glossary
--------
* buffer: ``id, lower, upper, size``; live on the half-open step range ``[lower, upper)``.
* section: a maximal step range on which the set of live buffers does not change. Two buffers
  overlap in time iff they share a section, so the problem only depends on sections.
* capacity: the address space ``[0, capacity)``; a placement needs
  ``0 <= offset`` and ``offset + size <= capacity`` and no two time-overlapping buffers may share
  an address.
* height: ``max(offset + size)`` of a placement; the peak live bytes (the largest section total)
  is a lower bound on it.

Method (docs/alloc.md proves each step)
---------------------------------------
1. Fast infeasibility: a buffer larger than the capacity, or a step whose live bytes exceed it.
2. Sizes and the capacity are divided by the GCD of the sizes (``capacity // g``).
3. Greedy best fit in several orders (``memmap.static_alloc.greedy_allocate``).
4. Exact branch and bound in MiniMalloc's canonical form: buffers are placed in non-decreasing
   (offset, preorder index) order, each at its lowest offset above the placed buffers that
   overlap it in time; a buffer that could no longer go below every candidate's offset prunes
   the node (dominance); sections prune nodes whose remaining buffers cannot fit above their
   lowest possible start (section inference, watched witnesses); the problem splits into
   independent parts wherever no unplaced buffer crosses a section boundary (a part that fails
   backjumps to the split that created it, and each new part is preordered again from the
   current section totals); a failed candidate whose placement raised no other buffer fails its
   node (hatless pruning); identical buffers are placed in index order; failed states are
   remembered. Three preordering heuristics run round robin with a doubling node budget.
   The search is one iterative kernel over int64 arrays, compiled with numba when installed.
5. If the time budget is not yet spent and there are at most ``CPSAT_MAX_BUFFERS`` buffers,
   CP-SAT ``add_no_overlap_2d`` over (time, address) with the greedy offsets as a hint.

Limits: the deadline of :mod:`memmap.limits` cuts every step (the greedy between chunks of
buffers, the branch and bound every few milliseconds, CP-SAT through its time limit), Ctrl-C
too, and the branch and bound's arrays stay within ``max_memory_bytes`` (docs/alloc.md,
"Limits").

``solve_alloc`` is deterministic for a given seed and worker count whenever it finishes before
its time limit: the branch and bound is single-threaded and budgeted in nodes, not seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from memmap import limits
from memmap.errors import BadInputError
from memmap.ir.graph import MAX_SIZE_BYTES
from memmap.numba_kernels import BACKEND as SEARCH_BACKEND
from memmap.numba_kernels import compile_kernel as _jit
from memmap.numba_kernels import numba as _numba
from memmap.numba_kernels import warn_interpreted

__all__ = ["AllocProblem", "AllocResult", "read_minimalloc_csv", "solve_alloc", "check_alloc",
           "peak_live", "pack_buffers", "STATUSES"]

STATUSES = ("OPTIMAL", "FEASIBLE", "INFEASIBLE", "UNKNOWN")
REQUIRED_COLUMNS = ("id", "lower", "upper", "size")
# MiniMalloc's three preordering heuristics (Total of the sections, Width = lifetime, Area), TWA
# first; _Ordering also knows C (sections spanned) and Z (size).
_PREORDERINGS = ("TWA", "WAT", "TAW")


@dataclasses.dataclass(frozen=True)
class AllocProblem:
    """Buffers with fixed lifetimes, as read from a MiniMalloc CSV.

    ``ids``, ``lower``, ``upper``, ``size_bytes`` have one entry per buffer ``[n]``; ``columns``
    is the CSV header and ``rows`` the raw cells (kept so that output repeats the input columns).
    """

    ids: tuple[str, ...]
    lower: tuple[int, ...]
    upper: tuple[int, ...]
    size_bytes: tuple[int, ...]
    columns: tuple[str, ...] = REQUIRED_COLUMNS
    rows: tuple[tuple[str, ...], ...] = ()
    source: str = "<memory>"

    def __post_init__(self):
        n = len(self.ids)
        if not (len(self.lower) == len(self.upper) == len(self.size_bytes) == n):
            raise BadInputError(f"{self.source}: ids, lower, upper and size_bytes differ in length")
        for k in range(n):
            if self.upper[k] <= self.lower[k]:
                raise BadInputError(f"{self.source}: buffer {self.ids[k]!r}: upper "
                                    f"{self.upper[k]} <= lower {self.lower[k]}")
            if self.size_bytes[k] < 0:
                raise BadInputError(f"{self.source}: buffer {self.ids[k]!r}: negative size")

    @classmethod
    def from_lists(cls, lower: Sequence[int], upper: Sequence[int], size_bytes: Sequence[int],
                   ids: Sequence[str] | None = None) -> AllocProblem:
        """Build a problem in memory (ids default to ``0..n-1``)."""
        ids = tuple(str(i) for i in range(len(size_bytes))) if ids is None else tuple(ids)
        rows = tuple((ids[k], str(lower[k]), str(upper[k]), str(size_bytes[k]))
                     for k in range(len(ids)))
        return cls(ids, tuple(int(x) for x in lower), tuple(int(x) for x in upper),
                   tuple(int(x) for x in size_bytes), REQUIRED_COLUMNS, rows)

    @property
    def n(self) -> int:
        return len(self.ids)


@dataclasses.dataclass(frozen=True)
class AllocResult:
    """What ``solve_alloc`` found.

    ``status``: ``OPTIMAL`` (placed, height equals the peak live bytes, so no placement is
    lower), ``FEASIBLE`` (placed within the capacity), ``INFEASIBLE`` (proved that no placement
    fits), ``UNKNOWN`` (the time limit ended the search without an answer). ``offsets`` ``[n]``
    in bytes, in input order, or ``None``. ``culprits`` explain an infeasibility in words.
    """

    status: str
    offsets: tuple[int, ...] | None
    height_bytes: int | None
    capacity_bytes: int
    peak_live_bytes: int
    wall_s: float
    method: str
    nodes: int = 0
    culprits: tuple[str, ...] = ()

    @property
    def placed(self) -> bool:
        return self.status in ("OPTIMAL", "FEASIBLE")


# --------------------------------------------------------------------------------------------
# Reading and checking


def read_minimalloc_csv(path: str | Path) -> AllocProblem:
    """Read ``id,lower,upper,size`` (extra columns kept); bad rows raise ``BadInputError``
    naming the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise BadInputError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise BadInputError(f"{path}: not a CSV text file (byte at offset {e.start} is not "
                            f"UTF-8)") from None
    reader = csv.reader(text.splitlines())
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise BadInputError(f"{path}: empty file (expected header id,lower,upper,size)") from None
    for col in REQUIRED_COLUMNS:
        if col not in header:
            raise BadInputError(f"{path}:1: missing column {col!r} (header: {','.join(header)})")
    if "offset" in header:
        raise BadInputError(f"{path}:1: column 'offset' already present")
    pos = {c: header.index(c) for c in REQUIRED_COLUMNS}
    ids, lower, upper, sizes, rows, seen = [], [], [], [], [], {}
    for line_no, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise BadInputError(f"{path}:{line_no}: {len(row)} cells, header has {len(header)}")
        vals = {}
        for col in ("lower", "upper", "size"):
            cell = row[pos[col]].strip()
            try:
                vals[col] = int(cell)
            except ValueError:
                raise BadInputError(f"{path}:{line_no}: column {col!r}: {cell!r} is not an "
                                    f"integer") from None
        bid = row[pos["id"]].strip()
        if not bid:
            raise BadInputError(f"{path}:{line_no}: column 'id': empty")
        if bid in seen:
            raise BadInputError(f"{path}:{line_no}: column 'id': duplicate id {bid!r} (first on "
                                f"line {seen[bid]})")
        seen[bid] = line_no
        if vals["upper"] <= vals["lower"]:
            raise BadInputError(f"{path}:{line_no}: column 'upper': {vals['upper']} <= lower "
                                f"{vals['lower']} (lifetimes are half-open [lower, upper))")
        if vals["size"] < 0:
            raise BadInputError(f"{path}:{line_no}: column 'size': negative size {vals['size']}")
        for col, v in vals.items():
            if abs(v) > MAX_SIZE_BYTES:
                raise BadInputError(f"{path}:{line_no}: column {col!r}: {v} is beyond 2**62 (the "
                                    f"search keeps 64-bit integers)")
        ids.append(bid)
        lower.append(vals["lower"])
        upper.append(vals["upper"])
        sizes.append(vals["size"])
        rows.append(tuple(row))
    if sum(sizes) > MAX_SIZE_BYTES:
        raise BadInputError(f"{path}: the sizes add up to {sum(sizes)} bytes, beyond 2**62 (the "
                            f"search keeps 64-bit integers)")
    return AllocProblem(tuple(ids), tuple(lower), tuple(upper), tuple(sizes), tuple(header),
                        tuple(rows), str(path))


def peak_live(problem: AllocProblem) -> tuple[int, int | None]:
    """``(peak live bytes, first step where it occurs)``; ``(0, None)`` without buffers."""
    events: dict[int, int] = {}
    for lo, hi, sz in zip(problem.lower, problem.upper, problem.size_bytes):
        events[lo] = events.get(lo, 0) + sz
        events[hi] = events.get(hi, 0) - sz
    live, peak, at = 0, 0, None
    for t in sorted(events):
        live += events[t]
        if live > peak:
            peak, at = live, t
    return peak, at


def _peak(lower: Sequence[int], upper: Sequence[int], size: Sequence[int]) -> int:
    """Peak live bytes of half-open lifetimes (ends before starts at one step)."""
    t = np.concatenate([np.asarray(lower, dtype=np.int64), np.asarray(upper, dtype=np.int64)])
    d = np.concatenate([np.asarray(size, dtype=np.int64), -np.asarray(size, dtype=np.int64)])
    return int(np.cumsum(d[np.lexsort((d, t))]).max(initial=0))


def check_alloc(problem: AllocProblem, capacity: int, offsets: Sequence[int] | None,
                max_errors: int = 100) -> list[str]:
    """Independent checker: violated rules as messages (empty list: valid placement), at most
    ``max_errors`` of them.

    A sweep over time keeps the buffers live at the current step sorted by offset; a buffer
    that starts overlaps a live one in address iff it overlaps its neighbour below or above in
    that order (the live ones are disjoint, as each was checked when it started). Time
    ``O(n log n + n k)`` for at most ``k`` buffers live at once, memory ``O(n)``."""
    import bisect

    errors: list[str] = []
    n = problem.n
    if offsets is None or len(offsets) != n:
        return [f"expected {n} offsets, got {None if offsets is None else len(offsets)}"]
    off = np.asarray(offsets, dtype=np.int64)
    lo = np.asarray(problem.lower, dtype=np.int64)
    hi = np.asarray(problem.upper, dtype=np.int64)
    sz = np.asarray(problem.size_bytes, dtype=np.int64)
    for k in np.nonzero((off < 0) | (off + sz > capacity))[0][:max_errors]:
        errors.append(f"buffer {problem.ids[k]!r}: [{off[k]}, {off[k] + sz[k]}) outside "
                      f"[0, {capacity})")
    ids = problem.ids
    nz = np.flatnonzero(sz > 0)
    # events: (time, 0 = end / 1 = start, buffer); at one step ends come first (half-open)
    t = np.concatenate([hi[nz], lo[nz]])
    kind = np.concatenate([np.zeros(len(nz), dtype=np.int64), np.ones(len(nz), dtype=np.int64)])
    who = np.concatenate([nz, nz])
    live: list[tuple[int, int]] = []                   # (offset, buffer), sorted
    inserted = np.zeros(n, dtype=bool)
    for e in np.lexsort((who, kind, t)).tolist():
        k = int(who[e])
        if kind[e] == 0:
            if inserted[k]:
                del live[bisect.bisect_left(live, (int(off[k]), k))]
            continue
        key = (int(off[k]), k)
        pos = bisect.bisect_left(live, key)
        clash = [m for _, m in live[max(0, pos - 1):pos + 1]
                 if off[m] < off[k] + sz[k] and off[k] < off[m] + sz[m]]
        for m in clash:
            if len(errors) < max_errors:
                errors.append(f"buffers {ids[m]!r} and {ids[k]!r} overlap in time "
                              f"[{max(lo[k], lo[m])}, {min(hi[k], hi[m])}) and address "
                              f"[{max(off[k], off[m])}, {min(off[k] + sz[k], off[m] + sz[m])})")
        if not clash:                                   # keep the live set disjoint
            live.insert(pos, key)
            inserted[k] = True
    return errors


# --------------------------------------------------------------------------------------------
# Branch and bound


# The search is one iterative, resumable kernel over int64 arrays: compiled with numba when it is
# installed (about a microsecond per node), run by the interpreter otherwise (same results, about
# 100x slower; a warning says so once).

_BIG = 1 << 62
_HASH_MULT = -7046029254386353131          # 0x9E3779B97F4A7C15 as a signed 64-bit integer
_MEMO_SLOTS = 1 << 18                      # failed-state cache entries per preordering (lossy)
_ORDER_ROOM_MAX = 1 << 22                  # entries of the part-order stack (32 MiB at most)
# kernel loop iterations between two returns to the driver (deadline, Ctrl-C): milliseconds
_WORK_CHUNK = 1 << 22
# default memory budget of the branch and bound's arrays (docs/alloc.md, "Limits")
SEARCH_MEMORY_BYTES = 2 << 30
# CP-SAT's no_overlap_2d runs on at most this many buffers: its memory grows with the buffers'
# overlaps, and on large traces it finds nothing in the time left (27k buffers at peak live
# bytes: 2.9 GB and no answer in 20 s; the challenging files, 154-454 buffers, need it least)
CPSAT_MAX_BUFFERS = 5_000
# kernel status codes (_GROW: the undo trail needs more room before the next placement)
_BUDGET, _SOLVED, _INFEASIBLE, _GROW = 0, 1, 2, 3
# kernel modes (what the loop does next)
_ENTER, _NEXT, _FAIL = 0, 1, 2
# scalar state ``sc``: depth, mode, nodes of this run, pending height, undo top, section stamp,
# top of the part-order stack
_SC_DEPTH, _SC_MODE, _SC_NODES, _SC_PH, _SC_UT, _SC_STAMP, _SC_OT = range(7)
# columns of ``pend`` (one pending part): section range, encoded last placement, level that
# created it, its buffers in preorder at ``olist[oa:ob]``
_PD_SA, _PD_SB, _PD_LAST, _PD_BORN, _PD_OA, _PD_OB = range(6)
# per-level columns of ``lv``
(_LV_H1, _LV_H2, _LV_LAST, _LV_MINH, _LV_CUR, _LV_UT, _LV_PH, _LV_SA, _LV_SB, _LV_PLAST,
 _LV_BORN, _LV_HATLESS, _LV_J, _LV_OA, _LV_OB, _LV_OT) = range(16)


@_jit
def _undo_level(lv, level, size, s0, s1, off, minoff, total, cuts, pend, undo, ut):
    """Take back the buffer placed at ``level`` (it was committed); returns ``(ut, ph, ot)``."""
    j = lv[level, _LV_J]
    for k in range(s0[j], s1[j] - 1):
        cuts[k] += 1
    floor = lv[level, _LV_UT]
    while ut > floor:
        ut -= 1
        minoff[undo[ut, 0]] = undo[ut, 1]
    for s in range(s0[j], s1[j]):
        total[s] += size[j]
    off[j] = -1
    ph = lv[level, _LV_PH]
    pend[ph - 1, _PD_SA] = lv[level, _LV_SA]
    pend[ph - 1, _PD_SB] = lv[level, _LV_SB]
    pend[ph - 1, _PD_LAST] = lv[level, _LV_PLAST]
    pend[ph - 1, _PD_BORN] = lv[level, _LV_BORN]
    pend[ph - 1, _PD_OA] = lv[level, _LV_OA]
    pend[ph - 1, _PD_OB] = lv[level, _LV_OB]
    return ut, ph, lv[level, _LV_OT]


@_jit
def _preorder_part(olist, a, b, gkey, tkey, skey, tmp):
    """Sort ``olist[a:b]`` (buffer indices) by ``(gkey, tkey, skey)``, ascending; ``skey`` is
    unique, so the order is total. Bottom-up merge sort through ``tmp``."""
    width = 1
    m = b - a
    while width < m:
        for lo in range(a, b, 2 * width):
            mid = min(lo + width, b)
            hi = min(lo + 2 * width, b)
            i = lo
            k = mid
            w = lo
            while i < mid and k < hi:
                x = olist[i]
                y = olist[k]
                if (gkey[y] < gkey[x] or (gkey[y] == gkey[x] and (
                        tkey[y] < tkey[x] or (tkey[y] == tkey[x] and skey[y] < skey[x])))):
                    tmp[w] = y
                    k += 1
                else:
                    tmp[w] = x
                    i += 1
                w += 1
            while i < mid:
                tmp[w] = olist[i]
                i += 1
                w += 1
            while k < hi:
                tmp[w] = olist[k]
                k += 1
                w += 1
        for p in range(a, b):
            olist[p] = tmp[p]
        width *= 2


@_jit
def _search_kernel(size, s0, s1, twin, live_ptr, live_idx, ov_ptr, ov_idx, deg, use_ov, gkey,
                   tkey, skey, use_total, zob1, zob2, cap, off, minoff, total, cuts, pend, lv,
                   undo, sec_mark, witness, parts, part_of, olist, otmp, memo, sc, node_limit,
                   work_limit):
    """Canonical branch and bound, run until ``sc[_SC_NODES] == node_limit`` or about
    ``work_limit`` loop iterations (returns ``_BUDGET``; call again to resume: it stops only
    between nodes, so where it stops never changes the search), a placement (``_SOLVED``,
    offsets in ``off``), a proof that none exists (``_INFEASIBLE``), or ``_GROW`` when the undo
    trail ``undo`` has no room for the next placement (enlarge it and call again).

    The buffers that overlap buffer ``j`` in time are ``ov_idx[ov_ptr[j]:ov_ptr[j + 1]]`` when
    ``use_ov`` (``deg[j]`` of them), else they are found through the live lists of ``j``'s
    sections (``live_idx[live_ptr[s]:live_ptr[s + 1]]``: no pairwise lists in memory, more
    work per placement).

    ``pend[:ph]`` is a stack of independent parts (section range ``[sa, sb)``, encoded last
    placement ``offset * n + rank`` or -1, level that created it or -1, and the part's buffers in
    preorder, ``olist[oa:ob]``); the top one is being solved. A buffer's rank is its position in
    that list: each part made by a split gets its own preorder, sorted by ``(gkey, -T, skey)``
    where T is the largest unplaced total over the buffer's sections at that moment (``tkey``
    is scratch; with ``use_total == 0`` T is not part of the heuristic). ``olist`` is a stack:
    a level that splits its part pushes the new lists and its undo pops them; when it is full a
    new part keeps its parent's list (a preorder too, filtered by section range). ``lv[d]``
    records the node at depth ``d``: memo key, ``last``, ``min_height``, the candidate placed now
    (``CUR`` key, ``J`` buffer) and what undoes it. ``witness[s]`` is a hint (checked before
    use, never undone): an unplaced buffer of section ``s`` with ``minoff + total[s] <= cap``.
    """
    n = size.shape[0]
    mask = memo.shape[0] - 1
    room = olist.shape[0]
    depth = sc[_SC_DEPTH]
    mode = sc[_SC_MODE]
    nodes = sc[_SC_NODES]
    ph = sc[_SC_PH]
    ut = sc[_SC_UT]
    stamp = sc[_SC_STAMP]
    ot = sc[_SC_OT]
    status = _BUDGET
    work = 0
    while True:
        if mode == _ENTER:
            if ph == 0:
                status = _SOLVED
                break
            if nodes >= node_limit or work >= work_limit:
                break
            nodes += 1
            sa = pend[ph - 1, _PD_SA]
            sb = pend[ph - 1, _PD_SB]
            last = pend[ph - 1, _PD_LAST]
            oa = pend[ph - 1, _PD_OA]
            ob = pend[ph - 1, _PD_OB]
            work += ob - oa
            # The memo key: the unplaced set, their minoff and (once ``last`` constrains the
            # order) their ranks; a fresh part fails iff it is infeasible, whatever its order.
            h1 = 0
            h2 = 0
            minh = _BIG
            for p in range(oa, ob):
                j = olist[p]
                if off[j] < 0 and sa <= s0[j] < sb:
                    h1 ^= zob1[j]
                    x = (zob2[j] + minoff[j] * n + (p - oa if last >= 0 else 0)) * _HASH_MULT
                    h2 += x ^ (x >> 29)
                    t = minoff[j] + size[j]
                    if t < minh:
                        minh = t
            slot = h1 & mask
            if memo[slot, 0] == h1 and memo[slot, 1] == h2 and memo[slot, 2] <= last:
                mode = _FAIL
                continue
            lv[depth, _LV_H1] = h1
            lv[depth, _LV_H2] = h2
            lv[depth, _LV_LAST] = last
            lv[depth, _LV_MINH] = minh
            lv[depth, _LV_CUR] = last      # candidates come after (offset, rank) = last
            mode = _NEXT
        elif mode == _NEXT:
            if work >= work_limit:
                break
            sa = pend[ph - 1, _PD_SA]
            sb = pend[ph - 1, _PD_SB]
            oa = pend[ph - 1, _PD_OA]
            ob = pend[ph - 1, _PD_OB]
            work += ob - oa
            cur = lv[depth, _LV_CUR]
            minh = lv[depth, _LV_MINH]
            if cur != lv[depth, _LV_LAST] and lv[depth, _LV_HATLESS]:
                best = -1                              # hatless pruning: the node fails
            else:
                best = _BIG
            j = -1
            for p in range(oa, ob):
                if best < 0:
                    break
                q = olist[p]
                if off[q] < 0 and sa <= s0[q] < sb:
                    m = minoff[q]
                    if m < minh:                       # dominance
                        k = m * n + (p - oa)
                        if cur < k < best:
                            t = twin[q]
                            if t < 0 or off[t] >= 0:   # identical buffers in index order
                                best = k
                                j = q
            if best == _BIG or best < 0:               # every candidate failed: remember it
                h1 = lv[depth, _LV_H1]
                h2 = lv[depth, _LV_H2]
                last = lv[depth, _LV_LAST]
                slot = h1 & mask
                if memo[slot, 0] == h1 and memo[slot, 1] == h2:
                    if last < memo[slot, 2]:
                        memo[slot, 2] = last
                else:
                    memo[slot, 0] = h1
                    memo[slot, 1] = h2
                    memo[slot, 2] = last
                mode = _FAIL
                continue
            if ut + deg[j] > undo.shape[0]:            # no room to record this placement
                status = _GROW
                break
            lv[depth, _LV_CUR] = best
            o = best // n
            top = o + size[j]
            off[j] = o
            for s in range(s0[j], s1[j]):
                total[s] -= size[j]
            u0 = ut
            ok = True
            lv[depth, _LV_HATLESS] = 0
            for s in range(sa, sb):                    # monotonic floor: all of it goes above o
                if o + total[s] > cap:
                    ok = False
                    break
            if ok:
                if use_ov:
                    work += ov_ptr[j + 1] - ov_ptr[j]
                    for p in range(ov_ptr[j], ov_ptr[j + 1]):
                        q = ov_idx[p]
                        if off[q] < 0 and minoff[q] < top:
                            undo[ut, 0] = q
                            undo[ut, 1] = minoff[q]
                            ut += 1
                            minoff[q] = top
                else:                                  # each q is raised (and recorded) once
                    for s in range(s0[j], s1[j]):
                        work += live_ptr[s + 1] - live_ptr[s]
                        for p in range(live_ptr[s], live_ptr[s + 1]):
                            q = live_idx[p]
                            if off[q] < 0 and minoff[q] < top:
                                undo[ut, 0] = q
                                undo[ut, 1] = minoff[q]
                                ut += 1
                                minoff[q] = top
                # hatless: placing j raised no unplaced buffer, so any solution of this node
                # can place j here first; if j's subtree fails, the node fails
                lv[depth, _LV_HATLESS] = 1 if ut == u0 else 0
                # unallocated floor of every section whose live set or floors changed
                stamp += 1
                for r in range(u0 - 1, ut):
                    x = j if r < u0 else undo[r, 0]
                    for s in range(s0[x], s1[x]):
                        if sec_mark[s] == stamp:
                            continue
                        sec_mark[s] = stamp
                        if total[s] == 0:
                            continue
                        w = witness[s]
                        lim = cap - total[s]
                        if w >= 0 and off[w] < 0 and minoff[w] <= lim:
                            continue
                        w = -1
                        work += live_ptr[s + 1] - live_ptr[s]
                        for p in range(live_ptr[s], live_ptr[s + 1]):
                            q = live_idx[p]
                            if off[q] < 0 and minoff[q] <= lim:
                                w = q
                                break
                        if w < 0:
                            ok = False
                            break
                        witness[s] = w
                    if not ok:
                        break
            if not ok:
                while ut > u0:
                    ut -= 1
                    minoff[undo[ut, 0]] = undo[ut, 1]
                for s in range(s0[j], s1[j]):
                    total[s] += size[j]
                off[j] = -1
                continue
            # commit: remember how to undo, then split the part where no unplaced buffer crosses
            for k in range(s0[j], s1[j] - 1):
                cuts[k] -= 1
            lv[depth, _LV_J] = j
            lv[depth, _LV_UT] = u0
            lv[depth, _LV_PH] = ph
            lv[depth, _LV_SA] = sa
            lv[depth, _LV_SB] = sb
            lv[depth, _LV_PLAST] = pend[ph - 1, _PD_LAST]
            lv[depth, _LV_BORN] = pend[ph - 1, _PD_BORN]
            lv[depth, _LV_OA] = oa
            lv[depth, _LV_OB] = ob
            lv[depth, _LV_OT] = ot
            born = pend[ph - 1, _PD_BORN]
            ph -= 1
            n_parts = 0
            start = sa
            for k in range(sa, sb):
                if k == sb - 1 or cuts[k] == 0:
                    empty = True
                    for s in range(start, k + 1):
                        if total[s] > 0:
                            empty = False
                            break
                    if not empty:
                        parts[n_parts, 0] = start
                        parts[n_parts, 1] = k + 1
                        n_parts += 1
                    start = k + 1
            if n_parts == 1 and parts[0, 0] == sa and parts[0, 1] == sb:
                pend[ph, _PD_SA] = sa                  # the same part goes on
                pend[ph, _PD_SB] = sb
                pend[ph, _PD_LAST] = best
                pend[ph, _PD_BORN] = born
                pend[ph, _PD_OA] = oa
                pend[ph, _PD_OB] = ob
                ph += 1
            else:
                # one pass over the parent's list buckets its unplaced buffers by part
                n_new = 0
                for q in range(n_parts):
                    parts[q, 2] = 0
                    for s in range(parts[q, 0], parts[q, 1]):
                        part_of[s] = q
                for p in range(oa, ob):
                    x = olist[p]
                    if off[x] < 0:
                        parts[part_of[s0[x]], 2] += 1
                        n_new += 1
                if ot + n_new <= room:                 # re-preorder with the current totals
                    for q in range(n_parts):
                        parts[q, 3] = ot               # write pointer of part q's list
                        ot += parts[q, 2]
                    for p in range(oa, ob):
                        x = olist[p]
                        if off[x] < 0:
                            q = part_of[s0[x]]
                            olist[parts[q, 3]] = x
                            parts[q, 3] += 1
                            if use_total:
                                tm = 0
                                for s in range(s0[x], s1[x]):
                                    if total[s] > tm:
                                        tm = total[s]
                                tkey[x] = -tm
                    for q in range(n_parts):
                        _preorder_part(olist, parts[q, 3] - parts[q, 2], parts[q, 3], gkey, tkey,
                                       skey, otmp)
                else:                                  # no room: keep the parent's order
                    for q in range(n_parts):
                        parts[q, 3] = ob
                        parts[q, 2] = ob - oa
                for q in range(n_parts - 1, -1, -1):   # leftmost part on top
                    pend[ph, _PD_SA] = parts[q, 0]
                    pend[ph, _PD_SB] = parts[q, 1]
                    pend[ph, _PD_LAST] = -1
                    pend[ph, _PD_BORN] = depth
                    pend[ph, _PD_OA] = parts[q, 3] - parts[q, 2]
                    pend[ph, _PD_OB] = parts[q, 3]
                    ph += 1
            depth += 1
            mode = _ENTER
        else:                                          # the node at ``depth`` failed
            last = pend[ph - 1, _PD_LAST]
            target = depth - 1 if last >= 0 else pend[ph - 1, _PD_BORN]
            if target < 0:
                status = _INFEASIBLE
                break
            # back to the level that placed into this part, or (backjump) to the one whose
            # split created it: the levels in between solved independent parts
            for level in range(depth - 1, target - 1, -1):
                ut, ph, ot = _undo_level(lv, level, size, s0, s1, off, minoff, total, cuts, pend,
                                         undo, ut)
            depth = target
            mode = _NEXT
    sc[_SC_DEPTH] = depth
    sc[_SC_MODE] = mode
    sc[_SC_NODES] = nodes
    sc[_SC_PH] = ph
    sc[_SC_UT] = ut
    sc[_SC_STAMP] = stamp
    sc[_SC_OT] = ot
    return status


@_jit
def _overlap_lists(s0, s1, live_ptr, live_idx, by_start, start_ptr, deg):
    """Per buffer, the other buffers that overlap it in time, as compressed rows ``(ptr [n + 1],
    idx [sum of deg])``: those live in its first section, then those starting inside its range."""
    n = s0.shape[0]
    ptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        ptr[i + 1] = ptr[i] + deg[i]
    idx = np.zeros(ptr[n], dtype=np.int32)
    for i in range(n):
        w = ptr[i]
        a = s0[i]
        for p in range(live_ptr[a], live_ptr[a + 1]):
            if live_idx[p] != i:
                idx[w] = live_idx[p]
                w += 1
        for p in range(start_ptr[a + 1], start_ptr[s1[i]]):
            idx[w] = by_start[p]
            w += 1
    return ptr, idx


@_jit
def _span_max(values, s0, s1):
    """``max(values[s0[i]:s1[i]])`` for every buffer ``i``."""
    out = np.zeros(s0.shape[0], dtype=np.int64)
    for i in range(s0.shape[0]):
        m = values[s0[i]]
        for s in range(s0[i] + 1, s1[i]):
            if values[s] > m:
                m = values[s]
        out[i] = m
    return out


def _search_bytes(n: int, n_sections: int, live: int, pairs: int, room: int) -> tuple[int, int]:
    """Bytes the search needs without and with the pairwise overlap lists: ``live`` entries of
    the section live lists, ``pairs`` of the overlap lists, ``room`` of the part-order stack."""
    base = (4 * live + 8 * n_sections * 20 + 8 * n * 60 + 16 * room
            + 3 * 24 * _MEMO_SLOTS + 16 * 4 * n)
    return base, base + 4 * pairs + 8 * n


class _Space:
    """What the preorderings share: the buffers (in the caller's order), their sections, live
    lists and, within the memory budget, overlap lists; and the state of the one search that
    runs at a time (the round robin restarts each ordering's tree on its turn).

    ``s0``, ``s1``: each buffer's half-open section range; ``size`` positive. Raises
    ``MemoryError`` when even the live lists exceed ``max_bytes``; without room for the overlap
    lists the search finds overlapping buffers through the live lists (same nodes, slower)."""

    def __init__(self, s0, s1, width, size, n_sections: int, capacity: int, *,
                 max_bytes: int | None = None):
        from memmap.static_alloc import live_lists, overlap_counts

        i64 = np.int64
        n = len(size)
        self.n, self.n_sections, self.cap = n, n_sections, capacity
        self.size = np.asarray(size, dtype=i64)
        self.s0 = np.asarray(s0, dtype=i64)
        self.s1 = np.asarray(s1, dtype=i64)
        self.width = np.asarray(width, dtype=i64)
        span = self.s1 - self.s0
        live = int(span.sum())
        self.by_start = np.argsort(self.s0, kind="stable").astype(i64)
        self.start_ptr = np.searchsorted(self.s0[self.by_start], np.arange(n_sections + 2),
                                         side="left").astype(i64)
        # pairs: each buffer's overlap count, from the number live at its first section
        cnt = np.zeros(n_sections + 1, dtype=i64)
        np.add.at(cnt, self.s0, 1)
        np.add.at(cnt, self.s1, -1)
        live_at = np.cumsum(cnt)
        self.deg = (live_at[self.s0] - 1 + self.start_ptr[self.s1] - self.start_ptr[self.s0 + 1]).astype(i64)
        pairs = int(self.deg.sum())
        self.total0 = np.zeros(n_sections + 1, dtype=i64)
        np.add.at(self.total0, self.s0, self.size)
        np.add.at(self.total0, self.s1, -self.size)
        self.total0 = np.cumsum(self.total0)[:max(n_sections, 1)]
        cuts = np.zeros(n_sections + 1, dtype=i64)
        np.add.at(cuts, self.s0, 1)
        np.add.at(cuts, self.s1 - 1, -1)
        self.cuts0 = np.cumsum(cuts)[:max(n_sections - 1, 1)]
        if n_sections <= 1:
            self.cuts0 = np.zeros(1, dtype=i64)
        bounds = [0] + [k + 1 for k in np.flatnonzero(self.cuts0[:max(n_sections - 1, 0)] == 0).tolist()]
        bounds.append(n_sections)
        self.bounds = np.asarray(bounds, dtype=i64)
        self.root_of = np.searchsorted(self.bounds, self.s0, side="right") - 1
        root_sizes = np.bincount(self.root_of, minlength=len(bounds))
        # Part-order stack: the root lists (n entries), then along any path at most one list
        # per placement, of the buffers still unplaced in its root part: k (k - 1) / 2 entries
        # for a root part of k buffers. Past _ORDER_ROOM_MAX a new part keeps its parent's order.
        need = n + int(sum(k * (k - 1) // 2 for k in root_sizes.tolist()))
        room = max(1, min(need, max(_ORDER_ROOM_MAX, n)))
        base, with_ov = _search_bytes(n, n_sections, live, pairs, room)
        self.bytes_needed = (base, with_ov)        # estimates, without and with overlap lists
        self.max_bytes = max_bytes
        if max_bytes is not None and base > max_bytes:
            raise MemoryError(f"the search needs about {base / 2**20:.0f} MiB (live lists of "
                              f"{live:,} entries), over the budget of {max_bytes / 2**20:.0f} MiB")
        self.use_ov = max_bytes is None or with_ov <= max_bytes
        self.live_ptr, self.live_idx = live_lists(self.s0, self.s1, max(n_sections, 1))
        if self.use_ov:
            self.ov_ptr, self.ov_idx = _overlap_lists(self.s0, self.s1, self.live_ptr,
                                                      self.live_idx, self.by_start,
                                                      self.start_ptr, self.deg)
        else:
            self.ov_ptr, self.ov_idx = np.zeros(n + 1, dtype=i64), np.zeros(1, dtype=np.int32)
        twin_of: dict[tuple[int, int, int], int] = {}
        self.twin = np.full(n, -1, dtype=i64)   # the previous identical buffer: placed first
        for i, k in enumerate(zip(self.s0.tolist(), self.s1.tolist(), self.size.tolist())):
            self.twin[i] = twin_of.get(k, -1)
            twin_of[k] = i
        rng = np.random.default_rng(0x6D656D6D6170)  # fixed: hashing must be deterministic
        self.zob1 = rng.integers(1, 1 << 62, size=n, dtype=i64)
        self.zob2 = rng.integers(1, 1 << 62, size=n, dtype=i64)
        self.olist = np.zeros(room, dtype=i64)
        self.otmp = np.zeros_like(self.olist)
        self.undo = np.zeros((max(4 * n, int(self.deg.max(initial=0)) + 1), 2), dtype=i64)
        self.lv = np.zeros((n + 1, 16), dtype=i64)
        self.pend = np.zeros((n_sections + 1, 6), dtype=i64)
        self.parts = np.zeros((n_sections + 1, 4), dtype=i64)   # range, count, list end
        self.part_of = np.zeros(max(n_sections, 1), dtype=i64)
        self.sec_mark = np.zeros(max(n_sections, 1), dtype=i64)
        self.witness = np.full(max(n_sections, 1), -1, dtype=i64)
        self.tkey = np.zeros(n, dtype=i64)
        self.sc = np.zeros(7, dtype=i64)
        self.off = np.full(n, -1, dtype=i64)
        self.minoff = np.zeros(n, dtype=i64)
        self.total = self.total0.copy()
        self.cuts = self.cuts0.copy()
        self.roots = [(a, b) for a, b in zip(bounds, bounds[1:]) if self.total0[a:b].any()]

    def grow_undo(self) -> bool:
        """Double the undo trail (False when that would pass the memory budget)."""
        extra = self.undo.nbytes
        if self.max_bytes is not None and self.nbytes() + extra > self.max_bytes:
            return False
        self.undo = np.concatenate([self.undo, np.zeros_like(self.undo)])
        return True

    def nbytes(self) -> int:
        return sum(a.nbytes for a in vars(self).values() if isinstance(a, np.ndarray))


class _Ordering:
    """One static preordering heuristic of the canonical search, with its failed-state cache,
    on a :class:`_Space` it shares with the other orderings.

    The root preorder sorts the buffers by the heuristic (ties: the caller's index). Each part
    made by a split is sorted again by the same heuristic with T taken from the unplaced totals
    at that moment (MiniMalloc's per-partition preordering); ties go to the caller's index.
    :meth:`restart` starts a fresh tree (the cache is kept: a remembered failure stays a
    failure); :meth:`advance` runs the kernel for more nodes.
    """

    def __init__(self, space: _Space, heuristic: str):
        if not heuristic or any(c not in "TWACZ" for c in heuristic):
            raise ValueError(f"preordering heuristic {heuristic!r}: use the letters T, W, A, C, Z")
        sp = self.space = space
        n = sp.n
        i64 = np.int64
        keys = {"T": _span_max(sp.total0, sp.s0, sp.s1) if n else np.zeros(0, dtype=i64),
                "W": sp.width, "A": sp.size * sp.width, "C": sp.s1 - sp.s0, "Z": sp.size}
        index = np.arange(n, dtype=i64)

        def ranks(letters: str, unique: bool) -> np.ndarray:
            """Dense rank of (-key for each letter) [+ index when ``unique``], ascending."""
            cols = [-keys[c] for c in letters] + ([index] if unique else [])
            if not cols:
                return np.zeros(n, dtype=i64)
            order = np.lexsort(cols[::-1])
            srt = np.stack([c[order] for c in cols])
            new = np.ones(n, dtype=bool)
            new[1:] = (srt[:, 1:] != srt[:, :-1]).any(axis=0)
            out = np.empty(n, dtype=i64)
            out[order] = np.cumsum(new) - 1
            return out

        self.order = np.argsort(ranks(heuristic, unique=True), kind="stable").astype(i64)
        # The heuristic is (static prefix, T, static suffix): a part is sorted by (gkey, -T, skey)
        # with gkey the dense rank of the prefix and skey the rank of (suffix, input index).
        cut = heuristic.find("T")
        prefix, suffix = (heuristic, "") if cut < 0 else (heuristic[:cut], heuristic[cut + 1:])
        self.use_total = 0 if cut < 0 else 1
        self.gkey = ranks(prefix, unique=cut < 0)
        self.skey = ranks(suffix, unique=True)
        # the root parts' lists, each in root preorder
        in_order = self.order[np.argsort(sp.root_of[self.order], kind="stable")]
        self.root_list = in_order
        counts = np.bincount(sp.root_of, minlength=len(sp.bounds))
        starts = np.concatenate([[0], np.cumsum(counts)])
        self.regions = [(int(starts[r]), int(starts[r + 1])) for r in range(len(sp.bounds) - 1)
                        if sp.total0[sp.bounds[r]:sp.bounds[r + 1]].any()]
        self.memo = np.zeros((_MEMO_SLOTS, 3), dtype=i64)
        self.memo[:, 2] = _BIG                     # an empty slot never prunes
        self.nodes = 0                             # over all runs
        self.run_nodes = 0                         # this tree
        self.restart()

    @property
    def n(self) -> int:
        return self.space.n

    def restart(self) -> None:
        """Fresh search tree: nothing placed, the root parts pending (in root preorder)."""
        sp = self.space
        sp.off[:] = -1
        sp.minoff[:] = 0
        sp.total[:] = sp.total0
        sp.cuts[:] = sp.cuts0
        sp.sc[:] = 0
        ot = len(self.root_list)
        sp.olist[:ot] = self.root_list
        for h, ((a, b), (oa, ob)) in enumerate(zip(reversed(sp.roots), reversed(self.regions))):
            sp.pend[h] = (a, b, -1, -1, oa, ob)    # leftmost part on top
        sp.sc[_SC_PH] = len(sp.roots)
        sp.sc[_SC_OT] = ot
        self.run_nodes = 0

    def advance(self, node_limit: int, work_limit: int = 1 << 62) -> int:
        """Run this tree until it has used ``node_limit`` nodes, or about ``work_limit`` loop
        iterations (then ``_BUDGET`` with fewer nodes: call again); returns a kernel status
        (never ``_GROW``: the undo trail is enlarged here, or ``_BUDGET`` with
        :attr:`out_of_memory` set when the memory budget forbids it)."""
        sp = self.space
        self.out_of_memory = False
        while True:
            before = int(sp.sc[_SC_NODES])
            with np.errstate(over="ignore"):       # hashing wraps (interpreted backend only)
                status = _search_kernel(sp.size, sp.s0, sp.s1, sp.twin, sp.live_ptr, sp.live_idx,
                                        sp.ov_ptr, sp.ov_idx, sp.deg, sp.use_ov, self.gkey,
                                        sp.tkey, self.skey, self.use_total, sp.zob1, sp.zob2,
                                        sp.cap, sp.off, sp.minoff, sp.total, sp.cuts, sp.pend,
                                        sp.lv, sp.undo, sp.sec_mark, sp.witness, sp.parts,
                                        sp.part_of, sp.olist, sp.otmp, self.memo, sp.sc,
                                        node_limit, work_limit)
            self.nodes += int(sp.sc[_SC_NODES]) - before
            self.run_nodes = int(sp.sc[_SC_NODES])
            if status != _GROW:
                return int(status)
            if not sp.grow_undo():
                self.out_of_memory = True
                return _BUDGET

    def offsets(self) -> list[int]:
        """The placement found, in the caller's buffer order."""
        return [int(x) for x in self.space.off]


def _sections(lower: Sequence[int], upper: Sequence[int]) -> tuple[list[int], list[int], int]:
    """Map each lifetime to a half-open range of elementary sections."""
    ts = sorted(set(lower) | set(upper))
    index = {t: k for k, t in enumerate(ts)}
    return [index[x] for x in lower], [index[x] for x in upper], max(len(ts) - 1, 0)


def _branch_and_bound(s0, s1, width, size, n_sections, capacity, deadline, progress, t0,
                      max_nodes: int | None = None, max_bytes: int | None = None):
    """Round robin over the preorderings with a doubling node budget (MiniMalloc's schedule),
    stopped by ``deadline`` (a ``perf_counter`` time), Ctrl-C (``KeyboardInterrupt``), the
    memory budget ``max_bytes`` or, deterministically, once the doubling budget passes
    ``max_nodes``. Sizes must be positive. The search is iterative (no recursion, any number of
    buffers) and returns to this loop every ``_WORK_CHUNK`` loop iterations of the kernel
    (milliseconds), where the deadline and Ctrl-C are checked: where it pauses never changes
    the search, only where the deadline cuts it.

    Returns ``(offsets | None, proved_infeasible, nodes, stopped_by)``, ``stopped_by`` one of
    ``solved``, ``infeasible``, ``time limit``, ``node budget``, ``memory budget``."""
    n = len(size)
    if n == 0:
        return [], False, 0, "solved"
    if min(size) <= 0:
        raise ValueError("_branch_and_bound: sizes must be positive (drop zero-size buffers)")
    warn_interpreted("the allocation branch and bound", "about 100x slower")
    try:
        space = _Space(s0, s1, width, size, n_sections, capacity, max_bytes=max_bytes)
    except MemoryError as e:
        if progress is not None:
            progress(f"branch and bound skipped: {e}")
        return None, False, 0, "memory budget"
    solvers = [_Ordering(space, h) for h in _PREORDERINGS]
    chunk = 1 << 16 if _numba is not None else 1 << 9   # nodes between reports
    work = _WORK_CHUNK if _numba is not None else _WORK_CHUNK >> 8
    budget = max(n, 16)
    last_report = 0.0

    def total_nodes() -> int:
        return sum(x.nodes for x in solvers)

    while True:
        budget *= 2
        if max_nodes is not None and budget > max_nodes:
            return None, False, total_nodes(), "node budget"
        for sv in solvers:
            sv.restart()
            while True:
                limits.check()
                if time.perf_counter() > deadline:
                    return None, False, total_nodes(), "time limit"
                status = sv.advance(min(budget, sv.run_nodes + chunk), work)
                if status == _SOLVED:
                    return sv.offsets(), False, total_nodes(), "solved"
                if status == _INFEASIBLE:
                    return None, True, total_nodes(), "infeasible"
                if sv.out_of_memory:
                    return None, False, total_nodes(), "memory budget"
                now = time.perf_counter()
                if progress is not None and now - last_report > 0.25:
                    last_report = now
                    progress(f"branch and bound ({SEARCH_BACKEND}): {total_nodes():,} nodes, "
                             f"budget {budget:,}/ordering, {now - t0:.1f} s")
                if sv.run_nodes >= budget:
                    break


def _cpsat(lower, upper, size, capacity, hint, time_limit_s, workers, seed, progress,
           max_memory_bytes: int | None = None):
    """CP-SAT: one fixed interval per buffer in time and one in address, ``add_no_overlap_2d``;
    cut by the deadline and Ctrl-C (:func:`memmap.limits.solve_cpsat`) and, when given, by
    ``max_memory_bytes`` (CP-SAT's ``max_memory_in_mb``).

    Returns ``(status name, offsets | None)``."""
    from ortools.sat.python import cp_model

    model = cp_model.CpModel()
    xs, ys, offs = [], [], []
    for k in range(len(size)):
        if k % 4096 == 0:
            limits.check()
        y = model.new_int_var(0, capacity - size[k], f"offset_{k}")
        offs.append(y)
        xs.append(model.new_fixed_size_interval_var(lower[k], upper[k] - lower[k], f"life_{k}"))
        ys.append(model.new_fixed_size_interval_var(y, size[k], f"addr_{k}"))
        if hint is not None and 0 <= hint[k] <= capacity - size[k]:
            model.add_hint(y, int(hint[k]))
    # Address intervals of buffers that share a step may not overlap.
    model.add_no_overlap_2d(xs, ys)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit_s, 0.01)
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    if max_memory_bytes is not None:
        solver.parameters.max_memory_in_mb = max(64, max_memory_bytes >> 20)
    if progress is not None:
        progress(f"CP-SAT no_overlap_2d ({workers} workers, {time_limit_s:.1f} s)")
    code = limits.solve_cpsat(solver, model)
    name = solver.status_name(code)
    if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return name, [int(solver.value(y)) for y in offs]
    return name, None


def pack_buffers(lower: Sequence[int], upper: Sequence[int], size: Sequence[int], capacity: int, *,
                 max_nodes: int = 20_000, time_limit_s: float = 30.0) -> list[int] | None:
    """Offsets placing buffers live on ``[lower, upper)`` (half-open) with ``size`` bytes in
    ``[0, capacity)``, or None when none was found: greedy best fit, then the branch and bound
    limited to ``max_nodes`` nodes per preordering round (deterministic) with a wall-clock safety
    net of ``time_limit_s`` and the deadline of :mod:`memmap.limits` (the greedy raises
    :class:`memmap.limits.TimeLimitReached` past it). For callers that need a placement fast
    (the ILP's starting plans); :func:`solve_alloc` is the full method."""
    from memmap.static_alloc import greedy_allocate

    n = len(size)
    if n == 0:
        return []
    if any(s > capacity for s in size):
        return None
    active = [k for k in range(n) if size[k] > 0]
    offsets = [0] * n
    if not active:
        return offsets
    g = 0
    for k in active:
        g = math.gcd(g, size[k])
    lo = [lower[k] for k in active]
    up = [upper[k] for k in active]
    sz = [size[k] // g for k in active]
    cap = capacity // g
    offs, height = greedy_allocate(lo, [u - 1 for u in up], sz, orders=("size", "area", "length"))
    if height <= cap:
        sol = offs.tolist()
    else:
        if _peak(lo, up, sz) > cap:
            return None
        s0, s1, n_sections = _sections(lo, up)
        t0 = time.perf_counter()
        width = [u - a for a, u in zip(lo, up)]
        deadline = min(t0 + time_limit_s, limits.deadline())
        sol = _branch_and_bound(s0, s1, width, sz, n_sections, cap, deadline, None, t0,
                                max_nodes=max_nodes, max_bytes=SEARCH_MEMORY_BYTES)[0]
        if sol is None:
            return None
    for k, o in zip(active, sol):
        offsets[k] = int(o) * g
    return offsets


def solve_alloc(problem: AllocProblem, capacity: int, *, time_limit_s: float = 60.0,
                workers: int = 2, seed: int = 0, progress: Callable[[str], None] | None = None,
                max_memory_bytes: int | None = SEARCH_MEMORY_BYTES) -> AllocResult:
    """Place every buffer of ``problem`` in ``[0, capacity)`` (see the module docstring).

    ``time_limit_s`` bounds the wall time of the call (and a deadline of :mod:`memmap.limits`,
    when one is set, too): the branch and bound gets three quarters of what is left after the
    greedy, CP-SAT the rest; at the deadline the result is ``UNKNOWN``. ``max_memory_bytes``
    bounds the branch and bound's arrays (``None``: no bound): past it, the search uses no
    pairwise overlap lists, or stops. CP-SAT runs only on up to ``CPSAT_MAX_BUFFERS`` buffers,
    with the same memory bound. ``progress`` (optional) receives one-line status messages.
    Ctrl-C raises ``KeyboardInterrupt`` within milliseconds.
    """
    t0 = time.perf_counter()
    if capacity < 0:
        raise BadInputError(f"capacity {capacity} is negative")
    if workers < 1:
        raise BadInputError(f"workers must be >= 1, got {workers}")
    if not time_limit_s > 0:
        raise BadInputError(f"time limit must be positive, got {time_limit_s}")
    with limits.time_limit(time_limit_s):
        try:
            return _solve_alloc(problem, capacity, t0, workers, seed, progress, max_memory_bytes)
        except limits.TimeLimitReached:
            peak = peak_live(problem)[0]
            return AllocResult("UNKNOWN", None, None, capacity, peak, time.perf_counter() - t0,
                               "greedy best fit (cut by the time limit)")


def _solve_alloc(problem, capacity, t0, workers, seed, progress, max_memory_bytes) -> AllocResult:
    n = problem.n
    peak, peak_at = peak_live(problem)

    def result(status, offsets, method, nodes=0, culprits=()):
        height = None
        if offsets is not None:
            height = max((o + s for o, s in zip(offsets, problem.size_bytes)), default=0)
        return AllocResult(status, None if offsets is None else tuple(int(o) for o in offsets),
                           height, capacity, peak, time.perf_counter() - t0, method, nodes,
                           tuple(culprits))

    def placed(offsets, method, nodes=0):
        height = max((o + s for o, s in zip(offsets, problem.size_bytes)), default=0)
        return result("OPTIMAL" if height == peak else "FEASIBLE", offsets, method, nodes)

    # 1. Fast infeasibility proofs.
    big = [k for k in range(n) if problem.size_bytes[k] > capacity]
    if big:
        k = big[0]
        return result("INFEASIBLE", None, "size check", culprits=(
            f"buffer {problem.ids[k]!r} alone needs {problem.size_bytes[k]} bytes > capacity "
            f"{capacity}",))
    if peak > capacity:
        live = [problem.ids[k] for k in range(n)
                if problem.lower[k] <= peak_at < problem.upper[k] and problem.size_bytes[k]]
        shown = ", ".join(repr(x) for x in live[:8]) + (" ..." if len(live) > 8 else "")
        return result("INFEASIBLE", None, "peak live bytes", culprits=(
            f"step {peak_at}: {len(live)} live buffers need {peak} bytes > capacity {capacity} "
            f"({shown})",))
    if n == 0:
        return result("OPTIMAL", [], "trivial")

    # 2. Zero-size buffers take no space; the rest are scaled by the GCD of the sizes.
    active = [k for k in range(n) if problem.size_bytes[k] > 0]
    offsets = [0] * n
    if not active:
        return placed(offsets, "trivial")
    g = 0
    for k in active:
        g = math.gcd(g, problem.size_bytes[k])
    lower = [problem.lower[k] for k in active]
    upper = [problem.upper[k] for k in active]
    size = [problem.size_bytes[k] // g for k in active]
    cap = capacity // g

    def expand(sub_offsets, method, nodes=0):
        for k, o in zip(active, sub_offsets):
            offsets[k] = int(o) * g
        return placed(offsets, method, nodes)

    # 3. Greedy best fit in several orders (cut by the deadline: TimeLimitReached).
    if progress is not None:
        progress("greedy best fit")
    from memmap.static_alloc import greedy_allocate

    greedy_off, greedy_height = greedy_allocate(lower, [u - 1 for u in upper], size,
                                                orders=("size", "area", "length"))
    if greedy_height <= cap:
        return expand(greedy_off.tolist(), "greedy best fit")

    # 4. Exact branch and bound: 3/4 of the time left (all of it when CP-SAT will not run).
    s0, s1, n_sections = _sections(lower, upper)
    width = [u - lo for lo, u in zip(lower, upper)]
    use_cpsat = len(size) <= CPSAT_MAX_BUFFERS
    now = time.perf_counter()
    bb_deadline = now + (0.75 if use_cpsat else 1.0) * max(0.0, limits.deadline() - now)
    sol, infeasible, nodes, stopped = _branch_and_bound(s0, s1, width, size, n_sections, cap,
                                                        bb_deadline, progress, t0,
                                                        max_bytes=max_memory_bytes)
    if sol is not None:
        return expand(sol, "branch and bound", nodes)
    if infeasible:
        return result("INFEASIBLE", None, "branch and bound", nodes, culprits=(
            f"exhaustive search ({nodes:,} nodes): the buffers cannot be packed without "
            f"fragmentation, although the peak live bytes {peak} fit in {capacity}",))
    method = f"branch and bound (stopped: {stopped})"

    # 5. CP-SAT with what is left of the time limit.
    remaining = limits.remaining_s()
    if use_cpsat and remaining > 0.5:
        status, sol = _cpsat(lower, upper, size, cap, greedy_off.tolist(), remaining, workers,
                             seed, progress, max_memory_bytes)
        if sol is not None:
            return expand(sol, "CP-SAT no_overlap_2d", nodes)
        if status == "INFEASIBLE":
            return result("INFEASIBLE", None, "CP-SAT no_overlap_2d", nodes, culprits=(
                "CP-SAT proved that no placement fits (fragmentation)",))
        method += " + CP-SAT"
    return result("UNKNOWN", None, method, nodes)
