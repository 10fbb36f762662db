"""Schedule search for strict mode: topological orders that need little non-compulsory traffic.

The CP-SAT model (:mod:`memmap.ilp.model`) is exact for ONE fixed schedule. This module looks
for schedules worth giving it: a local search over topological orders scored by a fast
evaluator, deterministic for a seed.

* **Evaluator** (:func:`estimate_traffic`): byte-level Belady replacement over the schedule
  (COSMA's baseline recipe without addresses): each step brings its operator's managed values
  in; when the resident *bytes* would exceed the capacity, resident values not used by the
  operator are evicted, furthest next read first (clean before dirty, larger first); values are
  freed after their last read. In-place pairs (docs/semantics.md): an output takes its input's
  bytes when the input is not read again; when evictions alone leave no room, inputs read later
  hand their buffer over too (latest next read first), at the price of a spill and a reload. It counts reload bytes (every load but a parameter's first) and
  spill bytes (a produced intermediate evicted while still needed, once). It ignores addresses
  (fragmentation), so it is a proxy, neither a bound nor a plan; the exact model decides.
  It is written here, not imported from ``memmap.baselines`` (no solver imports another).
  A numba kernel over int64 arrays (:func:`_evaluate_kernel`, ~0.2 ms for 1711 operators) gives
  exactly the estimates of the pure-Python reference (:func:`_evaluate_py`, ~7 ms), which runs
  when numba is not installed.
* **Search** (:func:`search_schedules`): simulated annealing over topological orders. A move
  picks a step (with probability 0.7 near a step where the evaluator evicted something, else
  any), then either re-inserts its operator at a random position of its window in the current
  order (after its last producer, before its first consumer), or swaps the blocks of up to 32
  operators ending there and starting after it when the later block reads nothing of the
  earlier one (moving a branch past another). Every order visited is topological. Cost: evaluated traffic, then (weighted down) the *excess*: sum over steps of
  the full-residency live bytes above the capacity, which breaks the plateaus of equal traffic.
  One run per start schedule; the best distinct orders are returned. A run also ends after
  ``30 n + 1000`` moves without a new best, after ``400 n + 2000`` moves (n operators), or at
  zero traffic and zero excess.
* **Budget**: a number of evaluator *work units* (steps + operand references walked), derived
  from the nominal time given (``WORK_UNITS_PER_S`` units per second, calibrated on the 2-core
  development machine; ``WORK_UNITS_PER_S_INTERPRETED`` without numba), never from elapsed wall
  time: the same inputs, seed and evaluator backend give the same schedules (both backends give
  the same estimates, so only the budget differs between them). A wall-clock safety net (2x
  the nominal time, started after the first evaluation, which may compile the kernel) stops a
  run on a very slow machine; the result then says ``stopped_by="wall limit"`` and determinism
  is lost.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Sequence

import numpy as np

from memmap import limits
from memmap.numba_kernels import BACKEND as EVALUATOR_BACKEND
from memmap.numba_kernels import compile_kernel as _jit
from memmap.numba_kernels import numba as _numba
from memmap.numba_kernels import warn_interpreted
from memmap.problem import Problem

# The evaluator is one kernel over int64 arrays, compiled with numba when it is installed (about
# 35x faster than the pure-Python reference :func:`_evaluate_py`, which gives the same results,
# runs without numba, and is what the tests compare the kernel against).
# capacities are clamped to this in the kernel (int64); live bytes never come near it
_CAP_CLAMP = 1 << 62
_NEG_CAP_LIMIT = 1 << 40

# evaluator work units (steps + operand references walked) per nominal second. The budget buys
# ``time_s * WORK_UNITS_PER_S / unit`` moves (unit = steps + references of the graph); a move the
# search skips (no room to move) costs no evaluation. Measured on the shared 2-core development
# machine with the numba evaluator (resnet50.train.after, 1711 operators, unit 8701): the search
# walks 2.1-2.9e7 evaluated units per second alone (2500-3300 evaluations/s; the interpreted
# reference in the same conditions: 1.0e6, 117/s), and with ~2.6 moves per evaluation spends
# 6-8e7 budget units per wall second alone, about half of that with two other solver processes on
# the 2 cores. 3e7 makes a search of nominal T seconds take 0.4-0.5 T alone and about T under
# moderate to heavy load. Without numba the search is ~20x slower: WORK_UNITS_PER_S_INTERPRETED (the
# calibration of that evaluator on the same machine: 1.1e6 evaluated units per second alone,
# 0.35-0.5e6 with two other solver processes) keeps searches near their nominal time.
WORK_UNITS_PER_S = 3e7
WORK_UNITS_PER_S_INTERPRETED = 0.6e6
# a search run is stopped by the wall clock after this multiple of its nominal time
WALL_SAFETY_FACTOR = 2.0
# share of each start's work budget for the annealing; the descent gets what it leaves
ANNEAL_SHARE = 0.75


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Result of :func:`estimate_traffic`.

    Attributes:
      noncompulsory_bytes: reload + spill bytes of byte-level Belady replacement (a proxy).
      excess_byte_steps: sum over steps of full-residency live bytes above the capacity.
      segments: ``[(value, first_step, last_step)]`` residency segments of the replacement
        (usable as a starting plan once given addresses).
      evict_steps: steps at which something was evicted (where reordering may help).
      feasible: False when some step's working set alone exceeds the capacity.
    """

    noncompulsory_bytes: int
    excess_byte_steps: int
    segments: tuple[tuple[int, int, int], ...]
    evict_steps: tuple[int, ...]
    feasible: bool = True


