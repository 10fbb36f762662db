"""The MuZero-style agent: search with mctx's Gumbel MuZero policy, acting, self-play.

Two search models (``AgentConfig.search``):

* ``"true"`` (default): the environment's own transition replaces the learned dynamics. A node's
  embedding is a handle into a host-side table of game states; ``recurrent_fn`` steps the game
  through ``jax.pure_callback`` and evaluates ``f(h(observation))`` on the true next state, with
  the true reward, legal-action mask and terminal flag (discount 0).
* ``"learned"``: MuZero proper: ``g`` (dynamics) unrolls the latent state; the legal-action mask
  applies at the root only.

Without search (``num_simulations=0``) the agent takes the masked argmax of the prior.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import mctx
import numpy as np

from memmap.errors import MemmapError
from memmap.rl import game, observation
from memmap.rl.networks import REWARD_SCALE, NetworkConfig, make_networks

SEARCH_MODELS = ("true", "learned")
_NEG = -1e9

__all__ = ["AgentConfig", "Agent", "Trajectory", "SEARCH_MODELS"]


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Network sizes and search settings.

    Attributes:
      num_offsets: candidate offsets per move (``A = 2 + num_offsets`` actions).
      hidden, latent: network widths.
      num_simulations: search simulations per move (0: no search).
      search: ``"true"`` (environment transitions) or ``"learned"`` (MuZero dynamics).
    """

    num_offsets: int = game.DEFAULT_NUM_OFFSETS
    hidden: int = 128
    latent: int = 64
    num_simulations: int = 8
    search: str = "true"

    def __post_init__(self):
        if self.search not in SEARCH_MODELS:
            raise ValueError(f"search must be one of {', '.join(SEARCH_MODELS)}, got {self.search!r}")
        if self.num_simulations < 0:
            raise ValueError("num_simulations must be >= 0")
        if self.num_offsets < 1:
            raise ValueError("num_offsets must be >= 1")

    @property
    def num_actions(self) -> int:
        return game.num_actions(self.num_offsets)

    @property
    def network(self) -> NetworkConfig:
        return NetworkConfig(self.num_actions, self.hidden, self.latent)


@dataclasses.dataclass
class Trajectory:
    """One played episode: ``obs`` ``[T, F]``, ``mask`` ``[T, A]``, ``action`` ``[T]``,
    ``reward`` ``[T]`` (game reward), ``policy`` ``[T, A]`` (search policy), ``value`` ``[T]``
    (search root value, scaled), and the final modelled time."""

    name: str
    obs: np.ndarray
    mask: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    policy: np.ndarray
    value: np.ndarray
    time_s: float
    time0_s: float
    state: game.GameState | None = None

    @property
    def length(self) -> int:
        return len(self.action)


class _Node:
    __slots__ = ("inst", "state", "opts", "x", "succ")

    def __init__(self, inst, state):
        self.inst = inst
        self.state = state
        self.opts = game.options(inst, state)
        self.succ: dict = {}
        obs = observation.observe(inst, state, self.opts, max_values=1, successors=self.succ)
        self.x = observation.flatten(obs)


