"""Static allocation of buffers with fixed lifetimes (the MiniMalloc problem): greedy
best-fit placement in several orders, keeping the lowest height. Used for M_P upper bounds
and by the baselines; the exact allocator lives in the ILP package."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_INF = np.iinfo(np.int64).max


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


def greedy_allocate(lower: Sequence[int], upper: Sequence[int], size: Sequence[int], *,
                    orders: Sequence[str] = ("size", "area", "length"),
                    same_offset: Sequence[tuple[int, int]] = ()) -> tuple[np.ndarray, int]:
    """Place buffers live on the inclusive step ranges ``[lower, upper]``.

    For each order (``size``: largest first, as TFLite's greedy-by-size; ``area``: size x
    lifetime; ``length``: longest lifetime first), each buffer goes to the lowest offset of the
    smallest gap among already placed time-overlapping buffers that fits it (best fit), or on
    top. Returns ``(offsets, height)`` of the best order. Offsets are multiples of the alignment
    when all sizes are. ``same_offset``: index pairs ``(i, j)`` placed at one offset (in-place
    pairs, :func:`merge_same_offset`), which then overlap at the step where one hands over.
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
    keys = {
        "size": np.lexsort((lo, -(hi - lo), -sz)),
        "area": np.lexsort((lo, -sz, -(sz * (hi - lo + 1)))),
        "length": np.lexsort((lo, -sz, -(hi - lo))),
    }
    best = None
    for name in orders:
        off = np.full(n, -1, dtype=np.int64)
        placed = np.zeros(n, dtype=bool)
        height = 0
        for i in keys[name]:
            idx = np.nonzero(placed & (lo <= hi[i]) & (hi >= lo[i]))[0]
            o = best_fit_offset(off[idx], off[idx] + sz[idx], int(sz[i]))
            off[i] = o
            placed[i] = True
            height = max(height, o + int(sz[i]))
        if best is None or height < best[1]:
            best = (off, height)
    return best
