"""Static allocation of buffers with fixed lifetimes (the MiniMalloc problem): greedy
best-fit placement in several orders, keeping the lowest height. Used for M_P upper bounds
and by the baselines; the exact allocator lives in the ILP package.

The placement loop is a compiled kernel (:mod:`memmap.numba_kernels`) that finds the time-overlapping
placed buffers through per-step live lists, so one order costs about the number of
time-overlapping pairs (times a log for sorting each buffer's neighbours by offset), not
``n^2``: 63k buffers in about a second instead of 12 s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memmap import limits
from memmap.numba_kernels import compile_kernel as jit
from memmap.numba_kernels import warn_interpreted

_INF = np.iinfo(np.int64).max
# buffers placed between two checks of the deadline and of Ctrl-C
_CHUNK = 4096
# fewer buffers than this are placed by the numpy reference (same result; no compile needed)
_KERNEL_MIN = 512


def best_fit_offset(starts: np.ndarray, ends: np.ndarray, size: int,
                    capacity: int | None = None) -> int | None:
    """Lowest offset of the smallest gap between occupied ranges ``[starts, ends)`` that fits
    ``size`` below ``capacity`` (``None``: unbounded, the space above everything always fits)."""
    if len(starts) == 0:
        return 0 if capacity is None or size <= capacity else None
    srt = np.argsort(starts, kind="stable")
    s_sorted, e_sorted = starts[srt], ends[srt]
    reach = np.maximum.accumulate(e_sorted)
    gap_lo = np.concatenate(([0], reach))
    gap_hi = np.concatenate((s_sorted, [_INF if capacity is None else capacity]))
    if capacity is not None:
        gap_hi = np.minimum(gap_hi, capacity)
    room = gap_hi - gap_lo
    fits = np.nonzero(room >= size)[0]
    if len(fits) == 0:
        return None
    j = fits[np.argmin(room[fits])]
    return int(gap_lo[j])


def merge_same_offset(lower: Sequence[int], upper: Sequence[int], size: Sequence[int],
                      same_offset: Sequence[tuple[int, int]]):
    """Buffers that must share one offset (chains of in-place pairs: buffer ``i`` ends at the
    step where buffer ``j`` starts, same size) merged into one block each.

    Returns ``(lo, hi, size, group)``: the blocks' inclusive step ranges (the union of their
    members', which is contiguous for such chains) and sizes (the largest member's), and
    ``group[k]`` = the block of buffer ``k``."""
    n = len(size)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in same_offset:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    roots: dict[int, int] = {}
    group = np.zeros(n, dtype=np.int64)
    for k in range(n):
        group[k] = roots.setdefault(find(k), len(roots))
    m = len(roots)
    lo = np.full(m, np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full(m, np.iinfo(np.int64).min, dtype=np.int64)
    sz = np.zeros(m, dtype=np.int64)
    np.minimum.at(lo, group, np.asarray(lower, dtype=np.int64))
    np.maximum.at(hi, group, np.asarray(upper, dtype=np.int64))
    np.maximum.at(sz, group, np.asarray(size, dtype=np.int64))
    return lo, hi, sz, group


@jit
def overlap_counts(slo, shi, live_ptr, start_ptr):
    """Number of other buffers overlapping each one in time (``slo``/``shi``: half-open slot
    ranges; ``live_ptr``: live-list pointers per slot; ``start_ptr[t]``: buffers, in start
    order, that start before slot ``t``)."""
    n = slo.shape[0]
    deg = np.zeros(n, dtype=np.int64)
    for i in range(n):
        a = slo[i]
        deg[i] = (live_ptr[a + 1] - live_ptr[a] - 1) + (start_ptr[shi[i]] - start_ptr[a + 1])
    return deg


@jit
def live_lists(slo, shi, n_slots):
    """Per slot, the buffers live there (ascending index): ``(ptr [n_slots + 1], idx)``."""
    n = slo.shape[0]
    cnt = np.zeros(n_slots + 1, dtype=np.int64)
    for i in range(n):
        cnt[slo[i] + 1] += 1
        cnt[shi[i] + 1] -= 1
    for t in range(1, n_slots + 1):
        cnt[t] += cnt[t - 1]
    ptr = np.zeros(n_slots + 1, dtype=np.int64)
    for t in range(n_slots):
        ptr[t + 1] = ptr[t] + cnt[t + 1]
    idx = np.zeros(ptr[n_slots], dtype=np.int32)
    fill = ptr[:n_slots].copy()
    for i in range(n):
        for t in range(slo[i], shi[i]):
            idx[fill[t]] = i
            fill[t] += 1
    return ptr, idx


@jit
def _best_fit_run(order, first, last, slo, shi, sz, live_ptr, live_idx, by_start, start_ptr, off,
                  height, nb, nb_key):
    """Place ``order[first:last]`` by best fit (see :func:`best_fit_offset`); ``off`` holds the
    offsets so far (-1: not placed). Returns the height so far."""
    for k in range(first, last):
        i = order[k]
        a = slo[i]
        m = 0
        for p in range(live_ptr[a], live_ptr[a + 1]):        # live at i's first slot
            j = live_idx[p]
            if off[j] >= 0:
                nb[m] = j
                m += 1
        for p in range(start_ptr[a + 1], start_ptr[shi[i]]):  # starting later inside i's range
            j = by_start[p]
            if off[j] >= 0:
                nb[m] = j
                m += 1
        for q in range(m):                                   # by (offset, index), as a stable sort
            nb_key[q] = off[nb[q]] * (slo.shape[0] + 1) + nb[q]
        keys = np.sort(nb_key[:m])
        size = sz[i]
        best_room = _INF
        best_lo = -1
        reach = 0
        for q in range(m):
            j = keys[q] % (slo.shape[0] + 1)
            room = off[j] - reach
            if room >= size and room < best_room:
                best_room = room
                best_lo = reach
            e = off[j] + sz[j]
            if e > reach:
                reach = e
        if best_lo < 0:
            best_lo = reach                                  # on top: the gap below infinity
        off[i] = best_lo
        if best_lo + size > height:
            height = best_lo + size
    return height


def _orders(lo: np.ndarray, hi: np.ndarray, sz: np.ndarray) -> dict[str, np.ndarray]:
    """The placement orders of :func:`greedy_allocate` (ties: the earlier start, then the index)."""
    return {"size": np.lexsort((lo, -(hi - lo), -sz)),
            "area": np.lexsort((lo, -sz, -(sz * (hi - lo + 1)))),
            "length": np.lexsort((lo, -sz, -(hi - lo)))}


def greedy_allocate(lower: Sequence[int], upper: Sequence[int], size: Sequence[int], *,
                    orders: Sequence[str] = ("size", "area", "length"),
                    same_offset: Sequence[tuple[int, int]] = ()) -> tuple[np.ndarray, int]:
    """Place buffers live on the inclusive step ranges ``[lower, upper]``.

    For each order (``size``: largest first, as TFLite's greedy-by-size; ``area``: size x
    lifetime; ``length``: longest lifetime first), each buffer goes to the lowest offset of the
    smallest gap among already placed time-overlapping buffers that fits it (best fit,
    :func:`best_fit_offset` without a capacity), or on top. Returns ``(offsets, height)`` of the
    best order. Offsets are multiples of the alignment when all sizes are. ``same_offset``:
    index pairs ``(i, j)`` placed at one offset (in-place pairs, :func:`merge_same_offset`),
    which then overlap at the step where one hands over. Checks for Ctrl-C and the deadline
    every few thousand buffers (:func:`memmap.limits.checkpoint`).
    """
    if same_offset:
        lo, hi, sz, group = merge_same_offset(lower, upper, size, same_offset)
        offs, height = greedy_allocate(lo, hi, sz, orders=orders)
        return offs[group], height
    lo = np.asarray(lower, dtype=np.int64)
    hi = np.asarray(upper, dtype=np.int64)
    sz = np.asarray(size, dtype=np.int64)
    n = len(sz)
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    if n < _KERNEL_MIN or int(sz.sum()) >= _INF // (n + 1) // 4 or int(sz.min()) < 0:
        return _greedy_allocate_numpy(lo, hi, sz, orders)
    warn_interpreted("greedy best fit", "about 50x slower")
    # slots: the distinct start points and ends (inclusive ranges -> half-open [lo, hi + 1))
    points, inv = np.unique(np.concatenate([lo, hi + 1]), return_inverse=True)
    slo, shi = inv[:n].astype(np.int64), inv[n:].astype(np.int64)
    n_slots = len(points)
    live_ptr, live_idx = live_lists(slo, shi, n_slots)
    by_start = np.argsort(slo, kind="stable").astype(np.int64)
    start_ptr = np.searchsorted(slo[by_start], np.arange(n_slots + 1), side="left").astype(np.int64)
    max_deg = int(overlap_counts(slo, shi, live_ptr, start_ptr).max()) + 1
    nb = np.zeros(max_deg, dtype=np.int64)
    nb_key = np.zeros(max_deg, dtype=np.int64)
    keys = _orders(lo, hi, sz)
    best = None
    for name in orders:
        off = np.full(n, -1, dtype=np.int64)
        order = keys[name].astype(np.int64)
        height = 0
        for first in range(0, n, _CHUNK):
            limits.checkpoint("greedy best fit")
            height = int(_best_fit_run(order, first, min(n, first + _CHUNK), slo, shi, sz, live_ptr,
                                       live_idx, by_start, start_ptr, off, height, nb, nb_key))
        if best is None or height < best[1]:
            best = (off, height)
    return best


def _greedy_allocate_numpy(lo, hi, sz, orders):
    """The reference implementation of :func:`greedy_allocate` (quadratic: for small inputs, and
    for sizes too large for the kernel's sort keys)."""
    n = len(sz)
    keys = _orders(lo, hi, sz)
    best = None
    for name in orders:
        off = np.full(n, -1, dtype=np.int64)
        placed = np.zeros(n, dtype=bool)
        height = 0
        for k, i in enumerate(keys[name]):
            if k % _CHUNK == 0:
                limits.checkpoint("greedy best fit")
            idx = np.nonzero(placed & (lo <= hi[i]) & (hi >= lo[i]))[0]
            o = best_fit_offset(off[idx], off[idx] + sz[idx], int(sz[i]))
            off[i] = o
            placed[i] = True
            height = max(height, o + int(sz[i]))
        if best is None or height < best[1]:
            best = (off, height)
    return best
