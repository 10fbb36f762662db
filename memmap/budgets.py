"""COSMA's budgets: M_R (smallest feasible), M_P (no spill needed under the best schedule),
M_H = (M_R + M_P) / 2."""

from __future__ import annotations

import dataclasses

from memmap.problem import Problem, align_up
from memmap.scheduling import inplace_links, live_ranges, min_peak_schedule, peak_live_bytes
from memmap.static_alloc import greedy_allocate


@dataclasses.dataclass(frozen=True)
class Budgets:
    """Attributes:
      m_r_bytes: max over operators of their working set (exact).
      m_p_bytes: a budget under which a spill-free plan exists (an upper bound on the true M_P:
        the allocation height of full-residency live ranges under the best schedule found).
      m_p_exact: whether m_p_bytes is proven minimal (False for the heuristic search).
      m_p_peak_live_bytes: peak live bytes of that schedule (its height cannot be lower).
      m_h_bytes: (M_R + M_P) / 2 rounded up to the alignment.
      schedule: the schedule that achieves m_p_bytes.
      offsets: value -> offset of the spill-free allocation achieving m_p_bytes.
    """

    m_r_bytes: int
    m_p_bytes: int
    m_h_bytes: int
    m_p_exact: bool
    m_p_peak_live_bytes: int
    schedule: tuple[int, ...]
    offsets: dict

    def to_dict(self) -> dict:
        return {"m_r_bytes": self.m_r_bytes, "m_p_bytes": self.m_p_bytes, "m_h_bytes": self.m_h_bytes,
                "m_p_exact": self.m_p_exact,
                "m_p_kind": "exact" if self.m_p_exact else "upper bound",
                "m_p_peak_live_bytes": self.m_p_peak_live_bytes}


def spill_free_allocation(problem: Problem, schedule) -> tuple[dict, int]:
    """Offsets for full-residency live ranges under ``schedule`` and the resulting height. An
    in-place pair whose input's live range ends at its operator's step shares one offset (the
    operator writes the output into the input's buffer)."""
    lr = live_ranges(problem, schedule)
    vals = sorted(lr)
    asz = problem.alloc_size
    segs = [(v, lr[v][0], lr[v][1]) for v in vals]
    offs, height = greedy_allocate([a for _, a, _ in segs], [b for _, _, b in segs],
                                   [asz[v] for v in vals],
                                   same_offset=inplace_links(problem, schedule, segs))
    return {v: int(o) for v, o in zip(vals, offs)}, int(height)


def compute_budgets(problem: Problem, *, seed: int = 0) -> Budgets:
    m_r = problem.m_r_bytes
    candidates = [tuple(problem.graph.default_schedule)]
    sched, _ = min_peak_schedule(problem, seed=seed)
    if sched != candidates[0]:
        candidates.append(sched)
    best = None
    for s in candidates:
        offs, height = spill_free_allocation(problem, s)
        if best is None or height < best[1]:
            best = (s, height, offs)
    s, m_p, offs = best
    m_p = max(m_p, m_r)
    m_h = align_up((m_r + m_p) // 2, problem.target.alignment_bytes)
    return Budgets(m_r_bytes=m_r, m_p_bytes=m_p, m_h_bytes=m_h, m_p_exact=False,
                   m_p_peak_live_bytes=peak_live_bytes(problem, s), schedule=s, offsets=offs)
