"""The CP-SAT solver (memmap.ilp): every plan verified, never worse than its hint, exact on tiny
graphs (brute force), reductions sound (and an unsound one caught), bounds valid, deterministic."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from ortools.sat.python import cp_model

from memmap.baselines import solve_belady, solve_minpeak, solve_msa
from memmap.budgets import compute_budgets
from memmap.cli import main
from memmap.cost import simulate, traffic
from memmap.errors import InfeasibleError
from memmap.ilp import FixedScheduleModel, decode, make_instance, solve_ilp
from memmap.ilp.model import Instance
from memmap.ilp.solve import relaxation_bound, IlpOptions
from memmap.ir.graph import GraphBuilder
from memmap.ir.synthetic import random_graph
from memmap.pipeline import run_solver
from memmap.prefetch import hoist_prefetches
from memmap.problem import Problem, Target
from memmap.solvers import SOLVERS
from memmap.verify import verify_plan

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "small_cnn_train.after.hlo"


def _key(problem, m):
    if problem.mode == "strict":
        return (m["noncompulsory_bytes"], m["modeled_time_s"])
    return (m["modeled_time_s"], m["noncompulsory_bytes"])


def _baselines(problem):
    out = []
    for p in (solve_msa(problem), solve_belady(problem), solve_minpeak(problem)):
        p = hoist_prefetches(p)
        p.metrics = simulate(p)
        out.append(p)
    return out


def _budgets(g, act=False):
    b = compute_budgets(Problem(g, Target("t", 1 << 40, alignment_bytes=64), "strict", act))
    return {"M_R": b.m_r_bytes, "M_H": b.m_h_bytes, "M_P": b.m_p_bytes}, b


def _solve_opt(fm: FixedScheduleModel, limit_s: float = 20.0):
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 2
    solver.parameters.max_time_in_seconds = limit_s
    st = solver.solve(fm.model)
    assert st == cp_model.OPTIMAL, solver.status_name(st)
    return solver


# -- property test: random graphs x budgets x modes ------------------------------------------------
CASES = [(seed, mode, b) for seed in (0, 1) for mode in ("strict", "tiered") for b in ("M_R", "M_H", "M_P")]


@pytest.mark.parametrize("seed,mode,budget", CASES)
def test_random_graphs_verify_and_never_worse_than_hint(seed, mode, budget):
    g = random_graph(seed, num_ops=10)
    caps, _ = _budgets(g)
    p = Problem(g, Target("t", caps[budget], alignment_bytes=64), mode)
    base = _baselines(p)
    hint = min(base, key=lambda x: _key(p, x.metrics))
    plan = solve_ilp(p, time_limit_s=2.0, hint=hint, hint_schedules=base)
    res = verify_plan(plan)
    assert res.ok, res.reason
    m = simulate(plan)
    assert _key(p, m) <= _key(p, hint.metrics)
    info = plan.info
    assert info["best_bound"] <= info["objective"] + 1e-12
    if plan.status == "OPTIMAL":
        assert info["gap"] == 0.0
    if mode == "strict":
        assert info["objective"] == m["noncompulsory_bytes"]
        if budget == "M_P":
            assert m["noncompulsory_bytes"] == 0   # the M_P schedule's spill-free plan is a candidate


def test_registered_and_pipeline_verifies():
    assert "ilp" in SOLVERS
    g = random_graph(3, num_ops=8)
    caps, _ = _budgets(g)
    p = Problem(g, Target("t", caps["M_R"], alignment_bytes=64), "strict")
    plan = run_solver(p, "ilp", time_limit_s=3.0)     # verifies inside
    assert plan.solver == "ilp" and plan.status in ("OPTIMAL", "FEASIBLE")
    for k in ("objective", "best_bound", "gap", "time_to_first_solution_s", "wall_s", "proven"):
        assert k in plan.info
    best_base = min(run_solver(p, s).metrics["noncompulsory_bytes"] for s in ("msa", "belady", "minpeak"))
    assert plan.metrics["noncompulsory_bytes"] <= best_base


# -- exactness on tiny graphs: brute force over keeps x offsets -------------------------------------
def _brute_force_strict(inst: Instance) -> int:
    """Minimum non-compulsory bytes over every keep pattern and every offset assignment; with
    in-place pairs (``inst.pairs``) also over every choice of shared pairs (a pair may share
    only where the input's run ends at the step; its two runs are then one block at one
    offset). Independent of the model's variables and constraints."""
    specs = inst.specs
    C = inst.capacity_units
    gaps = [(j, i) for j, s in enumerate(specs) for i in range(len(s.points) - 1)]
    best = None
    for bits in itertools.product((False, True), repeat=len(gaps)):
        keep = {gi: b for gi, b in zip(gaps, bits)}
        cost = 0
        runs = []   # [lo, hi, size]
        run_of = {}
        for j, s in enumerate(specs):
            dropped = [not keep[(j, i)] for i in range(len(s.points) - 1)]
            cost += s.size_bytes * sum(dropped)
            if s.produced and not s.is_output and any(dropped):
                cost += s.size_bytes
            a = 0
            for i in range(len(s.points)):
                if i == len(s.points) - 1 or not keep[(j, i)]:
                    for x in range(a, i + 1):
                        run_of[(j, x)] = len(runs)
                    runs.append((s.points[a], s.points[i], s.size_units))
                    a = i + 1
        if best is not None and cost >= best:
            continue
        can = [k for k, (t, jo, ji, ii) in enumerate(inst.pairs)
               if ii == len(specs[ji].points) - 1 or not keep[(ji, ii)]]
        for share in itertools.product((False, True), repeat=len(can)):
            parent = list(range(len(runs)))
            for k, sh in zip(can, share):
                if sh:
                    _, jo, ji, ii = inst.pairs[k]
                    parent[run_of[(jo, 0)]] = run_of[(ji, ii)]
            blocks = {}
            for r in range(len(runs)):
                root = r
                while parent[root] != root:
                    root = parent[root]
                lo, hi, sz = blocks.get(root, runs[r])
                blocks[root] = (min(lo, runs[r][0]), max(hi, runs[r][1]), sz)
            # backtracking placement of the blocks, largest first
            items = sorted(blocks.values(), key=lambda x: -x[2])
            offs: list[int] = []

            def place(k):
                if k == len(items):
                    return True
                lo, hi, sz = items[k]
                for o in range(0, C - sz + 1):
                    if all(not (items[q][0] <= hi and items[q][1] >= lo and offs[q] < o + sz
                                and o < offs[q] + items[q][2]) for q in range(k)):
                        offs.append(o)
                        if place(k + 1):
                            return True
                        offs.pop()
                return False

            if place(0):
                best = cost
                break
    return best


