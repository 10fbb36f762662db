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
5. If the time budget is not yet spent, CP-SAT ``add_no_overlap_2d`` over (time, address) with
   the greedy offsets as a hint.

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

from memmap.errors import BadInputError
from memmap.ir.graph import MAX_SIZE_BYTES
from memmap.jit import BACKEND as SEARCH_BACKEND
from memmap.jit import jit as _jit
from memmap.jit import numba as _numba
from memmap.jit import warn_interpreted

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


def check_alloc(problem: AllocProblem, capacity: int, offsets: Sequence[int] | None) -> list[str]:
    """Independent checker: every violated rule as a message (empty list: valid placement)."""
    errors: list[str] = []
    n = problem.n
    if offsets is None or len(offsets) != n:
        return [f"expected {n} offsets, got {None if offsets is None else len(offsets)}"]
    off = np.asarray(offsets, dtype=np.int64)
    lo = np.asarray(problem.lower, dtype=np.int64)
    hi = np.asarray(problem.upper, dtype=np.int64)
    sz = np.asarray(problem.size_bytes, dtype=np.int64)
    for k in np.nonzero((off < 0) | (off + sz > capacity))[0]:
        errors.append(f"buffer {problem.ids[k]!r}: [{off[k]}, {off[k] + sz[k]}) outside "
                      f"[0, {capacity})")
    for k in range(n):
        if sz[k] == 0:
            continue
        j = np.arange(k + 1, n)
        clash = j[(sz[j] > 0) & (lo[j] < hi[k]) & (lo[k] < hi[j])
                  & (off[j] < off[k] + sz[k]) & (off[k] < off[j] + sz[j])]
        for m in clash:
            errors.append(f"buffers {problem.ids[k]!r} and {problem.ids[m]!r} overlap in time "
                          f"[{max(lo[k], lo[m])}, {min(hi[k], hi[m])}) and address "
                          f"[{max(off[k], off[m])}, {min(off[k] + sz[k], off[m] + sz[m])})")
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
# kernel status codes
_BUDGET, _SOLVED, _INFEASIBLE = 0, 1, 2
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
def _search_kernel(size, s0, s1, twin, live_ptr, live_idx, ov_ptr, ov_idx, gkey, tkey, skey,
                   use_total, zob1, zob2, cap, off, minoff, total, cuts, pend, lv, undo,
                   sec_mark, witness, parts, part_of, olist, otmp, memo, sc, node_limit):
    """Canonical branch and bound, run until ``sc[_SC_NODES] == node_limit`` (returns
    ``_BUDGET``; call again to resume), a placement (``_SOLVED``, offsets in ``off``) or a proof
    that none exists (``_INFEASIBLE``).

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
    while True:
        if mode == _ENTER:
            if ph == 0:
                status = _SOLVED
                break
            if nodes >= node_limit:
                break
            nodes += 1
            sa = pend[ph - 1, _PD_SA]
            sb = pend[ph - 1, _PD_SB]
            last = pend[ph - 1, _PD_LAST]
            oa = pend[ph - 1, _PD_OA]
            ob = pend[ph - 1, _PD_OB]
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
            sa = pend[ph - 1, _PD_SA]
            sb = pend[ph - 1, _PD_SB]
            oa = pend[ph - 1, _PD_OA]
            ob = pend[ph - 1, _PD_OB]
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
                for p in range(ov_ptr[j], ov_ptr[j + 1]):
                    q = ov_idx[p]
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


def _csr(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Compressed rows: ``(ptr [len + 1], idx [sum of lengths])``."""
    ptr = np.zeros(len(lists) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(x) for x in lists])
    idx = np.fromiter((v for x in lists for v in x), dtype=np.int64, count=int(ptr[-1]))
    return ptr, idx


