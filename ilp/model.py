"""The fixed-schedule CP-SAT model (COSMA with the schedule fixed, "COSMA FS"), compact form.

Glossary (docs/glossary.md has the project's one):

* **required point** of a managed value: a step at which the value is touched by the running
  operator: its creation (producer's step) and every step that reads it. Points
  ``u_0 < u_1 < ... < u_k``.
* **gap** ``i``: the steps strictly between ``u_i`` and ``u_{i+1}``. ``keep[i]`` says the value
  stays resident, at the same offset, from ``u_i`` through ``u_{i+1}``; otherwise it is evicted
  after ``u_i`` and reloaded at ``u_{i+1}`` (any earlier reload is a prefetch, which changes the
  time, never the bytes; :func:`memmap.prefetch.hoist_prefetches` adds them afterwards).
* **run**: a maximal sequence of points joined by kept gaps: one residency of the plan.
* **unit**: the address/size resolution of the model, the GCD of every allocated size (a
  multiple of the alignment). Offsets and sizes are divided by it.

Exactness (strict mode). For a fixed schedule, the optimum of this model equals the minimum
non-compulsory traffic over *all* valid plans with that schedule: any valid plan maps to a model
solution that costs no more (a gap not covered by one residency needs at least one load/reload
starting inside it, which costs the value's size, and a produced intermediate that is ever
dropped needs one spill; shrinking every residency to the required points and kept gaps only
removes occupancy, so addresses stay disjoint), and every model solution decodes to a valid plan
that costs exactly the model objective.

Constraint families (one function each, every variable named):

* :func:`add_point_residency` - strict: every point is resident (mandatory rectangle);
  tiered: optional (``resident[i]``).
* :func:`add_kept_gaps` - a kept gap needs both points resident and the same offset.
* :func:`add_no_overlap` - one ``add_no_overlap_2d`` over (step, address) for every point
  rectangle and every kept-gap rectangle; the capacity is the address domain's upper bound.
* :func:`add_step_capacity` - redundant per-step byte sums (strengthens the LP bound).
* :func:`add_transfers` - reload, spill, slow-read and slow-write indicators.
* :func:`add_inplace` - in-place pairs: ``share`` puts an operator's output at its input's offset
  at the operator's step, the input's run ending there; the two are then one rectangle.
* :func:`add_symmetry_breaking` - mirror symmetry of the address axis and interchangeable values.
* :func:`add_objective` - strict: non-compulsory bytes, then the number of non-compulsory
  transfers (lexicographic by weighting); tiered: a modelled-time proxy (see docs/ilp.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from ortools.sat.python import cp_model

from memmap.plan import Plan, Residency, Transfer
from memmap.problem import Problem
from memmap.static_alloc import merge_same_offset

# time unit of the tiered objective: 1 ns
TIME_UNIT_S = 1e-9


@dataclasses.dataclass(frozen=True)
class ValueSpec:
    """One managed value as the model sees it.

    Attributes:
      value: value id.
      points: ``[k+1]`` required steps, increasing.
      size_units: allocated size divided by the model unit.
      size_bytes: real size (traffic is counted in real bytes).
      produced: has a producer (then ``points[0]`` is its creation step).
      is_output: a program output (needs a writeback, compulsory).
      reads: ``[k+1]`` whether point ``i`` is a read (False only for a creation point).
    """

    value: int
    points: tuple[int, ...]
    size_units: int
    size_bytes: int
    produced: bool
    is_output: bool
    reads: tuple[bool, ...]

    @property
    def cost_class(self) -> str:
        if not self.produced:
            return "input"
        return "output" if self.is_output else "intermediate"


@dataclasses.dataclass
class Instance:
    """The data of one fixed-schedule model (no OR-Tools objects).

    Attributes:
      problem: the problem.
      schedule: ``[num_steps]`` op ids.
      specs: managed values that have at least one required point.
      unit_bytes: address resolution (GCD of the allocated sizes; a multiple of the alignment).
      capacity_units: ``capacity_bytes // unit_bytes``.
      pairs: in-place pairs ``(step, output spec, input spec, input point)``: at ``step`` the
        operator may write the output (its point 0) into the input's buffer (point ``input
        point`` of the input, which is at ``step``).
    """

    problem: Problem
    schedule: tuple[int, ...]
    specs: list[ValueSpec]
    unit_bytes: int
    capacity_units: int
    pairs: list[tuple[int, int, int, int]] = dataclasses.field(default_factory=list)

    @property
    def num_steps(self) -> int:
        return len(self.schedule)


def make_instance(problem: Problem, schedule: Sequence[int], *, unit_bytes: int | None = None) -> Instance:
    """Required points of every managed value under ``schedule``.

    ``unit_bytes`` defaults to the GCD of all allocated sizes (reduction "sizes scaled by their
    GCD"). Soundness: take any valid placement and process its residencies in increasing offset
    order, dropping each to the lowest address above the already processed residencies that
    overlap it in time (0 if none). Each moves down only (by induction the processed ones only
    moved down, and they were below it), so nothing overlaps and the capacity still holds; and
    each offset is now 0 or the top of another, i.e. a sum of allocated sizes: a multiple of
    their GCD. So restricting offsets to multiples of the GCD loses no solution's cost.
    """
    g = problem.graph
    managed = problem.managed
    asz = problem.alloc_size
    pts: dict[int, list[int]] = defaultdict(list)
    reads: dict[int, list[bool]] = defaultdict(list)
    for t, o in enumerate(schedule):
        op = g.ops[o]
        for v in op.inputs:
            if managed[v]:
                pts[v].append(t)
                reads[v].append(True)
        for v in op.outputs:
            if managed[v]:
                pts[v].append(t)
                reads[v].append(False)
    if unit_bytes is None:
        unit_bytes = 0
        for v in pts:
            unit_bytes = math.gcd(unit_bytes, asz[v])
        unit_bytes = unit_bytes or problem.target.alignment_bytes
    if unit_bytes % problem.target.alignment_bytes:
        raise ValueError(f"model unit {unit_bytes} is not a multiple of the alignment "
                         f"{problem.target.alignment_bytes}")
    specs = []
    for v in sorted(pts):
        if asz[v] % unit_bytes:
            raise ValueError(f"model unit {unit_bytes} does not divide the allocated size {asz[v]} "
                             f"of value {g.values[v].name!r}")
        order = np.argsort(pts[v], kind="stable")
        p = tuple(int(pts[v][i]) for i in order)
        r = tuple(bool(reads[v][i]) for i in order)
        val = g.values[v]
        specs.append(ValueSpec(value=v, points=p, size_units=asz[v] // unit_bytes, size_bytes=val.size_bytes,
                               produced=val.producer is not None, is_output=val.is_output, reads=r))
    index = {sp.value: j for j, sp in enumerate(specs)}
    pairs = []
    for t, o in enumerate(schedule):
        for vo, vi in problem.inplace_pairs[o]:
            jo, ji = index[vo], index[vi]
            pairs.append((t, jo, ji, specs[ji].points.index(t)))
    return Instance(problem=problem, schedule=tuple(int(o) for o in schedule), specs=specs,
                    unit_bytes=unit_bytes, capacity_units=problem.target.capacity_bytes // unit_bytes,
                    pairs=pairs)


@dataclasses.dataclass
class Fixed:
    """Incumbent values that a window sub-model keeps fixed (large-graph LNS).

    Attributes:
      window: ``(first_step, last_step)`` inclusive; points and gaps that lie entirely inside
        are free, everything else is fixed to the incumbent.
      assignment: the incumbent (an :class:`Assignment`).
    """

    window: tuple[int, int]
    assignment: "Assignment"


@dataclasses.dataclass
class Assignment:
    """A model solution in plain Python: per spec index, point residency, offsets (units), keeps.

    Attributes:
      resident: ``[num_specs][k+1]`` point resident (always True in strict mode).
      offset: ``[num_specs][k+1]`` offset in units of each resident point (0 when not resident).
      keep: ``[num_specs][k]`` gap kept.
      share: ``[num_pairs]`` the in-place pair ``inst.pairs[k]`` is one buffer; None: derived
        from the rest (:func:`shares_of`: both points resident at one offset, the input's run
        ending there).
    """

    resident: list[list[bool]]
    offset: list[list[int]]
    keep: list[list[bool]]
    share: list[bool] | None = None


def shares_of(inst: "Instance", a: Assignment) -> list[bool]:
    """``a.share``, or derived from its points when it has none (see :class:`Assignment`)."""
    if a.share is not None:
        return list(a.share)
    out = []
    for t, jo, ji, ii in inst.pairs:
        last = ii == len(inst.specs[ji].points) - 1
        out.append(bool(a.resident[ji][ii] and a.resident[jo][0] and a.offset[ji][ii] == a.offset[jo][0]
                        and (last or not a.keep[ji][ii])))
    return out


class FixedScheduleModel:
    """A CP-SAT model of one :class:`Instance` (optionally a window of it, see :class:`Fixed`).

    Attributes:
      model: the ``cp_model.CpModel``.
      resident / offset / keep: per spec, the variables (or Python constants when fixed).
      bytes_expr: non-compulsory bytes as a linear expression (strict and tiered).
      time_expr: tiered only: the modelled-time proxy in ns.
      objective_scale: strict: the weight of one byte in the objective.
    """

    def __init__(self, inst: Instance, *, fixed: Fixed | None = None, symmetry_breaking: bool = True,
                 redundant_capacity: bool = True, addresses: bool = True,
                 step_caps: Sequence[int] | None = None):
        if step_caps is not None and (addresses or len(step_caps) != inst.num_steps):
            raise ValueError("step_caps: one capacity (units) per step, and only without addresses")
        self.inst = inst
        self.addresses = addresses
        # per-step capacities (units) of the address-free model: a RESTRICTION when below the
        # capacity (used to look for packable replacements, never for bounds)
        self.step_caps = None if step_caps is None else [int(c) for c in step_caps]
        self.fixed = fixed
        self.strict = inst.problem.mode == "strict"
        self.model = cp_model.CpModel()
        self.model.name = f"memmap_fs_{inst.problem.graph.name}"
        self.resident: list[list] = []
        self.offset: list[list] = []
        self.keep: list[list] = []
        self.load: list[list] = []       # per point: a load/reload starts a residency here
        self.spill: list = []
        self.writeback: list = []
        self.slow_read: list[list] = []
        self.slow_write: list = []
        self._x_free = 0
        self.num_rectangles = 0
        self.share: list = []
        self.add_point_residency()
        self.add_kept_gaps()
        self.add_inplace()
        if addresses:
            self.add_no_overlap()
        if redundant_capacity or not addresses:
            self.add_step_capacity()
        self.add_transfers()
        if symmetry_breaking and fixed is None and addresses:
            self.add_symmetry_breaking()
        self.add_objective()

    # -- helpers ----------------------------------------------------------------------------
    def _point_free(self, t: int) -> bool:
        if self.fixed is None:
            return True
        a, b = self.fixed.window
        return a <= t <= b

    def _gap_free(self, t0: int, t1: int) -> bool:
        return self._point_free(t0) and self._point_free(t1)

    # -- 1. point residency -------------------------------------------------------------------
    def add_point_residency(self) -> None:
        """Strict: every required point is resident. Tiered: ``res_v{v}_p{i}`` chooses."""
        m = self.model
        cap = self.inst.capacity_units
        fa = self.fixed.assignment if self.fixed else None
        for j, s in enumerate(self.inst.specs):
            rs, os_ = [], []
            for i, t in enumerate(s.points):
                if self._point_free(t):
                    r = True if self.strict else m.new_bool_var(f"res_v{s.value}_p{i}")
                    o = m.new_int_var(0, cap - s.size_units, f"off_v{s.value}_p{i}") if self.addresses else 0
                else:
                    r = fa.resident[j][i]
                    o = fa.offset[j][i] if self.addresses else 0
                rs.append(r)
                os_.append(o)
            self.resident.append(rs)
            self.offset.append(os_)

    # -- 2. kept gaps ---------------------------------------------------------------------------
    def add_kept_gaps(self) -> None:
        """``keep_v{v}_g{i}`` => both points resident and the same offset."""
        m = self.model
        fa = self.fixed.assignment if self.fixed else None
        for j, s in enumerate(self.inst.specs):
            ks = []
            for i in range(len(s.points) - 1):
                if self._gap_free(s.points[i], s.points[i + 1]):
                    k = m.new_bool_var(f"keep_v{s.value}_g{i}")
                    for r in (self.resident[j][i], self.resident[j][i + 1]):
                        if r is not True:
                            if r is False:
                                m.add(k == 0)
                            else:
                                m.add_implication(k, r)
                    a, b = self.offset[j][i], self.offset[j][i + 1]
                    if not (isinstance(a, int) and isinstance(b, int)):
                        m.add(a == b).only_enforce_if(k)
                    elif a != b:
                        m.add(k == 0)
                else:
                    k = fa.keep[j][i]
                    if k:   # a fixed kept gap ties a free endpoint to the incumbent
                        for r in (self.resident[j][i], self.resident[j][i + 1]):
                            if not isinstance(r, bool):
                                m.add(r == 1)
                        a, b = self.offset[j][i], self.offset[j][i + 1]
                        if not (isinstance(a, int) and isinstance(b, int)):
                            m.add(a == b)
                ks.append(k)
            self.keep.append(ks)

    # -- 2b. in-place pairs -------------------------------------------------------------------------
    def add_inplace(self) -> None:
        """``share_p{k}`` for pair ``k`` (``inst.pairs``): the operator writes its output into
        the input's buffer. ``share`` => both points resident, the same offset, and the input's
        run ends at that step (its next gap is not kept). The input's point rectangle is then
        absent (:meth:`add_no_overlap`; the output's stands for both) and the step capacity
        counts it once. Values read later reload as usual (the spill, if any, is at the
        input's creation, before the step). Fixed pairs (a window) keep the incumbent's."""
        m = self.model
        fa = self.fixed.assignment if self.fixed else None
        fixed_share = shares_of(self.inst, fa) if fa is not None else None
        self.share_at: dict[tuple[int, int], object] = {}   # (input spec, point) -> share
        for k, (t, jo, ji, ii) in enumerate(self.inst.pairs):
            if not self._point_free(t):
                sh = bool(fixed_share[k])
            else:
                ri, ro = self.resident[ji][ii], self.resident[jo][0]
                ki = self.keep[ji][ii] if ii < len(self.keep[ji]) else False
                if ri is False or ro is False or ki is True:
                    sh = False
                else:
                    sh = m.new_bool_var(f"share_p{k}_v{self.inst.specs[jo].value}_v{self.inst.specs[ji].value}")
                    for r in (ri, ro):
                        if r is not True:
                            m.add_implication(sh, r)
                    if ki is not False:
                        m.add_implication(sh, ki.Not())
                    a, b = self.offset[ji][ii], self.offset[jo][0]
                    if self.addresses and not (isinstance(a, int) and isinstance(b, int)):
                        m.add(a == b).only_enforce_if(sh)
                    elif self.addresses and a != b:
                        m.add(sh == 0)
            self.share.append(sh)
            self.share_at[(ji, ii)] = sh

    # -- 3. addresses ------------------------------------------------------------------------------
    def add_no_overlap(self) -> None:
        """One 2-D no-overlap over (step, address): a rectangle per resident point and per kept
        gap with a non-empty interior. Rectangles entirely outside the window (LNS) are fixed
        and disjoint from every free one in time, unless they span it, so only those that
        touch the window are added."""
        m = self.model
        xs, ys = [], []
        win = self.fixed.window if self.fixed else None

        def touches(t0: int, t1: int) -> bool:   # [t0, t1] inclusive meets the window
            return win is None or (t0 <= win[1] and t1 >= win[0])

        def rect(start: int, length: int, offset, size: int, present, name: str) -> None:
            """A rectangle [start, start+length) x [offset, offset+size), mandatory when
            ``present`` is True, optional on the literal otherwise (False: absent, skipped)."""
            if present is False:
                return
            if present is True:
                xs.append(m.new_fixed_size_interval_var(start, length, f"x_{name}"))
                ys.append(m.new_fixed_size_interval_var(offset, size, f"y_{name}"))
            else:
                xs.append(m.new_optional_fixed_size_interval_var(start, length, present, f"x_{name}"))
                ys.append(m.new_optional_fixed_size_interval_var(offset, size, present, f"y_{name}"))

        for j, s in enumerate(self.inst.specs):
            sz = s.size_units
            for i, t in enumerate(s.points):
                if touches(t, t):
                    rect(t, 1, self.offset[j][i], sz, self._present(j, i), f"v{s.value}_p{i}")
            for i in range(len(s.points) - 1):
                t0, t1 = s.points[i] + 1, s.points[i + 1] - 1
                if t1 >= t0 and touches(t0, t1):
                    rect(t0, t1 - t0 + 1, self.offset[j][i], sz, self.keep[j][i], f"v{s.value}_g{i}")
        self.num_rectangles = len(xs)
        m.add_no_overlap_2d(xs, ys)

    def _present(self, j: int, i: int):
        """Literal (or constant) of point ``i`` of spec ``j`` having its own rectangle: resident
        and not the input of a shared in-place pair (whose output's rectangle stands for it)."""
        r = self.resident[j][i]
        sh = self.share_at.get((j, i), False)
        if r is False or sh is True:
            return False
        if sh is False:
            return r
        if r is True:
            return sh.Not()
        p = self.model.new_bool_var(f"own_rect_v{self.inst.specs[j].value}_p{i}")
        self.model.add_bool_and([r, sh.Not()]).only_enforce_if(p)
        self.model.add_bool_or([p, r.Not(), sh])
        return p

    # -- 4. redundant per-step capacity ------------------------------------------------------------
    def add_step_capacity(self) -> None:
        """Sum of resident sizes at each step <= capacity. Implied by the no-overlap (the
        rectangles at one step are disjoint sub-ranges of [0, capacity)), so it cuts no
        solution; it gives the LP relaxation the byte bound. Only steps where everything that
        could be resident exceeds the capacity get a constraint."""
        n = self.inst.num_steps
        terms: list[list] = [[] for _ in range(n)]
        const = [0] * n
        win = self.fixed.window if self.fixed else (0, n - 1)
        for j, s in enumerate(self.inst.specs):
            sz = s.size_units
            for i, t in enumerate(s.points):
                if not (win[0] <= t <= win[1]):
                    continue
                r = self.resident[j][i]
                if r is True:
                    const[t] += sz
                elif r is not False:
                    terms[t].append((r, sz))
            for i in range(len(s.points) - 1):
                k = self.keep[j][i]
                if k is False:
                    continue
                for t in range(max(s.points[i] + 1, win[0]), min(s.points[i + 1] - 1, win[1]) + 1):
                    if k is True:
                        const[t] += sz
                    else:
                        terms[t].append((k, sz))
        for (t, jo, ji, ii), sh in zip(self.inst.pairs, self.share):
            if win[0] <= t <= win[1] and sh is not False:   # a shared pair is one buffer
                sz = self.inst.specs[ji].size_units
                if sh is True:
                    const[t] -= sz
                else:
                    terms[t].append((sh, -sz))
        self.num_capacity_rows = 0
        for t in range(win[0], win[1] + 1):
            cap = self.inst.capacity_units if self.step_caps is None else self.step_caps[t]
            if const[t] + sum(sz for _, sz in terms[t] if sz > 0) <= cap:
                continue
            self.model.add(sum(sz * v for v, sz in terms[t]) <= cap - const[t]).with_name(f"cap_t{t}")
            self.num_capacity_rows += 1

    # -- 5. transfers ------------------------------------------------------------------------------
    def add_transfers(self) -> None:
        """Indicators (Booleans or constants) of every transfer the decoded plan will contain.

        * ``load[i]``: a load/reload starts a residency at point ``i``: resident and not kept from
          ``i-1`` (for a produced value's creation point: never; it is created there).
        * ``spill``: a produced intermediate created in the scratchpad and reloaded (or, tiered,
          read from slow memory) later.
        * ``writeback``: a produced output created in the scratchpad.
        * tiered: ``slow_read[i]`` (a read point not resident), ``slow_write`` (creation point
          not resident).
        """
        m = self.model
        for j, s in enumerate(self.inst.specs):
            res, keep = self.resident[j], self.keep[j]
            loads = []
            for i in range(len(s.points)):
                if i == 0 and s.produced:
                    loads.append(False)
                    continue
                prev = keep[i - 1] if i > 0 else False
                r = res[i]
                if r is False or prev is True:
                    loads.append(False)
                elif r is True and prev is False:
                    loads.append(True)
                else:
                    lv = m.new_bool_var(f"load_v{s.value}_p{i}")
                    # lv == r and not prev
                    lits_r = [] if r is True else [r]
                    lits_p = [] if prev is False else [prev.Not()]
                    m.add_bool_and(lits_r + lits_p).only_enforce_if(lv)
                    m.add_bool_or([lv] + ([r.Not()] if r is not True else []) + ([prev] if prev is not False else []))
                    loads.append(lv)
            self.load.append(loads)
            srs = []
            for i, r in enumerate(res):
                if not s.reads[i] or r is True:
                    srs.append(False)
                elif r is False:
                    srs.append(True)
                else:
                    srs.append(r.Not())
            self.slow_read.append(srs)
            spill = False
            wb = False
            if s.produced:
                created = res[0]
                if s.is_output:
                    wb = created
                else:
                    later = [x for x in loads[1:] + srs[1:] if x is not False]
                    if any(x is True for x in later) and created is True:
                        spill = True
                    elif later and created is not False:
                        spill = m.new_bool_var(f"spill_v{s.value}")
                        for x in later:
                            lits = [spill] + ([x.Not()] if x is not True else []) + \
                                ([created.Not()] if created is not True else [])
                            m.add_bool_or(lits)
            self.spill.append(spill)
            self.writeback.append(wb)
            if s.produced:
                c = res[0]
                self.slow_write.append(False if c is True else (True if c is False else c.Not()))
            else:
                self.slow_write.append(False)

    # -- 6. symmetry breaking ------------------------------------------------------------------------
    def add_symmetry_breaking(self) -> None:
        """Two symmetries of the address axis, both sound (they remove only solutions that have
        an equally good mirror or permutation):

        * mirror: mapping every offset ``o`` of size ``s`` to ``C - o - s`` keeps every
          rectangle inside ``[0, C)`` and disjoint, and every cost. So one point rectangle (the
          largest) may be required to have its centre in the lower half: ``2 o + s <= C``.
        * interchangeable values: two values with the same size, the same required points and
          the same cost class (input / intermediate / output) can swap all their variables; we
          order their first offsets (strict mode, where the first points are both resident and
          hence at different offsets).
        """
        m = self.model
        cap = self.inst.capacity_units
        self.symmetry = {"mirror": None, "interchangeable_pairs": 0}
        if not self.inst.specs:
            return
        if self.strict:
            groups: dict[tuple, list[int]] = defaultdict(list)
            paired = {j for _, jo, ji, _ in self.inst.pairs for j in (jo, ji)}
            for j, s in enumerate(self.inst.specs):
                if j in paired:
                    continue   # swapping it would not carry its partner along
                groups[(s.size_units, s.points, s.cost_class, s.reads, s.size_bytes)].append(j)
            self.symmetry_groups = [g for g in groups.values() if len(g) > 1]
            for grp in self.symmetry_groups:
                for a, b in zip(grp, grp[1:]):
                    m.add(self.offset[a][0] <= self.offset[b][0]).with_name(
                        f"sym_order_v{self.inst.specs[a].value}_v{self.inst.specs[b].value}")
                    self.symmetry["interchangeable_pairs"] += 1
            grouped = {j for g in self.symmetry_groups for j in g}
            free = [j for j in range(len(self.inst.specs)) if j not in grouped]
            if free:   # the mirror anchor is in no group, so the two breaks compose
                j = max(free, key=lambda j: (self.inst.specs[j].size_units, -j))
                s = self.inst.specs[j]
                m.add(2 * self.offset[j][0] + s.size_units <= cap).with_name(f"sym_mirror_v{s.value}")
                self.symmetry["mirror"] = (j, 0)

    # -- 7. objective ----------------------------------------------------------------------------------
    def _bytes_terms(self):
        """(coefficient in real bytes, literal) of every transfer that is non-compulsory or
        compulsory; non-compulsory bytes = total - problem.compulsory_bytes."""
        terms = []
        for j, s in enumerate(self.inst.specs):
            for x in self.load[j]:
                terms.append((s.size_bytes, x))
            terms.append((s.size_bytes, self.spill[j]))
            terms.append((s.size_bytes, self.writeback[j]))
            for x in self.slow_read[j]:
                terms.append((s.size_bytes, x))
            terms.append((s.size_bytes, self.slow_write[j]))
        return terms

    def add_objective(self) -> None:
        """Strict: ``bytes * W + transfers`` with ``W`` larger than the number of possible
        non-compulsory transfers: lexicographic (bytes first). Tiered: the time proxy
        ``max(sum of roofline step times, total DMA time)`` in ns (see docs/ilp.md)."""
        m = self.model
        terms = self._bytes_terms()
        const = sum(c for c, x in terms if x is True)
        var_terms = [(c, x) for c, x in terms if x is not True and x is not False]
        self.bytes_const = const - self.inst.problem.compulsory_bytes
        self.bytes_terms = var_terms
        bytes_expr = sum(c * x for c, x in var_terms) + self.bytes_const
        self.bytes_expr = bytes_expr
        if self.strict:
            g = 0
            for c, _ in var_terms:
                g = math.gcd(g, c)
            g = g or 1
            count_lits = [x for c, x in var_terms]
            weight = len(count_lits) + 1
            self.objective_scale = (g, weight)
            m.minimize(sum((c // g) * weight * x for c, x in var_terms) + sum(count_lits))
            return
        self.time_expr = self._time_objective(var_terms)
        m.minimize(self.time_expr)

    def _time_objective(self, var_terms):
        """Tiered: ``T = max(sum_t step_time_t, DMA time)`` in ns; ``step_time_t =
        max(compute_t, fast/onchip_bw + slow/offchip_bw)`` over the op's inputs and outputs."""
        m = self.model
        p = self.inst.problem
        g = p.graph
        tgt = p.target
        managed = p.managed
        res_at: dict[tuple[int, int], object] = {}
        for j, s in enumerate(self.inst.specs):
            for i, t in enumerate(s.points):
                res_at[(s.value, t)] = self.resident[j][i]
        step_vars = []
        const_time = 0
        step_hi = 0
        for t in range(self.inst.num_steps):   # all steps: outside a window they are constants
            op = g.ops[self.inst.schedule[t]]
            compute = int(round(op.flops / tgt.compute_flops_per_s / TIME_UNIT_S))
            base = 0.0
            lin = []
            for v in op.inputs + op.outputs:
                size = g.values[v].size_bytes
                base += size / tgt.offchip_bandwidth_bytes_per_s
                if managed[v]:
                    r = res_at.get((v, t), False)
                    gain = size / tgt.offchip_bandwidth_bytes_per_s - size / tgt.onchip_bandwidth_bytes_per_s
                    gi = int(round(gain / TIME_UNIT_S))
                    if r is True:
                        base -= gain
                    elif r is not False and gi > 0:
                        lin.append((gi, r))
            base_i = int(round(base / TIME_UNIT_S))
            lo = max(compute, base_i - sum(c for c, _ in lin))
            if not lin or compute >= base_i:
                const_time += max(compute, base_i)
                continue
            st = m.new_int_var(lo, max(compute, base_i), f"time_t{t}")
            step_hi += max(compute, base_i)
            m.add(st >= compute)
            m.add(st >= base_i - sum(c * r for c, r in lin))
            step_vars.append(st)
        dma_per_byte = 1.0 / tgt.offchip_bandwidth_bytes_per_s / TIME_UNIT_S
        dma_terms = []
        for j, s in enumerate(self.inst.specs):
            c = int(round(s.size_bytes * dma_per_byte))
            for x in self.load[j] + [self.spill[j], self.writeback[j]]:
                if x is not False and c > 0:
                    dma_terms.append((c, x))
        total_steps = sum(step_vars) + const_time
        upper = const_time + step_hi + sum(c for c, _ in dma_terms)
        obj = m.new_int_var(0, max(1, upper), "modeled_time_proxy_ns")
        m.add(obj >= total_steps)
        m.add(obj >= sum(c * (x if x is not True else 1) for c, x in dma_terms))
        return obj

    # -- hints and decoding --------------------------------------------------------------------------
    def canonical(self, a: Assignment) -> Assignment:
        """The symmetric image of ``a`` that satisfies the symmetry-breaking constraints (mirror
        the address axis if needed, then sort interchangeable values by first offset). Equal
        cost; used so that a hint is a solution of this model."""
        sym = getattr(self, "symmetry", None)
        if not sym:
            return a
        cap = self.inst.capacity_units
        res = [list(r) for r in a.resident]
        off = [list(o) for o in a.offset]
        keep = [list(k) for k in a.keep]
        j0, i0 = sym["mirror"] if sym["mirror"] is not None else (None, 0)
        if j0 is not None and 2 * off[j0][i0] + self.inst.specs[j0].size_units > cap:
            for j, s in enumerate(self.inst.specs):
                off[j] = [cap - o - s.size_units if res[j][i] else 0 for i, o in enumerate(off[j])]
        for grp in getattr(self, "symmetry_groups", []):
            items = sorted(((res[j], off[j], keep[j]) for j in grp), key=lambda x: x[1][0])
            for j, (r, o, k) in zip(grp, items):
                res[j], off[j], keep[j] = r, o, k
        return Assignment(res, off, keep, shares_of(self.inst, a))

    def add_hint(self, a: Assignment) -> None:
        """Hint every variable with the assignment (made canonical, see :meth:`canonical`):
        residency, offsets, keeps and the derived transfer indicators."""
        m = self.model
        a = self.canonical(a)
        for j, s in enumerate(self.inst.specs):
            loads = []
            for i in range(len(s.points)):
                ld = a.resident[j][i] and not (i == 0 and s.produced) and not (i > 0 and a.keep[j][i - 1])
                loads.append(ld)
                x = self.load[j][i]
                if not isinstance(x, bool):
                    m.add_hint(x, ld)
            sp = self.spill[j]
            if not isinstance(sp, bool):
                later = any(loads[1:]) or any(s.reads[i] and not a.resident[j][i] for i in range(1, len(s.points)))
                m.add_hint(sp, bool(later and a.resident[j][0]))
            for i in range(len(s.points)):
                r, o = self.resident[j][i], self.offset[j][i]
                if not isinstance(r, bool):
                    m.add_hint(r, a.resident[j][i])
                if not isinstance(o, int):
                    m.add_hint(o, a.offset[j][i])
            for i, k in enumerate(self.keep[j]):
                if not isinstance(k, bool):
                    m.add_hint(k, a.keep[j][i])
        for sh, want in zip(self.share, shares_of(self.inst, a)):
            if not isinstance(sh, bool):
                m.add_hint(sh, want)

    def read(self, solver: cp_model.CpSolver) -> Assignment:
        """The solver's solution as an :class:`Assignment`."""
        def val(x):
            return x if isinstance(x, (bool, int)) else solver.value(x)

        res = [[bool(val(r)) for r in rs] for rs in self.resident]
        off = [[int(val(o)) if res[j][i] else 0 for i, o in enumerate(os_)] for j, os_ in enumerate(self.offset)]
        keep = [[bool(val(k)) for k in ks] for ks in self.keep]
        return Assignment(res, off, keep, [bool(val(sh)) for sh in self.share])


def point_runs(resident: Sequence[bool], keep: Sequence[bool]) -> list[tuple[int, int]]:
    """``(first, last)`` point indices of each residency run of one value: resident points
    joined by kept gaps."""
    out = []
    i, k = 0, len(resident)
    while i < k:
        if not resident[i]:
            i += 1
            continue
        first = i
        while i < k - 1 and keep[i]:
            i += 1
        out.append((first, i))
        i += 1
    return out


def decode(inst: Instance, a: Assignment, *, solver: str = "ilp", status: str = "FEASIBLE",
           info: dict | None = None) -> Plan:
    """Turn an assignment into a plan: one residency per run, transfers at run starts, spills
    and writebacks at the creation step (issued as early as possible)."""
    p = inst.problem
    U = inst.unit_bytes
    residencies: list[Residency] = []
    transfers: list[Transfer] = []
    for j, s in enumerate(inst.specs):
        res, off, keep = a.resident[j], a.offset[j], a.keep[j]
        v = s.value
        first_load_done = False
        reloaded = False
        k = len(s.points)
        for start, last in point_runs(res, keep):
            residencies.append(Residency(v, s.points[start], s.points[last], off[start] * U))
            if not (start == 0 and s.produced):
                if s.produced:
                    kind = "reload"
                    reloaded = True
                else:
                    kind = "reload" if first_load_done else "load"
                    first_load_done = True
                transfers.append(Transfer(s.points[start], kind, v, s.size_bytes))
        if any(s.reads[i] and not res[i] for i in range(1, k)):
            reloaded = True   # tiered: read from slow memory later, needs the off-chip copy
        if s.produced and res[0]:
            if s.is_output:
                transfers.append(Transfer(s.points[0], "writeback", v, s.size_bytes))
            elif reloaded:
                transfers.append(Transfer(s.points[0], "spill", v, s.size_bytes))
    return Plan.assemble(p, inst.schedule, residencies, transfers, solver=solver, status=status, info=info)


def encode(inst: Instance, plan: Plan) -> Assignment | None:
    """A plan with ``inst.schedule`` as an assignment (its residencies shrunk to the required
    points and kept gaps, offsets re-packed to multiples of the model unit by the gravity
    argument of :func:`make_instance`). None when the plan has another schedule."""
    if tuple(plan.schedule) != inst.schedule:
        return None
    return encode_residencies(inst, plan.residencies)


def encode_residencies(inst: Instance, residencies: Sequence[Residency]) -> Assignment:
    """Residencies under ``inst.schedule`` as an assignment (see :func:`encode`). A required
    point of a strict-mode problem that no residency covers makes the assignment infeasible
    for the model (the model rejects such a hint; the caller checks the hint's validity)."""
    by_value: dict[int, list[Residency]] = defaultdict(list)
    for r in residencies:
        by_value[r.value].append(r)
    for rs in by_value.values():
        rs.sort(key=lambda r: r.start)
    resident, keep, cover = [], [], []
    for s in inst.specs:
        rs = by_value.get(s.value, [])
        starts = [r.start for r in rs]
        cv = []
        for t in s.points:
            i = int(np.searchsorted(starts, t, side="right")) - 1
            cv.append(rs[i] if i >= 0 and rs[i].end >= t else None)
        cover.append(cv)
        resident.append([c is not None for c in cv])
        keep.append([cv[i] is not None and cv[i] is cv[i + 1] for i in range(len(cv) - 1)])
    # in-place pairs the plan shares: the input's residency ends at the step where the
    # output's starts, at the same offset
    share = []
    for t, jo, ji, ii in inst.pairs:
        ri, ro = cover[ji][ii], cover[jo][0]
        share.append(ri is not None and ro is not None and ri.end == t and ro.start == t
                     and ri.offset == ro.offset)
    # runs: (spec, first point, last point) with the plan's offset; then gravity to the unit grid
    runs = []
    run_of: dict[tuple[int, int], int] = {}     # (spec, point) -> its run
    for j, s in enumerate(inst.specs):
        i, k = 0, len(s.points)
        while i < k:
            if not resident[j][i]:
                i += 1
                continue
            a = i
            while i < k - 1 and keep[j][i]:
                i += 1
            for x in range(a, i + 1):
                run_of[(j, x)] = len(runs)
            runs.append((j, a, i, cover[j][a].offset))
            i += 1
    links = [(run_of[(ji, ii)], run_of[(jo, 0)]) for (t, jo, ji, ii), sh in zip(inst.pairs, share) if sh]
    new_off = gravity([inst.specs[j].points[a] for j, a, _, _ in runs],
                      [inst.specs[j].points[b] for j, _, b, _ in runs],
                      [inst.specs[j].size_units * inst.unit_bytes for j, _, _, _ in runs],
                      [o for _, _, _, o in runs], same_offset=links)
    offset = [[0] * len(s.points) for s in inst.specs]
    for (j, a, b, _), o in zip(runs, new_off):
        for i in range(a, b + 1):
            offset[j][i] = int(o) // inst.unit_bytes
    return Assignment(resident, offset, keep, share)


def gravity(lo: Sequence[int], hi: Sequence[int], size: Sequence[int], offset: Sequence[int], *,
            same_offset: Sequence[tuple[int, int]] = ()) -> np.ndarray:
    """Drop every block (inclusive time range ``[lo, hi]``, ``size`` bytes at ``offset``) to the
    lowest address above the lower blocks that overlap it in time. Offsets only decrease and
    every new offset is 0 or another block's top (see :func:`make_instance`). Blocks linked by
    ``same_offset`` (shared in-place pairs, at one offset) move together as one block spanning
    their union (:func:`memmap.static_alloc.merge_same_offset`)."""
    if same_offset:
        glo, ghi, gsz, group = merge_same_offset(lo, hi, size, same_offset)
        goff = np.zeros(len(gsz), dtype=np.int64)
        goff[group] = np.asarray(offset, dtype=np.int64)
        return gravity(glo, ghi, gsz, goff)[group]
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    sz = np.asarray(size, dtype=np.int64)
    off = np.asarray(offset, dtype=np.int64)
    n = len(sz)
    out = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    for i in np.lexsort((lo, off)):
        mask = done & (lo <= hi[i]) & (hi >= lo[i])
        out[i] = int((out[mask] + sz[mask]).max()) if mask.any() else 0
        done[i] = True
    return out


def trivial_assignment(inst: Instance) -> Assignment | None:
    """Strict mode: evict everything after each use and stack each step's working set from 0,
    every in-place pair as one buffer (the output at its input's offset). Feasible whenever the
    capacity is at least M_R. Tiered: nothing resident."""
    strict = inst.problem.mode == "strict"
    n = inst.num_steps
    top = [0] * n
    resident, offset, keep = [], [], []
    written = {jo: (ji, ii) for _, jo, ji, ii in inst.pairs}    # output spec -> its input point
    for j, s in enumerate(inst.specs):
        rs, os_ = [], []
        for i, t in enumerate(s.points):
            if strict:
                rs.append(True)
                if i == 0 and j in written:
                    os_.append(-1)          # filled below with its input's offset
                    continue
                if top[t] + s.size_units > inst.capacity_units:
                    return None
                os_.append(top[t])
                top[t] += s.size_units
            else:
                rs.append(False)
                os_.append(0)
        resident.append(rs)
        offset.append(os_)
        keep.append([False] * (len(s.points) - 1))
    if strict:
        for jo, (ji, ii) in written.items():
            offset[jo][0] = offset[ji][ii]
    return Assignment(resident, offset, keep, [strict] * len(inst.pairs))


__all__ = ["Instance", "ValueSpec", "Assignment", "Fixed", "FixedScheduleModel", "make_instance",
           "decode", "encode", "encode_residencies", "gravity", "trivial_assignment", "shares_of",
           "TIME_UNIT_S"]