class _Ctx:
    """Per-problem data of the evaluator (plain lists for speed)."""

    def __init__(self, problem: Problem):
        g = problem.graph
        m = problem.managed
        self.n_ops = len(g.ops)
        self.asz = problem.alloc_size
        self.size = [v.size_bytes for v in g.values]
        self.produced = [v.producer is not None for v in g.values]
        self.is_output = [v.is_output for v in g.values]
        self.ins = [tuple(dict.fromkeys(v for v in op.inputs if m[v])) for op in g.ops]
        self.outs = [tuple(dict.fromkeys(v for v in op.outputs if m[v] and v not in op.inputs)) for op in g.ops]
        self.preds: list[tuple[int, ...]] = []
        self.succs: list[list[int]] = [[] for _ in g.ops]
        for op in g.ops:
            ps = tuple(sorted({g.values[v].producer for v in op.inputs if g.values[v].producer is not None}))
            self.preds.append(ps)
            for q in ps:
                self.succs[q].append(op.id)
        self.succs = [sorted(s) for s in self.succs]
        # in-place pairs (both managed): the inputs whose buffer an output may take
        self.pair_ins = [tuple(vi for vo, vi in pr) for pr in problem.inplace_pairs]
        self.refs = sum(len(a) + len(b) for a, b in zip(self.ins, self.outs))
        # the same data as int64 arrays for the compiled kernel: operands in CSR form
        # (``ins_idx[ins_ptr[o]:ins_ptr[o + 1]]`` are ``ins[o]``, in the same order)
        self.ins_ptr, self.ins_idx = _csr(self.ins)
        self.outs_ptr, self.outs_idx = _csr(self.outs)
        self.pairs_ptr, self.pairs_idx = _csr(self.pair_ins)
        self.op_refs = np.diff(self.ins_ptr) + np.diff(self.outs_ptr)
        self.asz_a = np.asarray(self.asz, dtype=np.int64).reshape(-1)
        self.size_a = np.asarray(self.size, dtype=np.int64).reshape(-1)
        self.produced_a = np.asarray(self.produced, dtype=np.bool_).reshape(-1)
        self.is_output_a = np.asarray(self.is_output, dtype=np.bool_).reshape(-1)
        # the kernel's int64 sums (traffic, live bytes, excess) stay below (steps + 1) x this
        self.bytes_bound = sum(self.asz) + sum(self.size) + _NEG_CAP_LIMIT


