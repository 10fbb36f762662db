"""Observations of a mallocGame state: fixed-shape arrays for the Gymnasium env and the agent.

Keys and shapes (``A`` = number of actions, ``V`` = ``max_values``):

* ``values`` ``[V, VALUE_FEATURES]``: one row per managed value in id order (zero padded):
  allocated size / capacity, weight, output, first touch / steps, last touch / steps, touches /
  8 (at most 1), share of its items decided fast, is the current value.
* ``occupancy`` ``[OCC_STEPS, OCC_BINS]``: the scratchpad over the steps around the current
  touch (``t - OCC_STEPS/2 .. t + OCC_STEPS/2 - 1``) x address bins: share of each bin's bytes
  held by placed items.
* ``current`` ``[CURRENT_FEATURES]``: the current item (see ``_current``).
* ``candidates`` ``[A, CANDIDATE_FEATURES]``: per action: legal, offset / capacity, chunk
  waste / capacity, prefetch lead achieved (share of the wanted lead), modelled-time saving of
  taking it now (the immediate reward x number of moves, clipped to [-8, 8]).
"""

from __future__ import annotations

import numpy as np

from memmap.rl import game

OCC_STEPS = 32
OCC_BINS = 32
VALUE_FEATURES = 8
CURRENT_FEATURES = 14
CANDIDATE_FEATURES = 5

__all__ = ["observe", "OCC_STEPS", "OCC_BINS", "VALUE_FEATURES", "CURRENT_FEATURES", "CANDIDATE_FEATURES",
           "flat_size", "flatten"]


def _current(inst: game.GameInstance, state: game.GameState) -> np.ndarray:
    out = np.zeros(CURRENT_FEATURES, dtype=np.float32)
    out[11] = min(8.0, state.time_s / inst.time0_s) if inst.time0_s else 1.0
    out[13] = float(inst.strict)
    if game.is_terminal(inst, state):
        out[10] = 1.0
        return out
    i = game.current_item(inst, state)
    n = max(1, inst.num_steps)
    cap = inst.problem.target.capacity_bytes
    t = int(inst.item_step[i])
    tgt = inst.problem.target
    out[0] = min(1.0, inst.item_alloc[i] / cap)
    out[1] = np.log2(max(1, inst.item_alloc[i])) / 32.0
    out[2] = inst.item_creation[i]
    out[3] = inst.item_weight[i]
    out[4] = inst.item_output[i]
    out[5] = float(not inst.item_first[i] and state.decision[i - 1] >= game.D_FAST)
    out[6] = (t - inst.item_prev_step[i]) / n if inst.item_prev_step[i] >= 0 else 0.0
    out[7] = 0.0 if inst.item_last[i] else (inst.item_step[i + 1] - t) / n
    base = inst.base_time_s[t]
    out[8] = inst.item_benefit_s[i] / base if base > 0 else 0.0
    dma = inst.item_size[i] / (tgt.offchip_bandwidth_bytes_per_s / tgt.dma_engines)
    out[9] = min(4.0, dma / base) if base > 0 else 0.0
    out[10] = state.move / max(1, inst.num_moves)
    out[12] = t / n
    return out


def _occupancy(inst: game.GameInstance, state: game.GameState) -> np.ndarray:
    img = np.zeros((OCC_STEPS, OCC_BINS), dtype=np.float32)
    if game.is_terminal(inst, state):
        return img
    t = int(inst.item_step[game.current_item(inst, state)])
    lo_t = t - OCC_STEPS // 2
    hi_t = lo_t + OCC_STEPS - 1
    placed = state.decision >= game.D_FAST
    m = placed & (state.start <= hi_t) & (inst.item_step >= lo_t)
    cap = inst.problem.target.capacity_bytes
    bin_b = cap / OCC_BINS
    for s, e, o, sz in zip(state.start[m], inst.item_step[m], state.offset[m], inst.item_alloc[m]):
        a, b = max(s, lo_t) - lo_t, min(e, hi_t) - lo_t
        edges = np.arange(OCC_BINS + 1) * bin_b
        cover = np.clip(np.minimum(edges[1:], o + sz) - np.maximum(edges[:-1], o), 0, None) / bin_b
        img[a:b + 1] += cover.astype(np.float32)
    return np.minimum(img, 1.0)


