"""Solving: candidate schedules x the fixed-schedule CP-SAT model, window LNS for large graphs,
lower bounds, hints, and the final choice. See docs/ilp.md for what is proven.

Public entry point: :func:`solve_ilp`. It imports no other solver: a baseline plan reaches it
only as a hint (``hint`` / ``hint_schedules``), from the pipeline layer (memmap/solvers.py).

Determinism: CP-SAT runs with ``num_workers`` = ``workers``, ``random_seed`` = ``seed`` and
``interleave_search`` (CP-SAT's deterministic parallel mode), and every search is limited by a
*deterministic* time budget (``DET_PER_WALL_S`` deterministic units per second of the time
limit). The wall-clock limit is kept as a safety net only: when it is what stops a search (a
very slow or loaded machine) the result can differ between runs, and ``info["stopped_by"]``
says so.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

from ortools.sat.python import cp_model

from memmap import limits
from memmap.budgets import spill_free_allocation
from memmap.cost import simulate
from memmap.errors import SolverTimeoutError
from memmap.ilp.alloc import pack_buffers
from memmap.ilp.lower_bound import global_lower_bound
from memmap.ilp.model import (Assignment, Fixed, FixedScheduleModel, Instance, decode, encode,
                              encode_residencies, make_instance, point_runs, trivial_assignment)
from memmap.ilp.schedule_search import estimate_traffic, search_schedules
from memmap.plan import Plan, Residency
from memmap.prefetch import hoist_prefetches
from memmap.problem import Problem
from memmap.scheduling import inplace_links
from memmap.static_alloc import greedy_allocate, merge_same_offset
from memmap.verify import verify_plan

ProgressFn = Callable[[str], None]

# deterministic time units granted per wall second of the time limit (measured on the 2-core
# development machine: CP-SAT's deterministic clock ran at 0.05-0.15 units per wall second on
# the resnet50 forward model; the wall limit stays as a safety net, enforced by a timer that
# stops the search, because interleaved search can overrun max_time_in_seconds)
DET_PER_WALL_S = 0.06
# above this many operators the whole-graph model is replaced by window LNS
LARGE_GRAPH_OPS = 1000
WINDOW_STEPS = 120
# branch-and-bound node budget (per preordering round) when packing a replacement start: a
# deterministic limit; ~0.1-0.2 ms per node in Python
PACK_NODES = 20_000
# rounds of per-step capacity lowering when a replacement start does not pack (_repair_caps)
REPAIR_ROUNDS = 6
# bisection steps towards a smaller capacity cut once one packs (_repair_caps)
REPAIR_REFINE = 3
# large graphs, strict mode: share of the nominal time limit for the address-free replacement
# start (_relaxed_start), its deterministic units per nominal second (that model runs at about
# 0.3 units per wall second here, five times the full model's rate), and its solves at most
RELAX_SHARE = 0.25
RELAX_DET_PER_S = 0.25
RELAX_SOLVES = 6
# large graphs: candidates whose start costs more than this times the best start get no LNS
LARGE_SKIP_RATIO = 1.05
# seconds per operator to hoist, verify and score one candidate plan in the final choice
# (resnet50.train.after: 0.33 s for 1711 operators on the loaded 2-core machine)
CHOOSE_S_PER_OP = 2.5e-4
# the wall clock of a solve_ilp call made without a deadline of memmap.limits is bounded by this
# multiple of its nominal budget (a safety net for a very slow machine); under a deadline (the
# command's, memmap.optimize's) that deadline bounds it
WALL_SAFETY_FACTOR = 2.0


@dataclasses.dataclass(frozen=True)
class IlpOptions:
    """Tuning knobs of :func:`solve_ilp` (validated).

    Attributes:
      time_limit_s: the nominal budget: every phase's deterministic budget derives from it (see
        :func:`solve_ilp` for the wall clock).
      seed: CP-SAT random seed.
      workers: CP-SAT worker threads.
      deterministic: interleaved search + deterministic time limits (same seed and workers give
        the same plan).
      large_graph_ops: graphs with more operators use window LNS.
      window_steps: LNS window length in steps.
      schedule_search: strict mode: search topological orders for less traffic
        (:mod:`memmap.ilp.schedule_search`) and add the best ones as candidate schedules.
      search_share: share of the nominal time limit given to the schedule search; None: 0.3,
        or 0.35 on graphs above ``large_graph_ops`` (window LNS there usually stops early, after a
        sweep that improves nothing, so the search gets more; the address-free replacement start
        of :func:`_relaxed_start` gets another ``RELAX_SHARE``).
      search_keep: how many searched schedules become candidates; None: 2, or 1 on graphs above
        ``large_graph_ops`` (each candidate's start costs tens of seconds there, and the time
        goes to the address-free starts instead).
    """

    time_limit_s: float = 60.0
    seed: int = 0
    workers: int = 2
    deterministic: bool = True
    large_graph_ops: int = LARGE_GRAPH_OPS
    window_steps: int = WINDOW_STEPS
    schedule_search: bool = True
    search_share: float | None = None
    search_keep: int | None = None

    def __post_init__(self):
        if not self.time_limit_s > 0:
            raise ValueError(f"ilp: time_limit_s must be positive, got {self.time_limit_s}")
        if self.workers < 1:
            raise ValueError(f"ilp: workers must be >= 1, got {self.workers}")
        if self.window_steps < 4:
            raise ValueError(f"ilp: window_steps must be >= 4, got {self.window_steps}")
        if self.search_share is not None and not 0.0 <= self.search_share < 1.0:
            raise ValueError(f"ilp: search_share must be in [0, 1), got {self.search_share}")
        if self.search_keep is not None and self.search_keep < 1:
            raise ValueError(f"ilp: search_keep must be >= 1, got {self.search_keep}")


@dataclasses.dataclass
class ScheduleResult:
    """Outcome of the fixed-schedule search on one candidate schedule.

    Attributes:
      origin: where the schedule came from (``hint``, ``default``, ``extra1``...).
      schedule: the schedule.
      assignment: best assignment found (None: nothing found).
      status: CP-SAT status name of the last (or only) search.
      objective: strict: non-compulsory bytes; tiered: time proxy in ns.
      bound: a valid lower bound on ``objective`` for this schedule.
      proven: ``objective == bound``.
      time_to_first_solution_s: since the start of :func:`solve_ilp`.
      wall_s, det_time: spent on this schedule.
      sizes: model statistics.
      method: ``full model`` or ``window LNS``.
      stopped_by: ``deterministic limit`` / ``wall limit`` / ``solved``.
    """

    origin: str
    schedule: tuple[int, ...]
    assignment: Assignment | None = None
    status: str = "UNKNOWN"
    objective: float | None = None
    bound: float = 0.0
    proven: bool = False
    time_to_first_solution_s: float | None = None
    wall_s: float = 0.0
    det_time: float = 0.0
    sizes: dict = dataclasses.field(default_factory=dict)
    method: str = "full model"
    stopped_by: str = "solved"


class _FirstSolution(cp_model.CpSolverSolutionCallback):
    def __init__(self, t0: float):
        super().__init__()
        self.t0 = t0
        self.first_s: float | None = None

    def on_solution_callback(self):
        if self.first_s is None:
            self.first_s = time.perf_counter() - self.t0


def _params(solver: cp_model.CpSolver, opts: IlpOptions, wall_s: float, det: float) -> None:
    prm = solver.parameters
    prm.num_workers = opts.workers
    prm.random_seed = opts.seed
    prm.max_time_in_seconds = max(0.05, wall_s)
    if opts.deterministic:
        prm.max_deterministic_time = max(0.01, det)
        if opts.workers > 1:
            prm.interleave_search = True
    prm.use_energetic_reasoning_in_no_overlap_2d = False


def _model_sizes(fm: FixedScheduleModel) -> dict:
    proto = fm.model.proto
    return {"variables": len(proto.variables), "constraints": len(proto.constraints),
            "rectangles": fm.num_rectangles, "capacity_rows": getattr(fm, "num_capacity_rows", 0),
            "values": len(fm.inst.specs), "unit_bytes": fm.inst.unit_bytes}


def _objective_of(fm: FixedScheduleModel, raw_obj: float) -> float:
    """Model objective -> reported objective (strict: non-compulsory bytes)."""
    if not fm.strict:
        return float(raw_obj)
    g, weight = fm.objective_scale
    return float(int(round(raw_obj)) // weight * g + fm.bytes_const)


def _bound_of(fm: FixedScheduleModel, raw_bound: float) -> float:
    """A valid lower bound in the reported unit: the objective is integral, so ``ceil`` of the
    solver bound is valid; strict: ``obj = W * bytes/g + count`` with ``0 <= count < W``, so
    ``bytes >= g * floor(obj / W)``."""
    b = math.ceil(raw_bound - 1e-6)
    if not fm.strict:
        return float(max(0, b))
    g, weight = fm.objective_scale
    return float(max(0, b) // weight * g + fm.bytes_const)


def _run(fm: FixedScheduleModel, opts: IlpOptions, wall_s: float, det: float, t0: float,
         hint: Assignment | None):
    if hint is not None:
        fm.add_hint(hint)
    solver = cp_model.CpSolver()
    _params(solver, opts, wall_s, det)
    cb = _FirstSolution(t0)
    # cut by the deadline and Ctrl-C; a timer stops interleaved search overrunning its limit
    st = limits.solve_cpsat(solver, fm.model, cb)
    return solver, st, cb


def _replacement_start(problem: Problem, inst: Instance) -> Assignment | None:
    """A starting solution for ``inst.schedule``: byte-level Belady replacement
    (:func:`memmap.ilp.schedule_search.estimate_traffic`) under effective capacities, its
    residency segments placed by greedy best fit or, when that fragments, by the exact
    MiniMalloc-style branch and bound (:func:`memmap.ilp.alloc.pack_buffers`, node-budgeted, so
    deterministic). First the capacity is lowered step by step where the best-fit placement
    overflows (:func:`_repair_caps`); if that fails, uniformly (never below the largest working
    set). None when nothing tried fits."""
    a = _repair_caps(problem, inst)
    if a is not None:
        return a
    cap = problem.target.capacity_bytes
    lo = problem.m_r_bytes
    for frac in (0.95, 0.9, 0.8, 0.7, 0.5):
        limits.checkpoint("the ILP's repaired start")
        c = max(lo, int(cap * frac))
        est = estimate_traffic(problem, inst.schedule, capacity_bytes=c)
        if est.feasible:
            a = _packed(problem, inst, est.segments)
            if a is not None:
                return a
        if c == lo:
            break
    return None


def _packed(problem: Problem, inst: Instance, segs) -> Assignment | None:
    """Residency segments ``(value, first, last)`` placed within the capacity, as an assignment.
    Segments of an in-place pair that meet at their operator's step are one block (one offset:
    the operator writes the output into the input's buffer)."""
    asz = problem.alloc_size
    lo, hi, sz, group = merge_same_offset([x[1] for x in segs], [x[2] for x in segs],
                                          [asz[x[0]] for x in segs],
                                          inplace_links(problem, inst.schedule, segs))
    offs = pack_buffers(lo.tolist(), (hi + 1).tolist(), sz.tolist(), problem.target.capacity_bytes,
                        max_nodes=PACK_NODES)
    if offs is None:
        return None
    return encode_residencies(inst, [Residency(v, a, b, int(offs[k]))
                                     for (v, a, b), k in zip(segs, group.tolist())])


