"""mallocGame core: every finished episode decodes to a plan the verifier accepts, the game's
time is memmap.cost's, and the dense rewards add up to 1 - T_final / T0."""

import numpy as np
import pytest

from memmap.cost import simulate
from memmap.ir.synthetic import random_graph
from memmap.problem import Problem, Target
from memmap.rl import game
from memmap.verify import verify_plan
from tests.helpers import chain_graph

TGT = Target("t", 1 << 30, alignment_bytes=64, offchip_bandwidth_bytes_per_s=1e9,
             onchip_bandwidth_bytes_per_s=1e10, compute_flops_per_s=1e12, dma_engines=1)


def _problem(seed: int, mode: str) -> Problem:
    g = random_graph(seed, num_ops=4 + seed % 14, max_size_bytes=4096)
    tgt = TGT if seed % 2 else Target("t2", 1 << 30, alignment_bytes=128, dma_engines=2)
    p0 = Problem(g, tgt, mode)
    base = p0.m_r_bytes if mode == "strict" else 2048
    return Problem(g, tgt.with_capacity(max(base, 128) * (1 + seed % 3)), mode)


def _play(inst, policy):
    s = game.initial_state(inst)
    ret = 0.0
    while not game.is_terminal(inst, s):
        o = game.options(inst, s)
        assert o.mask.any(), "a state without a legal action"
        s, r = game.step(inst, s, policy(s, o), o)
        ret += r
    return s, ret


@pytest.mark.parametrize("mode", ["tiered", "strict"])
def test_random_episodes_verify_and_match_cost_model(mode):
    for seed in range(80):
        p = _problem(seed, mode)
        inst = game.make_instance(p)
        rng = np.random.default_rng(seed)
        s, ret = _play(inst, lambda s, o: int(rng.choice(np.flatnonzero(o.mask))))
        plan = game.decode(inst, s)
        res = verify_plan(plan)
        assert res.ok, (seed, mode, res.reason)
        t = simulate(plan)["modeled_time_s"]
        assert t == pytest.approx(s.time_s, rel=1e-12)
        assert ret == pytest.approx(1.0 - s.time_s / inst.time0_s, abs=1e-12)


def test_greedy_episodes_verify_and_start_from_the_all_slow_plan():
    for seed in range(15):
        for mode in ("tiered", "strict"):
            inst = game.make_instance(_problem(seed, mode))
            s = game.initial_state(inst)
            if mode == "tiered":
                assert simulate(game.decode(inst, s))["modeled_time_s"] == pytest.approx(inst.time0_s, rel=1e-12)
            while not game.is_terminal(inst, s):
                s, _ = game.step(inst, s, game.greedy_action(inst, s))
            plan = game.decode(inst, s)
            assert verify_plan(plan).ok
            assert simulate(plan)["modeled_time_s"] == pytest.approx(s.time_s, rel=1e-12)


def test_strict_has_no_slow_action_and_tiered_does():
    p = _problem(3, "strict")
    inst = game.make_instance(p)
    o = game.options(inst, game.initial_state(inst))
    assert not o.mask[game.SLOW] and o.mask[game.FIRST_OFFSET]
    pt = Problem(p.graph, p.target, "tiered")
    it = game.make_instance(pt)
    assert game.options(it, game.initial_state(it)).mask[game.SLOW]


def test_illegal_action_raises():
    inst = game.make_instance(_problem(5, "strict"))
    s = game.initial_state(inst)
    with pytest.raises(ValueError, match="illegal action"):
        game.step(inst, s, game.SLOW)


def test_chain_by_hand():
    """chain: x(100) -a-> y0(200) -b(reads w 300)-> y1(100, output). Bandwidths 1 B/s slow,
    10 B/s fast, no compute: all-slow time = (100+200) + (200+300+100) = 900 s."""
    g = chain_graph()
    tgt = Target("hand", 4096, alignment_bytes=64, offchip_bandwidth_bytes_per_s=1.0,
                 onchip_bandwidth_bytes_per_s=10.0, compute_flops_per_s=1e30, dma_engines=1)
    inst = game.make_instance(Problem(g, tgt, "tiered"))
    assert inst.time0_s == pytest.approx(900.0)
    # the first item presented is the most memory-bound per sqrt(size); play: create y0 fast,
    # keep it to its read; everything else slow
    s = game.initial_state(inst)
    y0 = next(v.id for v in g.values if v.name == "y0")
    while not game.is_terminal(inst, s):
        i = game.current_item(inst, s)
        o = game.options(inst, s)
        if inst.item_value[i] == y0:
            a = game.KEEP if o.mask[game.KEEP] else game.FIRST_OFFSET
        else:
            a = game.SLOW
        s, _ = game.step(inst, s, a, o)
    plan = game.decode(inst, s)
    assert verify_plan(plan).ok
    # y0 is fast at both touches: 200 B at 10 B/s instead of 1 B/s, twice: saves 2 * 180 s
    assert s.time_s == pytest.approx(900.0 - 360.0)
    assert [t.kind for t in plan.transfers] == []