def _values(inst: game.GameInstance, state: game.GameState, max_values: int) -> np.ndarray:
    out = np.zeros((max_values, VALUE_FEATURES), dtype=np.float32)
    N = inst.num_items
    if N == 0:
        return out
    vals, slot = np.unique(inst.item_value, return_inverse=True)
    k = min(len(vals), max_values)
    firsts = np.flatnonzero(inst.item_first)
    n = max(1, inst.num_steps)
    cap = inst.problem.target.capacity_bytes
    count = np.bincount(slot, minlength=len(vals))
    fast = np.bincount(slot, weights=(state.decision >= game.D_FAST).astype(np.float64), minlength=len(vals))
    out[:k, 0] = np.minimum(1.0, inst.item_alloc[firsts] / cap)[:k]
    out[:k, 1] = inst.item_weight[firsts][:k]
    out[:k, 2] = inst.item_output[firsts][:k]
    out[:k, 3] = (inst.item_step[firsts] / n)[:k]
    out[:k, 4] = (inst.item_last_step[firsts] / n)[:k]
    out[:k, 5] = np.minimum(1.0, count / 8.0)[:k]
    out[:k, 6] = (fast / count)[:k]
    if not game.is_terminal(inst, state):
        j = slot[game.current_item(inst, state)]
        if j < k:
            out[j, 7] = 1.0
    return out


def _candidates(inst: game.GameInstance, state: game.GameState, opts: game.Options, successors=None) -> np.ndarray:
    A = len(opts.mask)
    out = np.zeros((A, CANDIDATE_FEATURES), dtype=np.float32)
    if game.is_terminal(inst, state):
        return out
    i = game.current_item(inst, state)
    cap = inst.problem.target.capacity_bytes
    t = int(inst.item_step[i])
    want = int(inst.item_want_start[i])
    out[:, 0] = opts.mask
    for a in np.flatnonzero(opts.mask):
        if a != game.SLOW:
            out[a, 1] = opts.offset[a] / cap
            out[a, 2] = max(0, opts.chunk_bytes[a] - inst.item_alloc[i]) / cap
            out[a, 3] = 1.0 if t == want else (t - opts.start[a]) / (t - want)
        nxt, r = game.step(inst, state, int(a), opts)
        if successors is not None:
            successors[int(a)] = (nxt, r)
        out[a, 4] = np.clip(r * inst.num_moves, -8.0, 8.0)
    return out


def observe(inst: game.GameInstance, state: game.GameState, opts: game.Options, *,
            max_values: int, successors: dict | None = None) -> dict[str, np.ndarray]:
    """The observation dict of ``state`` (``opts``: its :func:`memmap.rl.game.options`).
    ``successors``, when given, receives ``action -> (next_state, reward)`` of every legal
    action (computed anyway for the candidates' immediate savings)."""
    return {"values": _values(inst, state, max_values), "occupancy": _occupancy(inst, state),
            "current": _current(inst, state), "candidates": _candidates(inst, state, opts, successors)}


POOL = 4   # the agent sees the occupancy image average-pooled by POOL x POOL


def flat_size(num_actions: int) -> int:
    return CURRENT_FEATURES + num_actions * CANDIDATE_FEATURES + (OCC_STEPS // POOL) * (OCC_BINS // POOL)


def flatten(obs: dict[str, np.ndarray]) -> np.ndarray:
    """The agent's input vector ``[flat_size(A)]``: current item, candidates, pooled occupancy
    (the per-value table is for other agents; ours does not read it)."""
    occ = obs["occupancy"].reshape(OCC_STEPS // POOL, POOL, OCC_BINS // POOL, POOL).mean(axis=(1, 3))
    return np.concatenate([obs["current"], obs["candidates"].ravel(), occ.ravel()]).astype(np.float32)
