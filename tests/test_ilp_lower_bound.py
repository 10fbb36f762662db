"""The global (schedule-independent) lower bound of ilp/lower_bound.py: never above the true
optimum over every schedule (checked exhaustively on small graphs), tight where it should be,
and reported by solve_ilp. Also the node-budgeted packer the ILP's starting plans use."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from ortools.sat.python import cp_model

from memmap.cost import traffic
from memmap.ilp import FixedScheduleModel, decode, make_instance, solve_ilp
from memmap.ilp.alloc import AllocProblem, check_alloc, pack_buffers
from memmap.ilp.lower_bound import (PositionCuts, _forced, _value_cost, chain_bound, covering_rows,
                                    cut_bound, global_lower_bound)
from memmap.ir.graph import GraphBuilder
from memmap.pipeline import run_solver
from memmap.problem import Problem, Target
from memmap.static_alloc import greedy_allocate
from memmap.verify import verify_plan

U = 64   # one allocation unit (the alignment)


def _optimum_over_all_schedules(p: Problem) -> int:
    """Exact minimum non-compulsory traffic: the fixed-schedule model solved to optimality on
    every topological order."""
    best = None
    for order in nx.all_topological_sorts(p.graph.to_networkx()):
        inst = make_instance(p, tuple(order))
        fm = FixedScheduleModel(inst)
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 2
        solver.parameters.max_time_in_seconds = 30
        st = solver.solve(fm.model)
        assert st == cp_model.OPTIMAL, solver.status_name(st)
        plan = decode(inst, fm.read(solver))
        assert verify_plan(plan).ok
        got = traffic(plan)["noncompulsory_bytes"]
        best = got if best is None else min(best, got)
    return best


def _skip_graph():
    """p -> op0 -> s (2U); s -> op1 -> a (2U); a -> op2 -> b (2U); (b, s) -> op3 -> out (1U).
    M_R = 5U (op3). At op2, a and b (4U) plus the forced skip value s (2U) exceed 5U, in every
    schedule (the graph is a chain plus the skip edge): s must be spilled and reloaded."""
    b = GraphBuilder("skip")
    p = b.add_value("p", U, kind="parameter")
    (s,) = b.add_op("op0", "f", inputs=[p], outputs=[("s", 2 * U)])
    (a,) = b.add_op("op1", "f", inputs=[s], outputs=[("a", 2 * U)])
    (bb,) = b.add_op("op2", "f", inputs=[a], outputs=[("b", 2 * U)])
    (out,) = b.add_op("op3", "f", inputs=[bb, s], outputs=[("out", U)])
    b.mark_output(out)
    return b.build()


def test_bound_is_tight_on_a_forced_skip_connection():
    g = _skip_graph()
    p = Problem(g, Target("t", 5 * U, alignment_bytes=U), "strict")
    assert p.m_r_bytes == 5 * U
    lb = global_lower_bound(p, time_limit_s=2)
    assert lb.bound_bytes == 4 * U          # spill + reload of s (2U each)
    assert _optimum_over_all_schedules(p) == 4 * U
    plan = solve_ilp(p, time_limit_s=5)
    assert verify_plan(plan).ok
    assert traffic(plan)["noncompulsory_bytes"] == 4 * U
    assert plan.status == "OPTIMAL" and plan.info["gap"] == 0.0
    assert plan.info["best_bound"] == 4 * U
    # one more unit of capacity: nothing is forced out any more
    p6 = Problem(g, Target("t", 6 * U, alignment_bytes=U), "strict")
    assert global_lower_bound(p6).bound_bytes == 0


def test_output_and_parameter_costs_count_one_transfer():
    """A forced graph output costs only its reload (its writeback is compulsory); a forced
    parameter (read before and after) costs only its reload."""
    b = GraphBuilder("costs")
    w = b.add_value("w", 2 * U, kind="parameter")
    (s,) = b.add_op("op0", "f", inputs=[w], outputs=[("s", 2 * U)])
    (a,) = b.add_op("op1", "f", inputs=[s], outputs=[("a", 2 * U)])
    (c,) = b.add_op("op2", "f", inputs=[a, w], outputs=[("c", U)])
    b.mark_output(s)
    b.mark_output(c)
    g = b.build()
    p = Problem(g, Target("t", 5 * U, alignment_bytes=U), "strict")
    cost, rows = covering_rows(p)
    # at op1 (s -> a, 4U), w (2U) is forced (read by op0 before and op2 after): 6U > 5U
    assert cost == {w: 2 * U}
    assert rows == [(U, (w,))]
    assert global_lower_bound(p).bound_bytes == 2 * U
    assert _optimum_over_all_schedules(p) == 2 * U


def _random_dag(seed: int, n_ops: int = 6, *, n_params: int = 2, chain_prob: float = 0.5,
                pair_prob: float = 0.0):
    """``n_ops`` one-output ops (sizes 1..3 units) reading 1..2 earlier values and, with
    ``chain_prob``, the latest one; with ``pair_prob`` an op's output is an in-place pair with one
    of its inputs (and takes its size; no extra draws when 0). Unread values become outputs."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"r{seed}")
    vals = [b.add_value(f"p{i}", U * int(rng.integers(1, 3)), kind="parameter") for i in range(n_params)]
    for k in range(n_ops):
        k_in = int(rng.integers(1, 3))
        ins = sorted({vals[int(rng.integers(0, len(vals)))] for _ in range(k_in)}
                     | ({vals[-1]} if rng.random() < chain_prob else set()))
        pair = ins[int(rng.integers(len(ins)))] if pair_prob > 0 and rng.random() < pair_prob else None
        size = b._values[pair]["size_bytes"] if pair is not None else U * int(rng.integers(1, 4))
        (o,) = b.add_op(f"op{k}", "f", inputs=ins, outputs=[(f"v{k}", size)])
        if pair is not None:
            b.mark_inplace(o, pair)
        vals.append(o)
    g0 = b.build()
    for v in g0.values:
        if v.producer is not None and not v.consumers:
            b.mark_output(v.id)
    return b.build()


