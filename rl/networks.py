"""The agent's networks (all haiku code of memmap.rl lives here): MuZero's representation
``h``, dynamics ``g`` and prediction ``f``.

* ``h(x) -> s``: ``x`` ``[B, F]`` flat observation (``memmap.rl.observation.flatten``), ``s``
  ``[B, latent]`` (layer-normalised).
* ``g(s, a) -> (s', r)``: ``a`` ``[B]`` action ids; ``r`` ``[B]`` predicted (scaled) reward.
* ``f(s) -> (logits, v)``: ``logits`` ``[B, A]``, ``v`` ``[B]`` (scaled) value.

Rewards and values are the game's multiplied by ``REWARD_SCALE``.
"""

from __future__ import annotations

import dataclasses

import haiku as hk
import jax
import jax.numpy as jnp

REWARD_SCALE = 10.0

__all__ = ["NetworkConfig", "make_networks", "REWARD_SCALE"]


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Sizes: ``hidden`` units per layer, ``latent`` state width, ``num_actions``."""

    num_actions: int
    hidden: int = 128
    latent: int = 64

    def __post_init__(self):
        if self.num_actions < 2 or self.hidden < 1 or self.latent < 1:
            raise ValueError(f"invalid network sizes {self}")


def _mlp(sizes, name):
    return hk.nets.MLP(sizes, activation=jax.nn.relu, activate_final=False, name=name)


def make_networks(cfg: NetworkConfig) -> hk.MultiTransformed:
    """``init(rng, x, a)`` and ``apply = (represent, dynamics, predict)`` (no apply rng)."""

    def forward():
        rep = _mlp([cfg.hidden, cfg.hidden, cfg.latent], "representation")
        dyn = _mlp([cfg.hidden, cfg.hidden, cfg.latent + 1], "dynamics")
        pred = _mlp([cfg.hidden, cfg.num_actions + 1], "prediction")
        ln_r = hk.LayerNorm(-1, True, True, name="rep_norm")
        ln_d = hk.LayerNorm(-1, True, True, name="dyn_norm")

        def represent(x):
            return ln_r(rep(x))

        def dynamics(s, a):
            out = dyn(jnp.concatenate([s, jax.nn.one_hot(a, cfg.num_actions)], axis=-1))
            return ln_d(s + out[..., :-1]), out[..., -1]

        def predict(s):
            out = pred(s)
            return out[..., :-1], out[..., -1]

        def init(x, a):
            s = represent(x)
            s2, _ = dynamics(s, a)
            return predict(s2)

        return init, (represent, dynamics, predict)

    return hk.without_apply_rng(hk.multi_transform(forward))
