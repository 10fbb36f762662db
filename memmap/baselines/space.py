"""Address-space bookkeeping for the baselines: which byte ranges of the scratchpad are
occupied at the current step, and best-fit hole search."""

from __future__ import annotations

import bisect


class Space:
    """Occupied blocks ``[offset, offset + size)`` at one moment, keyed by owner."""

    def __init__(self, capacity_bytes: int):
        self.capacity = capacity_bytes
        self._offsets: list[int] = []   # sorted
        self._blocks: list[tuple[int, int, object]] = []  # (offset, end, owner), parallel
        self._where: dict[object, int] = {}

    def __contains__(self, owner) -> bool:
        return owner in self._where

    def __len__(self) -> int:
        return len(self._blocks)

    def add(self, owner, offset: int, size: int) -> None:
        if owner in self._where:
            raise AssertionError(f"{owner!r} already placed")
        i = bisect.bisect_left(self._offsets, offset)
        self._offsets.insert(i, offset)
        self._blocks.insert(i, (offset, offset + size, owner))
        self._where[owner] = offset

    def remove(self, owner) -> None:
        off = self._where.pop(owner)
        i = bisect.bisect_left(self._offsets, off)
        while self._blocks[i][2] != owner:
            i += 1
        del self._offsets[i], self._blocks[i]

    def offset_of(self, owner) -> int:
        return self._where[owner]

    def owners(self):
        return [b[2] for b in self._blocks]

    def holes(self):
        """Free gaps ``(start, end)`` in address order."""
        prev = 0
        for off, end, _ in self._blocks:
            if off > prev:
                yield prev, off
            prev = max(prev, end)
        if prev < self.capacity:
            yield prev, self.capacity

    def overlapping(self, lo: int, hi: int) -> list:
        """Owners whose block intersects ``[lo, hi)``."""
        out = []
        i = max(0, bisect.bisect_left(self._offsets, lo) - 1)
        while i < len(self._blocks) and self._blocks[i][0] < hi:
            off, end, owner = self._blocks[i]
            if end > lo:
                out.append(owner)
            i += 1
        return out

    def best_fit(self, size: int) -> int | None:
        """Offset of the smallest hole that fits ``size`` (lowest offset on ties)."""
        best = None
        for lo, hi in self.holes():
            room = hi - lo
            if room >= size and (best is None or room < best[0]):
                best = (room, lo)
        return None if best is None else best[1]