def _csr(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(ptr [len(rows) + 1], idx [sum of lengths])`` int64 arrays of a list of int rows."""
    ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(r) for r in rows], dtype=np.int64)
    idx = np.fromiter((v for r in rows for v in r), dtype=np.int64, count=int(ptr[-1]))
    return ptr, idx


def _evaluate(ctx: _Ctx, order: Sequence[int], cap: int, want_segments: bool = False,
              step_caps: Sequence[int] | None = None) -> Estimate:
    """Byte-level Belady replacement over ``order`` (the module docstring): the compiled kernel
    (:func:`_evaluate_kernel`), with exactly the results of the reference :func:`_evaluate_py`.
    ``step_caps`` (optional): a capacity per step, replacing ``cap`` step by step. ``order`` may
    be an int64 array (the search keeps one, updated in place, to spare the conversion)."""
    if _numba is None:
        warn_interpreted("the schedule-search evaluator", "about 20x slower, with a smaller search budget")
        if isinstance(order, np.ndarray):
            order = order.tolist()
        return _evaluate_py(ctx, order, cap, want_segments, step_caps)
    return _evaluate_compiled(ctx, order, cap, want_segments, step_caps)


def _evaluate_compiled(ctx: _Ctx, order: Sequence[int], cap: int, want_segments: bool = False,
                       step_caps: Sequence[int] | None = None) -> Estimate:
    """:func:`_evaluate` through the array kernel (interpreted when numba is missing)."""
    o = order if isinstance(order, np.ndarray) and order.dtype == np.int64 else \
        np.fromiter(order, dtype=np.int64, count=len(order))
    n = o.shape[0]
    # capacities above _CAP_CLAMP act like it (live bytes stay far below it)
    if step_caps is None:
        caps_l = [min(int(cap), _CAP_CLAMP)]
    else:
        caps_l = [min(int(c), _CAP_CLAMP) for c in step_caps[:n]]
    # what the kernel cannot take goes to the reference (its results, or its IndexError): op ids
    # out of range, too few step capacities, sums that could overflow int64 (huge sizes, very
    # negative capacities)
    if (n and (int(o.min()) < 0 or int(o.max()) >= ctx.n_ops)) or (step_caps is not None and len(caps_l) < n) \
            or (n + 1) * ctx.bytes_bound >= _CAP_CLAMP or (caps_l and min(caps_l) < -_NEG_CAP_LIMIT):
        return _evaluate_py(ctx, order, cap, want_segments, step_caps)
    caps = np.full(n, caps_l[0], dtype=np.int64) if step_caps is None else np.array(caps_l, dtype=np.int64)
    max_segs = int(ctx.op_refs[o].sum()) if want_segments else 0
    segs = np.empty((max_segs, 3), dtype=np.int64)
    evicts = np.empty(n, dtype=np.int64)
    traffic, excess, n_segs, n_evicts, feasible = _evaluate_kernel(
        o, ctx.ins_ptr, ctx.ins_idx, ctx.outs_ptr, ctx.outs_idx, ctx.pairs_ptr, ctx.pairs_idx, ctx.asz_a,
        ctx.size_a, ctx.produced_a, ctx.is_output_a, caps, want_segments, segs, evicts)
    seg_t = tuple(map(tuple, segs[:n_segs].tolist())) if want_segments else ()
    return Estimate(int(traffic), int(excess), seg_t, tuple(evicts[:n_evicts].tolist()), bool(feasible))


@_jit
def _sift_down(c_u, c_k, c_a, i, m):  # pragma: no cover - compiled by numba
    """Restore the max-heap ``[0, m)`` of eviction candidates below slot ``i``; the key of slot
    ``j`` is ``(c_k[j], c_a[j], -c_u[j])``."""
    while True:
        j = 2 * i + 1
        if j >= m:
            return
        r = j + 1
        if r < m and (c_k[r] > c_k[j] or (c_k[r] == c_k[j] and (
                c_a[r] > c_a[j] or (c_a[r] == c_a[j] and c_u[r] < c_u[j])))):
            j = r
        if c_k[j] > c_k[i] or (c_k[j] == c_k[i] and (c_a[j] > c_a[i] or (c_a[j] == c_a[i] and c_u[j] < c_u[i]))):
            c_u[i], c_u[j] = c_u[j], c_u[i]
            c_k[i], c_k[j] = c_k[j], c_k[i]
            c_a[i], c_a[j] = c_a[j], c_a[i]
            i = j
        else:
            return


@_jit
def _evaluate_kernel(order, ins_ptr, ins_idx, outs_ptr, outs_idx, pairs_ptr, pairs_idx, asz, size,
                     produced, is_output, caps, want_segments, segs, evicts):  # pragma: no cover - compiled by numba
    """The replacement of :func:`_evaluate_py` over arrays. Inputs: ``order [n]``, operands and
    in-place pair inputs in CSR form, per-value ``asz, size, produced, is_output [n_values]``,
    ``caps [n]`` (a capacity per step). Writes ``segs [:n_segs, 3]`` (when ``want_segments``) and
    ``evicts [:n_evicts]``; returns ``(traffic, excess, n_segs, n_evicts, feasible)``.

    The resident set is a dense list with positions (O(1) insert and remove). Eviction gathers the
    unpinned residents' keys ``(next_read, has_copy, asz, -value)`` once per step into a max-heap
    and pops the largest one at a time: the order of the reference's descending sort (the keys do
    not change while evicting; ``-value`` makes them distinct). A sequence number per insertion
    gives the reference's dict order for the final segments."""
    n = order.shape[0]
    nv = asz.shape[0]
    inf = n                                  # later than any step
    # read steps per value, CSR: reads[rptr[v]:rptr[v + 1]], ascending
    rptr = np.zeros(nv + 1, np.int64)
    for t in range(n):
        o = order[t]
        for k in range(ins_ptr[o], ins_ptr[o + 1]):
            rptr[ins_idx[k] + 1] += 1
    for v in range(nv):
        rptr[v + 1] += rptr[v]
    reads = np.empty(rptr[nv], np.int64)
    nxt = rptr[:nv].copy()                   # index in ``reads`` of the next read
    for t in range(n):
        o = order[t]
        for k in range(ins_ptr[o], ins_ptr[o + 1]):
            v = ins_idx[k]
            reads[nxt[v]] = t
            nxt[v] += 1
    nxt[:] = rptr[:nv]
    start = np.full(nv, -1, np.int64)        # first step of the current segment; -1: not resident
    seq = np.zeros(nv, np.int64)             # insertion number (the reference's dict order)
    res = np.empty(nv, np.int64)             # resident values, dense
    res_pos = np.zeros(nv, np.int64)
    n_res = 0
    n_ins = 0
    has_copy = np.zeros(nv, np.bool_)
    loaded = np.zeros(nv, np.bool_)
    pinned = np.full(nv, -1, np.int64)       # step at which the value is an operand being evicted around
    first_touch = np.full(nv, -1, np.int64)
    delta = np.zeros(n + 1, np.int64)
    c_u = np.empty(nv, np.int64)             # eviction candidates: value, key, alloc size
    c_k = np.empty(nv, np.int64)
    c_a = np.empty(nv, np.int64)
    shared = np.zeros(nv, np.bool_)          # pair inputs handing their buffer over at this step
    hand = np.empty(nv, np.int64)            # ... in the order they were chosen
    n_hand = 0
    live = 0
    traffic = 0
    feasible = True
    n_segs = 0
    n_evicts = 0
    for t in range(n):
        o = order[t]
        i0, i1 = ins_ptr[o], ins_ptr[o + 1]
        j0, j1 = outs_ptr[o], outs_ptr[o + 1]
        need = 0
        for k in range(i0, i1):
            v = ins_idx[k]
            if start[v] < 0:
                need += asz[v]
            if first_touch[v] < 0:
                first_touch[v] = t
        for k in range(j0, j1):
            v = outs_idx[k]
            need += asz[v]
            first_touch[v] = t
        p0, p1 = pairs_ptr[o], pairs_ptr[o + 1]
        n_hand = 0
        for k in range(p0, p1):                 # inputs read for the last time: free hand-over
            v = pairs_idx[k]
            if nxt[v] + 1 >= rptr[v + 1]:
                shared[v] = True
                hand[n_hand] = v
                n_hand += 1
                need -= asz[v]
        cap = caps[t]
        if live + need > cap:
            for k in range(i0, i1):
                pinned[ins_idx[k]] = t
            # the candidates, compactly: key (2 next_read + has_copy, asz, -value), largest first
            m = 0
            for i in range(n_res):
                u = res[i]
                if pinned[u] == t:
                    continue
                nr = reads[nxt[u]] if nxt[u] < rptr[u + 1] else inf
                c_u[m] = u
                c_k[m] = 2 * nr + (1 if has_copy[u] else 0)
                c_a[m] = asz[u]
                m += 1
            for i in range(m // 2 - 1, -1, -1):     # a max-heap of the candidates by key
                _sift_down(c_u, c_k, c_a, i, m)
            while live + need > cap and m > 0:
                u = c_u[0]
                m -= 1
                c_u[0], c_k[0], c_a[0] = c_u[m], c_k[m], c_a[m]
                _sift_down(c_u, c_k, c_a, 0, m)
                if nxt[u] < rptr[u + 1] and not has_copy[u]:
                    if produced[u] and not is_output[u]:
                        traffic += size[u]           # the one spill
                    has_copy[u] = True
                if want_segments:
                    segs[n_segs, 0] = u
                    segs[n_segs, 1] = start[u]
                    segs[n_segs, 2] = t - 1
                    n_segs += 1
                start[u] = -1
                last = res[n_res - 1]
                res[res_pos[u]] = last
                res_pos[last] = res_pos[u]
                n_res -= 1
                live -= asz[u]
            # inputs read later hand their buffer over too: latest next read first
            while live + need > cap:
                best = -1
                for k in range(p0, p1):
                    v = pairs_idx[k]
                    if shared[v]:
                        continue
                    if best < 0:
                        best = v
                        continue
                    rv = reads[nxt[v] + 1] if nxt[v] + 1 < rptr[v + 1] else inf
                    rb = reads[nxt[best] + 1] if nxt[best] + 1 < rptr[best + 1] else inf
                    if rv > rb or (rv == rb and (asz[v] > asz[best] or (asz[v] == asz[best] and v < best))):
                        best = v
                if best < 0:
                    break
                shared[best] = True
                hand[n_hand] = best
                n_hand += 1
                need -= asz[best]
            evicts[n_evicts] = t
            n_evicts += 1
            if live + need > cap:
                feasible = False
        for k in range(i0, i1):
            v = ins_idx[k]
            if start[v] < 0:
                if produced[v] or loaded[v]:
                    traffic += size[v]               # reload
                loaded[v] = True
                start[v] = t
                seq[v] = n_ins
                n_ins += 1
                res[n_res] = v
                res_pos[v] = n_res
                n_res += 1
                live += asz[v]
        for k in range(j0, j1):
            v = outs_idx[k]
            if start[v] < 0:
                seq[v] = n_ins
                n_ins += 1
                res[n_res] = v
                res_pos[v] = n_res
                n_res += 1
            start[v] = t
            live += asz[v]
            if is_output[v]:
                has_copy[v] = True                   # writeback (compulsory)
        # the hand-overs: the input's segment ends (the segment/resident-list bookkeeping is
        # written out as at the evictions and frees: a helper function measured 35% slower)
        for h in range(n_hand):
            v = hand[h]
            shared[v] = False
            if nxt[v] + 1 < rptr[v + 1]:
                if not has_copy[v]:
                    if produced[v] and not is_output[v]:
                        traffic += size[v]           # the one spill (it is read later)
                    has_copy[v] = True
            else:
                delta[first_touch[v]] += asz[v]      # full residency: one buffer at step t
                delta[t] -= asz[v]
            if want_segments:
                segs[n_segs, 0] = v
                segs[n_segs, 1] = start[v]
                segs[n_segs, 2] = t
                n_segs += 1
            start[v] = -1
            last = res[n_res - 1]
            res[res_pos[v]] = last
            res_pos[last] = res_pos[v]
            n_res -= 1
            live -= asz[v]
        for k in range(i0, i1):
            nxt[ins_idx[k]] += 1
        if t < n - 1:
            for kk in range(i0, i1 + (j1 - j0)):
                if kk < i1:
                    v = ins_idx[kk]
                else:
                    v = outs_idx[j0 + kk - i1]
                if start[v] >= 0 and nxt[v] >= rptr[v + 1]:
                    if want_segments:
                        segs[n_segs, 0] = v
                        segs[n_segs, 1] = start[v]
                        segs[n_segs, 2] = t
                        n_segs += 1
                    start[v] = -1
                    last = res[n_res - 1]
                    res[res_pos[v]] = last
                    res_pos[last] = res_pos[v]
                    n_res -= 1
                    live -= asz[v]
                    delta[first_touch[v]] += asz[v]
                    delta[t + 1] -= asz[v]
    # the values still resident, in insertion order
    keys = np.empty(n_res, np.int64)
    for i in range(n_res):
        keys[i] = seq[res[i]]
    for i in np.argsort(keys):
        v = res[i]
        if want_segments:
            segs[n_segs, 0] = v
            segs[n_segs, 1] = start[v]
            segs[n_segs, 2] = n - 1
            n_segs += 1
        delta[first_touch[v]] += asz[v]
        delta[n] -= asz[v]
    excess = 0
    cur = 0
    for t in range(n):
        cur += delta[t]
        if cur > caps[t]:
            excess += cur - caps[t]
    return traffic, excess, n_segs, n_evicts, feasible


def _evaluate_py(ctx: _Ctx, order: Sequence[int], cap: int, want_segments: bool = False,
                 step_caps: Sequence[int] | None = None) -> Estimate:
    """The reference evaluator (pure Python, dicts and sets): used without numba and by the tests
    as the specification of :func:`_evaluate_kernel`. ``step_caps``: as :func:`_evaluate`."""
    asz, size, produced, is_output = ctx.asz, ctx.size, ctx.produced, ctx.is_output
    reads: dict[int, list[int]] = {}
    for t, o in enumerate(order):
        for v in ctx.ins[o]:
            r = reads.get(v)
            if r is None:
                reads[v] = [t]
            else:
                r.append(t)
    ptr: dict[int, int] = dict.fromkeys(reads, 0)
    inf = math.inf

    def next_read(v: int):
        r = reads.get(v)
        if r is None:
            return inf
        i = ptr[v]
        return r[i] if i < len(r) else inf

    start: dict[int, int] = {}          # resident value -> first step of its current segment
    has_copy: set[int] = set()
    loaded: set[int] = set()
    live = 0
    traffic = 0
    feasible = True
    segs: list[tuple[int, int, int]] = []
    evicts: list[int] = []
    # full-residency live bytes per step (for the excess)
    n = len(order)
    delta = [0] * (n + 1)
    first_touch: dict[int, int] = {}
    for t, o in enumerate(order):
        ins, outs = ctx.ins[o], ctx.outs[o]
        need = 0
        for v in ins:
            if v not in start:
                need += asz[v]
            if v not in first_touch:
                first_touch[v] = t
        for v in outs:
            need += asz[v]
            first_touch[v] = t

        def read_after(v):                          # next read after this step
            r = reads[v]
            i = ptr[v] + 1
            return r[i] if i < len(r) else inf

        hand = [v for v in ctx.pair_ins[o] if read_after(v) == inf]   # free hand-overs
        need -= sum(asz[v] for v in hand)
        if step_caps is not None:
            cap = step_caps[t]
        if live + need > cap:
            pinned = set(ins)
            cands = [u for u in start if u not in pinned]
            cands.sort(key=lambda u: (next_read(u), u in has_copy, asz[u], -u), reverse=True)
            for u in cands:
                if live + need <= cap:
                    break
                nr = next_read(u)
                if nr != inf and u not in has_copy:
                    if produced[u] and not is_output[u]:
                        traffic += size[u]          # the one spill
                    has_copy.add(u)
                if want_segments:
                    segs.append((u, start[u], t - 1))
                del start[u]
                live -= asz[u]
            # inputs read later hand their buffer over too: latest next read first
            for v in sorted((v for v in ctx.pair_ins[o] if v not in hand),
                            key=lambda v: (read_after(v), asz[v], -v), reverse=True):
                if live + need <= cap:
                    break
                hand.append(v)
                need -= asz[v]
            evicts.append(t)
            if live + need > cap:
                feasible = False
        for v in ins:
            if v not in start:
                if produced[v] or v in loaded:
                    traffic += size[v]               # reload
                loaded.add(v)
                start[v] = t
                live += asz[v]
        for v in outs:
            start[v] = t
            live += asz[v]
            if is_output[v]:
                has_copy.add(v)                      # writeback (compulsory)
        for v in hand:                               # the hand-overs: the input's segment ends
            if read_after(v) != inf:
                if v not in has_copy:
                    if produced[v] and not is_output[v]:
                        traffic += size[v]           # the one spill (it is read later)
                    has_copy.add(v)
            else:
                delta[first_touch[v]] += asz[v]      # full residency: one buffer at step t
                delta[t] -= asz[v]
            if want_segments:
                segs.append((v, start[v], t))
            del start[v]
            live -= asz[v]
        for v in ins:
            ptr[v] += 1
        if t < n - 1:
            for v in ins + outs:
                if v in start and next_read(v) == inf:
                    if want_segments:
                        segs.append((v, start[v], t))
                    del start[v]
                    live -= asz[v]
                    delta[first_touch[v]] += asz[v]
                    delta[t + 1] -= asz[v]
    for v, s in start.items():
        if want_segments:
            segs.append((v, s, n - 1))
        delta[first_touch[v]] += asz[v]
        delta[n] -= asz[v]
    excess = 0
    cur = 0
    for t in range(n):
        cur += delta[t]
        c = step_caps[t] if step_caps is not None else cap
        if cur > c:
            excess += cur - c
    return Estimate(traffic, excess, tuple(segs), tuple(evicts), feasible)


def estimate_traffic(problem: Problem, schedule: Sequence[int], *,
                     capacity_bytes: int | Sequence[int] | None = None) -> Estimate:
    """Byte-level Belady replacement over ``schedule`` (strict mode; see the module docstring).

    ``capacity_bytes`` defaults to the problem's capacity; a smaller one, or one capacity per
    step (a sequence as long as the schedule), models the room lost to fragmentation."""
    if capacity_bytes is not None and not isinstance(capacity_bytes, int):
        caps = [int(c) for c in capacity_bytes]
        if len(caps) != len(schedule):
            raise ValueError(f"estimate_traffic: {len(caps)} step capacities for {len(schedule)} steps")
        return _evaluate(_Ctx(problem), schedule, max(caps, default=0), want_segments=True, step_caps=caps)
    cap = problem.target.capacity_bytes if capacity_bytes is None else int(capacity_bytes)
    return _evaluate(_Ctx(problem), schedule, cap, want_segments=True)


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Result of :func:`search_schedules`.

    Attributes:
      schedules: the best distinct schedules found, best first (each a topological order).
      estimates: ``[(noncompulsory_bytes, excess_byte_steps)]`` of each, by the evaluator.
      start_estimates: the same for each start schedule.
      evaluations: evaluator calls made.
      work_units: evaluator work spent (the deterministic budget's unit).
      stopped_by: ``budget`` (deterministic) or ``wall limit`` (safety net; not deterministic).
      wall_s: wall-clock seconds spent.
    """

    schedules: tuple[tuple[int, ...], ...]
    estimates: tuple[tuple[int, int], ...]
    start_estimates: tuple[tuple[int, int], ...]
    evaluations: int
    work_units: int
    stopped_by: str
    wall_s: float


def _sink_group(ctx: _Ctx, o: int, limit: int = 1 << 30) -> set[int]:
    """``o`` and its *exclusive* ancestors: operators all of whose successors are in the group
    (a chain of reshapes feeding ``o``, say). Moving the group, in its current relative order,
    to just before ``o``'s first successor keeps the order topological: every operator outside
    the group that reads from it reads from ``o``, which still precedes it. At most ``limit``
    operators (a smaller group is still exclusive)."""
    group = {o}
    stack = [o]
    while stack and len(group) < limit:
        q = stack.pop()
        for p in ctx.preds[q]:
            # checked again whenever one of its successors joins, so the last one decides
            if p not in group and all(x in group for x in ctx.succs[p]):
                group.add(p)
                stack.append(p)
                if len(group) >= limit:
                    break
    return group


def _sink_slice(order: list[int], pos: list[int], group: set[int], first: int) -> tuple[int, list[int]]:
    """``(a, new)``: the group moved to just before step ``first`` rewrites ``order[a:first]``
    as ``new`` (the other operators keep their order, then the group in its order)."""
    a = min(pos[x] for x in group)
    seg = order[a:first]
    return a, [x for x in seg if x not in group] + [x for x in seg if x in group]


def _descend(ctx: _Ctx, start: Sequence[int], cap: int, budget_units: float,
             best: tuple[int, int], deadline: float = math.inf
             ) -> tuple[tuple[int, ...], tuple[int, int], int, int]:
    """Deterministic first-improvement descent after the annealing, from its best order.

    Two moves, each accepted only when the evaluated (traffic, excess) strictly improves:
    *sink* an operator with its exclusive ancestors (:func:`_sink_group`) to just before its
    first successor (later operators first), and *hoist* one operator to just after its last
    predecessor. Passes repeat until one improves nothing, the work budget ends or the wall
    clock passes ``deadline`` (the best order so far is kept). Sinking a
    whole group is what a single-operator move cannot do: moving the last reshape of a chain
    alone leaves the chain's earlier value live across the same steps, so it gains nothing.
    Returns (order, score, evaluations, work units)."""
    order = list(start)
    n = len(order)
    pos = [0] * ctx.n_ops
    for t, o in enumerate(order):
        pos[o] = t
    arr = np.array(order, dtype=np.int64)
    unit = n + ctx.refs
    work = evals = 0
    cur = best

    def attempt(a: int, new: list[int]) -> bool:
        nonlocal cur, work, evals, budget_units
        if (evals & 15) == 0:
            limits.check()
            if time.perf_counter() > deadline:
                budget_units = 0           # ends every loop below
                return False
        b = a + len(new)
        saved = arr[a:b].copy()
        arr[a:b] = new
        e = _evaluate(ctx, arr, cap)
        work += unit
        evals += 1
        cand = (e.noncompulsory_bytes, e.excess_byte_steps)
        if cand < cur:
            cur = cand
            order[a:b] = new
            for t in range(a, b):
                pos[order[t]] = t
            return True
        arr[a:b] = saved
        return False

    while work + unit <= budget_units and cur != (0, 0):
        gained = False
        for o in sorted(range(ctx.n_ops), key=lambda x: -pos[x]):
            if work + unit > budget_units:
                break
            if not ctx.succs[o]:
                continue
            first = min(pos[x] for x in ctx.succs[o])
            if first == pos[o] + 1:
                continue
            a, new = _sink_slice(order, pos, _sink_group(ctx, o), first)
            if new != order[a:first]:
                gained |= attempt(a, new)
        for o in sorted(range(ctx.n_ops), key=lambda x: pos[x]):
            if work + unit > budget_units:
                break
            lo = max((pos[p] for p in ctx.preds[o]), default=-1) + 1
            if lo < pos[o]:
                seg = order[lo:pos[o] + 1]
                gained |= attempt(lo, [o] + seg[:-1])
        if not gained:
            break
    return tuple(order), cur, evals, work


def _anneal(ctx: _Ctx, start: Sequence[int], cap: int, rng: random.Random, budget_units: float,
            deadline: float) -> tuple[tuple[int, ...], tuple[int, int], int, int, bool]:
    """One simulated-annealing run from ``start``. Returns (best order, its (traffic, excess),
    evaluations, work units, stopped by the wall clock)."""
    n = len(start)
    order = list(start)
    pos = [0] * ctx.n_ops
    for t, o in enumerate(order):
        pos[o] = t
    arr = np.array(order, dtype=np.int64)     # the evaluator's copy of ``order``, kept in step
    est = _evaluate(ctx, arr, cap)
    cur = (est.noncompulsory_bytes, est.excess_byte_steps)
    hot = est.evict_steps
    best, best_order = cur, tuple(order)
    unit = n + ctx.refs
    # the work budget, capped for small graphs, where a few hundred moves per operator suffice
    iters = max(1, min(int(budget_units // unit), 400 * n + 2000))
    stale_limit = 30 * n + 1000     # stop after this many moves without a new best
    last_gain = 0
    work = unit
    evals = 1
    if n < 2 or (cur[0] == 0 and cur[1] == 0):
        return best_order, best, evals, work, False
    # temperature: a few percent of a typical operand, cooling geometrically to ~0
    sizes = sorted(ctx.size[v] for o in order for v in ctx.ins[o] + ctx.outs[o])
    typical = sizes[len(sizes) // 2] if sizes else 1
    t0 = max(1.0, 0.5 * typical)
    t_end = t0 * 1e-3
    ex_w = 1.0 / max(1, n)       # excess is bytes x steps; one step's worth weighs like a byte
    wall_stop = False
    for it in range(iters):
        if (it & 63) == 0:
            limits.check()
            if time.perf_counter() > deadline:
                wall_stop = True
                break
        if it - last_gain > stale_limit:
            break
        temp = t0 * (t_end / t0) ** (it / iters)
        # pick a step: near one where something was evicted, else anywhere
        if hot and rng.random() < 0.7:
            t = min(n - 1, max(0, hot[rng.randrange(len(hot))] + rng.randint(-8, 8)))
        else:
            t = rng.randrange(n)
        r = rng.random()
        if r < 0.2:
            # sink an operator with its exclusive ancestors to just before its first successor
            o = order[t]
            if not ctx.succs[o]:
                continue
            first = min(pos[s] for s in ctx.succs[o])
            if first == pos[o] + 1:
                continue
            a, new_seg = _sink_slice(order, pos, _sink_group(ctx, o, 64), first)
            b = first - 1
            saved = order[a:b + 1]
            if new_seg == saved:
                continue
            order[a:b + 1] = new_seg
        elif r < 0.6:
            # move one operator to a random position of its window in the current order
            o = order[t]
            lo = max((pos[p] for p in ctx.preds[o]), default=-1) + 1
            hi = min((pos[s] for s in ctx.succs[o]), default=n) - 1
            if hi <= lo:
                continue
            new = rng.randint(lo, hi - 1)
            if new >= pos[o]:
                new += 1
            old = pos[o]
            a, b = min(old, new), max(old, new)
            saved = order[a:b + 1]
            order.pop(old)
            order.insert(new, o)
        else:
            # swap two adjacent blocks when the later block reads nothing produced in the earlier
            # one (moves a whole branch past another)
            len1, len2 = rng.randint(1, 32), rng.randint(1, 32)
            a = max(0, t - len1 + 1)
            mid, b = t + 1, min(n, t + 1 + len2)
            if mid >= b:
                continue
            first = order[a:mid]
            if any(a <= pos[p] < mid for o2 in order[mid:b] for p in ctx.preds[o2]):
                continue
            saved = order[a:b]
            order[a:b] = order[mid:b] + first
            b -= 1
        for t2 in range(a, b + 1):
            pos[order[t2]] = t2
        arr[a:b + 1] = order[a:b + 1]
        e = _evaluate(ctx, arr, cap)
        evals += 1
        work += unit
        cand = (e.noncompulsory_bytes, e.excess_byte_steps)
        d = (cand[0] - cur[0]) + ex_w * (cand[1] - cur[1])
        if d <= 0 or rng.random() < math.exp(-d / temp):
            cur = cand
            hot = e.evict_steps
            if cand < best:
                best, best_order = cand, tuple(order)
                last_gain = it
                if best == (0, 0):
                    break    # nothing to gain: no traffic and no step over the capacity
        else:   # undo
            order[a:b + 1] = saved
            arr[a:b + 1] = saved
            for t2 in range(a, b + 1):
                pos[order[t2]] = t2
    return best_order, best, evals, work, wall_stop


def search_schedules(problem: Problem, starts: Sequence[Sequence[int]], *, time_s: float, seed: int = 0,
                     keep: int = 2, capacity_bytes: int | None = None,
                     wall_limit_s: float | None = None) -> SearchResult:
    """Simulated annealing over topological orders, from each start schedule (strict mode).

    Args:
      problem: the problem (its capacity is the evaluator's unless ``capacity_bytes`` is given).
      starts: start schedules (valid topological orders); the budget is split evenly.
      time_s: nominal time; converted into a deterministic work budget (module docstring).
      seed: seed of the search (each start gets its own stream derived from it).
      keep: how many distinct schedules to return (the best, by evaluated (traffic, excess)).
      capacity_bytes: the evaluator's capacity (default: the problem's).
      wall_limit_s: wall-clock safety net (default ``WALL_SAFETY_FACTOR`` x ``time_s``; the
        deadline of :mod:`memmap.limits` too); when it stops the search, ``stopped_by`` is
        ``wall limit`` and the result may vary between runs.

    Returns a :class:`SearchResult`; its schedules include no start unless nothing better was
    found from it.
    """
    if not starts:
        raise ValueError("schedule search: no start schedule given")
    if keep < 1:
        raise ValueError(f"schedule search: keep must be >= 1, got {keep}")
    for i, s in enumerate(starts):
        reason = problem.graph.check_schedule(s)
        if reason:
            raise ValueError(f"schedule search: start schedule {i} is invalid: {reason}")
    ctx = _Ctx(problem)
    cap = problem.target.capacity_bytes if capacity_bytes is None else int(capacity_bytes)
    # the start estimates come before the wall clock starts: the first call may compile the
    # evaluator (seconds, once per installation) or load it from numba's cache
    start_est = [(e.noncompulsory_bytes, e.excess_byte_steps) for e in (_evaluate(ctx, s, cap) for s in starts)]
    t_start = time.perf_counter()
    deadline = t_start + (WALL_SAFETY_FACTOR * max(0.1, time_s) if wall_limit_s is None else wall_limit_s)
    deadline = min(deadline, limits.deadline())     # and the command's deadline
    rate = WORK_UNITS_PER_S if EVALUATOR_BACKEND == "numba" else WORK_UNITS_PER_S_INTERPRETED
    budget = time_s * rate / len(starts)
    found: dict[tuple[int, ...], tuple[int, int]] = {}
    evals = work = 0
    stopped = "budget"
    for k, s in enumerate(starts):
        rng = random.Random(seed * 1_000_003 + k)
        order, score, ev, wu, wall_stop = _anneal(ctx, s, cap, rng, ANNEAL_SHARE * budget, deadline)
        evals += ev
        work += wu
        if not wall_stop and time.perf_counter() < deadline:
            order, score, ev, wu = _descend(ctx, order, cap, budget - wu, score, deadline)
            wall_stop = time.perf_counter() > deadline
            evals += ev
            work += wu
        if wall_stop:
            stopped = "wall limit"
        if order not in found or score < found[order]:
            found[order] = score
    ranked = sorted(found.items(), key=lambda kv: (kv[1], _start_index(starts, kv[0])))
    out = tuple(o for o, _ in ranked[:keep])
    for o in out:
        assert problem.graph.check_schedule(o) is None
    return SearchResult(schedules=out, estimates=tuple(found[o] for o in out), start_estimates=tuple(start_est),
                        evaluations=evals, work_units=work, stopped_by=stopped,
                        wall_s=time.perf_counter() - t_start)


def _start_index(starts: Sequence[Sequence[int]], order: tuple[int, ...]) -> int:
    """Index of ``order`` among the start schedules (a deterministic tie-break: a start wins a tie
    with a new order); ``len(starts)`` when it is none of them."""
    for i, s in enumerate(starts):
        if tuple(s) == order:
            return i
    return len(starts)


__all__ = ["Estimate", "SearchResult", "estimate_traffic", "search_schedules", "EVALUATOR_BACKEND",
           "WORK_UNITS_PER_S", "WORK_UNITS_PER_S_INTERPRETED"]
