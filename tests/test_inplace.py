"""In-place pairs (``Op.inplace``; docs/semantics.md, "In-place pairs"): an operator that may
write an output into an input's buffer, as a ``while`` loop updates its state.

Hand-checkable graphs (alignment 64, so every size below is its allocated size):

* ``loop_graph()``: ``init: x(64) -> s0(256)``; ``loop: (s0, w(128)) -> s1(256) + tmp(64,
  temporary)`` with the pair ``(s1, s0)``; ``fin: s1 -> y(64, output)``. The loop's working set
  is 448 B (s0 and s1 one buffer), 704 B counted twice; s0 dies at the loop, so 448 B is also the
  peak of live bytes and M_P.
* ``loop_graph(read_later=True)``: ``fin`` also reads s0. M_R = 576 (fin). Below 704 B the loop
  must write s1 into s0's buffer while s0 is still needed: spill s0 (at its creation) and reload
  it for fin, 512 B of non-compulsory traffic.
* ``param_loop_graph()``: the loop state starts from a parameter that is read again afterwards
  (pre-optimization HLO does this). Its off-chip original is untouched, so sharing costs only a
  reload (256 B), no spill.

Then: the verifier (accept, reject), the cost model, budgets, every solver at M_R / M_H / M_P in
both modes, a brute-force check of the CP-SAT model with pairs, the global lower bound against
the optimum over all schedules, and random graphs with random pairs through every solver.
"""

from __future__ import annotations

import dataclasses

import pytest
from ortools.sat.python import cp_model

from memmap.budgets import compute_budgets
from memmap.cost import inplace_shares, simulate, traffic
from memmap.ilp import FixedScheduleModel, decode, make_instance
from memmap.ilp.lower_bound import global_lower_bound
from memmap.ilp.schedule_search import estimate_traffic
from memmap.ir.graph import GraphBuilder, GraphError
from memmap.ir.serialize import graph_from_dict, graph_to_dict, same_structure
from memmap.ir.synthetic import random_graph
from memmap.plan import Plan, Residency, Transfer
from memmap.prefetch import hoist_prefetches
from memmap.problem import Problem, Target
from memmap.scheduling import peak_live_bytes
from memmap.solvers import BASELINES, SOLVERS
from memmap.verify import verify_plan
from tests.test_baselines_property import check_all
from tests.test_ilp import _brute_force_strict
from tests.test_ilp_lower_bound import _optimum_over_all_schedules, _random_dag
from tests.test_ilp_schedule import _assert_same_estimates

U = 64


def loop_graph(read_later: bool = False):
    b = GraphBuilder("loop")
    x = b.add_value("x", 64, kind="parameter")
    w = b.add_value("w", 128, kind="constant")
    (s0,) = b.add_op("init", "fusion", inputs=[x], outputs=[("s0", 256)])
    s1, _ = b.add_op("loop", "while", inputs=[s0, w],
                     outputs=[("s1", 256), {"name": "tmp", "size_bytes": 64, "temporary": True}])
    b.mark_inplace(s1, s0)
    (y,) = b.add_op("fin", "fusion", inputs=[s1, s0] if read_later else [s1], outputs=[("y", 64)])
    b.mark_output(y)
    return b.build()


def param_loop_graph():
    b = GraphBuilder("param_loop")
    p = b.add_value("p", 256, kind="parameter")
    s1, _ = b.add_op("loop", "while", inputs=[p],
                     outputs=[("s1", 256), {"name": "tmp", "size_bytes": 320, "temporary": True}])
    b.mark_inplace(s1, p)
    (y,) = b.add_op("fin", "fusion", inputs=[s1, p], outputs=[("y", 64)])
    b.mark_output(y)
    return b.build()


X, W, S0, S1, TMP, Y = range(6)      # value ids of loop_graph


def _target(cap: int, **kw) -> Target:
    return Target("t", cap, alignment_bytes=U, **kw)