SEEDS = range(12, 40)


@pytest.mark.parametrize("seed", SEEDS)
def test_bound_never_exceeds_the_optimum_over_all_schedules(seed):
    g = _random_dag(seed)
    p0 = Problem(g, Target("t", 1 << 30, alignment_bytes=U), "strict")
    for extra in (0, U):
        p = Problem(g, Target("t", p0.m_r_bytes + extra, alignment_bytes=U), "strict")
        lb = global_lower_bound(p, time_limit_s=2).bound_bytes
        opt = _optimum_over_all_schedules(p)
        assert lb <= opt, (seed, extra, lb, opt)


def test_random_property_is_not_vacuous():
    hits = 0
    for seed in SEEDS:
        g = _random_dag(seed)
        p0 = Problem(g, Target("t", 1 << 30, alignment_bytes=U), "strict")
        p = Problem(g, Target("t", p0.m_r_bytes, alignment_bytes=U), "strict")
        hits += global_lower_bound(p, time_limit_s=2).bound_bytes > 0
    assert hits >= 8


def test_counting_unforced_values_would_be_unsound():
    """A bound that also counted values live only in SOME orders (here: at the default
    schedule) would exceed the optimum: a schedule exists where they are not live."""
    b = GraphBuilder("branches")
    p = b.add_value("p", U, kind="parameter")
    (x,) = b.add_op("x", "f", inputs=[p], outputs=[("x", 2 * U)])
    (y,) = b.add_op("y", "f", inputs=[p], outputs=[("y", 2 * U)])
    (x2,) = b.add_op("x2", "f", inputs=[x], outputs=[("x2", U)])
    (y2,) = b.add_op("y2", "f", inputs=[y], outputs=[("y2", U)])
    (o,) = b.add_op("join", "f", inputs=[x2, y2], outputs=[("o", U)])
    b.mark_output(o)
    g = b.build()
    prob = Problem(g, Target("t", 4 * U, alignment_bytes=U), "strict")
    # textual order x, y, x2, ...: while y is produced, x (2U) waits for x2: 2U + p + y = 5U > 4U
    assert [g.ops[o].name for o in g.default_schedule][:2] == ["x", "y"]
    inst = make_instance(prob, g.default_schedule)
    fm = FixedScheduleModel(inst)
    solver = cp_model.CpSolver()
    assert solver.solve(fm.model) == cp_model.OPTIMAL
    assert traffic(decode(inst, fm.read(solver)))["noncompulsory_bytes"] > 0
    # ... but x, x2, y, y2, join needs no transfer at all, and the bound knows it
    assert _optimum_over_all_schedules(prob) == 0
    assert global_lower_bound(prob).bound_bytes == 0