def _tiny_graph(seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"tiny{seed}")
    vals = [b.add_value("p0", 64 * int(rng.integers(1, 3)), kind="parameter")]
    for k in range(4):
        ins = sorted({vals[int(rng.integers(0, len(vals)))] for _ in range(int(rng.integers(1, 3)))})
        (o,) = b.add_op(f"op{k}", "f", inputs=ins, outputs=[(f"v{k}", 64 * int(rng.integers(1, 3)))])
        vals.append(o)
    b.mark_output(vals[-1])
    g = b.build()
    for v in g.values:   # keep graphs small: unread produced values become outputs
        if v.producer is not None and not v.consumers and not v.is_output:
            return None
    return g


def test_exact_against_brute_force():
    checked = 0
    for seed in range(40):
        g = _tiny_graph(seed)
        if g is None:
            continue
        p0 = Problem(g, Target("t", 1 << 20, alignment_bytes=64), "strict")
        for extra in (0, 64):
            p = Problem(g, Target("t", p0.m_r_bytes + extra, alignment_bytes=64), "strict")
            inst = make_instance(p, g.default_schedule)
            if sum(len(s.points) - 1 for s in inst.specs) > 9:
                continue
            fm = FixedScheduleModel(inst)
            solver = _solve_opt(fm)
            a = fm.read(solver)
            plan = decode(inst, a)
            assert verify_plan(plan).ok, verify_plan(plan).reason
            got = traffic(plan)["noncompulsory_bytes"]
            assert got == _brute_force_strict(inst)
            checked += 1
    assert checked >= 6


# -- reductions: sound, and an unsound one is caught ------------------------------------------------
def test_gcd_scaling_and_symmetry_breaking_lose_nothing():
    """Unit = GCD of allocated sizes vs unit = alignment; with vs without symmetry breaking: the
    same optimum (sizes are multiples of 128 so the GCD differs from the 64 B alignment)."""
    compared = 0
    for seed in range(4):
        g = random_graph(seed, num_ops=7, max_size_bytes=8)
        sizes_g = _scale_graph(g, 128)
        caps, _ = _budgets(sizes_g)
        p = Problem(sizes_g, Target("t", caps["M_R"] + 64, alignment_bytes=64), "strict")
        inst_gcd = make_instance(p, sizes_g.default_schedule)
        assert inst_gcd.unit_bytes >= 128
        inst_al = make_instance(p, sizes_g.default_schedule, unit_bytes=64)
        objs = []
        for inst, sym in ((inst_gcd, True), (inst_al, True), (inst_gcd, False)):
            fm = FixedScheduleModel(inst, symmetry_breaking=sym)
            s = _solve_opt(fm)
            plan = decode(inst, fm.read(s))
            assert verify_plan(plan).ok
            objs.append(traffic(plan)["noncompulsory_bytes"])
        assert objs[0] == objs[1] == objs[2], objs
        compared += 1
    assert compared == 4


