"""Schedule search of the ILP (memmap.ilp.schedule_search): valid topological orders, determinism
for a seed, a hand-checkable graph where reordering removes all traffic, honest bounds, every
plan verified; the compiled evaluator gives exactly the reference's estimates."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from memmap.baselines import solve_belady
from memmap.budgets import compute_budgets
from memmap.cost import simulate
from memmap.ilp import solve_ilp
from memmap.ilp import schedule_search
from memmap.ilp.schedule_search import estimate_traffic, search_schedules
from memmap.ir.graph import GraphBuilder
from memmap.ir.synthetic import random_graph
from memmap.pipeline import load_graph
from memmap.prefetch import hoist_prefetches
from memmap.problem import Problem, Target
from memmap.verify import verify_plan


def two_branch_graph():
    """x(64) feeds two branches p1 -> a(1024) -> q1 -> a2(64) and p2 -> b(1024) -> q2 -> b2(64),
    joined by j -> out(64). Built (default order) as p1, p2, q1, q2, j: both 1 KiB values are
    live together. Order p1, q1, p2, q2, j never holds both."""
    b = GraphBuilder("two_branch")
    x = b.add_value("x", 64, kind="parameter")
    (a,) = b.add_op("p1", "f", inputs=[x], outputs=[("a", 1024)])
    (bb,) = b.add_op("p2", "f", inputs=[x], outputs=[("b", 1024)])
    (a2,) = b.add_op("q1", "f", inputs=[a], outputs=[("a2", 64)])
    (b2,) = b.add_op("q2", "f", inputs=[bb], outputs=[("b2", 64)])
    (out,) = b.add_op("j", "f", inputs=[a2, b2], outputs=[("out", 64)])
    b.mark_output(out)
    return b.build()


def _problem(cap: int) -> Problem:
    return Problem(two_branch_graph(), Target("t", cap, alignment_bytes=64), "strict")


def test_evaluator_counts_spills_and_reloads_by_hand():
    # capacity 1216 = x + a2 + b + 64: under the default order, a (at p2) and then b (at q1)
    # must leave and come back: 2 x (spill 1024 + reload 1024)
    p = _problem(1216)
    est = estimate_traffic(p, p.graph.default_schedule)
    assert est.feasible and est.noncompulsory_bytes == 4096
    names = {op.name: op.id for op in p.graph.ops}
    good = [names[n] for n in ("p1", "q1", "p2", "q2", "j")]
    est2 = estimate_traffic(p, good)
    assert est2.noncompulsory_bytes == 0 and est2.excess_byte_steps == 0


def test_search_finds_the_good_order_and_ilp_beats_the_fixed_schedule():
    p = _problem(1216)
    r = search_schedules(p, [p.graph.default_schedule], time_s=1.0, seed=0)
    assert r.estimates[0] == (0, 0)
    assert p.graph.check_schedule(r.schedules[0]) is None
    fixed = solve_ilp(p, time_limit_s=3.0, schedule_search=False)
    free = solve_ilp(p, time_limit_s=3.0)
    for plan in (fixed, free):
        res = verify_plan(plan)
        assert res.ok, res.reason
    # the exact model proves 4096 optimal for the default order ...
    assert simulate(fixed)["noncompulsory_bytes"] == 4096
    assert fixed.info["schedule_proven"] and fixed.info["schedule_bound"] == 4096
    # ... which is not a global bound: the searched order needs no traffic at all
    assert fixed.info["best_bound"] == 0 and fixed.status == "FEASIBLE"
    assert "fixed schedule" in fixed.info["proven"]
    assert simulate(free)["noncompulsory_bytes"] == 0
    assert free.status == "OPTIMAL" and free.info["chosen"].startswith("search")
    assert free.info["search"]["ran"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_returns_topological_orders_deterministically(seed):
    g = random_graph(seed, num_ops=40)
    big = Problem(g, Target("t", 1 << 40, alignment_bytes=64), "strict")
    b = compute_budgets(big)
    p = Problem(g, Target("t", b.m_r_bytes, alignment_bytes=64), "strict")
    starts = [g.default_schedule, b.schedule]
    # a generous wall-clock safety net: the work budget alone must end the search (shared CPUs)
    r1 = search_schedules(p, starts, time_s=0.3, seed=seed, keep=3, wall_limit_s=120.0)
    r2 = search_schedules(p, starts, time_s=0.3, seed=seed, keep=3, wall_limit_s=120.0)
    assert r1.stopped_by == "budget"
    assert r1.schedules == r2.schedules and r1.estimates == r2.estimates
    for s in r1.schedules:
        assert g.check_schedule(s) is None
    # the best found is never worse (by the evaluator) than the best start
    assert r1.estimates[0] <= min(r1.start_estimates)


def test_search_rejects_invalid_start():
    p = _problem(1216)
    with pytest.raises(ValueError, match="start schedule 0 is invalid"):
        search_schedules(p, [list(reversed(p.graph.default_schedule))], time_s=0.1)


@pytest.mark.parametrize("seed", [3, 4])
def test_ilp_with_search_verifies_and_beats_hint(seed):
    g = random_graph(seed, num_ops=14)
    big = Problem(g, Target("t", 1 << 40, alignment_bytes=64), "strict")
    b = compute_budgets(big)
    p = Problem(g, Target("t", b.m_h_bytes, alignment_bytes=64), "strict")
    hint = hoist_prefetches(solve_belady(p))
    hint.metrics = simulate(hint)
    a = solve_ilp(p, time_limit_s=2.0, seed=seed, hint=hint)
    again = solve_ilp(p, time_limit_s=2.0, seed=seed, hint=hint)
    res = verify_plan(a)
    assert res.ok, res.reason
    m = simulate(a)
    assert m["noncompulsory_bytes"] <= hint.metrics["noncompulsory_bytes"]
    assert a.schedule == again.schedule and a.residencies == again.residencies
    info = a.info
    assert info["best_bound"] <= m["noncompulsory_bytes"]
    # OPTIMAL exactly when the plan meets the global (all-schedules) bound
    assert (a.status == "OPTIMAL") == (m["noncompulsory_bytes"] <= info["best_bound"])


def test_evaluator_per_step_capacities():
    g = two_branch_graph()
    p = Problem(g, Target("t", 1 << 20, alignment_bytes=64), "strict")
    order = g.default_schedule
    n = len(order)
    whole = estimate_traffic(p, order, capacity_bytes=4096)
    same = estimate_traffic(p, order, capacity_bytes=[4096] * n)
    assert (same.noncompulsory_bytes, same.segments) == (whole.noncompulsory_bytes, whole.segments)
    assert whole.noncompulsory_bytes == 0
    # squeeze only the step of q1 (a + a2 + b live = 2112 B) to 1152 B: b must leave there
    steps = [4096] * n
    steps[[g.ops[o].name for o in order].index("q1")] = 1152
    squeezed = estimate_traffic(p, order, capacity_bytes=steps)
    assert squeezed.feasible and squeezed.noncompulsory_bytes == 2 * 1024     # spill + reload of b
    with pytest.raises(ValueError, match="step capacities"):
        estimate_traffic(p, order, capacity_bytes=[4096] * (n - 1))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_replacement_start_with_per_step_repair_is_a_valid_plan(seed):
    """The repaired starting solution (per-step capacities lowered where best fit overflows)
    decodes to a plan the independent verifier accepts, whatever the schedule."""
    from memmap.ilp.model import decode, make_instance
    from memmap.ilp.solve import _repair_caps, _replacement_start

    g = random_graph(seed, num_ops=40)
    base = Problem(g, Target("t", 1 << 40, alignment_bytes=64), "strict")
    b = compute_budgets(base)
    found = 0
    for cap in (b.m_r_bytes, b.m_h_bytes):
        p = Problem(g, Target("t", cap, alignment_bytes=64), "strict")
        inst = make_instance(p, g.default_schedule)
        for fn in (_replacement_start, _repair_caps):
            a = fn(p, inst)
            if a is None:
                continue
            plan = decode(inst, a)
            assert verify_plan(plan).ok, verify_plan(plan).reason
            found += 1
    assert found >= 2


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _random_topological_order(ctx, rng: random.Random) -> list[int]:
    """A uniformly drawn ready operator at each step (Kahn's algorithm)."""
    indeg = [len(p) for p in ctx.preds]
    ready = [o for o in range(ctx.n_ops) if indeg[o] == 0]
    order = []
    while ready:
        o = ready.pop(rng.randrange(len(ready)))
        order.append(o)
        for s in ctx.succs[o]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    assert len(order) == ctx.n_ops
    return order


def _assert_same_estimates(p: Problem, rng: random.Random, orders: int, caps_per_order: int) -> int:
    """Compare the compiled evaluator with the reference on random orders and capacities (from
    below the largest working set, where the estimate is infeasible, to above the peak); returns
    how many comparisons had evictions."""
    ctx = schedule_search._Ctx(p)
    working = max(sum(ctx.asz[v] for v in ctx.ins[o] + ctx.outs[o]) for o in range(ctx.n_ops))
    total = sum(ctx.asz)
    evicting = 0
    for k in range(orders):
        order = p.graph.default_schedule if k == 0 else _random_topological_order(ctx, rng)
        n = len(order)
        caps = [working - 64, working, total] + [int(working * (1 + 1.5 * rng.random())) for _ in range(caps_per_order)]
        cases = [(c, None) for c in caps]
        # per-step capacities: jitter around one capacity, with a few steps squeezed hard
        for c in caps[3:5]:
            steps = [max(0, int(c * (0.6 + 0.6 * rng.random()))) for _ in range(n)]
            for t in rng.sample(range(n), min(n, 3)):
                steps[t] = working // 2
            cases.append((max(steps), steps))
        for cap, steps in cases:
            for segs in (False, True):
                ref = schedule_search._evaluate_py(ctx, order, cap, segs, steps)
                got = schedule_search._evaluate_compiled(ctx, order, cap, segs, steps)
                assert got == ref, (k, cap, steps is not None, segs)
                assert all(type(x) is int for x in (got.noncompulsory_bytes, got.excess_byte_steps))
            evicting += bool(ref.evict_steps)
    return evicting


@pytest.mark.parametrize("seed", range(12))
def test_compiled_evaluator_matches_reference_on_random_graphs(seed):
    g = random_graph(seed, num_ops=10 + 9 * seed, max_inputs=2 + seed % 4, max_outputs=1 + seed % 3,
                     temp_prob=0.1 + 0.02 * seed)
    p = Problem(g, Target("t", 1 << 40, alignment_bytes=64), "strict")
    evicting = _assert_same_estimates(p, random.Random(seed), orders=6, caps_per_order=4)
    assert evicting > 0      # the comparison reached Belady's eviction, not only the easy path


def test_compiled_evaluator_matches_reference_on_example():
    g = load_graph(EXAMPLES / "small_cnn_train.after.hlo")
    p = Problem(g, Target("t", 1 << 40, alignment_bytes=64), "strict", False)
    assert _assert_same_estimates(p, random.Random(7), orders=3, caps_per_order=3) > 0


def test_compiled_evaluator_edge_cases():
    p = _problem(1216)
    ctx = schedule_search._Ctx(p)
    order = list(p.graph.default_schedule)
    for args in ([], 0, False, None), (order, 0, True, None), (order, 1 << 70, True, None), \
            (order, 10, True, [1 << 70, -(1 << 50), 0, 1216, 64]), (order, 10, True, [1 << 70, 0, 1216, 64, 100]), \
            (order[:3], 1216, True, None), (order + order[:2], 1216, True, None):
        assert schedule_search._evaluate_compiled(ctx, *args) == schedule_search._evaluate_py(ctx, *args)
    # inputs the kernel cannot take raise what the reference raises
    with pytest.raises(IndexError):
        schedule_search._evaluate_compiled(ctx, order, 1216, False, [1216] * (len(order) - 1))
    with pytest.raises(IndexError):
        schedule_search._evaluate_compiled(ctx, order + [len(order)], 1216)


def test_search_is_the_same_with_the_reference_evaluator(monkeypatch):
    """The search depends on the evaluator only through its estimates: for the same budget the
    reference gives the same schedules (without numba only the budget is smaller)."""
    g = random_graph(5, num_ops=30)
    ctx = schedule_search._Ctx(Problem(g, Target("t", 1 << 40, alignment_bytes=64), "strict"))
    working = max(sum(ctx.asz[v] for v in ctx.ins[o] + ctx.outs[o]) for o in range(ctx.n_ops))
    p = Problem(g, Target("t", working, alignment_bytes=64), "strict")
    fast = search_schedules(p, [g.default_schedule], time_s=0.1, seed=3, keep=3, wall_limit_s=120.0)
    monkeypatch.setattr(schedule_search, "_evaluate", schedule_search._evaluate_py)
    ref = search_schedules(p, [g.default_schedule], time_s=0.1, seed=3, keep=3, wall_limit_s=120.0)
    assert fast.stopped_by == ref.stopped_by == "budget"
    assert (fast.schedules, fast.estimates, fast.evaluations) == (ref.schedules, ref.estimates, ref.evaluations)
    assert fast.estimates[0] < fast.start_estimates[0]    # the search moved somewhere


def _bias_chain_graph():
    """BERT's output bias in small: bias -> r1 -> r2 -> r3 (3 reshapes) is read only by the last
    op; the big op X in the middle needs the whole capacity. Built with the chain first, r3
    (or any of its chain values) waits across X and is spilled; sinking the chain, as a group,
    to just before its reader removes all traffic. Moving r3's op alone gains nothing (r2 then
    waits across X instead)."""
    b = GraphBuilder("bias_chain")
    bias = b.add_value("bias", 64, kind="parameter")
    w = b.add_value("w", 512, kind="parameter")
    x = b.add_value("x", 64, kind="parameter")
    (r1,) = b.add_op("r1", "reshape", inputs=[bias], outputs=[("r1", 64)])
    (r2,) = b.add_op("r2", "reshape", inputs=[r1], outputs=[("r2", 64)])
    (r3,) = b.add_op("r3", "reshape", inputs=[r2], outputs=[("r3", 64)])
    (h,) = b.add_op("h", "f", inputs=[x], outputs=[("h", 64)])
    (big,) = b.add_op("X", "f", inputs=[w], outputs=[("big", 512)])
    (y,) = b.add_op("y", "f", inputs=[big, h], outputs=[("y", 64)])
    (out,) = b.add_op("out", "add", inputs=[y, r3], outputs=[("out", 64)])
    b.mark_output(out)
    return b.build()


def test_sink_group_is_the_exclusive_ancestry():
    g = _bias_chain_graph()
    ctx = schedule_search._Ctx(Problem(g, Target("t", 1 << 20, alignment_bytes=64), "strict"))
    ids = {op.name: op.id for op in g.ops}
    assert schedule_search._sink_group(ctx, ids["r3"]) == {ids["r1"], ids["r2"], ids["r3"]}
    # y's ancestors X and h feed only y: exclusive; out's group is everything
    assert schedule_search._sink_group(ctx, ids["y"]) == {ids["X"], ids["h"], ids["y"]}
    assert schedule_search._sink_group(ctx, ids["out"]) == set(ids.values())
    assert len(schedule_search._sink_group(ctx, ids["r3"], limit=2)) == 2


def test_descent_sinks_a_chain_that_single_moves_cannot():
    g = _bias_chain_graph()
    p = Problem(g, Target("t", 1 << 20, alignment_bytes=64), "strict")
    ids = {op.name: op.id for op in g.ops}
    x_ws = p.working_set_bytes[ids["X"]]
    p = Problem(g, Target("t", x_ws + 64, alignment_bytes=64), "strict")   # X plus h, nothing more
    start = [ids[n] for n in ("r1", "r2", "r3", "h", "X", "y", "out")]
    ctx = schedule_search._Ctx(p)
    cap = p.target.capacity_bytes
    e0 = schedule_search._evaluate(ctx, start, cap)
    assert e0.noncompulsory_bytes > 0
    # no single-operator move of r3 helps
    alone = [ids[n] for n in ("r1", "r2", "h", "X", "y", "r3", "out")]
    assert estimate_traffic(p, alone).noncompulsory_bytes >= e0.noncompulsory_bytes
    order, score, evals, work = schedule_search._descend(
        ctx, start, cap, 1e9, (e0.noncompulsory_bytes, e0.excess_byte_steps))
    assert g.check_schedule(order) is None
    assert score[0] == 0 == estimate_traffic(p, order).noncompulsory_bytes
    assert evals > 0 and work > 0
    # a budget of one evaluation stops it before any move
    same, score1, _, _ = schedule_search._descend(ctx, start, cap, 0, (e0.noncompulsory_bytes, 0))
    assert list(same) == start
