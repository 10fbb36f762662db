"""The agent: search with the true and the learned model ends in verified plans; replay
targets; one learner update lowers nothing to NaN; seeded play is deterministic."""

import jax
import numpy as np
import pytest

from memmap.rl import game, instances
from memmap.rl.agent import Agent, AgentConfig, Trajectory
from memmap.rl.learner import Learner, LearnerConfig, Replay
from memmap.rl.networks import REWARD_SCALE
from memmap.verify import verify_plan


def _insts(n=2, ops=6, mode="tiered"):
    return [game.make_instance(instances.make_problem(instances.random_instance_graph(s, ops), 0.25, mode=mode))
            for s in range(n)]


@pytest.mark.parametrize("search", ["true", "learned"])
def test_search_plays_verified_episodes(search):
    ag = Agent(AgentConfig(hidden=16, latent=8, num_simulations=3, search=search))
    params = ag.init(jax.random.PRNGKey(0))
    insts = _insts(2) + _insts(1, mode="strict")
    trs, counters = ag.play(params, jax.random.PRNGKey(1), insts)
    assert counters["simulations"] == 3 * counters["moves"]
    assert (counters["transitions"] > 0) == (search == "true")
    for inst, tr in zip(insts, trs):
        assert tr.length == inst.num_moves
        assert np.allclose(tr.policy.sum(axis=1), 1.0, atol=1e-5)
        assert all(tr.mask[t, a] for t, a in enumerate(tr.action))
        assert verify_plan(game.decode(inst, tr.state)).ok
        assert tr.reward.sum() == pytest.approx(1 - tr.time_s / tr.time0_s, abs=1e-6)
    again, _ = ag.play(params, jax.random.PRNGKey(1), insts)
    assert [t.action.tolist() for t in again] == [t.action.tolist() for t in trs]
    # without search: the prior's argmax, still legal and verified
    nos, c = ag.play(params, jax.random.PRNGKey(1), insts, search=False)
    assert c["simulations"] == 0 and verify_plan(game.decode(insts[0], nos[0].state)).ok


def test_replay_n_step_targets_by_hand():
    A, F = 3, 2
    T = 5
    tr = Trajectory(name="x", obs=np.arange(T * F, dtype=np.float32).reshape(T, F), mask=np.ones((T, A), bool),
                    action=np.array([0, 1, 2, 0, 1], np.int32), reward=np.array([1, 2, 3, 4, 5], np.float32) / 100,
                    policy=np.full((T, A), 1 / 3, np.float32), value=np.array([10, 20, 30, 40, 50], np.float32),
                    time_s=1.0, time0_s=2.0)
    rb = Replay(100)
    rb.add(tr)
    rng = np.random.default_rng(0)
    for _ in range(20):
        b = rb.sample(rng, 1, unroll=2, td=2)
        t = int(b["obs"][0, 0]) // F
        for k in range(3):
            u = t + k
            if u < T:
                boot = tr.value[u + 2] if u + 2 < T else 0.0
                want = REWARD_SCALE * tr.reward[u:u + 2].sum() + boot
                assert b["value"][0, k] == pytest.approx(want, rel=1e-5)
                assert b["valid"][0, k] == 1
            else:
                assert b["valid"][0, k] == 0 and b["value"][0, k] == 0
            if k and u - 1 < T:
                assert b["reward"][0, k] == pytest.approx(REWARD_SCALE * tr.reward[u - 1])
                assert b["actions"][0, k - 1] == tr.action[u - 1]
    arrays = rb.to_arrays()
    rb2 = Replay(100)
    rb2.load_arrays(arrays)
    assert len(rb2) == len(rb) and np.array_equal(rb2.episodes[0]["obs"], tr.obs)


def test_learner_update_is_finite_and_changes_params():
    ag = Agent(AgentConfig(hidden=16, latent=8, num_simulations=2))
    params = ag.init(jax.random.PRNGKey(0))
    trs, _ = ag.play(params, jax.random.PRNGKey(1), _insts(2))
    rb = Replay(1000)
    for t in trs:
        rb.add(t)
    lr = Learner(ag, LearnerConfig(batch_size=8, unroll_steps=2, td_steps=3))
    opt = lr.init(params)
    new, opt, aux = lr.update(params, opt, rb.sample(np.random.default_rng(0), 8, 2, 3))
    assert all(np.isfinite(float(v)) for v in aux.values())
    diff = jax.tree_util.tree_map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), params, new)
    assert max(jax.tree_util.tree_leaves(diff)) > 0