class _Host:
    """Host-side game states for true-dynamics search (handles are list indices). A game error
    in a transition (a state without a legal action) is kept in ``error`` and the node made
    terminal, since an exception cannot cross ``jax.pure_callback`` as itself; the caller
    re-raises it after the search."""

    def __init__(self, flat: int, num_actions: int):
        self.nodes: list[_Node] = []
        self.flat = flat
        self.A = num_actions
        self.transitions = 0
        self.error: MemmapError | None = None

    def add(self, node: _Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def step(self, handles, actions):
        handles = np.asarray(handles)
        actions = np.asarray(actions)
        B = len(handles)
        out_h = np.zeros(B, np.int32)
        rew = np.zeros(B, np.float32)
        xs = np.zeros((B, self.flat), np.float32)
        masks = np.zeros((B, self.A), bool)
        term = np.zeros(B, bool)
        for b in range(B):
            node = self.nodes[int(handles[b])]
            if game.is_terminal(node.inst, node.state):
                out_h[b], term[b] = handles[b], True
                continue
            a = int(actions[b])
            if not node.opts.mask[a]:
                a = int(np.flatnonzero(node.opts.mask)[0])
            if a in node.succ:
                nxt, r = node.succ[a]
            else:
                nxt, r = game.step(node.inst, node.state, a, node.opts)
            self.transitions += 1
            try:
                child = _Node(node.inst, nxt)
            except MemmapError as e:
                self.error = self.error or e
                out_h[b], term[b] = handles[b], True
                continue
            out_h[b] = self.add(child)
            rew[b] = r
            xs[b] = child.x
            masks[b] = child.opts.mask
            term[b] = game.is_terminal(child.inst, child.state)
        return out_h, rew, xs, masks, term


class Agent:
    """Networks + search. ``params`` from :meth:`init` or a checkpoint."""

    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        self.A = cfg.num_actions
        self.F = observation.flat_size(self.A)
        self.net = make_networks(cfg.network)
        self.represent, self.dynamics, self.predict = self.net.apply
        self.host = _Host(self.F, self.A)
        self._search = {}
        self._prior = jax.jit(self._prior_fn)

    def init(self, rng) -> dict:
        return self.net.init(rng, jnp.zeros((1, self.F)), jnp.zeros((1,), jnp.int32))

    # -- networks -------------------------------------------------------------------------
    def _prior_fn(self, params, x, mask):
        s = self.represent(params, x)
        logits, v = self.predict(params, s)
        return jnp.where(mask, logits, _NEG), v

    def _search_fn(self, params, rng, x, mask, handles, gumbel_scale, num_simulations):
        cfg = self.cfg
        B = x.shape[0]
        s = self.represent(params, x)
        logits, v = self.predict(params, s)
        logits = jnp.where(mask, logits, _NEG)
        host = self.host
        if cfg.search == "true":
            def recurrent_fn(params, rng, action, emb):
                shapes = (jax.ShapeDtypeStruct((B,), jnp.int32), jax.ShapeDtypeStruct((B,), jnp.float32),
                          jax.ShapeDtypeStruct((B, self.F), jnp.float32), jax.ShapeDtypeStruct((B, self.A), jnp.bool_),
                          jax.ShapeDtypeStruct((B,), jnp.bool_))
                nh, r, x2, m2, term = jax.pure_callback(host.step, shapes, emb, action)
                lg, val = self.predict(params, self.represent(params, x2))
                lg = jnp.where(m2, lg, _NEG)
                disc = jnp.where(term, 0.0, 1.0)
                return mctx.RecurrentFnOutput(reward=r * REWARD_SCALE, discount=disc, prior_logits=lg,
                                              value=jnp.where(term, 0.0, val)), nh
            emb = handles
        else:
            def recurrent_fn(params, rng, action, emb):
                s2, r = self.dynamics(params, emb, action)
                lg, val = self.predict(params, s2)
                return mctx.RecurrentFnOutput(reward=r, discount=jnp.ones_like(r), prior_logits=lg, value=val), s2
            emb = s
        root = mctx.RootFnOutput(prior_logits=logits, value=v, embedding=emb)
        out = mctx.gumbel_muzero_policy(params, rng, root, recurrent_fn, num_simulations=num_simulations,
                                        invalid_actions=~mask, max_num_considered_actions=self.A,
                                        gumbel_scale=gumbel_scale)
        return out.action, out.action_weights, out.search_tree.summary().value

    def search(self, params, rng, x, mask, handles, *, gumbel_scale: float = 1.0, num_simulations: int | None = None):
        n = self.cfg.num_simulations if num_simulations is None else num_simulations
        fn = self._search.get(n)
        if fn is None:
            fn = self._search[n] = jax.jit(lambda p, r, x, m, h, g: self._search_fn(p, r, x, m, h, g, n))
        return fn(params, rng, x, mask, handles, gumbel_scale)

    # -- playing --------------------------------------------------------------------------
    def play(self, params, rng, insts: list[game.GameInstance], *, search: bool = True, gumbel_scale: float = 1.0,
             num_simulations: int | None = None, deadline: float | None = None, finish_deadline: float | None = None,
             stop=None) -> tuple[list[Trajectory], dict]:
        """Play one episode per instance, in lockstep (one batched search per move).

        ``deadline`` (``time.monotonic()`` value): past it, the remaining moves use the
        network's prior without search. Past ``finish_deadline`` the games are finished at once
        without observations: slow memory where legal, else the first (best-fit) offset.
        ``stop()`` returning True aborts (returns ``[]``). Returns the trajectories and counters
        (``moves``, ``simulations``, ``transitions``, ``finished_fast``)."""
        B = len(insts)
        nodes = [_Node(inst, game.initial_state(inst)) for inst in insts]
        recs = [dict(obs=[], mask=[], action=[], reward=[], policy=[], value=[]) for _ in range(B)]
        sims = self.cfg.num_simulations if num_simulations is None else num_simulations
        counters = {"moves": 0, "simulations": 0, "transitions": 0, "finished_fast": 0}
        while True:
            live = [b for b in range(B) if not game.is_terminal(nodes[b].inst, nodes[b].state)]
            if not live:
                break
            if finish_deadline is not None and time.monotonic() >= finish_deadline:
                for b in live:
                    inst, st = nodes[b].inst, nodes[b].state
                    while not game.is_terminal(inst, st):
                        o = game.options(inst, st)
                        st, _ = game.step(inst, st, int(np.flatnonzero(o.mask)[0]), o)
                        counters["finished_fast"] += 1
                    nodes[b] = _Node.__new__(_Node)
                    nodes[b].inst, nodes[b].state = inst, st
                break
            if stop is not None and stop():
                return [], counters
            x = np.stack([nd.x for nd in nodes])
            mask = np.stack([nd.opts.mask for nd in nodes])
            for b in range(B):   # finished games ride along (terminal) with one legal dummy action
                if b not in live:
                    mask[b, 0] = True
            use_search = search and sims > 0 and (deadline is None or time.monotonic() < deadline)
            if use_search:
                self.host.nodes = []
                handles = np.array([self.host.add(nd) for nd in nodes], np.int32)
                rng, key = jax.random.split(rng)
                before = self.host.transitions
                self.host.error = None
                act, weights, value = self.search(params, key, x, mask, handles, gumbel_scale=gumbel_scale,
                                                  num_simulations=sims)
                act, weights, value = np.asarray(act), np.asarray(weights), np.asarray(value)
                if self.host.error is not None:     # after the results: the callbacks have run
                    raise self.host.error
                counters["simulations"] += sims * len(live)
                counters["transitions"] += self.host.transitions - before
                self.host.nodes = []
            else:
                logits, value = self._prior(params, x, mask)
                logits, value = np.asarray(logits), np.asarray(value)
                act = logits.argmax(axis=1)
                weights = np.exp(logits - logits.max(axis=1, keepdims=True)) * mask
                weights = weights / weights.sum(axis=1, keepdims=True)
            for b in live:
                nd = nodes[b]
                a = int(act[b])
                if not nd.opts.mask[a]:
                    a = int(np.flatnonzero(nd.opts.mask)[0])
                nxt, r = nd.succ[a] if a in nd.succ else game.step(nd.inst, nd.state, a, nd.opts)
                rec = recs[b]
                rec["obs"].append(nd.x)
                rec["mask"].append(nd.opts.mask.copy())
                rec["action"].append(a)
                rec["reward"].append(r)
                rec["policy"].append(weights[b].astype(np.float32))
                rec["value"].append(float(value[b]))
                nodes[b] = _Node(nd.inst, nxt)
                counters["moves"] += 1
        out = []
        for b, inst in enumerate(insts):
            rec = recs[b]
            A = self.A
            out.append(Trajectory(
                name=inst.problem.graph.name,
                obs=np.asarray(rec["obs"], np.float32).reshape(-1, self.F),
                mask=np.asarray(rec["mask"], bool).reshape(-1, A),
                action=np.asarray(rec["action"], np.int32),
                reward=np.asarray(rec["reward"], np.float32),
                policy=np.asarray(rec["policy"], np.float32).reshape(-1, A),
                value=np.asarray(rec["value"], np.float32),
                time_s=nodes[b].state.time_s, time0_s=inst.time0_s, state=nodes[b].state))
        return out, counters