class _Ordering:
    """One static preordering heuristic of the canonical search, with its failed-state cache.

    Internal buffer index = rank in the root preordering. Each part made by a split is sorted
    again by the same heuristic with T taken from the unplaced totals at that moment
    (MiniMalloc's per-partition preordering); ties go to the input index. :meth:`restart`
    starts a fresh tree (the cache is kept: a remembered failure stays a failure);
    :meth:`advance` runs the kernel for more nodes.
    """

    def __init__(self, s0: list[int], s1: list[int], width: list[int], size: list[int],
                 n_sections: int, capacity: int, heuristic: str):
        n = len(size)
        if not heuristic or any(c not in "TWACZ" for c in heuristic):
            raise ValueError(f"preordering heuristic {heuristic!r}: use the letters T, W, A, C, Z")
        total0 = [0] * n_sections
        for i in range(n):
            for s in range(s0[i], s1[i]):
                total0[s] += size[i]
        keys = {"T": [max(total0[s0[i]:s1[i]]) for i in range(n)],
                "W": width,
                "A": [size[i] * width[i] for i in range(n)],
                "C": [s1[i] - s0[i] for i in range(n)],
                "Z": size}
        self.order = sorted(range(n), key=lambda i: tuple(-keys[c][i] for c in heuristic) + (i,))
        self.n, self.n_sections, self.cap = n, n_sections, capacity
        i64 = np.int64
        # The heuristic is (static prefix, T, static suffix): a part is sorted by (gkey, -T, skey)
        # with gkey the dense rank of the prefix and skey the rank of (suffix, input index).
        cut = heuristic.find("T")
        prefix, suffix = (heuristic, "") if cut < 0 else (heuristic[:cut], heuristic[cut + 1:])
        self.use_total = 0 if cut < 0 else 1

        def dense_rank(letters: str, unique: bool) -> np.ndarray:
            def key(i: int) -> tuple:
                return tuple(-keys[c][i] for c in letters) + ((i,) if unique else ())
            ranks = np.zeros(n, dtype=i64)
            previous, r = None, -1
            for i in sorted(range(n), key=key):
                if key(i) != previous:
                    previous, r = key(i), r + 1
                ranks[i] = r
            return ranks[self.order]               # by internal index

        self.gkey = dense_rank(prefix, unique=cut < 0)
        self.skey = dense_rank(suffix, unique=True)
        self.tkey = np.zeros(n, dtype=i64)
        self.size = np.array([size[i] for i in self.order], dtype=i64)
        self.s0 = np.array([s0[i] for i in self.order], dtype=i64)
        self.s1 = np.array([s1[i] for i in self.order], dtype=i64)
        live: list[list[int]] = [[] for _ in range(n_sections)]
        for i in range(n):
            for s in range(int(self.s0[i]), int(self.s1[i])):
                live[s].append(i)
        self.live_ptr, self.live_idx = _csr(live)
        # two buffers overlap in time iff they share a section: s0[i] < s1[j] and s0[j] < s1[i]
        ov = []
        for i in range(n):
            m = (self.s0 < self.s1[i]) & (self.s1 > self.s0[i])
            m[i] = False
            ov.append(np.flatnonzero(m))
        self.ov_ptr = np.zeros(n + 1, dtype=i64)
        self.ov_ptr[1:] = np.cumsum([len(x) for x in ov])
        self.ov_idx = np.concatenate(ov).astype(i64) if n else np.zeros(0, dtype=i64)
        twin_of: dict[tuple[int, int, int], int] = {}
        self.twin = np.full(n, -1, dtype=i64)   # the previous identical buffer: placed first
        for i in range(n):
            k = (int(self.s0[i]), int(self.s1[i]), int(self.size[i]))
            self.twin[i] = twin_of.get(k, -1)
            twin_of[k] = i
        rng = np.random.default_rng(0x6D656D6D6170)  # fixed: hashing must be deterministic
        self.zob1 = rng.integers(1, 1 << 62, size=n, dtype=i64)
        self.zob2 = rng.integers(1, 1 << 62, size=n, dtype=i64)
        self.memo = np.zeros((_MEMO_SLOTS, 3), dtype=i64)
        self.memo[:, 2] = _BIG                     # an empty slot never prunes
        self.total0 = np.zeros(n_sections, dtype=i64)
        for i in range(n):
            self.total0[self.s0[i]:self.s1[i]] += self.size[i]
        self.cuts0 = np.zeros(max(n_sections - 1, 1), dtype=i64)
        for i in range(n):
            self.cuts0[self.s0[i]:self.s1[i] - 1] += 1
        bounds = [0] + [k + 1 for k in range(n_sections - 1) if self.cuts0[k] == 0]
        bounds.append(n_sections)
        self.roots = [(a, b) for a, b in zip(bounds, bounds[1:]) if self.total0[a:b].any()]
        # Part-order stack: the root lists (n entries), then along any path at most one list
        # per placement, of the buffers still unplaced in its root part: k (k - 1) / 2 entries
        # for a root part of k buffers. Past _ORDER_ROOM_MAX a new part keeps its parent's order.
        root_sizes = np.bincount(np.searchsorted(bounds, self.s0, side="right") - 1,
                                 minlength=len(bounds))
        need = n + int(sum(k * (k - 1) // 2 for k in root_sizes.tolist()))
        self.olist = np.zeros(max(1, min(need, max(_ORDER_ROOM_MAX, n))), dtype=i64)
        self.otmp = np.zeros_like(self.olist)
        self.undo = np.zeros((max(int(self.ov_ptr[-1]), 1), 2), dtype=i64)
        self.lv = np.zeros((n + 1, 16), dtype=i64)
        self.pend = np.zeros((n_sections + 1, 6), dtype=i64)
        self.parts = np.zeros((n_sections + 1, 4), dtype=i64)   # range, count, list end
        self.part_of = np.zeros(n_sections, dtype=i64)
        self.sec_mark = np.zeros(n_sections, dtype=i64)
        self.witness = np.full(n_sections, -1, dtype=i64)
        self.sc = np.zeros(7, dtype=i64)
        self.nodes = 0                             # over all runs
        self.restart()

    def restart(self) -> None:
        """Fresh search tree: nothing placed, the root parts pending (in root preorder)."""
        self.off = np.full(self.n, -1, dtype=np.int64)
        self.minoff = np.zeros(self.n, dtype=np.int64)
        self.total = self.total0.copy()
        self.cuts = self.cuts0.copy()
        self.sc[:] = 0
        ot = 0
        regions = []
        for a, b in self.roots:
            members = np.nonzero((self.s0 >= a) & (self.s0 < b))[0]
            self.olist[ot:ot + len(members)] = members
            regions.append((ot, ot + len(members)))
            ot += len(members)
        for h, ((a, b), (oa, ob)) in enumerate(zip(reversed(self.roots), reversed(regions))):
            self.pend[h] = (a, b, -1, -1, oa, ob)  # leftmost part on top
        self.sc[_SC_PH] = len(self.roots)
        self.sc[_SC_OT] = ot

    def advance(self, node_limit: int) -> int:
        """Run this tree until it has used ``node_limit`` nodes; returns a kernel status."""
        before = int(self.sc[_SC_NODES])
        with np.errstate(over="ignore"):           # hashing wraps (interpreted backend only)
            status = _search_kernel(self.size, self.s0, self.s1, self.twin, self.live_ptr,
                                    self.live_idx, self.ov_ptr, self.ov_idx, self.gkey,
                                    self.tkey, self.skey, self.use_total, self.zob1, self.zob2,
                                    self.cap, self.off, self.minoff, self.total, self.cuts,
                                    self.pend, self.lv, self.undo, self.sec_mark, self.witness,
                                    self.parts, self.part_of, self.olist, self.otmp, self.memo,
                                    self.sc, node_limit)
        self.nodes += int(self.sc[_SC_NODES]) - before
        return int(status)

    @property
    def run_nodes(self) -> int:
        return int(self.sc[_SC_NODES])

    def offsets(self) -> list[int]:
        """The placement found, in the caller's buffer order."""
        result = [0] * self.n
        for k, i in enumerate(self.order):
            result[i] = int(self.off[k])
        return result


def _sections(lower: Sequence[int], upper: Sequence[int]) -> tuple[list[int], list[int], int]:
    """Map each lifetime to a half-open range of elementary sections."""
    ts = sorted(set(lower) | set(upper))
    index = {t: k for k, t in enumerate(ts)}
    return [index[x] for x in lower], [index[x] for x in upper], max(len(ts) - 1, 0)


def _branch_and_bound(s0, s1, width, size, n_sections, capacity, deadline, progress, t0,
                      max_nodes: int | None = None):
    """Round robin over the preorderings with a doubling node budget (MiniMalloc's schedule),
    stopped by ``deadline`` or, deterministically, once the doubling budget passes ``max_nodes``.
    Sizes must be positive. The search is iterative (no recursion, any number of buffers).

    Returns ``(offsets | None, proved_infeasible, nodes)``."""
    n = len(size)
    if n == 0:
        return [], False, 0
    if min(size) <= 0:
        raise ValueError("_branch_and_bound: sizes must be positive (drop zero-size buffers)")
    warn_interpreted("the allocation branch and bound", "about 100x slower")
    solvers = [_Ordering(s0, s1, width, size, n_sections, capacity, h) for h in _PREORDERINGS]
    chunk = 1 << 16 if _numba is not None else 1 << 9   # nodes between deadline checks
    budget = max(n, 16)
    last_report = 0.0

    def total_nodes() -> int:
        return sum(x.nodes for x in solvers)

    while True:
        budget *= 2
        if max_nodes is not None and budget > max_nodes:
            return None, False, total_nodes()
        for sv in solvers:
            sv.restart()
            while True:
                status = sv.advance(min(budget, sv.run_nodes + chunk))
                if status == _SOLVED:
                    return sv.offsets(), False, total_nodes()
                if status == _INFEASIBLE:
                    return None, True, total_nodes()
                now = time.perf_counter()
                if now > deadline:
                    return None, False, total_nodes()
                if progress is not None and now - last_report > 0.25:
                    last_report = now
                    progress(f"branch and bound ({SEARCH_BACKEND}): {total_nodes():,} nodes, "
                             f"budget {budget:,}/ordering, {now - t0:.1f} s")
                if sv.run_nodes >= budget:
                    break


def _cpsat(lower, upper, size, capacity, hint, time_limit_s, workers, seed, progress):
    """CP-SAT: one fixed interval per buffer in time and one in address, ``add_no_overlap_2d``.

    Returns ``(status name, offsets | None)``."""
    from ortools.sat.python import cp_model

    model = cp_model.CpModel()
    xs, ys, offs = [], [], []
    for k in range(len(size)):
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
    if progress is not None:
        progress(f"CP-SAT no_overlap_2d ({workers} workers, {time_limit_s:.1f} s)")
    code = solver.solve(model)
    name = solver.status_name(code)
    if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return name, [int(solver.value(y)) for y in offs]
    return name, None


def pack_buffers(lower: Sequence[int], upper: Sequence[int], size: Sequence[int], capacity: int, *,
                 max_nodes: int = 20_000, time_limit_s: float = 30.0) -> list[int] | None:
    """Offsets placing buffers live on ``[lower, upper)`` (half-open) with ``size`` bytes in
    ``[0, capacity)``, or None when none was found: greedy best fit, then the branch and bound
    limited to ``max_nodes`` nodes per preordering round (deterministic) with a wall-clock safety
    net of ``time_limit_s``. For callers that need a placement fast (the ILP's starting plans);
    :func:`solve_alloc` is the full method."""
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
        s0, s1, n_sections = _sections(lo, up)
        totals = [0] * max(n_sections, 1)
        for a, b, x in zip(s0, s1, sz):
            for s in range(a, b):
                totals[s] += x
        if max(totals) > cap:
            return None
        t0 = time.perf_counter()
        width = [u - a for a, u in zip(lo, up)]
        sol, _, _ = _branch_and_bound(s0, s1, width, sz, n_sections, cap, t0 + time_limit_s, None, t0,
                                      max_nodes=max_nodes)
        if sol is None:
            return None
    for k, o in zip(active, sol):
        offsets[k] = int(o) * g
    return offsets


def solve_alloc(problem: AllocProblem, capacity: int, *, time_limit_s: float = 60.0,
                workers: int = 2, seed: int = 0,
                progress: Callable[[str], None] | None = None) -> AllocResult:
    """Place every buffer of ``problem`` in ``[0, capacity)`` (see the module docstring).

    ``progress`` (optional) receives one-line status messages while searching.
    """
    t0 = time.perf_counter()
    deadline = t0 + time_limit_s
    if capacity < 0:
        raise BadInputError(f"capacity {capacity} is negative")
    if workers < 1:
        raise BadInputError(f"workers must be >= 1, got {workers}")
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

    # 3. Greedy best fit in several orders.
    if progress is not None:
        progress("greedy best fit")
    from memmap.static_alloc import greedy_allocate

    greedy_off, greedy_height = greedy_allocate(lower, [u - 1 for u in upper], size,
                                                orders=("size", "area", "length"))
    if greedy_height <= cap:
        return expand(greedy_off.tolist(), "greedy best fit")

    # 4. Exact branch and bound (budget: 3/4 of the time limit, the rest for CP-SAT).
    s0, s1, n_sections = _sections(lower, upper)
    width = [u - lo for lo, u in zip(lower, upper)]
    bb_deadline = t0 + 0.75 * time_limit_s
    sol, infeasible, nodes = _branch_and_bound(s0, s1, width, size, n_sections, cap,
                                               bb_deadline, progress, t0)
    if sol is not None:
        return expand(sol, "branch and bound", nodes)
    if infeasible:
        return result("INFEASIBLE", None, "branch and bound", nodes, culprits=(
            f"exhaustive search ({nodes:,} nodes): the buffers cannot be packed without "
            f"fragmentation, although the peak live bytes {peak} fit in {capacity}",))

    # 5. CP-SAT with what is left of the time limit.
    remaining = deadline - time.perf_counter()
    if remaining > 0.5:
        status, sol = _cpsat(lower, upper, size, cap, greedy_off.tolist(), remaining, workers,
                             seed, progress)
        if sol is not None:
            return expand(sol, "CP-SAT no_overlap_2d", nodes)
        if status == "INFEASIBLE":
            return result("INFEASIBLE", None, "CP-SAT no_overlap_2d", nodes, culprits=(
                "CP-SAT proved that no placement fits (fragmentation)",))
    return result("UNKNOWN", None, "branch and bound + CP-SAT", nodes)
