"""The verifier accepts a hand-made valid plan and rejects each kind of broken plan with the
reason."""

import dataclasses

import pytest

from memmap.plan import Plan, Residency, Transfer
from memmap.problem import Problem, Target
from memmap.verify import verify_plan
from tests.helpers import chain_graph, diamond_graph

T = Target("t", 1024, alignment_bytes=64)


def good_chain_plan(mode="strict"):
    g = chain_graph()
    p = Problem(g, T, mode)
    x, w, y0, y1 = 0, 1, 2, 3
    res = [Residency(x, 0, 0, 0), Residency(y0, 0, 1, 128), Residency(w, 1, 1, 384),
           Residency(y1, 1, 1, 704)]
    tr = [Transfer(0, "load", x, 100), Transfer(1, "load", w, 300), Transfer(1, "writeback", y1, 100)]
    return Plan.assemble(p, (0, 1), res, tr, solver="hand")


def test_valid_plan_accepted():
    plan = good_chain_plan()
    r = verify_plan(plan)
    assert r.ok, r.errors
    assert [t.kind for t in plan.transfers] == ["load", "evict", "load", "writeback"]


def test_roundtrip_json():
    plan = good_chain_plan()
    again = Plan.from_json(plan.to_json())
    assert again.residencies == plan.residencies and again.transfers == plan.transfers
    assert verify_plan(again, graph=plan.problem.graph).ok


def mutate(plan, **kw):
    return dataclasses.replace(plan, **kw)


@pytest.mark.parametrize("breaker,needle", [
    (lambda p: mutate(p, residencies=tuple(dataclasses.replace(r, offset=64) if r.value == 2 else r
                                             for r in p.residencies)), "overlaps"),
    (lambda p: mutate(p, residencies=tuple(dataclasses.replace(r, offset=130) if r.value == 2 else r
                                             for r in p.residencies)), "alignment"),
    (lambda p: mutate(p, residencies=tuple(dataclasses.replace(r, offset=960) if r.value == 1 else r
                                             for r in p.residencies)), "capacity"),
    (lambda p: mutate(p, residencies=tuple(r for r in p.residencies if r.value != 1),
                      transfers=tuple(t for t in p.transfers if t.value != 1)), "not in the scratchpad"),
    (lambda p: mutate(p, transfers=tuple(t for t in p.transfers if t.kind != "writeback")), "never reaches off-chip"),
    (lambda p: mutate(p, transfers=tuple(t for t in p.transfers if not (t.kind == "load" and t.value == 1))), "expected exactly one"),
    (lambda p: mutate(p, transfers=tuple(dataclasses.replace(t, kind="reload") if t.kind == "load" and t.value == 1 else t
                                         for t in p.transfers)), "expected 'load'"),
    (lambda p: mutate(p, transfers=tuple(dataclasses.replace(t, size_bytes=5) if t.kind == "load" and t.value == 1 else t
                                         for t in p.transfers)), "size 5"),
    (lambda p: mutate(p, schedule=(1, 0)), "before its producer"),
    (lambda p: mutate(p, transfers=tuple(t for t in p.transfers if t.kind != "evict")), "evict"),
    (lambda p: mutate(p, metrics={"noncompulsory_bytes": 0.5}), "recomputed"),
])
def test_broken_plans_rejected(breaker, needle):
    r = verify_plan(breaker(good_chain_plan()))
    assert not r.ok
    assert any(needle in e for e in r.errors), r.errors


def test_reload_needs_a_spill():
    """diamond: u is produced at step 0 and read at step 3; drop it in between."""
    g = diamond_graph()
    p = Problem(g, Target("t", 512, alignment_bytes=64), "strict")
    x, u, c, d, e = 0, 1, 2, 3, 4
    res = [Residency(x, 0, 1, 0), Residency(u, 0, 0, 64), Residency(c, 1, 2, 64),
           Residency(d, 2, 3, 256), Residency(u, 3, 3, 0), Residency(e, 3, 3, 320)]
    base = [Transfer(0, "load", x, 64), Transfer(3, "reload", u, 256), Transfer(3, "writeback", e, 64)]
    no_spill = Plan.assemble(p, (0, 1, 2, 3), res, base, solver="hand")
    r = verify_plan(no_spill)
    assert not r.ok and any("no off-chip copy" in s for s in r.errors)
    ok = Plan.assemble(p, (0, 1, 2, 3), res, base + [Transfer(0, "spill", u, 256)], solver="hand")
    assert verify_plan(ok).ok, verify_plan(ok).errors
    # tiered: the operator may read u from slow memory after the spill, with no reload
    pt = Problem(g, Target("t", 512, alignment_bytes=64), "tiered")
    res_t = [r for r in res if not (r.value == u and r.start == 3)]
    tr_t = [t for t in base if t.kind != "reload"] + [Transfer(0, "spill", u, 256)]
    assert verify_plan(Plan.assemble(pt, (0, 1, 2, 3), res_t, tr_t, solver="hand")).ok
    # ... but not without the spill (the value would be lost)
    tr_bad = [t for t in base if t.kind != "reload"]
    r = verify_plan(Plan.assemble(pt, (0, 1, 2, 3), res_t, tr_bad, solver="hand"))
    assert not r.ok and any("dropped without a spill" in s for s in r.errors)


def test_tiered_slow_operands_allowed():
    g = chain_graph()
    p = Problem(g, T, "tiered")
    plan = Plan.assemble(p, (0, 1), [], [], solver="hand")   # everything in slow memory
    assert verify_plan(plan).ok


def test_activations_only_rejects_weight_residency():
    g = chain_graph()
    p = Problem(g, T, "strict", activations_only=True)
    plan = good_chain_plan()
    r = verify_plan(dataclasses.replace(plan, problem=p))
    assert not r.ok and any("not managed" in e for e in r.errors)


def test_plan_for_other_graph_rejected():
    plan = good_chain_plan()
    r = verify_plan(plan, graph=diamond_graph())
    assert not r.ok and "different graph" in r.errors[0]