def test_solve_ilp_reports_the_global_bound_on_a_real_module():
    from pathlib import Path

    from memmap.pipeline import load_graph

    g = load_graph(Path(__file__).resolve().parents[1] / "examples" / "small_cnn_train.after.hlo")
    p0 = Problem(g, Target("t", 1 << 40, alignment_bytes=64), "strict")
    p = Problem(g, Target("t", p0.m_r_bytes, alignment_bytes=64), "strict")
    plan = run_solver(p, "ilp", time_limit_s=5)
    info = plan.info
    lb = global_lower_bound(p, time_limit_s=0.25)
    assert info["global_bound"]["bound_bytes"] == info["best_bound"]
    assert info["best_bound"] <= plan.metrics["noncompulsory_bytes"]
    assert lb.bound_bytes <= plan.metrics["noncompulsory_bytes"]
    for s in ("msa", "belady", "minpeak"):
        assert info["best_bound"] <= run_solver(p, s).metrics["noncompulsory_bytes"]


def test_pack_buffers_places_what_greedy_fragments():
    # found by a random search: greedy best fit (every order) needs height 8 > peak 7; the
    # branch and bound packs it at the peak
    lower = [4, 3, 3, 1, 4, 2, 1]
    upper = [7, 4, 6, 4, 7, 5, 3]
    size = [1, 2, 2, 2, 3, 1, 3]
    cap = 7
    _, h = greedy_allocate(lower, [u - 1 for u in upper], size, orders=("size", "area", "length"))
    assert h > cap
    offs = pack_buffers(lower, upper, size, cap, max_nodes=10_000)
    assert offs is not None
    assert check_alloc(AllocProblem.from_lists(lower, upper, size), cap, offs) == []
    assert pack_buffers(lower, upper, size, cap, max_nodes=10_000) == offs     # deterministic
    assert pack_buffers(lower, upper, size, cap - 1) is None                   # peak 7 > 6


def _tied_graph(scale: int = 1, odd: int = 0):
    """GPT-2's tied embedding in small: X = transpose(w) fills the whole capacity; its result T
    is read at the end together with the trunk that starts with a gather of w."""
    b = GraphBuilder("tied")
    h = U * scale + odd
    w = b.add_value("w", 4 * U * scale, kind="parameter")
    (h0,) = b.add_op("gather", "gather", inputs=[w], outputs=[("h0", h)])
    (h1,) = b.add_op("f1", "f", inputs=[h0], outputs=[("h1", h)])
    (h2,) = b.add_op("f2", "f", inputs=[h1], outputs=[("h2", h)])
    (t,) = b.add_op("transpose", "transpose", inputs=[w], outputs=[("t", 4 * U * scale)])
    (o,) = b.add_op("logits", "dot", inputs=[h2, t], outputs=[("o", h)])
    b.mark_output(o)
    return b.build()


def test_chain_bound_proves_the_tied_embedding_pattern():
    """Whenever X runs, either T waits while the gather runs (2 x 4U) or a trunk value waits at
    X (2 x 1U). The covering rows miss it (no value is forced at X in every order); the chain
    bound and the pairwise position cut both see it."""
    g = _tied_graph()
    p = Problem(g, Target("t", 8 * U, alignment_bytes=U), "strict")
    assert p.m_r_bytes == 8 * U
    assert covering_rows(p)[1] == []
    assert chain_bound(p) == 2 * U
    assert cut_bound(p, max_ops=1) == 0          # X alone: it can run first, nothing crosses
    assert cut_bound(p) == 2 * U                 # X and the gather, both orders
    lb = global_lower_bound(p)
    assert lb.bound_bytes == 2 * U and lb.status == "cut" and lb.chain_bytes == 2 * U
    assert lb.decided_by == "position min-cut bound"
    assert _optimum_over_all_schedules(p) == 2 * U
    plan = solve_ilp(p, time_limit_s=5)
    assert traffic(plan)["noncompulsory_bytes"] == 2 * U and plan.status == "OPTIMAL"
    assert plan.info["global_bound"]["decided_by"] == "position min-cut bound"
    assert "position min-cut bound" in plan.info["proven"]


@pytest.mark.parametrize("seed,extra", [(322, U), (325, 0), (359, 0), (364, 0)])
def test_chain_bound_is_sound_where_it_decides(seed, extra):
    g = _random_dag(seed)
    p0 = Problem(g, Target("t", 1 << 30, alignment_bytes=U), "strict")
    p = Problem(g, Target("t", p0.m_r_bytes + extra, alignment_bytes=U), "strict")
    lb = global_lower_bound(p, time_limit_s=1)
    assert lb.chain_bytes > 0 and lb.chain_bytes > lb.single_op_bytes   # the chain bound counts here
    opt = _optimum_over_all_schedules(p)
    assert lb.chain_bytes <= lb.bound_bytes <= opt


