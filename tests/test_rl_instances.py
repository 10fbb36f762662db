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