def _scale_graph(g, factor):
    """The same graph with every size multiplied by ``factor``."""
    import dataclasses

    vals = tuple(dataclasses.replace(v, size_bytes=v.size_bytes * factor) for v in g.values)
    return dataclasses.replace(g, values=vals)


class _UnsoundGapPruning(FixedScheduleModel):
    """A deliberately unsound reduction: only pairs of *point* rectangles are kept apart (as if
    a value occupied memory only at the steps that touch it): kept gaps are left out of the
    no-overlap. The verifier must catch the address collisions this produces."""

    def add_no_overlap(self):
        m = self.model
        xs, ys = [], []
        for j, s in enumerate(self.inst.specs):
            for i, t in enumerate(s.points):
                xs.append(m.new_fixed_size_interval_var(t, 1, f"x{j}_{i}"))
                ys.append(m.new_fixed_size_interval_var(self.offset[j][i], s.size_units, f"y{j}_{i}"))
        self.num_rectangles = len(xs)
        m.add_no_overlap_2d(xs, ys)


def test_unsound_pair_pruning_is_caught_by_the_verifier():
    caught = 0
    for seed in range(6):
        g = random_graph(seed, num_ops=8)
        caps, _ = _budgets(g)
        p = Problem(g, Target("t", caps["M_R"], alignment_bytes=64), "strict")
        inst = make_instance(p, g.default_schedule)
        sound = FixedScheduleModel(inst, redundant_capacity=False)
        unsound = _UnsoundGapPruning(inst, redundant_capacity=False)
        s1, s2 = _solve_opt(sound), _solve_opt(unsound)
        good = decode(inst, sound.read(s1))
        assert verify_plan(good).ok
        bad = decode(inst, unsound.read(s2))
        if traffic(bad)["noncompulsory_bytes"] < traffic(good)["noncompulsory_bytes"]:
            res = verify_plan(bad)
            assert not res.ok and "overlaps" in res.reason
            caught += 1
    assert caught >= 1


# -- bounds and large-graph LNS ---------------------------------------------------------------------
def test_window_lns_and_relaxation_bound_are_valid():
    g = random_graph(5, num_ops=30)
    caps, _ = _budgets(g)
    p = Problem(g, Target("t", caps["M_R"], alignment_bytes=64), "strict")
    base = _baselines(p)
    hint = min(base, key=lambda x: _key(p, x.metrics))
    plan = solve_ilp(p, time_limit_s=6.0, hint=hint, large_graph_ops=10, window_steps=10)
    assert verify_plan(plan).ok
    m = simulate(plan)
    assert m["noncompulsory_bytes"] <= hint.metrics["noncompulsory_bytes"]
    assert any(s["method"] == "window LNS" for s in plan.info["schedules"])
    # the reported bound is below the exact optimum of the same schedule
    inst = make_instance(p, plan.schedule)
    fm = FixedScheduleModel(inst)
    s = _solve_opt(fm, 30.0)
    opt = traffic(decode(inst, fm.read(s)))["noncompulsory_bytes"]
    assert plan.info["best_bound"] <= opt <= m["noncompulsory_bytes"]
    assert relaxation_bound(inst, IlpOptions(), 5.0) <= opt
    relax = plan.info["relaxed_start"]      # the final plan is never worse than that start
    assert relax["ran"] and relax["schedule"] == "hint"
    assert relax["after_bytes"] is None or m["noncompulsory_bytes"] <= relax["after_bytes"]