def _cheapest_position_by_enumeration(p: Problem, x: int) -> int:
    """Least total cost of the values crossing ``x`` (made or first read before it, read after
    it, not touched by it) over every topological order."""
    g = p.graph
    touched = set(p.op_values[x])
    best = None
    for order in nx.all_topological_sorts(g.to_networkx()):
        before = set(order[:order.index(x)])
        price = 0
        for v in g.values:
            if not p.managed[v.id] or not v.consumers or v.id in touched:
                continue
            later = [c for c in v.consumers if c not in before and c != x]
            made = v.producer in before if v.producer is not None else any(c in before for c in v.consumers)
            price += _value_cost(v) if made and later else 0
        best = price if best is None else min(best, price)
    return best


@pytest.mark.parametrize("seed", [13, 18, 21, 26, 44, 71, 73])
def test_position_cut_is_the_cheapest_position(seed):
    """The min cut is exact: it equals the enumerated minimum for every operator."""
    g = _random_dag(seed, n_ops=7)
    p = Problem(g, Target("t", 1 << 30, alignment_bytes=U), "strict")
    anc, desc, _, _ = _forced(p)
    net = PositionCuts(p, anc, desc)
    for x in range(g.num_ops):
        price, source = net.cut(x)
        assert price == _cheapest_position_by_enumeration(p, x), (seed, x)
        assert anc[x] & ~sum(1 << q for q in source) == 0      # ancestors run first
        assert not any((desc[x] >> q) & 1 for q in source)      # descendants never do


@pytest.mark.parametrize("seed,n_ops,extra", [(13, 7, 0), (13, 7, U), (18, 7, 0), (26, 7, 0), (71, 7, U),
                                              (73, 7, 0), (77, 7, 0)])
def test_cut_bound_is_sound_where_it_decides(seed, n_ops, extra):
    g = _random_dag(seed, n_ops)
    p0 = Problem(g, Target("t", 1 << 30, alignment_bytes=U), "strict")
    p = Problem(g, Target("t", p0.m_r_bytes + extra, alignment_bytes=U), "strict")
    lb = global_lower_bound(p, time_limit_s=1)
    assert lb.cut_bytes > 0 and lb.bound_bytes == lb.cut_bytes > lb.chain_bytes
    assert lb.bound_bytes <= _optimum_over_all_schedules(p)


def test_cut_bound_with_coarse_capacities_stays_below_the_exact_value():
    """Prices too large for scipy's int32 max flow are floored to a coarser unit: the bound may
    lose a little, never gain."""
    scale, odd = 1 << 26, 4                  # GiB-sized values whose prices share only a GCD of 8
    g = _tied_graph(scale, odd)
    p = Problem(g, Target("t", 1 << 50, alignment_bytes=U), "strict")
    p = Problem(g, Target("t", p.m_r_bytes, alignment_bytes=U), "strict")
    anc, desc, _, _ = _forced(p)
    net = PositionCuts(p, anc, desc)
    gather = g.op_by_name("gather").id
    transpose = g.op_by_name("transpose").id
    assert net._unit(gather, (transpose,), set(p.op_values[gather])) > net.gcd    # coarsened
    exact = 2 * (U * scale + odd)            # spill + reload of one trunk value
    got = cut_bound(p)
    assert 0.999 * exact <= got <= exact


def test_cut_bound_counts_values_too_large_to_stay_whole():
    """One unit of room at the transpose (capacity M_R + U): the fractional form only proves
    2 x (2U - U) = 2U, but a 2U trunk value cannot use 1U of room, so it is away entirely:
    spill + reload = 4U, which is the optimum."""
    g = _tied_graph(scale=2)                 # w, t: 8U; trunk values: 2U; M_R = 16U
    p = Problem(g, Target("t", 17 * U, alignment_bytes=U), "strict")
    assert Problem(g, Target("t", 1 << 30, alignment_bytes=U), "strict").m_r_bytes == 16 * U
    anc, desc, _, _ = _forced(p)
    net = PositionCuts(p, anc, desc)
    tr, gather = g.op_by_name("transpose").id, g.op_by_name("gather").id
    price, _ = net.cut(tr, before=(gather,))
    assert price == 4 * U and price - 2 * U == 2 * U            # the fractional form: 2U
    assert net.bound(tr, before=(gather,))[0] == 4 * U            # whole values: 4U
    assert cut_bound(p) == 4 * U == _optimum_over_all_schedules(p)
