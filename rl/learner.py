"""Replay buffer, n-step value targets and the MuZero loss (optax, jit-compiled).

Targets for a position ``t`` of an episode and unroll step ``k = 0..K``:

* value ``z_{t+k} = sum_{j<n} r_{t+k+j} + v_{t+k+n}`` (discount 1, ``v``: the search root value
  stored at play time; 0 past the episode's end), rewards and values scaled by
  ``REWARD_SCALE``;
* reward ``r_{t+k-1}`` for ``k >= 1`` (the dynamics' prediction), policy = the search policy;
* past the end of the episode: absorbing (value 0, reward 0, no policy loss).

Loss: ``sum_k [CE(pi, softmax(masked logits)) + 0.25 (v - z)^2 + (r_hat - r)^2] / (K + 1)``,
the dynamics gradient scaled by 1/2 per unroll step (MuZero).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memmap.rl.agent import Agent, Trajectory
from memmap.rl.networks import REWARD_SCALE

__all__ = ["Replay", "LearnerConfig", "Learner"]


class Replay:
    """A FIFO of whole episodes holding at most ``capacity`` positions."""

    FIELDS = ("obs", "mask", "action", "reward", "policy", "value")

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("replay capacity must be >= 1")
        self.capacity = int(capacity)
        self.episodes: list[dict] = []
        self.positions = 0

    def add(self, tr: Trajectory) -> None:
        if tr.length == 0:
            return
        self.episodes.append({f: getattr(tr, f) for f in self.FIELDS})
        self.positions += tr.length
        while self.positions > self.capacity and len(self.episodes) > 1:
            self.positions -= len(self.episodes.pop(0)["action"])

    def __len__(self) -> int:
        return self.positions

    def sample(self, rng: np.random.Generator, batch: int, unroll: int, td: int) -> dict[str, np.ndarray]:
        """``[B, ...]`` arrays: ``obs [B, F]``, ``actions [B, K]``, ``masks [B, K+1, A]``,
        ``policy [B, K+1, A]``, ``value [B, K+1]``, ``reward [B, K+1]`` (index 0 unused),
        ``valid [B, K+1]``."""
        lengths = np.array([len(e["action"]) for e in self.episodes])
        ep_ids = rng.choice(len(self.episodes), size=batch, p=lengths / lengths.sum())
        K = unroll
        A = self.episodes[0]["mask"].shape[1]
        F = self.episodes[0]["obs"].shape[1]
        out = {"obs": np.zeros((batch, F), np.float32), "actions": np.zeros((batch, K), np.int32),
               "masks": np.zeros((batch, K + 1, A), bool), "policy": np.zeros((batch, K + 1, A), np.float32),
               "value": np.zeros((batch, K + 1), np.float32), "reward": np.zeros((batch, K + 1), np.float32),
               "valid": np.zeros((batch, K + 1), np.float32)}
        for b, e in enumerate(ep_ids):
            ep = self.episodes[e]
            T = len(ep["action"])
            t = int(rng.integers(T))
            out["obs"][b] = ep["obs"][t]
            r = ep["reward"] * REWARD_SCALE
            csum = np.concatenate(([0.0], np.cumsum(r)))
            for k in range(K + 1):
                u = t + k
                if k > 0:
                    out["actions"][b, k - 1] = ep["action"][u - 1] if u - 1 < T else int(rng.integers(A))
                    out["reward"][b, k] = r[u - 1] if u - 1 < T else 0.0
                if u < T:
                    end = min(u + td, T)
                    boot = ep["value"][end] if end < T else 0.0
                    out["value"][b, k] = csum[end] - csum[u] + boot
                    out["policy"][b, k] = ep["policy"][u]
                    out["masks"][b, k] = ep["mask"][u]
                    out["valid"][b, k] = 1.0
                else:
                    out["masks"][b, k] = True
        return out

    # -- (de)serialisation: flat arrays -------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        if not self.episodes:
            return {"replay_lengths": np.zeros(0, np.int64)}
        d = {f"replay_{f}": np.concatenate([e[f] for e in self.episodes]) for f in self.FIELDS}
        d["replay_lengths"] = np.array([len(e["action"]) for e in self.episodes], np.int64)
        return d

    def load_arrays(self, d) -> None:
        lengths = d["replay_lengths"]
        self.episodes, self.positions = [], 0
        cuts = np.concatenate(([0], np.cumsum(lengths)))
        for a, b in zip(cuts[:-1], cuts[1:]):
            self.episodes.append({f: np.asarray(d[f"replay_{f}"][a:b]) for f in self.FIELDS})
            self.positions += int(b - a)


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    batch_size: int = 64
    unroll_steps: int = 3
    td_steps: int = 10
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0

    def __post_init__(self):
        if self.batch_size < 1 or self.unroll_steps < 0 or self.td_steps < 1 or not self.learning_rate > 0:
            raise ValueError(f"invalid learner settings {self}")


class Learner:
    """``update(params, opt_state, batch) -> (params, opt_state, losses)`` (jit-compiled)."""

    def __init__(self, agent: Agent, cfg: LearnerConfig):
        self.agent = agent
        self.cfg = cfg
        self.opt = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                               optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay))
        self.update = jax.jit(self._update)

    def init(self, params):
        return self.opt.init(params)

    def _loss(self, params, batch):
        ag = self.agent
        K = self.cfg.unroll_steps
        s = ag.represent(params, batch["obs"])
        total_p = total_v = total_r = 0.0
        for k in range(K + 1):
            if k > 0:
                s, r_hat = ag.dynamics(params, s, batch["actions"][:, k - 1])
                s = jax.lax.stop_gradient(s) * 0.5 + s * 0.5   # MuZero: halve the dynamics gradient
                total_r += jnp.mean((r_hat - batch["reward"][:, k]) ** 2)
            logits, v = ag.predict(params, s)
            logits = jnp.where(batch["masks"][:, k], logits, -1e9)
            logp = jax.nn.log_softmax(logits)
            valid = batch["valid"][:, k]
            total_p += jnp.mean(-jnp.sum(batch["policy"][:, k] * jnp.where(batch["masks"][:, k], logp, 0.0), -1) * valid)
            total_v += jnp.mean((v - batch["value"][:, k]) ** 2)
        n = K + 1
        loss = (total_p + 0.25 * total_v + total_r) / n
        return loss, {"loss": loss, "loss_policy": total_p / n, "loss_value": total_v / n,
                      "loss_reward": total_r / max(1, K)}

    def _update(self, params, opt_state, batch):
        grads, aux = jax.grad(self._loss, has_aux=True)(params, batch)
        updates, opt_state = self.opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, aux