def shared_plan(cap: int = 448) -> Plan:
    """loop_graph() at M_R: s1 is written into s0's buffer (offset 0) at step 1."""
    p = Problem(loop_graph(), _target(cap), "strict")
    res = [Residency(X, 0, 0, 256), Residency(S0, 0, 1, 0), Residency(W, 1, 1, 256),
           Residency(TMP, 1, 1, 384), Residency(S1, 1, 2, 0), Residency(Y, 2, 2, 256)]
    tr = [Transfer(0, "load", X, 64), Transfer(1, "load", W, 128), Transfer(2, "writeback", Y, 64)]
    return Plan.assemble(p, (0, 1, 2), res, tr, solver="hand")


def read_later_plan(spill_step: int | None = 0) -> Plan:
    """loop_graph(read_later=True) at M_R = 576: s0 is spilled at its creation, overwritten by
    s1 at step 1 and reloaded for fin at step 2."""
    p = Problem(loop_graph(read_later=True), _target(576), "strict")
    res = [Residency(X, 0, 0, 256), Residency(S0, 0, 1, 0), Residency(W, 1, 1, 256),
           Residency(TMP, 1, 1, 384), Residency(S1, 1, 2, 0), Residency(S0, 2, 2, 256),
           Residency(Y, 2, 2, 512)]
    tr = [Transfer(0, "load", X, 64), Transfer(1, "load", W, 128), Transfer(2, "reload", S0, 256),
          Transfer(2, "writeback", Y, 64)]
    if spill_step is not None:
        tr.append(Transfer(spill_step, "spill", S0, 256))
    return Plan.assemble(p, (0, 1, 2), res, tr, solver="hand")


# -- the IR -------------------------------------------------------------------------------------------
def test_builder_checks_pairs():
    g = loop_graph()
    assert g.op_by_name("loop").inplace == ((S1, S0),)
    b = GraphBuilder("bad")
    x = b.add_value("x", 64)
    z = b.add_value("z", 128)
    y, t = b.add_op("f", "while", inputs=[x, z], outputs=[("y", 64), {"name": "t", "size_bytes": 64,
                                                                       "temporary": True}])
    (y2,) = b.add_op("g", "f", inputs=[y], outputs=[("y2", 128)])
    for out, inp, needle in ((y, z, "differ in size"), (t, x, "temporary"), (y2, x, "not one of its inputs"),
                             (x, x, "not produced")):
        with pytest.raises(GraphError, match=needle):
            b.mark_inplace(out, inp)
    b.mark_inplace(y, x)
    with pytest.raises(GraphError, match="two in-place pairs"):
        b.mark_inplace(y, x)
    assert b.build().ops[0].inplace == ((y, x),)


def test_pairs_travel_in_the_plan_json_and_are_compared():
    plan = shared_plan()
    again = Plan.from_json(plan.to_json())
    assert again.problem.graph.ops[1].inplace == ((S1, S0),)
    assert verify_plan(again, graph=plan.problem.graph).ok
    d = graph_to_dict(loop_graph())
    assert d["ops"][1]["inplace"] == [[S1, S0]] and "inplace" not in d["ops"][0]
    d["ops"][1]["inplace"] = []
    plain = graph_from_dict(d)
    assert "in-place pairs" in same_structure(loop_graph(), plain)
    assert not verify_plan(plan, graph=plain).ok     # a plan for another graph
    d["ops"][1]["inplace"] = [[S1, W]]
    with pytest.raises(GraphError, match="differ in size"):
        graph_from_dict(d)
    d["ops"][1]["inplace"] = [[S1]]
    with pytest.raises(GraphError, match="inplace"):
        graph_from_dict(d)


# -- the verifier and the cost model ---------------------------------------------------------------
def test_verifier_accepts_the_shared_buffer_and_counts_it_once():
    plan = shared_plan()
    r = verify_plan(plan)
    assert r.ok, r.errors
    assert [(t, ri.value, ro.value) for t, ri, ro in inplace_shares(plan)] == [(1, S0, S1)]
    m = simulate(plan)
    assert m["peak_live_bytes"] == 448 and m["peak_scratchpad_bytes"] == 448
    assert m["noncompulsory_bytes"] == 0