def test_relaxed_start_packs_a_verified_plan_and_respects_step_caps():
    """The address-free replacement start (large graphs): whatever it returns decodes to a plan
    the verifier accepts, at the cost it reports; per-step capacities are honoured and only
    allowed without addresses."""
    from memmap.ilp import solve as ilp_solve

    found = 0
    for seed in (5, 7, 11):
        g = random_graph(seed, num_ops=30)
        caps, _ = _budgets(g)
        p = Problem(g, Target("t", caps["M_R"], alignment_bytes=64), "strict")
        inst = make_instance(p, g.default_schedule)
        start = ilp_solve._replacement_start(p, inst)
        assert start is not None
        got = ilp_solve._relaxed_start(p, inst, start, IlpOptions(), 3.0, lambda m: None)
        again = ilp_solve._relaxed_start(p, inst, start, IlpOptions(), 3.0, lambda m: None)
        if got is None:
            assert again is None
            continue
        found += 1
        plan = decode(inst, got[0])
        assert verify_plan(plan).ok
        assert simulate(plan)["noncompulsory_bytes"] == got[1]
        assert decode(inst, again[0]).residencies == plan.residencies       # deterministic
    assert found >= 1
    g = random_graph(5, num_ops=30)
    caps, _ = _budgets(g)
    p = Problem(g, Target("t", caps["M_P"], alignment_bytes=64), "strict")
    inst = make_instance(p, g.default_schedule)
    n = inst.num_steps
    with pytest.raises(ValueError, match="step_caps"):
        FixedScheduleModel(inst, step_caps=[inst.capacity_units] * n)          # addresses: no
    floor = [-(-p.working_set_bytes[o] // inst.unit_bytes) for o in inst.schedule]
    fm = FixedScheduleModel(inst, addresses=False, step_caps=floor)
    solver = _solve_opt(fm, 10.0)
    a = fm.read(solver)
    use = [0] * n
    for (v, first, last) in ilp_solve._runs(inst, a):
        su = p.alloc_size[v] // inst.unit_bytes
        for t in range(first, last + 1):
            use[t] += su
    assert all(u <= c for u, c in zip(use, floor))


# -- infeasible budget, CLI, determinism --------------------------------------------------------------
def test_infeasible_budget_names_culprits():
    g = random_graph(2, num_ops=6)
    p = Problem(g, Target("t", 64, alignment_bytes=64), "strict")
    with pytest.raises(InfeasibleError) as e:
        solve_ilp(p, time_limit_s=1.0)
    assert e.value.culprits and "operator" in str(e.value)


def test_cli_solver_ilp_infeasible_exit_code(tmp_path, capsys):
    code = main(["optimize", str(EXAMPLE), "--scratchpad", "64KiB", "--solver", "ilp", "-o", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert code == 3 and "infeasible" in err


def test_deterministic_for_seed_and_workers():
    g = random_graph(7, num_ops=14)
    caps, _ = _budgets(g)
    p = Problem(g, Target("t", caps["M_H"], alignment_bytes=64), "strict")
    hint = _baselines(p)[1]
    a = solve_ilp(p, time_limit_s=3.0, seed=3, workers=2, hint=hint)
    b = solve_ilp(p, time_limit_s=3.0, seed=3, workers=2, hint=hint)
    assert a.schedule == b.schedule and a.residencies == b.residencies and a.transfers == b.transfers


def test_baseline_hint_is_a_complete_solution_of_the_model():
    """The encoded baseline plan, made canonical for the symmetry breaking, is accepted as is
    (all variables fixed to their hinted values), and decodes to no more traffic."""
    from memmap.ilp import encode

    for seed in (0, 4):
        g = random_graph(seed, num_ops=12)
        caps, _ = _budgets(g)
        for budget in ("M_R", "M_H"):
            p = Problem(g, Target("t", caps[budget], alignment_bytes=64), "strict")
            hint = _baselines(p)[1]
            inst = make_instance(p, hint.schedule)
            fm = FixedScheduleModel(inst)
            fm.add_hint(encode(inst, hint))
            solver = cp_model.CpSolver()
            solver.parameters.fix_variables_to_their_hinted_value = True
            solver.parameters.num_workers = 1
            st = solver.solve(fm.model)
            assert st in (cp_model.OPTIMAL, cp_model.FEASIBLE), solver.status_name(st)
            got = traffic(decode(inst, fm.read(solver)))["noncompulsory_bytes"]
            assert got <= hint.metrics["noncompulsory_bytes"]


def test_start_plan_callback_gives_starts_on_schedules_without_a_plan():
    """solve_ilp asks the injected heuristic for a plan on every candidate schedule that has no
    given plan (the default and searched schedules here) and never on the hint's schedule."""
    g = random_graph(5, num_ops=16)
    caps, _ = _budgets(g)
    p = Problem(g, Target("t", caps["M_R"], alignment_bytes=64), "strict")
    hint = _baselines(p)[2]
    asked = []

    def start_plan(sched):
        asked.append(tuple(sched))
        return solve_belady(p, schedule=sched)

    plan = solve_ilp(p, time_limit_s=3.0, hint=hint, start_plan=start_plan)
    assert verify_plan(plan).ok
    assert tuple(hint.schedule) not in asked
    assert len(asked) == len(set(asked)) >= 1
    for s in asked:
        assert g.check_schedule(s) is None
    assert traffic(plan)["noncompulsory_bytes"] <= hint.metrics["noncompulsory_bytes"]
