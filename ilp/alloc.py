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
   independent parts wherever no unplaced buffer crosses a section boundary; identical buffers
   are placed in index order; failed states are remembered. Five static preorderings run round
   robin with a doubling node budget.
5. If the time budget is not yet spent, CP-SAT ``add_no_overlap_2d`` over (time, address) with
   the greedy offsets as a hint.

``solve_alloc`` is deterministic for a given seed and worker count whenever it finishes before
its time limit: the branch and bound is single-threaded and budgeted in nodes, not seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from memmap.errors import BadInputError

__all__ = ["AllocProblem", "AllocResult", "read_minimalloc_csv", "solve_alloc", "check_alloc",
           "peak_live", "pack_buffers", "STATUSES"]

STATUSES = ("OPTIMAL", "FEASIBLE", "INFEASIBLE", "UNKNOWN")
REQUIRED_COLUMNS = ("id", "lower", "upper", "size")
_PREORDERINGS = ("TWA", "WAT", "TAW", "TCA", "CAT")  # Total, Width (lifetime), Area, seCtions


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
        ids.append(bid)
        lower.append(vals["lower"])
        upper.append(vals["upper"])
        sizes.append(vals["size"])
        rows.append(tuple(row))
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


class _Abort(Exception):
    """Node budget or time limit reached (not a proof of anything)."""


