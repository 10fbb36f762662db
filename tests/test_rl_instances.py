"""Shipped instance graphs, windows and the train / held-out split."""

import pytest

from memmap.rl import game, instances
from memmap.verify import verify_plan
from tests.helpers import diamond_graph


def test_split_is_by_family_and_disjoint():
    train, held = instances.shipped("train"), instances.shipped("heldout")
    assert train and held
    assert {s.family for s in train} <= set(instances.TRAIN_FAMILIES)
    assert {s.family for s in held} <= set(instances.HELDOUT_FAMILIES)
    assert not set(instances.TRAIN_FAMILIES) & set(instances.HELDOUT_FAMILIES)
    with pytest.raises(ValueError):
        instances.shipped("test")


def test_every_shipped_graph_loads_and_plays():
    for spec in instances.shipped():
        g = instances.load_graph(spec.name)
        assert g.num_ops == spec.num_ops
    spec = min(instances.shipped("heldout"), key=lambda s: s.num_ops)
    p = instances.make_problem(instances.load_graph(spec.name), 0.25)
    inst = game.make_instance(p)
    s = game.initial_state(inst)
    while not game.is_terminal(inst, s):
        s, _ = game.step(inst, s, game.greedy_action(inst, s))
    assert verify_plan(game.decode(inst, s)).ok


def test_window_graph_keeps_boundary_values():
    g = diamond_graph()   # a, c, d, e
    w = instances.window_graph(g, 1, 2)   # c, d: x enters as a parameter, d leaves as an output
    assert [op.name for op in w.ops] == ["c", "d"]
    kinds = {v.name: (v.kind, v.is_output) for v in w.values}
    assert kinds["x"] == ("parameter", False)
    assert kinds["d"] == ("output", True)
    assert kinds["c"] == ("intermediate", False)


def test_capacity_fraction_and_strict_floor():
    g = instances.random_instance_graph(3, num_ops=10)
    p = instances.make_problem(g, 0.01, mode="strict")
    assert p.target.capacity_bytes >= p.m_r_bytes
    assert instances.make_problem(g, 0.5).target.capacity_bytes > instances.make_problem(g, 0.125).target.capacity_bytes


def test_window_graph_keeps_inplace_pairs():
    from memmap.ir.synthetic import random_graph

    g = random_graph(7, num_ops=14, inplace_prob=0.7)
    w = instances.window_graph(g, 4, 6)
    names = {v.id: v.name for v in g.values}
    wnames = {v.id: v.name for v in w.values}
    want = [[(names[o], names[i]) for o, i in g.ops[k].inplace] for k in g.default_schedule[4:10]]
    assert any(want)
    assert [[(wnames[o], wnames[i]) for o, i in op.inplace] for op in w.ops] == want


def test_shipped_lstm_graphs_have_pairs_and_play_strict_at_m_r():
    """The lstm instances carry the while loops' in-place pairs; strict mode at M_R (pairs
    counted once) always has a legal action and ends in a verified plan."""
    lstm = [s for s in instances.shipped("train") if s.family == "lstm"]
    assert len(lstm) == 5
    for spec in lstm:
        g = instances.load_graph(spec.name)
        assert any(op.inplace for op in g.ops), spec.name
    g = instances.load_graph("lstm.train@0+48")
    p = instances.make_problem(g, 0.0, mode="strict")
    assert p.target.capacity_bytes == p.m_r_bytes
    inst = game.make_instance(p)
    s = game.initial_state(inst)
    while not game.is_terminal(inst, s):
        s, _ = game.step(inst, s, game.greedy_action(inst, s))
    assert verify_plan(game.decode(inst, s)).ok