def _repair_caps(problem: Problem, inst: Instance, rounds: int = REPAIR_ROUNDS,
                 refine: int = REPAIR_REFINE) -> Assignment | None:
    """Per-step effective capacities: start from the capacity everywhere; while the byte-level
    replacement's segments do not pack, lower the capacity of every step where their best-fit
    placement overflows, by half the overflow there and, if that does not pack either, by all of
    it (never below the step's working set). Once a cut packs, ``refine`` bisection steps look
    for a smaller cut that still packs (less lowering, fewer evictions) and the cheapest packed
    one is returned. On resnet50.train.after at M_R the full cut packs at 771 MiB of traffic,
    the half cut at 677 MiB; on bert_base.train.after at M_H the half cut packs at 551 MiB, a
    sixteenth of it at 500 MiB. Deterministic (fixed rounds, node-budgeted packing)."""
    cap = problem.target.capacity_bytes
    asz = problem.alloc_size
    ws = problem.working_set_bytes
    sched = inst.schedule
    n = len(sched)
    floor = [ws[o] for o in sched]
    caps = [cap] * n

    def attempt(new_caps):
        est = estimate_traffic(problem, sched, capacity_bytes=new_caps)
        if not est.feasible:
            return None, est
        return _packed(problem, inst, est.segments), est

    a, est = attempt(caps)
    if not est.feasible:
        return None
    if a is not None:
        return a
    for _ in range(rounds):
        limits.checkpoint("the ILP's repaired start")
        segs = est.segments
        starts = [x[1] for x in segs]
        ends = [x[2] for x in segs]
        sizes = [asz[x[0]] for x in segs]
        offs, _ = greedy_allocate(starts, ends, sizes, orders=("size", "area", "length"),
                                  same_offset=inplace_links(problem, sched, segs))
        over = [0] * n
        for k, o in enumerate(offs.tolist()):
            top = o + sizes[k] - cap
            if top > 0:
                for t in range(starts[k], ends[k] + 1):
                    if top > over[t]:
                        over[t] = top

        def lowered(share: float) -> list[int]:
            return [max(floor[t], caps[t] - int(share * over[t])) if over[t] else caps[t] for t in range(n)]

        tried = None
        for share in (0.5, 1.0):
            new = lowered(share)
            if new == caps:
                continue
            tried = new
            a, e = attempt(new)
            if a is None:
                continue
            best = (e.noncompulsory_bytes, a)
            lo, hi = 0.0, share
            for _ in range(refine):
                mid = (lo + hi) / 2
                a2, e2 = attempt(lowered(mid))
                if a2 is None:
                    lo = mid
                    continue
                hi = mid
                if e2.noncompulsory_bytes < best[0]:
                    best = (e2.noncompulsory_bytes, a2)
            return best[1]
        if tried is None:
            return None        # nothing left to lower
        caps = tried
        est = estimate_traffic(problem, sched, capacity_bytes=caps)
        if not est.feasible:
            return None
    return None


