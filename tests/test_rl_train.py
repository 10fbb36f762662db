"""memmap-train: checkpoints resume with nothing lost (a SIGKILLed run and a Ctrl-C'd run finish
with the same step count; in-process, with the same parameters as an uninterrupted run), bad
arguments exit 2 with one line, and Ray actors feed the learner."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from memmap.rl.agent import AgentConfig
from memmap.rl.cli import main as train_main
from memmap.rl.learner import LearnerConfig
from memmap.rl.train import CHECKPOINT, Interrupted, TrainConfig, load_checkpoint, train

TINY = TrainConfig(steps=6, seed=3, instances="random", num_ops=5, games_per_iter=2, updates_per_iter=2,
                   replay_positions=500, eval_every=0, checkpoint_every=1,
                   agent=AgentConfig(hidden=16, latent=8, num_simulations=2),
                   learner=LearnerConfig(batch_size=8, unroll_steps=1, td_steps=3))
ARGS = ["--steps", "6", "--seed", "3", "--instances", "random", "--num-ops", "5", "--games", "2", "--updates", "2",
        "--replay", "500", "--eval-every", "0", "--checkpoint-every", "1", "--hidden", "16", "--latent", "8",
        "--simulations", "2", "--batch-size", "8", "--unroll", "1", "--td-steps", "3", "--quiet"]


def _leaves(params):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]


def test_interrupt_and_resume_equals_uninterrupted(tmp_path):
    full = train(TINY, tmp_path / "a")
    assert full["step"] == 6

    def ctrl_c(meta, row):
        if meta["iteration"] == 1:
            os.kill(os.getpid(), signal.SIGINT)   # handled: the trainer stops at the next move/update

    with pytest.raises(Interrupted):
        train(TINY, tmp_path / "b", progress=ctrl_c)
    _, _, _, _, meta = load_checkpoint(tmp_path / "b" / CHECKPOINT)
    assert 0 < meta["step"] < 6
    resumed = train(TINY, tmp_path / "b", resume=True)
    assert resumed["step"] == 6 and resumed["episodes"] == full["episodes"]
    _, pa, _, _, ma = load_checkpoint(tmp_path / "a" / CHECKPOINT)
    _, pb, _, _, mb = load_checkpoint(tmp_path / "b" / CHECKPOINT)
    for x, y in zip(_leaves(pa), _leaves(pb)):
        np.testing.assert_array_equal(x, y)
    assert [r["iteration"] for r in mb["rows"]] == [r["iteration"] for r in ma["rows"]]
    assert (tmp_path / "b" / "metrics.csv").read_text().count("\n") == len(ma["rows"]) + 1
    assert (tmp_path / "b" / "learning_curve.png").stat().st_size > 0


def test_sigkill_then_resume_reaches_the_same_step(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "memmap.rl.cli", "--out", str(out)] + ARGS
    cmd[cmd.index("--steps") + 1] = "16"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = out / CHECKPOINT
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ckpt.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in time"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, _, _, _, meta = load_checkpoint(ckpt)
    assert meta["step"] < 16
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    _, _, _, _, meta = load_checkpoint(ckpt)
    assert meta["step"] == 16 and meta["iteration"] == 8


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert train_main(["--out", str(tmp_path), "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "steps" in err
    assert train_main(["--out", str(tmp_path), "--resume"]) == 2
    assert train_main(["--out", str(tmp_path), "--search", "magic"]) == 2


def test_ray_actors_feed_the_learner(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        meta = train(TrainConfig(**{**TINY.__dict__, "steps": 2, "ray_actors": 2}), tmp_path / "r")
    finally:
        ray.shutdown()
    assert meta["step"] == 2 and meta["episodes"] == 2
