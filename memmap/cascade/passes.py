"""Pass analysis: how many traversals of a rank's fiber a cascade needs, from its dependencies.

Definitions (FuseMax, Sec. "passes"): a *pass* over the fiber of rank ``r`` (for one value of the
other ranks, e.g. one query) is one traversal of all its elements. An Einsum *walks* ``r`` if its
iteration space contains ``r`` or one of its partition ranks. A value is *full* over ``r`` if it
depends on every element of the fiber: it is the output of an Einsum that walks ``r`` and whose
output has none of ``r``'s ranks, or it is computed from a full value, or it reads a running state
at its final index (``RM[M1,p]``). An Einsum that walks ``r`` and reads a full value produced in
pass ``k`` can run no earlier than pass ``k + 1`` under any mapping, because the value exists only
after all elements were seen. Reading a value elementwise (it still carries ``r``'s ranks, or is a
running state at ``m1`` / ``m1+1``) keeps the Einsum in the producer's pass. Einsums that do not
walk ``r`` run in the pass of their latest input (between or after passes).

Pass numbers are the least fixed point of these constraints (running states make the dependency
graph cyclic); a cycle through a full value has no fixed point and is reported.

Consequence: a tensor that carries ``r`` and is produced in pass ``i`` but read in pass ``j > i``
(or a cascade input read in several passes) must either stay on chip (footprint) or be written to
DRAM and read again once per later pass (traffic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from memmap.cascade.einsum import Cascade, CascadeError, Einsum

__all__ = ["TensorPasses", "PassAnalysis", "analyze_passes", "extent_of"]


def extent_of(rank: str, extents: Mapping[str, int]) -> int:
    """Extent of lower-case ``rank`` from ``extents`` keyed by upper-case names (``"M1"``)."""
    key = rank.upper()
    if key not in extents:
        raise KeyError(f"no extent for rank {rank!r}: pass {key!r} in extents")
    return int(extents[key])


@dataclass(frozen=True)
class TensorPasses:
    """How one tensor is used across passes.

    Attributes:
      tensor: name.
      ranks: its ranks.
      produced_pass: pass in which it is produced (0 for cascade inputs).
      read_passes: sorted distinct passes of the Einsums that read it.
    """

    tensor: str
    ranks: tuple[str, ...]
    produced_pass: int
    read_passes: tuple[int, ...]

    @property
    def later_reads(self) -> tuple[int, ...]:
        """Read passes that are not the tensor's first pass (re-reads if not kept on chip)."""
        first = self.produced_pass if self.produced_pass else min(self.read_passes, default=0)
        return tuple(p for p in self.read_passes if p > first)


@dataclass(frozen=True)
class PassAnalysis:
    """Result of :func:`analyze_passes`.

    Attributes:
      cascade: the analysed cascade.
      rank: the fiber rank (``"m"``).
      num_passes: passes over the fiber of ``rank``.
      einsum_pass: Einsum output name -> its pass (0: before any traversal).
      crossing: tensors that carry data from one pass to a later one (see module docstring).
    """

    cascade: Cascade
    rank: str
    num_passes: int
    einsum_pass: Mapping[str, int]
    crossing: tuple[TensorPasses, ...]

    def einsums_in_pass(self, k: int) -> tuple[Einsum, ...]:
        """Einsums assigned to pass ``k``, in program order."""
        return tuple(e for e in self.cascade.einsums if self.einsum_pass[e.name] == k)

    def _words(self, t: TensorPasses, extents: Mapping[str, int], per: frozenset[str]) -> int:
        return math.prod(extent_of(r, extents) for r in t.ranks if r not in per)

    def footprint_words(self, extents: Mapping[str, int], *, per: tuple[str, ...] = ("p",)) -> int:
        """On-chip words needed to avoid any re-read, for one value of the ``per`` ranks.

        The peak, over pass boundaries, of the tensors live across that boundary (produced or first
        read at or before it, read again after it). 0 for a 1-pass cascade.
        """
        per_set = frozenset(per)
        peak = 0
        for b in range(1, self.num_passes):
            live = 0
            for t in self.crossing:
                first = t.produced_pass if t.produced_pass else min(t.read_passes)
                if first <= b < max(t.read_passes):
                    live += self._words(t, extents, per_set)
            peak = max(peak, live)
        return peak

    def spill_traffic_words(self, extents: Mapping[str, int]) -> int:
        """DRAM words moved if nothing is kept on chip across passes (all ``per`` values).

        A produced tensor is written once and read once per later pass that reads it; a cascade
        input costs one extra read per later pass.
        """
        words = 0
        for t in self.crossing:
            size = math.prod(extent_of(r, extents) for r in t.ranks)
            writes = 1 if t.produced_pass else 0
            words += size * (writes + len(t.later_reads))
        return words


def _walks(refs, fiber: frozenset[str]) -> bool:
    return any(r in fiber for ref in refs for r in ref.walked_ranks)


def analyze_passes(c: Cascade, rank: str = "m") -> PassAnalysis:
    """Count the passes of ``c`` over the fiber of ``rank`` (see the module docstring)."""
    fiber = c.fiber(rank)
    producers = c.producers
    pass_of = {e.name: 0 for e in c.einsums}
    full = {e.name: False for e in c.einsums}
    limit = len(c.einsums) + 2
    for _ in range(limit * limit):
        changed = False
        for e in c.einsums:
            walks = _walks((e.output, *e.inputs), fiber)
            p = 1 if walks else 0
            is_full = walks and not any(r in fiber for r in e.output.ranks)
            for ref in e.inputs:
                if ref.tensor == e.name or ref.tensor not in producers:
                    continue  # own previous state, or a cascade input
                pt = pass_of[ref.tensor]
                elementwise = any(r in fiber for r in ref.walked_ranks)
                final = any(i.final and i.rank in fiber for i in ref.indices)
                if final or (full[ref.tensor] and not elementwise):
                    is_full = True
                    p = max(p, pt + 1 if walks else pt)
                else:
                    p = max(p, pt)
            if p > limit:
                raise CascadeError(
                    f"{c.name}: {e}: pass number grows without bound (a running state depends "
                    f"on a full reduction of its own fiber {rank!r})"
                )
            if p != pass_of[e.name] or is_full != full[e.name]:
                pass_of[e.name], full[e.name] = p, is_full or full[e.name]
                changed = True
        if not changed:
            break
    num = max((pass_of[e.name] for e in c.einsums if _walks((e.output, *e.inputs), fiber)), default=0)

    reads: dict[str, set[int]] = {}
    for e in c.einsums:
        for ref in e.inputs:
            if ref.tensor != e.name:
                reads.setdefault(ref.tensor, set()).add(pass_of[e.name])
    crossing = []
    for tensor, rp in reads.items():
        t = TensorPasses(
            tensor,
            c.tensor_ranks(tensor),
            pass_of.get(tensor, 0),
            tuple(sorted(rp)),
        )
        if t.later_reads:
            crossing.append(t)
    return PassAnalysis(c, rank, num, dict(pass_of), tuple(crossing))