class _Canonical:
    """MiniMalloc-style exact search over canonical placements for one preordering.

    Internal buffer index = rank in the preordering. State (all undone on backtrack):
    ``off[i]`` (-1: unplaced), ``minoff[i]`` (lowest offset above the placed buffers that
    overlap it in time), ``total[s]`` (unplaced bytes live in section ``s``), ``cuts[k]``
    (unplaced buffers live in both sections ``k`` and ``k+1``) and ``witness[s]`` (an unplaced
    buffer of ``s`` with ``minoff + total[s] <= capacity``; none left proves the node dead).
    """

    def __init__(self, s0: list[int], s1: list[int], width: list[int], size: list[int],
                 n_sections: int, capacity: int, heuristic: str):
        n = len(size)
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
        self.s0 = [s0[i] for i in self.order]
        self.s1 = [s1[i] for i in self.order]
        self.size = [size[i] for i in self.order]
        self.cap = capacity
        self.n_sections = n_sections
        ss0, ss1 = self.s0, self.s1
        self.live = [[] for _ in range(n_sections)]
        for i in range(n):
            for s in range(ss0[i], ss1[i]):
                self.live[s].append(i)
        ov = [set() for _ in range(n)]
        for lst in self.live:
            for i in lst:
                ov[i].update(lst)
        self.ov = [sorted(x - {i}) for i, x in enumerate(ov)]
        twin_of: dict[tuple[int, int, int], int] = {}
        self.twin = [-1] * n       # the previous identical buffer: placed first (symmetry)
        for i in range(n):
            k = (ss0[i], ss1[i], self.size[i])
            self.twin[i] = twin_of.get(k, -1)
            twin_of[k] = i
        self.memo: dict[tuple[int, int], tuple[int, int]] = {}
        self.nodes = 0

    def run(self, node_budget: int, deadline: float, tick: Callable[[int], None]) -> list[int] | None:
        """Offsets (internal order) or ``None`` when proved infeasible; ``_Abort`` on budget."""
        n, S, cap = len(self.size), self.n_sections, self.cap
        size, s0, s1, live, ov, twin, memo = (self.size, self.s0, self.s1, self.live, self.ov,
                                              self.twin, self.memo)
        off = [-1] * n
        sol = [-1] * n
        minoff = [0] * n
        total = [0] * S
        for i in range(n):
            for s in range(s0[i], s1[i]):
                total[s] += size[i]
        cuts = [0] * max(S - 1, 0)
        for i in range(n):
            for k in range(s0[i], s1[i] - 1):
                cuts[k] += 1
        witness = [lst[0] if lst else -1 for lst in live]
        watchers: list[list[int]] = [[] for _ in range(n)]
        for s, w in enumerate(witness):
            if w >= 0:
                watchers[w].append(s)
        budget = self.nodes + node_budget
        state = {"nodes": self.nodes}

        def search(bufs: list[int], sa: int, sb: int, last_off: int, last_idx: int) -> bool:
            nodes = state["nodes"] = state["nodes"] + 1
            if nodes > budget:
                raise _Abort
            if not nodes & 255:
                if time.perf_counter() > deadline:
                    raise _Abort
                tick(nodes)
            un = [i for i in bufs if off[i] < 0]
            if not un:
                return True
            mo = [minoff[i] for i in un]
            key = (hash(tuple(un)), hash(tuple(mo)))
            last = (last_off, last_idx)
            seen = memo.get(key)
            if seen is not None and seen <= last:
                return False
            min_height = min([m + size[i] for m, i in zip(mo, un)])
            cands = []
            for m, i in zip(mo, un):
                if m < min_height and (m > last_off or (m == last_off and i > last_idx)):
                    t = twin[i]
                    if t < 0 or off[t] >= 0:
                        cands.append(m * n + i)
            cands.sort()
            for c in cands:
                o, i = divmod(c, n)
                sz_i = size[i]
                top = o + sz_i
                off[i] = sol[i] = o
                a, b = s0[i], s1[i]
                for s in range(a, b):
                    total[s] -= sz_i
                raised: list[tuple[int, int]] = []
                wch: list[tuple[int, int, int]] = []
                ok = o + max(total[sa:sb]) <= cap
                if ok:
                    for j in ov[i]:
                        if off[j] < 0 and minoff[j] < top:
                            raised.append((j, minoff[j]))
                            minoff[j] = top
                    # Section inference: every section keeps an unplaced buffer that still fits.
                    for j in [i] + [r[0] for r in raised]:
                        for s in watchers[j]:
                            if witness[s] != j or (off[j] < 0 and minoff[j] + total[s] <= cap):
                                continue
                            lim = cap - total[s]
                            new = -1
                            anyleft = False
                            for k in live[s]:
                                if off[k] < 0:
                                    anyleft = True
                                    if minoff[k] <= lim:
                                        new = k
                                        break
                            if new < 0 and anyleft:
                                ok = False
                                break
                            wch.append((s, j, new))
                            witness[s] = new
                            if new >= 0:
                                watchers[new].append(s)
                        if not ok:
                            break
                result = False
                if ok:
                    cps = []
                    for k in range(a, b - 1):
                        cuts[k] -= 1
                        if not cuts[k]:
                            cps.append(k + 1)
                    if not cps:
                        result = search(bufs, sa, sb, o, i)
                    else:
                        bounds = [sa] + cps + [sb]
                        result = True
                        for q in range(len(bounds) - 1):
                            ca, cb = bounds[q], bounds[q + 1]
                            sub = [j for j in bufs if off[j] < 0 and s0[j] < cb and ca < s1[j]]
                            if sub and not search(sub, ca, cb, -1, -1):
                                result = False
                                break
                    for k in range(a, b - 1):
                        cuts[k] += 1
                for s, old, new in reversed(wch):
                    witness[s] = old
                    if new >= 0:
                        watchers[new].pop()
                for j, v in reversed(raised):
                    minoff[j] = v
                for s in range(a, b):
                    total[s] += sz_i
                off[i] = -1
                if result:
                    return True
            if seen is None or last < seen:
                memo[key] = last
            return False

        try:
            ok = True
            bounds = [0] + [k + 1 for k in range(S - 1) if cuts[k] == 0] + [S]
            for q in range(len(bounds) - 1):
                ca, cb = bounds[q], bounds[q + 1]
                sub = [j for j in range(n) if s0[j] < cb and ca < s1[j]]
                if sub and not search(sub, ca, cb, -1, -1):
                    ok = False
                    break
        finally:
            self.nodes = state["nodes"]
        if not ok:
            return None
        result = [0] * n
        for k, i in enumerate(self.order):
            result[i] = sol[k]
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

    Returns ``(offsets | None, proved_infeasible, nodes)``."""
    n = len(size)
    solvers = [_Canonical(s0, s1, width, size, n_sections, capacity, h) for h in _PREORDERINGS]
    budget = max(n, 16)
    last_report = [0.0]

    def tick(nodes: int) -> None:
        now = time.perf_counter()
        if progress is not None and now - last_report[0] > 0.25:
            last_report[0] = now
            done = sum(x.nodes for x in solvers)
            progress(f"branch and bound: {done:,} nodes, budget {budget:,}/ordering, "
                     f"{now - t0:.1f} s")

    # the search recurses once per placed buffer (and per split): allow that depth (Python 3.11
    # does not use the C stack for Python-to-Python calls)
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 4 * n + 2000))
    try:
        while True:
            budget *= 2
            if max_nodes is not None and budget > max_nodes:
                return None, False, sum(x.nodes for x in solvers)
            for sv in solvers:
                try:
                    res = sv.run(budget, deadline, tick)
                except _Abort:
                    if time.perf_counter() > deadline:
                        return None, False, sum(x.nodes for x in solvers)
                    continue
                return res, res is None, sum(x.nodes for x in solvers)
    finally:
        sys.setrecursionlimit(old_limit)


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