def test_verifier_rejects_overlap_at_another_offset():
    plan = shared_plan(cap=1024)
    moved = dataclasses.replace(plan, residencies=tuple(
        dataclasses.replace(r, offset=64) if r.value == S1 else r for r in plan.residencies))
    r = verify_plan(moved)
    assert not r.ok and any("overlaps" in e for e in r.errors), r.errors
    # at a free offset it is a valid plan that simply does not share (704 B at step 1)
    apart = dataclasses.replace(plan, residencies=tuple(
        dataclasses.replace(r, offset=512) if r.value == S1 else r for r in plan.residencies))
    assert verify_plan(apart).ok and not inplace_shares(apart)
    assert simulate(apart)["peak_live_bytes"] == 704


def test_verifier_rejects_a_shared_input_that_is_kept_or_read_later_without_a_copy():
    # s0 kept resident past the loop at the offset s1 was written to: an overlap
    plan = shared_plan(cap=1024)
    longer = dataclasses.replace(plan, residencies=tuple(
        dataclasses.replace(r, end=2) if r.value == S0 else r for r in plan.residencies))
    assert not verify_plan(longer).ok
    # read later, overwritten, never spilled: the reload has no off-chip copy
    r = verify_plan(read_later_plan(spill_step=None))
    assert not r.ok and any("no off-chip copy" in e for e in r.errors), r.errors
    # spilled at the step that overwrites it: the copy would read the new state
    r = verify_plan(read_later_plan(spill_step=1))
    assert not r.ok and any("overwrites it in place" in e for e in r.errors), r.errors
    # spilled at its creation: valid, 256 B spill + 256 B reload
    good = read_later_plan(spill_step=0)
    assert verify_plan(good).ok, verify_plan(good).errors
    assert traffic(good)["noncompulsory_bytes"] == 512
    assert simulate(good)["peak_live_bytes"] == 576


def test_parameter_state_is_reloaded_from_its_untouched_original():
    p = Problem(param_loop_graph(), _target(576), "strict")
    P, S, T, Yv = 0, 1, 2, 3
    res = [Residency(P, 0, 0, 0), Residency(S, 0, 1, 0), Residency(T, 0, 0, 256),
           Residency(P, 1, 1, 256), Residency(Yv, 1, 1, 512)]
    tr = [Transfer(0, "load", P, 256), Transfer(1, "reload", P, 256), Transfer(1, "writeback", Yv, 64)]
    plan = Plan.assemble(p, (0, 1), res, tr, solver="hand")
    assert verify_plan(plan).ok, verify_plan(plan).errors
    assert traffic(plan)["noncompulsory_bytes"] == 256     # the reload only: no spill


def test_a_spill_of_the_input_must_finish_before_it_is_overwritten():
    """Bandwidth 1 B/s; weights and parameters unmanaged (read at 1 B/s). Step 0 reads x (64 s);
    s0's spill (256 s, issued at 64) must finish before the loop overwrites it: stall to 320;
    the loop reads w (128 s) to 448; s0's reload (256 s) stalls fin to 704; y's writeback ends
    at 768. Without the in-place deadline the spill could run during the loop (640 s)."""
    slow = _target(576, offchip_bandwidth_bytes_per_s=1.0, onchip_bandwidth_bytes_per_s=1e18,
                   compute_flops_per_s=1.0)
    base = read_later_plan()
    p = Problem(base.problem.graph, slow, "strict", activations_only=True)
    plan = Plan.assemble(p, base.schedule, [r for r in base.residencies if r.value not in (X, W)],
                         [t for t in base.transfers if t.value not in (X, W)], solver="hand")
    assert verify_plan(plan).ok
    m = simulate(plan)
    assert m["modeled_time_s"] == pytest.approx(768)
    assert m["stall_time_s"] == pytest.approx(576)