def _runs(inst: Instance, a: Assignment) -> list[tuple[int, int, int]]:
    """Residency runs ``(value, first step, last step)`` of an assignment (kept gaps joined)."""
    return [(s.value, s.points[first], s.points[last]) for j, s in enumerate(inst.specs)
            for first, last in point_runs(a.resident[j], a.keep[j])]


def _relaxed_start(problem: Problem, inst: Instance, hint: Assignment, opts: IlpOptions,
                   det_total: float, say: Callable[[str], None]) -> tuple[Assignment, float] | None:
    """A starting solution from the address-free model (strict mode, large graphs).

    The byte-level Belady replacement behind :func:`_replacement_start` is greedy about *which*
    values leave; the same fixed-schedule model without addresses chooses them by cost (CP-SAT,
    hinted with the current start). Its runs usually fragment far less than Belady's: on
    resnet50.train.after at M_R its greedy best-fit height is 2% above the capacity, Belady's
    18%. When they do not fit, the model is solved again with the capacity lowered at the steps
    where the best-fit placement overflows (all of it, repeatedly, until the runs fit; then a
    bisection towards the smallest cut that still fits, as in :func:`_repair_caps`; the per-step capacities
    make it a restriction, so nothing here is used as a bound). At most ``RELAX_SOLVES`` solves
    sharing ``det_total`` deterministic units: the result depends only on the inputs, seed and
    workers. Returns ``(assignment, start cost)`` for the cheapest run set that packs, or None.
    """
    cap = problem.target.capacity_bytes
    unit = inst.unit_bytes
    asz = problem.alloc_size
    n = inst.num_steps
    floor = [-(-problem.working_set_bytes[o] // unit) for o in inst.schedule]
    per = det_total / RELAX_SOLVES
    solves = 0

    def solve(caps_units, start):
        nonlocal solves
        solves += 1
        fm = FixedScheduleModel(inst, addresses=False,
                                step_caps=None if caps_units is None else caps_units)
        fm.add_hint(start)
        solver = cp_model.CpSolver()
        _params(solver, opts, max(5.0, per / DET_PER_WALL_S * 2), per)
        st = limits.solve_cpsat(solver, fm.model)
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None
        return fm.read(solver)

    def placed(a: Assignment):
        """(assignment with offsets, or None; per-step overflow of the best-fit placement)."""
        segs = _runs(inst, a)
        lo = [x[1] for x in segs]
        hi = [x[2] for x in segs]
        sizes = [asz[x[0]] for x in segs]
        offs, height = greedy_allocate(lo, hi, sizes, orders=("size", "area", "length"),
                                       same_offset=inplace_links(problem, inst.schedule, segs))
        over = [0] * n
        if height <= cap:
            res = [Residency(v, x, y, int(o)) for (v, x, y), o in zip(segs, offs.tolist())]
            return encode_residencies(inst, res), over
        for k, o in enumerate(offs.tolist()):
            top = o + sizes[k] - cap
            if top > 0:
                for t in range(lo[k], hi[k] + 1):
                    over[t] = max(over[t], top)
        return None, over

    a = solve(None, hint)
    if a is None:
        return None
    got, over = placed(a)
    if got is not None:
        cost = _start_cost(problem, inst, got)
        say(f"ilp: address-free replacement start: 1 solve, {cost:.0f} bytes")
        return got, cost
    caps = [inst.capacity_units] * n

    def lowered(share: float) -> list[int]:
        return [max(floor[t], caps[t] - math.ceil(share * over[t] / unit)) if over[t] else caps[t]
                for t in range(n)]

    best = None
    while solves < RELAX_SOLVES and not limits.expired():
        a2 = solve(lowered(1.0), a)
        if a2 is None:
            break
        got, over2 = placed(a2)
        if got is None:
            caps = lowered(1.0)          # still fragmented: lower further from there
            a, over = a2, over2
            continue
        best = (got, _start_cost(problem, inst, got))
        lo_s, hi_s = 0.0, 1.0            # a smaller cut may pack too, with fewer evictions
        while solves < RELAX_SOLVES and not limits.expired():
            mid = (lo_s + hi_s) / 2
            a3 = solve(lowered(mid), a)
            got = placed(a3)[0] if a3 is not None else None
            if got is None:
                lo_s = mid
                continue
            hi_s = mid
            cost = _start_cost(problem, inst, got)
            if cost < best[1]:
                best = (got, cost)
        break
    say(f"ilp: address-free replacement start: {solves} solves, "
        f"{'no packed run set' if best is None else f'{best[1]:.0f} bytes'}")
    return best


def _start_cost(problem: Problem, inst: Instance, a: Assignment) -> float:
    m = simulate(decode(inst, a))
    return m["noncompulsory_bytes"] if problem.mode == "strict" else m["modeled_time_s"]


def _hints_for(problem: Problem, inst: Instance, plans: Sequence[Plan]) -> tuple[Assignment, float]:
    """Best available starting solution for ``inst.schedule``: among the given plans on that
    schedule, a spill-free allocation when it fits and (strict mode) the replacement start of
    :func:`_replacement_start`, the cheapest (strict: fewest non-compulsory bytes; ties keep
    that order); else the trivial evict-everything assignment. Returns ``(assignment, its
    start cost)`` (each option is simulated once)."""
    best = None
    for pl in plans:
        if tuple(pl.schedule) != inst.schedule:
            continue
        m = pl.metrics or simulate(pl)
        key = (m["noncompulsory_bytes"], m["modeled_time_s"]) if problem.mode == "strict" else \
            (m["modeled_time_s"], m["noncompulsory_bytes"])
        if best is None or key < best[0]:
            best = (key, pl)
    options: list[tuple[Assignment, float]] = []     # (assignment, its start cost), each scored once

    def add(a: Assignment) -> None:
        options.append((a, _start_cost(problem, inst, a)))

    if best is not None:
        a = encode(inst, best[1])
        if a is not None:
            add(a)
    offs, height = spill_free_allocation(problem, inst.schedule)
    if height <= problem.target.capacity_bytes:
        res = []
        for s in inst.specs:
            res.append(Residency(s.value, s.points[0], s.points[-1], offs[s.value]))
        add(encode_residencies(inst, res))
    if problem.mode == "strict" and not any(c == 0 for _, c in options):
        a = _replacement_start(problem, inst)
        if a is not None:
            add(a)
    if not options:
        a = trivial_assignment(inst)
        return a, _start_cost(problem, inst, a)
    return min(options, key=lambda x: x[1])   # ties: the first (the order above)


def _solve_full(inst: Instance, opts: IlpOptions, wall_s: float, t0: float, hint: Assignment | None,
                res: ScheduleResult) -> None:
    fm = FixedScheduleModel(inst)
    res.sizes = _model_sizes(fm)
    t_start = time.perf_counter()
    solver, st, cb = _run(fm, opts, wall_s, wall_s * DET_PER_WALL_S, t0, hint)
    res.wall_s = time.perf_counter() - t_start
    res.det_time = solver.response_proto.deterministic_time
    res.status = solver.status_name(st)
    res.time_to_first_solution_s = cb.first_s
    res.sizes["symmetry"] = getattr(fm, "symmetry", {})
    if st in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        res.assignment = fm.read(solver)
        res.objective = _objective_of(fm, solver.objective_value)
        res.bound = _bound_of(fm, solver.best_objective_bound)
        res.proven = st == cp_model.OPTIMAL or res.bound >= res.objective
        if res.proven:
            res.bound = res.objective
    if st == cp_model.OPTIMAL:
        res.stopped_by = "solved"
    elif opts.deterministic and res.det_time >= wall_s * DET_PER_WALL_S * 0.99:
        res.stopped_by = "deterministic limit"
    else:
        res.stopped_by = "wall limit"


def relaxation_bound(inst: Instance, opts: IlpOptions, wall_s: float) -> float:
    """A valid lower bound for ``inst.schedule``: the model without addresses (only the
    per-step byte capacity), whose feasible set contains every solution of the full model.
    Returns the bound in the reported unit (0 when nothing is known)."""
    fm = FixedScheduleModel(inst, addresses=False)
    solver = cp_model.CpSolver()
    _params(solver, opts, wall_s, wall_s * DET_PER_WALL_S)
    st = limits.solve_cpsat(solver, fm.model)
    if st in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        if st == cp_model.OPTIMAL:
            return _bound_of(fm, solver.objective_value)
        return _bound_of(fm, solver.best_objective_bound)
    if st == cp_model.INFEASIBLE:
        raise RuntimeError("ilp: the address-free relaxation is infeasible although the full model "
                           "had a solution (a bug in the model)")
    return 0.0


def _solve_windows(inst: Instance, opts: IlpOptions, budget_s: float, t0: float, start: Assignment,
                   res: ScheduleResult, progress: ProgressFn | None) -> None:
    """Large-neighbourhood search: sweep windows of ``window_steps`` steps (half-overlapping)
    over the schedule; in each, free the points and gaps inside the window and fix the rest to
    the incumbent. Every incumbent is a complete solution. Repeats sweeps until a sweep
    improves nothing or the time is up. Budgets derive from the nominal ``budget_s`` only (never
    from elapsed wall time), so the same seed and workers give the same plan; the wall clock is
    only a safety net."""
    deadline = min(time.perf_counter() + budget_s, limits.deadline())
    n = inst.num_steps
    w = opts.window_steps
    windows = [(a, min(n - 1, a + w - 1)) for a in range(0, max(1, n - w // 2), w // 2)]
    inc = start
    fm0 = FixedScheduleModel(inst, fixed=Fixed((0, -1), inc))   # everything fixed: cost of inc
    solver = cp_model.CpSolver()
    _params(solver, opts, 5.0, 5.0)
    st = limits.solve_cpsat(solver, fm0.model)
    if st == cp_model.UNKNOWN and limits.expired():
        raise limits.TimeLimitReached("time limit reached while scoring the LNS start")
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RuntimeError("ilp: the LNS starting assignment is not a solution (a bug in the hint)")
    best_obj = _objective_of(fm0, solver.objective_value)   # strict: bytes; tiered: ns (all steps)
    res.time_to_first_solution_s = time.perf_counter() - t0
    res.objective = best_obj
    res.method = "window LNS"
    sizes = {"windows": len(windows), "window_steps": w, "values": len(inst.specs),
             "unit_bytes": inst.unit_bytes, "max_window_rectangles": 0}
    det_budget = budget_s * DET_PER_WALL_S
    per = max(1.0, budget_s / max(4, len(windows)))
    det_used = 0.0
    sweeps = 0
    res.stopped_by = "solved"
    while True:
        improved = False
        for win in windows:
            left = deadline - time.perf_counter()
            if left <= 0.2:
                res.stopped_by = "wall limit"
                break
            if opts.deterministic and det_used >= det_budget:
                res.stopped_by = "deterministic limit"
                break
            fm = FixedScheduleModel(inst, fixed=Fixed(win, inc))
            sizes["max_window_rectangles"] = max(sizes["max_window_rectangles"], fm.num_rectangles)
            solver, st, _ = _run(fm, opts, min(left, per) if not opts.deterministic else per, min(per * DET_PER_WALL_S, det_budget - det_used) if
                                 opts.deterministic else per, t0, inc)
            det_used += solver.response_proto.deterministic_time
            if st in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                obj = _objective_of(fm, solver.objective_value)
                if obj < best_obj - 0.5:
                    inc = fm.read(solver)
                    best_obj = obj
                    improved = True
        else:
            sweeps += 1
            if improved:
                continue
        break
    sizes["sweeps"] = sweeps
    res.sizes = sizes
    res.assignment = inc
    res.objective = best_obj
    res.det_time = det_used
    res.status = "FEASIBLE"


def _rank(problem: Problem, m: dict):
    if problem.mode == "strict":
        return (m["noncompulsory_bytes"], m["modeled_time_s"])
    return (m["modeled_time_s"], m["noncompulsory_bytes"])


def solve_ilp(problem: Problem, *, time_limit_s: float = 60.0, seed: int = 0, workers: int = 2,
              hint: Plan | None = None, hint_schedules: Sequence = (), progress: ProgressFn | None = None,
              deterministic: bool = True, large_graph_ops: int = LARGE_GRAPH_OPS,
              window_steps: int = WINDOW_STEPS, schedule_search: bool = True, search_share: float | None = None,
              search_keep: int | None = None, start_plan: Callable[[tuple[int, ...]], Plan | None] | None = None) -> Plan:
    """Schedule search + exact fixed-schedule CP-SAT search over candidate schedules; returns the
    best plan.

    Args:
      problem: the problem (strict or tiered).
      time_limit_s: the nominal budget, split into deterministic budgets (so the plan depends
        only on the inputs, seed and workers). The wall clock is bounded by the deadline of
        :mod:`memmap.limits` (the CLI sets the command's, :func:`memmap.optimize` the call's),
        or without one by ``WALL_SAFETY_FACTOR`` x this: there the best plan so far is chosen (every candidate
        schedule not searched yet keeps its starting solution; the given plans stay
        candidates), and ``info["time_limit"]`` says where it cut.
      seed, workers: CP-SAT seed and worker threads (same seed + workers: same plan, see module
        docstring).
      hint: a complete plan (e.g. the best baseline). Its schedule is searched first, with the
        plan as the CP-SAT hint, and the result is never worse than it (it is a candidate of
        the final choice itself).
      hint_schedules: more candidate schedules: each a sequence of op ids, or a Plan (its
        schedule, and the plan as the hint on it).
      progress: called with one-line messages.
      start_plan: optional heuristic giving a complete plan for a schedule (the pipeline passes
        the Belady baseline's replacement + allocator; this module imports no solver). Called
        once per candidate schedule that has no given plan (searched schedules included); its
        plan is one more starting option there, and must be deterministic.
      deterministic, large_graph_ops, window_steps, schedule_search, search_share, search_keep:
        see :class:`IlpOptions`.

    Returns a plan whose ``status`` is ``OPTIMAL`` only when its traffic is proven minimal over
    ALL plans (every schedule): strict mode, traffic equal to the global lower bound
    (:mod:`memmap.ilp.lower_bound`; zero traffic is always proven). ``info`` holds
    ``objective``, ``best_bound`` and ``gap`` (GLOBAL: valid over every schedule: the
    largest of the forced-eviction covering, chain and position-cut bounds), ``global_bound`` (its details), ``schedule_bound`` and
    ``schedule_gap`` (for the plan's fixed schedule only), ``schedule_proven`` (optimal for its
    schedule), ``time_to_first_solution_s``, ``wall_s``, the model sizes, ``proven`` (what is
    proven, in words), ``search`` (the schedule search) and one entry per candidate schedule. Raises :class:`InfeasibleError` when strict
    mode is infeasible (an operator's working set exceeds the capacity).
    """
    opts = IlpOptions(time_limit_s=time_limit_s, seed=seed, workers=workers, deterministic=deterministic,
                      large_graph_ops=large_graph_ops, window_steps=window_steps,
                      schedule_search=schedule_search, search_share=search_share, search_keep=search_keep)
    problem.check_feasible()
    # without a deadline (a direct call), a safety net; under one (a command, memmap.optimize),
    # the time its caller allowed
    alone = limits.deadline() == math.inf
    with limits.time_limit(WALL_SAFETY_FACTOR * opts.time_limit_s if alone else None):
        return _solve_ilp(problem, opts, hint, hint_schedules, progress, start_plan)


def _solve_ilp(problem: Problem, opts: IlpOptions, hint, hint_schedules, progress, start_plan) -> Plan:
    seed, workers, deterministic = opts.seed, opts.workers, opts.deterministic
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if progress:
            progress(msg)

    # -- candidate schedules (deduplicated, first occurrence names it) -----------------------
    plans: list[Plan] = [hint] if hint is not None else []
    cands: list[tuple[str, tuple[int, ...]]] = []
    if hint is not None:
        cands.append(("hint", tuple(hint.schedule)))
    for i, h in enumerate(hint_schedules):
        if isinstance(h, Plan):
            plans.append(h)
            cands.append((f"{h.solver}", tuple(h.schedule)))
        else:
            cands.append((f"extra{i + 1}", tuple(int(o) for o in h)))
    cands.append(("default", tuple(problem.graph.default_schedule)))
    seen, uniq = set(), []
    for name, s in cands:
        if s in seen:
            continue
        reason = problem.graph.check_schedule(s)
        if reason:
            raise ValueError(f"ilp: candidate schedule {name!r} is invalid: {reason}")
        seen.add(s)
        uniq.append((name, s))

    large = problem.graph.num_ops > opts.large_graph_ops
    strict = problem.mode == "strict"
    st = _SearchState()
    # the final choice scores every candidate plan: the search leaves time for it
    n_plans = len(plans) + len(uniq) + 2
    try:
        with limits.time_limit(at=limits.deadline() - n_plans * CHOOSE_S_PER_OP * problem.graph.num_ops):
            _search(problem, opts, plans, uniq, seen, start_plan, large, strict, t0, say, progress, st)
    except limits.TimeLimitReached as e:
        say(f"ilp: {e}; keeping the best plan so far")
        st.time_limit = str(e)
        # the candidates prepared but not searched: their starting solutions are plans too
        done = {r.origin for r in st.results}
        for entry in st.prepared:          # (..., start cost, k, name, schedule, instance, start)
            cost, name, sched, inst, start = entry[-6], entry[-4], entry[-3], entry[-2], entry[-1]
            if name not in done and start is not None:
                res = ScheduleResult(origin=name, schedule=sched, assignment=start, status="FEASIBLE",
                                     objective=cost if strict else None, stopped_by="wall limit",
                                     method="starting solution (not searched: time limit)")
                st.results.append(res)
                st.final.append((decode(inst, start), res))
    return _choose(problem, opts, plans, st, t0, seed, workers, deterministic)


@dataclasses.dataclass
class _SearchState:
    """What the search phases of :func:`solve_ilp` found so far (kept when the deadline cuts
    them): candidate entries, per-schedule results, candidate plans, and the reported facts."""

    prepared: list = dataclasses.field(default_factory=list)
    results: list = dataclasses.field(default_factory=list)
    final: list = dataclasses.field(default_factory=list)
    glb: object = None
    search_info: dict = dataclasses.field(default_factory=lambda: {"ran": False})
    relax_info: dict = dataclasses.field(default_factory=lambda: {"ran": False})
    time_limit: str | None = None


def _search(problem: Problem, opts: IlpOptions, plans: list[Plan], uniq, seen: set, start_plan,
            large: bool, strict: bool, t0: float, say, progress, st: _SearchState) -> None:
    """The search phases of :func:`solve_ilp`: global bound, candidate starts, schedule search,
    address-free start, then each candidate schedule. ``st`` grows as it goes, so that a
    :class:`memmap.limits.TimeLimitReached` raised anywhere leaves the best plans found so far
    in it."""
    seed = opts.seed
    prepared, results, final = st.prepared, st.results, st.final
    # -- global (schedule-independent) lower bound: strict mode, 5% of the nominal time --------
    nominal_left = opts.time_limit_s
    if strict:
        lb_s = 0.05 * opts.time_limit_s
        nominal_left -= lb_s
        glb = st.glb = global_lower_bound(problem, time_limit_s=lb_s, seed=seed, workers=opts.workers,
                                 deterministic=opts.deterministic, det_per_wall_s=DET_PER_WALL_S)
        say(f"ilp: global lower bound {glb.bound_bytes} bytes ({glb.decided_by}; {glb.rows} covering rows)")

    def prepare(k: int, name: str, sched: tuple[int, ...]):
        inst = make_instance(problem, sched)
        given = plans
        if start_plan is not None and not any(tuple(pl.schedule) == sched for pl in plans):
            extra = start_plan(sched)
            if extra is not None:
                given = plans + [extra]
        start, cost = _hints_for(problem, inst, given)
        est = estimate_traffic(problem, sched).noncompulsory_bytes if strict else cost
        return [est, cost, k, name, sched, inst, start]

    for k, (name, sched) in enumerate(uniq):
        limits.checkpoint("the ILP's candidate starts")
        prepared.append(prepare(k, name, sched))
    # -- schedule search (strict): better orders become candidates -------------------------------
    search_frac = opts.search_share if opts.search_share is not None else (0.35 if large else 0.3)
    if strict and opts.schedule_search and search_frac > 0 and min(x[1] for x in prepared) > 0:
        search_s = opts.time_limit_s * search_frac
        nominal_left -= search_s
        # start from the two most promising candidates (evaluated traffic, then start cost)
        order = sorted(prepared, key=lambda x: (x[0], x[1], x[2]))
        starts = [x[4] for x in order[:2]]
        say(f"ilp: schedule search from {len(starts)} schedules, {search_s:.1f} s nominal")
        keep = opts.search_keep if opts.search_keep is not None else (1 if large else 2)
        sr = search_schedules(problem, starts, time_s=search_s, seed=seed, keep=keep)
        st.search_info = {"ran": True, "nominal_s": search_s, "wall_s": sr.wall_s, "evaluations": sr.evaluations,
                       "work_units": sr.work_units, "stopped_by": sr.stopped_by,
                       "start_estimates_bytes": [e[0] for e in sr.start_estimates],
                       "found_estimates_bytes": [e[0] for e in sr.estimates]}
        for i, sched in enumerate(sr.schedules):
            if sched in seen:
                continue
            seen.add(sched)
            limits.checkpoint("the ILP's candidate starts")
            prepared.append(prepare(len(prepared), f"search{i + 1}", sched))
    # most promising schedule first: strict: lowest evaluated traffic (byte-level replacement),
    # then the cheapest starting solution; tiered: the cheapest start (ties keep the given order).
    # Large graphs (window LNS, which only improves its start locally): cheapest start first.
    prepared.sort(key=lambda x: (x[1], x[0], x[2]) if large else (x[0], x[1], x[2]))
    prepared[:] = [(cost, k, name, sched, inst, start) for _, cost, k, name, sched, inst, start in prepared]
    # -- large graphs (strict): a cost-aware, packing-aware start for one schedule -------------
    if large and strict and prepared and prepared[0][0] > 0 and prepared[0][5] is not None:
        # which schedule: the hint's (the best baseline's), whose plan already packs, else the
        # cheapest start. The cheapest start is not the best choice: on resnet50.train.after at
        # M_H the searched schedule starts 7% cheaper (289.5 against 312.9 MiB) but its
        # address-free start is 251 MiB against 217.6 from the hint's schedule; splitting the
        # share between both lost too much (bert_base.train.after M_R: 1185 against 1126 MiB)
        hinted = [i for i, x in enumerate(prepared) if x[2] == "hint" and x[5] is not None and x[0] > 0]
        i = hinted[0] if hinted else 0
        relax_s = min(opts.time_limit_s * RELAX_SHARE, 0.5 * max(0.0, nominal_left))
        nominal_left -= relax_s
        cost0, k0, name0, sched0, inst0, start0 = prepared[i]
        say(f"ilp: address-free replacement start on {name0!r}, {relax_s:.1f} s nominal")
        t_relax = time.perf_counter()
        got = _relaxed_start(problem, inst0, start0, opts, relax_s * RELAX_DET_PER_S, say)
        st.relax_info = {"ran": True, "schedule": name0, "nominal_s": relax_s,
                      "wall_s": time.perf_counter() - t_relax, "before_bytes": cost0,
                      "after_bytes": None if got is None else got[1]}
        if got is not None and got[1] < cost0:
            prepared[i] = (got[1], k0, name0, sched0, inst0, got[0])
            prepared.sort(key=lambda x: (x[0], x[1]))
    # Budgets are split from the nominal time limit, never from elapsed wall time, so that the
    # deterministic limits (and hence the plan) depend only on the inputs, seed and workers;
    # the deadline of memmap.limits cuts them (then the unsearched candidates keep their starts).
    for idx, (start_cost, _, name, sched, inst, start) in enumerate(prepared):
        limits.checkpoint(f"the ILP (schedule {name!r} not searched)")
        remaining = len(prepared) - idx
        share = nominal_left * (0.5 if idx == 0 and remaining > 1 else 1.0 / remaining)
        nominal_left -= share
        res = ScheduleResult(origin=name, schedule=sched)
        say(f"ilp: schedule {name!r}: {len(inst.specs)} values, {'window LNS' if large else 'full model'}, "
            f"{share:.1f} s")
        if problem.mode == "strict" and start is not None and start_cost == 0:
            # the starting solution already has zero non-compulsory traffic: globally optimal
            res.assignment, res.objective, res.bound, res.proven = start, 0.0, 0.0, True
            res.status, res.time_to_first_solution_s = "OPTIMAL", time.perf_counter() - t0
            res.method = "starting solution (zero traffic)"
        elif large:
            if start is None:
                say(f"ilp: schedule {name!r}: no starting solution, skipped")
                continue
            if idx > 0 and start_cost > LARGE_SKIP_RATIO * prepared[0][0]:
                # window LNS only improves locally (by well under this margin on the measured
                # graphs): keep the start as a candidate, spend nothing on it
                res.assignment, res.objective, res.bound = start, start_cost, 0.0
                res.status, res.method = "FEASIBLE", "starting solution (not searched: start above the best)"
                results.append(res)
                final.append((decode(inst, start), res))
                say(f"ilp: schedule {name!r}: start {start_cost:.0f} > {LARGE_SKIP_RATIO} x the best start, "
                    "kept without LNS")
                continue
            _solve_windows(inst, opts, share * 0.8, t0, start, res, progress)
            res.bound = relaxation_bound(inst, opts, max(0.5, share * 0.2))
            res.proven = res.objective is not None and res.bound >= res.objective
        else:
            _solve_full(inst, opts, share, t0, start, res)
            if res.assignment is not None and not res.proven and problem.mode == "strict":
                res.bound = max(res.bound, relaxation_bound(inst, opts, max(0.5, 0.1 * share)))
                res.proven = res.bound >= res.objective
        if res.assignment is None and start is not None:
            # the search ended (deadline) without a solution: its start is still a plan
            res.assignment = start
            res.objective = start_cost if strict else None     # tiered: not in the model's unit
            res.method = f"{res.method} (no solution in time: starting solution kept)"
        results.append(res)
        say(f"ilp: schedule {name!r}: {res.status}, objective {res.objective}, bound {res.bound}")
        if res.assignment is not None:
            plan = decode(inst, res.assignment)
            final.append((plan, res))
            if problem.mode == "strict" and res.proven and res.objective == 0:
                break    # zero non-compulsory traffic: globally optimal, nothing left to gain


def _choose(problem: Problem, opts: IlpOptions, plans: list[Plan], st: _SearchState, t0: float,
            seed: int, workers: int, deterministic: bool) -> Plan:
    """The final choice of :func:`solve_ilp`: every candidate plan (searched schedules, given
    plans) prefetch-hoisted, verified and scored; the best, with what is proven."""
    results, final, glb = st.results, st.final, st.glb
    # the hint itself (and the other given plans) stay candidates: never worse than them
    for pl in plans:
        final.append((pl, None))
    if not final:
        raise SolverTimeoutError(f"ilp: no solution within {opts.time_limit_s:.1f} s "
                                 f"(graph {problem.graph.name!r}, {problem.graph.num_ops} operators)")
    scored = []
    for k, (pl, res) in enumerate(final):
        hp = hoist_prefetches(pl)
        ok = verify_plan(hp)
        if not ok.ok:
            if res is None:
                continue   # a broken hint is ignored (the pipeline reports the baselines itself)
            raise RuntimeError(f"ilp: decoded plan for schedule {res.origin!r} is invalid: {ok.reason}")
        m = simulate(hp)
        scored.append((_rank(problem, m), k, hp, res, m))
    if not scored:
        raise SolverTimeoutError("ilp: no valid plan (every hint was invalid and no search found one)")
    scored.sort(key=lambda x: (x[0], x[1]))
    _, _, best, res, m = scored[0]
    wall = time.perf_counter() - t0
    # bound of the chosen plan's schedule: valid for that fixed schedule only
    same = [r for r in results if r.schedule == tuple(best.schedule)]
    r0 = same[0] if same else None
    sched_bound = r0.bound if r0 is not None else 0.0
    if problem.mode == "strict":
        objective = float(m["noncompulsory_bytes"])
        sched_proven = objective <= sched_bound
        # the schedule-independent bound of ilp/lower_bound.py (0 proves a zero-traffic plan)
        bound = float(glb.bound_bytes) if glb is not None else 0.0
        proven = objective <= bound
        where = f"{r0.origin!r}" if r0 is not None else "of a given plan"
        which = glb.decided_by if glb is not None else "no bound"
        glb_text = f"the global lower bound is {bound:.0f} bytes ({which})"
        if proven:
            proven_text = ("globally optimal (zero non-compulsory traffic)" if objective == 0 else
                           f"globally optimal (meets the global lower bound: {which})")
        elif sched_proven:
            proven_text = (f"optimal for its fixed schedule {where} only (schedule_bound); not over all "
                           f"schedules: {glb_text}")
        elif r0 is not None:
            proven_text = (f"feasible; schedule_bound is a lower bound for the fixed schedule {where} only; "
                           f"{glb_text}")
        else:
            proven_text = f"feasible (a given plan was kept; no schedule bound); {glb_text}"
    else:
        objective = float(m["modeled_time_s"])
        proven = sched_proven = False
        sched_bound = (sched_bound * 1e-9) if r0 is not None else 0.0
        bound = 0.0
        proven_text = ("feasible; schedule_bound is a lower bound on the modelled time for the fixed schedule "
                       f"{r0.origin!r} only (roofline + DMA-throughput proxy, rounded to 1 ns per step); "
                       "the global lower bound is 0") if r0 else "feasible (a given plan was kept; no bound)"
    gap = 0.0 if objective <= 0 else max(0.0, (objective - bound) / objective)
    sched_gap = 0.0 if objective <= 0 else max(0.0, (objective - sched_bound) / objective)
    firsts = [r.time_to_first_solution_s for r in results if r.time_to_first_solution_s is not None]
    info = {
        "objective": objective,
        "objective_kind": "noncompulsory_bytes" if problem.mode == "strict" else "modeled_time_s",
        "best_bound": bound,
        "gap": gap,
        "schedule_bound": sched_bound,
        "schedule_gap": sched_gap,
        "schedule_proven": sched_proven,
        "search": st.search_info,
        "relaxed_start": st.relax_info,
        "time_limit": st.time_limit,
        "global_bound": None if glb is None else {**dataclasses.asdict(glb), "decided_by": glb.decided_by},
        "time_to_first_solution_s": min(firsts) if firsts else None,
        "wall_s": wall,
        "proven": proven_text,
        "chosen": res.origin if res is not None else f"given plan from {best.solver!r}",
        "seed": seed,
        "workers": workers,
        "deterministic": deterministic,
        "schedules": [
            {"origin": r.origin, "method": r.method, "status": r.status, "objective": r.objective,
             "best_bound": r.bound, "proven": r.proven, "time_to_first_solution_s": r.time_to_first_solution_s,
             "wall_s": r.wall_s, "deterministic_time": r.det_time, "stopped_by": r.stopped_by,
             "model": r.sizes}
            for r in results
        ],
    }
    if r0 is not None:
        info["model"] = r0.sizes
    status = "OPTIMAL" if proven else "FEASIBLE"
    return Plan.assemble(problem, best.schedule, best.residencies, best.transfers, solver="ilp",
                         status=status, solve_time_s=wall, info=dict(best.info, **info))


__all__ = ["solve_ilp", "relaxation_bound", "IlpOptions", "ScheduleResult"]
