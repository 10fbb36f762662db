"""MallocGameEnv: registration, Gymnasium's checker, vectorised envs, episodes -> verified plans."""

import subprocess
import sys

import gymnasium
import numpy as np
from gymnasium.utils.env_checker import check_env

import memmap
from memmap.rl.env import MallocGameEnv
from memmap.verify import verify_plan


def test_import_memmap_registers_without_jax():
    code = ("import sys, memmap, gymnasium; assert 'memmap/MallocGame-v0' in gymnasium.registry; "
            "assert 'jax' not in sys.modules and 'haiku' not in sys.modules and 'memmap.rl.env' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_make_and_check_env():
    assert memmap.__version__
    env = gymnasium.make("memmap/MallocGame-v0", split="random", num_ops=8, max_values=64)
    check_env(env.unwrapped, skip_render_check=True)
    for mode in ("tiered", "strict"):
        check_env(MallocGameEnv(split="random", mode=mode, num_ops=6, max_values=64), skip_render_check=True)


def test_episodes_end_in_verified_plans_and_return_matches_time():
    for mode in ("tiered", "strict"):
        env = MallocGameEnv(split="random", mode=mode, num_ops=10, max_values=64, render_mode="ansi")
        rng = np.random.default_rng(0)
        for ep in range(3):
            obs, info = env.reset(seed=ep)
            assert env.observation_space.contains(obs)
            ret, done = 0.0, False
            while not done:
                a = int(rng.choice(np.flatnonzero(info["action_mask"])))
                obs, r, done, trunc, info = env.step(a)
                ret += r
            assert "move" in env.render()
            plan = env.unwrapped.plan()
            assert verify_plan(plan).ok
            assert abs(ret - (1 - info["modeled_time_s"] / info["time0_s"])) < 1e-9


def test_illegal_action_is_replaced_and_flagged():
    env = MallocGameEnv(split="random", mode="strict", num_ops=6, max_values=64)
    _, info = env.reset(seed=1)
    assert not info["action_mask"][0]
    _, _, _, _, info = env.step(0)
    assert info.get("illegal_action")


def test_shipped_splits_reset():
    env = MallocGameEnv(split="heldout", max_values=512)
    obs, info = env.reset(seed=3)
    assert info["instance"] and info["num_moves"] > 0


def test_vector_env():
    envs = gymnasium.make_vec("memmap/MallocGame-v0", num_envs=2, vectorization_mode="sync",
                              split="random", num_ops=6, max_values=32)
    obs, info = envs.reset(seed=0)
    assert obs["candidates"].shape[0] == 2 and info["action_mask"].shape == (2, 8)
    for _ in range(30):
        acts = np.array([int(np.flatnonzero(m)[0]) if m.any() else 0 for m in info["action_mask"]])
        obs, r, term, trunc, info = envs.step(acts)
        assert r.shape == (2,)
    envs.close()