# -- budgets ---------------------------------------------------------------------------------------
def test_budgets_count_the_pair_once():
    big = _target(1 << 30)
    p = Problem(loop_graph(), big, "strict")
    assert p.working_set_bytes == (320, 448, 320)
    b = compute_budgets(p)
    assert (b.m_r_bytes, b.m_p_bytes, b.m_p_peak_live_bytes) == (448, 448, 448)
    assert b.offsets[S0] == b.offsets[S1]
    # without the pair: the loop holds both states
    plain = dataclasses.replace(loop_graph(), ops=tuple(dataclasses.replace(o, inplace=()) for o in loop_graph().ops))
    pp = Problem(plain, big, "strict")
    assert pp.m_r_bytes == 704 and peak_live_bytes(pp, plain.default_schedule) == 704
    # read later: the working set still counts it once (sharing is always possible), but a
    # spill-free plan keeps s0 alive across the loop
    pr = Problem(loop_graph(read_later=True), big, "strict")
    br = compute_budgets(pr)
    assert (br.m_r_bytes, br.m_p_bytes, br.m_h_bytes) == (576, 704, 640)
    # activations only: w and x are unmanaged, the pair still counts once
    pa = Problem(loop_graph(), big, "strict", activations_only=True)
    assert pa.working_set_bytes == (256, 320, 320)


# -- every solver, hand-checked traffic ------------------------------------------------------------
EXPECTED = [   # graph, budget -> strict non-compulsory bytes of every solver
    ("loop", "M_R", 0), ("read_later", "M_R", 512), ("read_later", "M_H", 512), ("read_later", "M_P", 0),
    ("param", "M_R", 256),
]
GRAPHS = {"loop": loop_graph, "read_later": lambda: loop_graph(read_later=True), "param": param_loop_graph}


@pytest.mark.parametrize("name,budget,want", EXPECTED)
def test_every_solver_uses_the_pair_where_it_must(name, budget, want):
    g = GRAPHS[name]()
    b = compute_budgets(Problem(g, _target(1 << 30), "strict"))
    cap = {"M_R": b.m_r_bytes, "M_H": b.m_h_bytes, "M_P": b.m_p_bytes}[budget]
    for mode in ("strict", "tiered"):
        p = Problem(g, _target(cap), mode)
        for solver in BASELINES + ("ilp",):
            kw = {"time_limit_s": 3.0} if solver == "ilp" else {}
            plan = SOLVERS[solver](p, seed=0, **kw)
            for pl in (plan, hoist_prefetches(plan)):
                r = verify_plan(pl)
                assert r.ok, (name, budget, mode, solver, r.errors)
            if mode == "strict":
                assert traffic(plan)["noncompulsory_bytes"] == want, (name, budget, solver)
                if want and budget == "M_R" and name != "param":
                    assert inplace_shares(plan), (name, solver)


# -- the schedule-search evaluator -------------------------------------------------------------------
def test_evaluator_hands_buffers_over_by_hand():
    # s0 dies at the loop: s1 takes its bytes (256 + 192 = 448 fits exactly)
    p = Problem(loop_graph(), _target(448), "strict")
    est = estimate_traffic(p, p.graph.default_schedule)
    assert est.feasible and est.noncompulsory_bytes == 0 and est.excess_byte_steps == 0
    # s0 is read later: at 576 the loop (704 B apart) must take its buffer: spill + reload
    p = Problem(loop_graph(read_later=True), _target(576), "strict")
    est = estimate_traffic(p, p.graph.default_schedule)
    assert est.feasible and est.noncompulsory_bytes == 512
    assert (S0, 0, 1) in est.segments and (S0, 2, 2) in est.segments
    # one byte less and nothing helps
    assert not estimate_traffic(p, p.graph.default_schedule, capacity_bytes=575).feasible


