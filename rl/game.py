"""mallocGame: memory mapping as a single-player game (pure functions over an immutable state).

Rules (docs/rl.md has the long form):

* The schedule is fixed (the graph's default schedule). A value's *touches* are the steps whose
  operator reads or writes it. Each value is split into **items**, one per touch, as XLA's
  memory space assignment splits a buffer into use segments: a produced value has a
  *creation* item at its producer's step and one *use* item per later read; a parameter or
  constant has one use item per read.
* Items are presented one at a time. **Tiered** mode (default): values in XLA MSA's order
  (``memmap.cost.memory_boundedness``: roofline benefit / sqrt(size), then larger, then shorter
  live range, then id), each value's items in time order; values that no operator would run
  faster for are not presented (they stay in slow memory). **Strict** mode: items in time order
  (step, then larger first, then value id), every item presented.
* Actions (``NUM_ACTIONS = 2 + num_offsets``):
  ``0`` slow: the touch uses off-chip memory (tiered only);
  ``1`` keep: the value stays where it was at its previous touch (same offset, one residency,
  no transfer); legal when it was in the scratchpad then and the range is free in between;
  ``2 + k``: the value goes to the scratchpad at candidate offset ``k``. For a creation item the
  operator writes it there; for a use item it is (pre)fetched: a ``load`` (first copy of a
  parameter/constant) or ``reload`` issued at step ``s`` such that the operators between ``s`` and
  the use hide the transfer (on the all-slow operator times), as early as the range is free,
  never before the previous touch.
* Candidate offsets, like a best-fit heap: the free chunks (complement of the address ranges of
  already placed items that overlap in time) over the window from the item's wanted start to
  the value's last touch, smallest fitting chunk first (at its lowest offset); then the free
  chunks at the touch step alone, smallest first; duplicates dropped; the first ``num_offsets``.
  Strict mode also keeps the canonical slots of the step's later items free (the step's values
  packed from offset 0, larger first, an in-place pair in one slot), so a legal action always
  exists.
* In-place pairs (docs/semantics.md): the items of a pair ``(output, input)`` at their operator's
  step are *partners*. When one is placed, the other is offered its partner's offset as candidate
  ``0`` (the output written into the input's buffer, or the input fetched or kept into the buffer
  the output will take over), if the range is otherwise free and the input's residency ends at
  that step. The two then share one buffer: the input's next item may not keep (its buffer is
  gone; a later read is a reload or, tiered, slow), and a spill/writeback of the input's
  residency must finish before that step starts.
* Undecided items are slow. A produced value created in the scratchpad is written back at its
  creation step when it is an output, and spilled there when a *decided* later touch is not a
  keep (slow or fetched): the copy is charged to the decision that needs it, not before.
  Terminal states (both modes) decode to plans the verifier accepts.
* Reward: ``(T(before) - T(after)) / T0`` where ``T`` is the modelled time (``memmap.cost``'s
  roofline + DMA-queue model, computed here exactly) of the decoded state and ``T0`` the time with
  nothing in the scratchpad. The return of an episode is ``1 - T_final / T0``.

Shapes: ``N`` = number of items, ``n`` = number of steps, ``A = NUM_ACTIONS``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from memmap.cost import memory_boundedness
from memmap.errors import MemmapError
from memmap.numba_kernels import compile_kernel
from memmap.plan import Plan, Residency, Transfer
from memmap.problem import Problem

SLOW = 0
KEEP = 1
FIRST_OFFSET = 2
DEFAULT_NUM_OFFSETS = 6
MAX_PREFETCH_STEPS = 64

UNDECIDED, D_SLOW, D_FAST, D_KEEP = -1, 0, 1, 2

__all__ = ["GameInstance", "GameState", "Options", "make_instance", "initial_state", "options",
           "step", "is_terminal", "decode", "modelled_time", "num_actions", "current_item", "greedy_action",
           "SLOW", "KEEP", "FIRST_OFFSET"]


def num_actions(num_offsets: int = DEFAULT_NUM_OFFSETS) -> int:
    return FIRST_OFFSET + num_offsets


@dataclasses.dataclass(frozen=True, eq=False)
class GameInstance:
    """Everything static about one game: the problem and its items.

    Item arrays are ``[N]`` and ordered value by value, each value's items in time order (so a
    value's items are contiguous). ``order[k]`` is the item presented at move ``k``
    (``num_moves = len(order)``; in tiered mode values nobody benefits from are left out).
    """

    problem: Problem
    schedule: tuple[int, ...]
    num_offsets: int
    item_value: np.ndarray       # [N] value id
    item_step: np.ndarray        # [N] touch step
    item_prev_step: np.ndarray   # [N] previous touch of the value (-1 for its first)
    item_last_step: np.ndarray   # [N] last touch of the value
    item_creation: np.ndarray    # [N] bool: creation item
    item_first: np.ndarray       # [N] bool: first item of its value
    item_last: np.ndarray        # [N] bool: last item of its value
    item_size: np.ndarray        # [N] value size in bytes
    item_alloc: np.ndarray       # [N] allocated size
    item_weight: np.ndarray      # [N] bool: parameter/constant
    item_output: np.ndarray      # [N] bool: program output
    item_want_start: np.ndarray  # [N] wanted start step of a fetch (creation: its step)
    item_band: np.ndarray        # [N] canonical offset in its step's packing (strict)
    item_partner: np.ndarray     # [N] the in-place partner item at the same step (-1: none)
    item_benefit_s: np.ndarray   # [N] roofline seconds saved at the touch if this item is fast
    order: np.ndarray            # [num_moves] item ids
    step_compute_s: np.ndarray   # [n]
    step_bytes: np.ndarray       # [n] all bytes touched by the step's operator (int)
    base_time_s: np.ndarray      # [n] operator times with nothing in the scratchpad
    time0_s: float               # modelled time with nothing in the scratchpad

    @property
    def num_items(self) -> int:
        return len(self.item_value)

    @property
    def num_moves(self) -> int:
        return len(self.order)

    @property
    def num_steps(self) -> int:
        return len(self.schedule)

    @property
    def strict(self) -> bool:
        return self.problem.mode == "strict"


@dataclasses.dataclass(frozen=True, eq=False)
class GameState:
    """An immutable game state. ``decision``: ``[N]`` -1 undecided, 0 slow, 1 fast (created or
    fetched), 2 keep; ``offset``/``start``: ``[N]`` scratchpad offset and first step of the
    item's rectangle (its last step is the item's touch); ``time_s``: modelled time of the
    decoded state."""

    move: int
    decision: np.ndarray
    offset: np.ndarray
    start: np.ndarray
    time_s: float


@dataclasses.dataclass(frozen=True, eq=False)
class Options:
    """What the current item may do. ``mask``: ``[A]`` legal actions; ``offset``/``start``:
    ``[A]`` rectangle of each placing action (-1 when illegal); ``chunk_bytes``: ``[A]`` size of
    the free chunk the offset came from (best-fit tightness; 0 for slow/keep)."""

    mask: np.ndarray
    offset: np.ndarray
    start: np.ndarray
    chunk_bytes: np.ndarray


# -- instance ---------------------------------------------------------------------------------

def make_instance(problem: Problem, *, num_offsets: int = DEFAULT_NUM_OFFSETS,
                  schedule=None) -> GameInstance:
    """Items, presentation order and static tables of a problem (schedule: the default)."""
    if num_offsets < 1:
        raise ValueError("num_offsets must be >= 1")
    g = problem.graph
    tgt = problem.target
    sched = tuple(g.default_schedule if schedule is None else schedule)
    n = len(sched)
    touches: dict[int, list[int]] = {}
    for t, o in enumerate(sched):
        for v in problem.op_values[o]:
            touches.setdefault(v, []).append(t)
    compute = np.array([g.ops[o].flops / tgt.compute_flops_per_s for o in sched], dtype=np.float64)
    sbytes = np.array([sum(g.values[v].size_bytes for v in g.ops[o].inputs + g.ops[o].outputs)
                       for o in sched], dtype=np.int64)
    # the same float operations as memmap.cost.step_times with nothing fast
    base = np.maximum(compute, np.zeros(n) / tgt.onchip_bandwidth_bytes_per_s
                      + sbytes / tgt.offchip_bandwidth_bytes_per_s)
    prio = memory_boundedness(problem, sched)
    asz = problem.alloc_size
    rows = []
    for v in sorted(touches):
        ts = touches[v]
        val = g.values[v]
        for k, t in enumerate(ts):
            rows.append((v, t, ts[k - 1] if k else -1, ts[-1], k == 0 and val.producer is not None,
                         k == 0, k == len(ts) - 1))
    N = len(rows)
    cols = list(zip(*rows)) if rows else [[]] * 7
    iv = np.array(cols[0], dtype=np.int64)
    it = np.array(cols[1], dtype=np.int64)
    ip = np.array(cols[2], dtype=np.int64)
    il = np.array(cols[3], dtype=np.int64)
    ic = np.array(cols[4], dtype=bool)
    ifirst = np.array(cols[5], dtype=bool)
    ilast = np.array(cols[6], dtype=bool)
    size = np.array([g.values[v].size_bytes for v in iv], dtype=np.int64)
    alloc = np.array([asz[v] for v in iv], dtype=np.int64)
    item_of = {(int(v), int(t)): k for k, (v, t) in enumerate(zip(iv, it))}
    partner = np.full(N, -1, dtype=np.int64)
    for t, o in enumerate(sched):
        for vo, vi in problem.inplace_pairs[o]:
            a, b = item_of[(vo, t)], item_of[(vi, t)]
            partner[a], partner[b] = b, a
    weight = np.array([g.values[v].is_weight_like for v in iv], dtype=bool)
    output = np.array([g.values[v].is_output for v in iv], dtype=bool)
    on, off = tgt.onchip_bandwidth_bytes_per_s, tgt.offchip_bandwidth_bytes_per_s
    # roofline benefit of this touch being fast, everything else at the step slow
    benefit = np.maximum(0.0, base[it] - np.maximum(compute[it], (sbytes[it] - size) / off + size / on)) if N else np.zeros(0)
    # wanted fetch start: hide size / dma_bw behind the all-slow operator times before the touch
    dma_bw = off / tgt.dma_engines
    csum = np.concatenate(([0.0], np.cumsum(base)))
    want = it.copy()
    for i in range(N):
        if ic[i]:
            continue
        lb = max(ip[i] + 1, it[i] - MAX_PREFETCH_STEPS, 0)
        need = size[i] / dma_bw
        s = it[i]
        while s > lb and csum[it[i]] - csum[s] < need:
            s -= 1
        want[i] = s
    # orders
    if problem.mode == "strict":
        order = np.lexsort((iv, -alloc, it))
        band = np.zeros(N, dtype=np.int64)
        k = 0
        while k < N:
            j = k
            cursor = 0
            packed = set()
            while j < N and it[order[j]] == it[order[k]]:
                i, q = int(order[j]), int(partner[order[j]])
                if q in packed:
                    band[i] = band[q]          # an in-place pair: one slot (M_R counts it once)
                else:
                    band[i] = cursor
                    cursor += alloc[i]
                packed.add(i)
                j += 1
            k = j
    else:
        band = np.zeros(N, dtype=np.int64)
        firsts = np.flatnonzero(ifirst)
        lengths = il[firsts] - it[firsts]
        vals = iv[firsts]
        keyed = sorted(range(len(firsts)), key=lambda j: (-prio.get(int(vals[j]), 0.0), -alloc[firsts[j]],
                                                           lengths[j], vals[j]))
        chosen = []
        for j in keyed:
            if prio.get(int(vals[j]), 0.0) <= 0.0:
                continue
            a = firsts[j]
            b = a
            while not ilast[b]:
                b += 1
            chosen.extend(range(a, b + 1))
        order = np.array(chosen, dtype=np.int64)
    inst = GameInstance(problem=problem, schedule=sched, num_offsets=num_offsets, item_value=iv, item_step=it,
                        item_prev_step=ip, item_last_step=il, item_creation=ic, item_first=ifirst,
                        item_last=ilast, item_size=size, item_alloc=alloc, item_weight=weight,
                        item_output=output, item_want_start=want, item_band=band, item_partner=partner,
                        item_benefit_s=benefit,
                        order=order.astype(np.int64), step_compute_s=compute, step_bytes=sbytes,
                        base_time_s=base, time0_s=0.0)
    dec = np.full(N, UNDECIDED, dtype=np.int8)
    t0 = _time(inst, dec, np.zeros(N, dtype=np.int64), np.full(N, -1, dtype=np.int64))
    return dataclasses.replace(inst, time0_s=t0)


# -- the cost model, exactly as memmap.cost.simulate on the decoded plan ----------------------

@compile_kernel
def _earliest(eng):
    """Index of the DMA queue that frees first (heapq's pop in memmap.cost.simulate)."""
    k = 0
    for e in range(1, len(eng)):
        if eng[e] < eng[k]:
            k = e
    return k


@compile_kernel
def _dma_time(op_time, l_step, l_size, l_use, w_step, w_size, w_dead, engines, dma_bw):
    n = len(op_time)
    eng = np.zeros(engines)
    due = np.zeros(n + 1)
    now = 0.0
    final_due = 0.0
    li = 0
    wi = 0
    nl = len(l_step)
    nw = len(w_step)
    for t in range(n):
        while li < nl and l_step[li] == t:
            k = _earliest(eng)
            done = max(now, eng[k]) + l_size[li] / dma_bw
            eng[k] = done
            u = l_use[li]
            if done > due[u]:
                due[u] = done
            li += 1
        if due[t] > now:
            now = due[t]
        now += op_time[t]
        while wi < nw and w_step[wi] == t:
            k = _earliest(eng)
            done = max(now, eng[k]) + w_size[wi] / dma_bw
            eng[k] = done
            d = w_dead[wi]
            if d >= n:
                if done > final_due:
                    final_due = done
            elif done > due[d]:
                due[d] = done
            wi += 1
    return max(now, final_due)


def _chains(inst: GameInstance, dec: np.ndarray):
    """For every item: the last item of the keep chain it starts (``[N]``)."""
    N = inst.num_items
    brk = np.flatnonzero((dec != D_KEEP) | inst.item_first)
    brk = np.append(brk, N)
    nxt = brk[np.searchsorted(brk, np.arange(N), side="right")]
    return nxt - 1


def _handed_over(inst: GameInstance, dec: np.ndarray, off: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``[len(items)]`` bool: the item is a use of an in-place pair's input whose buffer the
    partner output takes over (both in the scratchpad at the same offset; the game never lets
    such an input keep past that step, so its residency ends there: ``memmap.cost.inplace_shares``)."""
    p = inst.item_partner[items]
    ok = (p >= 0) & ~inst.item_creation[items]
    q = np.where(ok, p, 0)
    return ok & (dec[items] >= D_FAST) & (dec[q] == D_FAST) & (off[items] == off[q])


def _transfers(inst: GameInstance, dec: np.ndarray, start: np.ndarray, off: np.ndarray):
    """Loads (sorted as the plan's transfers) and writes of the decoded state.

    Returns ``(loads, writes)``: ``loads = (item, step, kind, first_use)`` arrays with kind 0
    load / 1 reload; ``writes = (item, step, kind, deadline)`` with kind 0 spill / 1 writeback.
    A write's deadline is the step after its residency ends, or the step it ends at when an
    in-place output takes its buffer over there."""
    fetch = np.flatnonzero((dec == D_FAST) & ~inst.item_creation)
    fv = inst.item_value[fetch]
    first_of_value = np.ones(len(fetch), dtype=bool)
    first_of_value[1:] = fv[1:] != fv[:-1]
    lkind = np.where(inst.item_weight[fetch] & first_of_value, 0, 1)
    lstep = start[fetch]
    lo = np.lexsort((fv, lkind, lstep))
    loads = (fetch[lo], lstep[lo], lkind[lo], inst.item_step[fetch][lo])
    created = np.flatnonzero((dec == D_FAST) & inst.item_creation)
    end = _chains(inst, dec)[created]
    # a copy is needed for outputs, and when the keep chain stops before a *decided* later
    # touch (slow or fetched); undecided later touches charge nothing yet
    after = np.minimum(end + 1, inst.num_items - 1)
    need = inst.item_output[created] | (~inst.item_last[end] & (dec[after] != UNDECIDED))
    created, end = created[need], end[need]
    wkind = inst.item_output[created].astype(np.int64)
    wstep = inst.item_step[created]
    wo = np.lexsort((inst.item_value[created], wkind, wstep))
    end = end[wo]
    writes = (created[wo], wstep[wo], wkind[wo], inst.item_step[end] + 1 - _handed_over(inst, dec, off, end))
    return loads, writes


def _op_time(inst: GameInstance, dec: np.ndarray) -> np.ndarray:
    tgt = inst.problem.target
    fast = dec >= D_FAST
    n = inst.num_steps
    fast_b = np.zeros(n, dtype=np.int64)
    np.add.at(fast_b, inst.item_step[fast], inst.item_size[fast])
    slow_b = inst.step_bytes - fast_b
    return np.maximum(inst.step_compute_s, fast_b / tgt.onchip_bandwidth_bytes_per_s
                      + slow_b / tgt.offchip_bandwidth_bytes_per_s)


def _time(inst: GameInstance, dec: np.ndarray, start: np.ndarray, off: np.ndarray) -> float:
    tgt = inst.problem.target
    loads, writes = _transfers(inst, dec, start, off)
    op_time = _op_time(inst, dec)
    return float(_dma_time(op_time, loads[1].astype(np.int64), inst.item_size[loads[0]].astype(np.float64),
                           loads[3].astype(np.int64), writes[1].astype(np.int64),
                           inst.item_size[writes[0]].astype(np.float64), np.asarray(writes[3], dtype=np.int64),
                           int(tgt.dma_engines), tgt.offchip_bandwidth_bytes_per_s / tgt.dma_engines))


def modelled_time(inst: GameInstance, state: GameState) -> float:
    """Modelled time (seconds) of the plan the state decodes to."""
    return state.time_s


# -- states -----------------------------------------------------------------------------------

def initial_state(inst: GameInstance) -> GameState:
    N = inst.num_items
    return GameState(move=0, decision=np.full(N, UNDECIDED, dtype=np.int8), offset=np.full(N, -1, dtype=np.int64),
                     start=np.full(N, -1, dtype=np.int64), time_s=inst.time0_s)


def is_terminal(inst: GameInstance, state: GameState) -> bool:
    return state.move >= inst.num_moves


def current_item(inst: GameInstance, state: GameState) -> int:
    return int(inst.order[state.move])


def _occupied(inst: GameInstance, state: GameState, lo: int, hi: int, skip: int = -1):
    """Address ranges ``(starts, ends)`` of placed rectangles overlapping steps ``[lo, hi]``
    (item ``skip`` left out)."""
    placed = state.decision >= D_FAST
    if skip >= 0:
        placed[skip] = False
    m = placed & (state.start <= hi) & (inst.item_step >= lo)
    offs = state.offset[m]
    return offs, offs + inst.item_alloc[m]


def _band(inst: GameInstance, state: GameState):
    """Strict mode: canonical slots of the current step's later items (kept free), except the
    current item's in-place partner's (the current item's own slot)."""
    if not inst.strict:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = state.move + 1
    cur = inst.order[state.move]
    t = inst.item_step[cur]
    rest = []
    while k < inst.num_moves and inst.item_step[inst.order[k]] == t:
        if inst.item_partner[inst.order[k]] != cur:
            rest.append(inst.order[k])
        k += 1
    rest = np.array(rest, dtype=np.int64)
    lo = inst.item_band[rest] if len(rest) else np.zeros(0, np.int64)
    return lo, lo + inst.item_alloc[rest] if len(rest) else np.zeros(0, np.int64)


def _chunks(starts: np.ndarray, ends: np.ndarray, size: int, capacity: int):
    """Free chunks ``(lo, hi)`` that fit ``size``, smallest first (lowest offset on ties)."""
    if len(starts):
        o = np.argsort(starts, kind="stable")
        s, e = starts[o], ends[o]
        reach = np.maximum.accumulate(e)
        lo = np.concatenate(([0], reach))
        hi = np.concatenate((s, [capacity]))
    else:
        lo = np.array([0])
        hi = np.array([capacity])
    hi = np.minimum(hi, capacity)
    room = hi - lo
    ok = np.flatnonzero(room >= size)
    ok = ok[np.lexsort((lo[ok], room[ok]))]
    return lo[ok], hi[ok]


def options(inst: GameInstance, state: GameState) -> Options:
    """Legal actions of the current item and the rectangle each placing action gives. Raises
    :class:`memmap.errors.MemmapError` if a state that is not terminal has none (in strict mode
    below M_R; otherwise a bug of the game)."""
    A = num_actions(inst.num_offsets)
    mask = np.zeros(A, dtype=bool)
    offset = np.full(A, -1, dtype=np.int64)
    start = np.full(A, -1, dtype=np.int64)
    chunk = np.zeros(A, dtype=np.int64)
    if is_terminal(inst, state):
        return Options(mask, offset, start, chunk)
    i = current_item(inst, state)
    t = int(inst.item_step[i])
    sz = int(inst.item_alloc[i])
    cap = inst.problem.target.capacity_bytes
    dec = state.decision
    mask[SLOW] = not inst.strict
    b_lo, b_hi = _band(inst, state)

    def band_clash(o: int) -> bool:
        return bool(np.any((b_lo < o + sz) & (b_hi > o)))

    placed = np.flatnonzero(dec >= D_FAST)
    r_off = state.offset[placed]
    r_end = r_off + inst.item_alloc[placed]
    r_lo = state.start[placed]
    r_hi = inst.item_step[placed]
    want = int(inst.item_want_start[i])     # a creation's is its step

    def earliest_start(o: int, skip: int = -1) -> int:
        """First step >= want with ``[o, o + sz)`` free up to the touch (item ``skip`` left
        out); past the touch when the touch itself is taken."""
        hit = (r_off < o + sz) & (r_end > o) & (r_hi >= want) & (r_lo <= t) & (placed != skip)
        return max(want, int(r_hi[hit].max()) + 1) if hit.any() else want

    # in-place partner already placed: its offset is the shared buffer, if the input's residency
    # ends at this step (its next item does not keep)
    p = int(inst.item_partner[i])
    share = -1
    if p >= 0 and dec[p] >= D_FAST and (not inst.item_creation[i] or inst.item_last[p] or dec[p + 1] != D_KEEP):
        share = int(state.offset[p])
    # keep: same offset as at the previous touch, free in between (the partner's buffer is free
    # at that offset), unless an in-place output took the previous touch's buffer over
    if (not inst.item_first[i] and dec[i - 1] >= D_FAST
            and not _handed_over(inst, dec, state.offset, np.array([i - 1]))[0]):
        o = int(state.offset[i - 1])
        a = int(inst.item_prev_step[i]) + 1
        s_, e_ = _occupied(inst, state, a, t, skip=p if o == share else -1)
        if not (np.any((s_ < o + sz) & (e_ > o)) or band_clash(o)):
            mask[KEEP] = True
            offset[KEEP] = o
            start[KEEP] = a
    # candidate 0: the partner's buffer; then best fit over [want, last touch], then best fit at
    # the touch step alone
    cands: list[tuple[int, int, int]] = []     # (offset, chunk bytes, start)
    if share >= 0 and not band_clash(share):
        s = earliest_start(share, skip=p)
        if s <= t:
            cands.append((share, sz, s))
    seen = {share}
    for lo_, hi_ in ((want, int(inst.item_last_step[i])), (t, t)):
        if len(cands) >= inst.num_offsets:
            break
        s_, e_ = _occupied(inst, state, lo_, hi_)
        s_ = np.concatenate((s_, b_lo))
        e_ = np.concatenate((e_, b_hi))
        for clo, chi in zip(*_chunks(s_, e_, sz, cap)):
            if int(clo) not in seen:
                seen.add(int(clo))
                cands.append((int(clo), int(chi - clo), earliest_start(int(clo))))
            if len(cands) >= inst.num_offsets:
                break
    for k, (o, room, s) in enumerate(cands):
        mask[FIRST_OFFSET + k] = True
        offset[FIRST_OFFSET + k] = o
        start[FIRST_OFFSET + k] = s
        chunk[FIRST_OFFSET + k] = room
    if not mask.any():
        g = inst.problem.graph
        raise MemmapError(
            f"mallocGame: no legal action for {g.values[int(inst.item_value[i])].name!r} at step {t} "
            f"(operator {g.ops[inst.schedule[t]].name!r}, {inst.problem.mode} mode, scratchpad {cap} B, "
            f"M_R {inst.problem.m_r_bytes} B)")
    return Options(mask, offset, start, chunk)


def step(inst: GameInstance, state: GameState, action: int, opts: Options | None = None) -> tuple[GameState, float]:
    """Apply ``action`` to the current item; returns ``(next_state, reward)``. Raises
    ``ValueError`` on an illegal action or a finished game."""
    if is_terminal(inst, state):
        raise ValueError("the game is over")
    if opts is None:
        opts = options(inst, state)
    action = int(action)
    if not (0 <= action < len(opts.mask)) or not opts.mask[action]:
        raise ValueError(f"illegal action {action} (legal: {np.flatnonzero(opts.mask).tolist()})")
    i = current_item(inst, state)
    dec = state.decision.copy()
    off = state.offset.copy()
    st = state.start.copy()
    if action == SLOW:
        dec[i] = D_SLOW
    else:
        dec[i] = D_KEEP if action == KEEP else D_FAST
        off[i] = opts.offset[action]
        st[i] = opts.start[action]
    t = _time(inst, dec, st, off)
    nxt = GameState(move=state.move + 1, decision=dec, offset=off, start=st, time_s=t)
    return nxt, (state.time_s - t) / inst.time0_s if inst.time0_s > 0 else 0.0


# -- decoding ---------------------------------------------------------------------------------

def decode(inst: GameInstance, state: GameState, *, solver: str = "rl", info: dict | None = None) -> Plan:
    """The plan a state stands for (undecided items slow). Terminal states of both modes give
    plans the verifier accepts (a partial state may lack a spill a later touch will need)."""
    dec, off, st = state.decision, state.offset, state.start
    res: list[Residency] = []
    cur = None   # [value, start, end, offset]
    for i in range(inst.num_items):
        d = int(dec[i])
        v = int(inst.item_value[i])
        if d == D_KEEP:
            cur[2] = int(inst.item_step[i])
            continue
        if cur is not None:
            res.append(Residency(*cur))
            cur = None
        if d == D_FAST:
            cur = [v, int(st[i]), int(inst.item_step[i]), int(off[i])]
    if cur is not None:
        res.append(Residency(*cur))
    loads, writes = _transfers(inst, dec, st, off)
    vals = inst.problem.graph.values
    trs = [Transfer(int(s), "load" if k == 0 else "reload", int(inst.item_value[i]), vals[int(inst.item_value[i])].size_bytes)
           for i, s, k, _ in zip(*loads)]
    trs += [Transfer(int(s), "writeback" if k else "spill", int(inst.item_value[i]), vals[int(inst.item_value[i])].size_bytes)
            for i, s, k, _ in zip(*writes)]
    return Plan.assemble(inst.problem, inst.schedule, res, trs, solver=solver, info=dict(info or {}))


def greedy_action(inst: GameInstance, state: GameState, opts: Options | None = None) -> int:
    """The legal action with the largest immediate reward (ties: the lowest action). A
    reference policy for tests and a search-free fallback."""
    if opts is None:
        opts = options(inst, state)
    best, best_r = -1, -math.inf
    for a in np.flatnonzero(opts.mask):
        _, r = step(inst, state, int(a), opts)
        if r > best_r + 1e-15:
            best, best_r = int(a), r
    return best
