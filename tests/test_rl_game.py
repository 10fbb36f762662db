"""mallocGame core: every finished episode decodes to a plan the verifier accepts, the game's
time is memmap.cost's, and the dense rewards add up to 1 - T_final / T0."""

from pathlib import Path

import numpy as np
import pytest

from memmap.cost import inplace_shares, simulate
from memmap.errors import MemmapError
from memmap.ir.graph import GraphBuilder
from memmap.ir.synthetic import random_graph
from memmap.problem import Problem, Target, get_target
from memmap.rl import game
from memmap.verify import verify_plan
from tests.helpers import chain_graph

ROOT = Path(__file__).resolve().parents[1]
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


# -- in-place pairs ---------------------------------------------------------------------------

def _paired_problem(seed: int, mode: str, at_m_r: bool) -> Problem:
    g = random_graph(seed, num_ops=4 + seed % 14, max_size_bytes=4096, inplace_prob=0.6)
    tgt = TGT if seed % 2 else Target("t2", 1 << 30, alignment_bytes=128, dma_engines=2)
    m_r = Problem(g, tgt, "strict").m_r_bytes
    cap = m_r if at_m_r else (m_r if mode == "strict" else 1024) * (2 + seed % 2)
    return Problem(g, tgt.with_capacity(cap), mode)


@pytest.mark.parametrize("mode", ["tiered", "strict"])
def test_random_graphs_with_pairs_verify_and_match_cost_model(mode):
    """Random and greedy play on random graphs with in-place pairs, at M_R (the pair-aware one)
    and above: a legal action at every move, verified plans, the game's time = simulate's."""
    shares = 0
    for seed in range(40):
        for at_m_r in (True, False):
            inst = game.make_instance(_paired_problem(seed, mode, at_m_r))
            rng = np.random.default_rng(seed)
            policies = (lambda s, o: int(rng.choice(np.flatnonzero(o.mask))),
                        lambda s, o: game.greedy_action(inst, s, o))
            for policy in policies:
                s, ret = _play(inst, policy)
                plan = game.decode(inst, s)
                res = verify_plan(plan)
                assert res.ok, (seed, mode, at_m_r, res.errors)
                assert simulate(plan)["modeled_time_s"] == pytest.approx(s.time_s, rel=1e-12), (seed, at_m_r)
                assert ret == pytest.approx(1.0 - s.time_s / inst.time0_s, abs=1e-12)
                shares += len(inplace_shares(plan))
    assert shares > 100     # the pairs are really shared, not just tolerated


def _spill_then_share_graph():
    """p(param 64) -op0-> v(256) -op1-> w(256, output; in place of v) ; op2 reads v -> z(64,
    output). Strict at M_R = 320 B: op1 cannot hold v and w apart, so w takes v's buffer; v is
    read again at op2, so it is spilled at op0 (finishing before op1 overwrites it) and reloaded."""
    b = GraphBuilder("spill_then_share")
    p = b.add_value("p", 64, kind="parameter")
    (v,) = b.add_op("op0", "f", inputs=[p], outputs=[("v", 256)])
    (w,) = b.add_op("op1", "g", inputs=[v], outputs=[("w", 256)])
    b.mark_inplace(w, v)
    (z,) = b.add_op("op2", "h", inputs=[v], outputs=[("z", 64)])
    b.mark_output(w)
    b.mark_output(z)
    return b.build()


def test_pair_by_hand_strict_at_m_r():
    g = _spill_then_share_graph()
    tgt = Target("hand", 320, alignment_bytes=64, offchip_bandwidth_bytes_per_s=1.0,
                 onchip_bandwidth_bytes_per_s=10.0, compute_flops_per_s=1e30, dma_engines=1)
    p = Problem(g, tgt, "strict")
    assert p.m_r_bytes == 320
    inst = game.make_instance(p)
    name = {v.id: v.name for v in g.values}
    s = game.initial_state(inst)
    seen = []
    while not game.is_terminal(inst, s):
        i = game.current_item(inst, s)
        o = game.options(inst, s)
        seen.append((name[int(inst.item_value[i])], int(inst.item_step[i]), np.flatnonzero(o.mask).tolist()))
        if (name[int(inst.item_value[i])], int(inst.item_step[i])) == ("w", 1):
            # the only room for w is v's buffer: candidate 0, v's offset
            assert o.mask.tolist() == [False, False, True] + [False] * 5
            assert o.offset[game.FIRST_OFFSET] == s.offset[inst.item_partner[i]]
        s, _ = game.step(inst, s, game.KEEP if o.mask[game.KEEP] else game.FIRST_OFFSET, o)
    # v kept into op1 and handed over to w: its read at op2 cannot keep, it is reloaded
    assert ("v", 1, [game.KEEP, game.FIRST_OFFSET]) in seen
    assert ("v", 2, [game.FIRST_OFFSET]) in seen
    plan = game.decode(inst, s)
    assert verify_plan(plan).ok
    assert [(t.step, t.kind, name[t.value]) for t in plan.transfers if t.kind != "evict"] == [
        (0, "load", "p"), (0, "spill", "v"), (1, "writeback", "w"), (2, "reload", "v"), (2, "writeback", "z")]
    assert len(inplace_shares(plan)) == 1
    assert simulate(plan)["peak_live_bytes"] == 320
    # 1 B/s off-chip, 10 B/s on-chip, one DMA queue: load p 0..64; op0 64..96; spill v 96..352
    # must end before op1 (which overwrites v): op1 352..403.2; writeback w 403.2..659.2;
    # reload v (issued at step 2) 659.2..915.2; op2 915.2..947.2; writeback z ..1011.2
    assert s.time_s == pytest.approx(1011.2)
    assert simulate(plan)["modeled_time_s"] == pytest.approx(1011.2)


def test_lstm_example_strict_at_m_r():
    """examples/lstm.before.hlo (while loops: loop state imported as in-place pairs) in strict
    mode at its M_R: greedy and random play finish with verified plans that share buffers."""
    from memmap.pipeline import load_graph

    g = load_graph(ROOT / "examples" / "lstm.before.hlo")
    assert any(op.inplace for op in g.ops)
    tgt = get_target("npu-4mib")
    p = Problem(g, tgt.with_capacity(Problem(g, tgt, "strict").m_r_bytes), "strict")
    inst = game.make_instance(p)
    rng = np.random.default_rng(0)
    for policy in (lambda s, o: game.greedy_action(inst, s, o), lambda s, o: int(rng.choice(np.flatnonzero(o.mask)))):
        s, _ = _play(inst, policy)
        plan = game.decode(inst, s)
        assert verify_plan(plan).ok
        assert inplace_shares(plan)
        assert simulate(plan)["modeled_time_s"] == pytest.approx(s.time_s, rel=1e-12)


def test_no_legal_action_is_a_memmap_error():
    """Strict mode below M_R has states without a legal action: a MemmapError naming the value
    and the operator, not a ValueError from a later step."""
    g = _spill_then_share_graph()
    p = Problem(g, Target("small", 256, alignment_bytes=64), "strict")
    inst = game.make_instance(p)
    with pytest.raises(MemmapError, match=r"no legal action for '(v|p)' at step 0 \(operator 'op0'") as e:
        _play(inst, lambda s, o: int(np.flatnonzero(o.mask)[0]))
    assert not isinstance(e.value, ValueError)