@pytest.mark.parametrize("seed", range(6))
def test_compiled_evaluator_matches_reference_with_pairs(seed):
    import random

    g = random_graph(seed, num_ops=10 + 7 * seed, max_inputs=2 + seed % 4, max_outputs=1 + seed % 3,
                     inplace_prob=0.6)
    assert any(op.inplace for op in g.ops)
    p = Problem(g, _target(1 << 40), "strict")
    assert _assert_same_estimates(p, random.Random(seed), orders=4, caps_per_order=4) > 0


# -- the CP-SAT model is exact with pairs: brute force ------------------------------------------------
def test_model_is_exact_with_pairs_against_brute_force():
    checked = with_pairs = 0
    for seed in range(20):
        g = _random_dag(seed, 4, n_params=1, chain_prob=0.0, pair_prob=0.7)
        p0 = Problem(g, _target(1 << 20), "strict")
        for extra in (0, U):
            p = Problem(g, _target(p0.m_r_bytes + extra), "strict")
            inst = make_instance(p, g.default_schedule)
            if sum(len(s.points) - 1 for s in inst.specs) > 8:
                continue
            fm = FixedScheduleModel(inst)
            solver = cp_model.CpSolver()
            solver.parameters.num_workers = 2
            solver.parameters.max_time_in_seconds = 20
            assert solver.solve(fm.model) == cp_model.OPTIMAL
            plan = decode(inst, fm.read(solver))
            assert verify_plan(plan).ok, verify_plan(plan).reason
            assert traffic(plan)["noncompulsory_bytes"] == _brute_force_strict(inst), (seed, extra)
            checked += 1
            with_pairs += bool(inst.pairs)
    assert checked >= 10 and with_pairs >= 8


# -- the global lower bound stays a lower bound ----------------------------------------------------
def test_global_bound_and_optimal_status_stay_valid_with_pairs():
    """Seeds where the pairs lower M_R and the bound decides; the bound never exceeds the exact
    optimum over all schedules, and an OPTIMAL ilp plan has exactly that traffic."""
    decided = 0
    for seed in (1, 3, 6, 7, 23, 24, 28):
        g = _random_dag(seed, 6, pair_prob=0.6)
        p0 = Problem(g, _target(1 << 30), "strict")
        p = Problem(g, _target(p0.m_r_bytes), "strict")
        lb = global_lower_bound(p, time_limit_s=2).bound_bytes
        opt = _optimum_over_all_schedules(p)
        assert lb <= opt, (seed, lb, opt)
        decided += lb > 0
        plan = SOLVERS["ilp"](p, seed=0, time_limit_s=3.0)
        got = traffic(plan)["noncompulsory_bytes"]
        assert verify_plan(plan).ok and got >= opt
        if plan.status == "OPTIMAL":
            assert got == opt
    assert decided >= 4


# -- random graphs with random pairs through every solver, both modes -----------------------------
@pytest.mark.parametrize("chunk", range(2))
def test_random_graphs_with_pairs_every_baseline(chunk):
    shares: list[int] = []
    for seed in range(chunk * 100, (chunk + 1) * 100):
        g = random_graph(seed, num_ops=4 + seed % 17, max_inputs=1 + seed % 4, max_outputs=1 + seed % 3,
                         inplace_prob=0.5, shuffle_schedule=seed % 3 == 0,
                         max_size_bytes=(64, 1000, 4096)[seed % 3])
        check_all(g, ("strict", "tiered")[seed % 2], seed % 5 == 0, (1, 16, 64)[seed % 3], shares=shares)
    assert sum(shares) > 300


def test_random_graphs_with_pairs_ilp():
    shares: list[int] = []
    for seed in range(10):
        g = random_graph(seed, num_ops=5 + seed % 7, max_inputs=1 + seed % 3, max_outputs=1 + seed % 2,
                         inplace_prob=0.6, max_size_bytes=(64, 1000)[seed % 2])
        for mode in ("strict", "tiered"):
            check_all(g, mode, seed % 4 == 0, (16, 64)[seed % 2], solvers=("ilp",), shares=shares)
    assert sum(shares) > 20
