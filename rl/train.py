"""Training: self-play (in-process or Ray actors) feeding a replay buffer and the learner,
periodic evaluation on held-out instances, metrics (CSV, TensorBoard when installed, a
learning-curve PNG) and checkpoints that resume with nothing lost.

Every random draw derives from ``(seed, iteration)`` (self-play instances and search keys) or
``(seed, step)`` (replay batches), so a run resumed from a checkpoint continues exactly as the
uninterrupted run would have (in-process mode). A checkpoint (``OUT/checkpoint.npz``, written
atomically) holds the configuration, parameters, optimiser state, replay buffer, counters and
metric rows; it is written every ``checkpoint_every`` iterations, at the end, and on interruption
(Ctrl-C / SIGTERM: the in-flight move or update finishes, then exit 130).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import jax
import numpy as np

from memmap.rl import game, instances
from memmap.rl.agent import Agent, AgentConfig, Trajectory
from memmap.rl.learner import Learner, LearnerConfig, Replay

CHECKPOINT = "checkpoint.npz"
INSTANCE_SOURCES = ("train", "random", "mixed")

__all__ = ["TrainConfig", "train", "save_checkpoint", "load_checkpoint", "load_policy", "export_policy", "Interrupted",
           "INSTANCE_SOURCES", "CHECKPOINT"]


class Interrupted(Exception):
    """Training stopped on a signal after writing its checkpoint."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Attributes:
      steps: learner updates in total.
      seed: the only source of randomness.
      mode: ``tiered`` or ``strict``.
      instances: ``train`` (shipped train-split graphs), ``random`` (random graphs of
        ``num_ops`` operators) or ``mixed`` (half each).
      games_per_iter: episodes self-played per iteration (one batched search per move).
      updates_per_iter: learner updates per iteration.
      replay_positions: replay capacity (positions).
      eval_every / checkpoint_every: iterations between evaluations / checkpoints (0: never).
      eval_instances: held-out graphs used for evaluation (smallest first; scratchpad 0.25).
      ray_actors: 0 in-process; > 0 that many Ray actors share the self-play games.
    """

    steps: int = 2000
    seed: int = 0
    mode: str = "tiered"
    instances: str = "train"
    num_ops: int = 32
    games_per_iter: int = 4
    updates_per_iter: int = 16
    replay_positions: int = 50_000
    eval_every: int = 10
    eval_instances: int = 4
    checkpoint_every: int = 5
    ray_actors: int = 0
    agent: AgentConfig = AgentConfig()
    learner: LearnerConfig = LearnerConfig()

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.mode not in ("tiered", "strict"):
            raise ValueError(f"mode must be tiered or strict, got {self.mode!r}")
        if self.instances not in INSTANCE_SOURCES:
            raise ValueError(f"instances must be one of {', '.join(INSTANCE_SOURCES)}, got {self.instances!r}")
        for f in ("games_per_iter", "updates_per_iter", "num_ops"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        for f in ("eval_every", "eval_instances", "checkpoint_every", "ray_actors", "replay_positions"):
            if getattr(self, f) < 0:
                raise ValueError(f"{f} must be >= 0, got {getattr(self, f)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["agent"] = AgentConfig(**d["agent"])
        d["learner"] = LearnerConfig(**d["learner"])
        return cls(**d)


# -- instances --------------------------------------------------------------------------------

_CACHE: dict = {}


def _inst(key, make) -> game.GameInstance:
    inst = _CACHE.get(key)
    if inst is None:
        if len(_CACHE) > 256:
            _CACHE.clear()
        inst = _CACHE[key] = make()
    return inst


def selfplay_instances(cfg: TrainConfig, iteration: int, actor: int, count: int) -> list[game.GameInstance]:
    """The games of one iteration (deterministic in ``(seed, iteration, actor)``)."""
    rng = np.random.default_rng([cfg.seed, iteration, actor, 17])
    specs = instances.shipped("train")
    out = []
    while len(out) < count:
        frac = float(instances.CAPACITY_FRACTIONS[int(rng.integers(len(instances.CAPACITY_FRACTIONS)))])
        use_random = cfg.instances == "random" or (cfg.instances == "mixed" and rng.random() < 0.5)
        if use_random:
            gseed = int(rng.integers(2**31))
            inst = game.make_instance(instances.make_problem(instances.random_instance_graph(gseed, cfg.num_ops),
                                                             frac, mode=cfg.mode), num_offsets=cfg.agent.num_offsets)
        else:
            spec = specs[int(rng.integers(len(specs)))]
            inst = _inst((spec.name, frac, cfg.mode, cfg.agent.num_offsets),
                         lambda: game.make_instance(instances.make_problem(instances.load_graph(spec.name), frac,
                                                                           mode=cfg.mode),
                                                    num_offsets=cfg.agent.num_offsets))
        if inst.num_moves:
            out.append(inst)
    return out


def eval_instances(cfg: TrainConfig) -> list[game.GameInstance]:
    specs = sorted(instances.shipped("heldout"), key=lambda s: (s.num_ops, s.name))[:cfg.eval_instances]
    return [_inst((s.name, 0.25, cfg.mode, cfg.agent.num_offsets),
                  lambda s=s: game.make_instance(instances.make_problem(instances.load_graph(s.name), 0.25, mode=cfg.mode),
                                                 num_offsets=cfg.agent.num_offsets)) for s in specs]


def greedy_ratio(inst: game.GameInstance) -> float:
    s = game.initial_state(inst)
    while not game.is_terminal(inst, s):
        s, _ = game.step(inst, s, game.greedy_action(inst, s))
    return s.time_s / inst.time0_s


# -- checkpoints ------------------------------------------------------------------------------

def _flatten_params(params) -> dict[str, np.ndarray]:
    return {f"params/{m}/{k}": np.asarray(v) for m, d in params.items() for k, v in d.items()}


def _unflatten_params(d) -> dict:
    out: dict = {}
    for key in d:
        if key.startswith("params/"):
            _, rest = key.split("/", 1)
            m, k = rest.rsplit("/", 1)
            out.setdefault(m, {})[k] = jax.numpy.asarray(d[key])
    return out


def save_checkpoint(path: Path, cfg: TrainConfig, params, opt_state, replay: Replay | None, meta: dict) -> None:
    """Write atomically (temporary file + rename)."""
    arrays = _flatten_params(params)
    if opt_state is not None:
        for i, leaf in enumerate(jax.tree_util.tree_leaves(opt_state)):
            arrays[f"opt/{i:05d}"] = np.asarray(leaf)
    if replay is not None:
        arrays.update(replay.to_arrays())
    arrays["meta"] = np.array(json.dumps({"config": cfg.to_dict(), **meta}))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_checkpoint(path: Path):
    """``(cfg, params, opt_leaves, arrays, meta)``; raises ``ValueError`` on a bad file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
        cfg = TrainConfig.from_dict(meta.pop("config"))
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a memmap-train checkpoint ({type(e).__name__}: {e})") from None
    params = _unflatten_params(arrays)
    opt_leaves = [arrays[k] for k in sorted(k for k in arrays if k.startswith("opt/"))]
    return cfg, params, opt_leaves, arrays, meta


def export_policy(src, dst) -> dict:
    """Write only the configuration, parameters and counters of checkpoint ``src`` to ``dst``
    (what the ``rl`` solver needs; no optimiser state or replay). Returns the metadata."""
    cfg, params, _, _, meta = load_checkpoint(Path(src))
    keep = {k: meta[k] for k in ("step", "iteration", "episodes", "wall_s", "cpu_s") if k in meta}
    save_checkpoint(Path(dst), cfg, params, None, None, keep)
    return keep


def load_policy(path) -> tuple[Agent, dict]:
    """An :class:`Agent` and its parameters from a checkpoint (for playing)."""
    cfg, params, _, _, _ = load_checkpoint(Path(path))
    return Agent(cfg.agent), params


# -- metrics ----------------------------------------------------------------------------------

COLUMNS = ("iteration", "step", "episodes", "wall_s", "cpu_s", "moves_per_s", "simulations_per_s",
           "return_mean", "time_ratio_mean", "loss", "loss_policy", "loss_value", "loss_reward",
           "eval_time_ratio", "eval_greedy_ratio")


def write_metrics(out: Path, rows: list[dict]) -> None:
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in COLUMNS})


def plot_curve(out: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    st = [r["step"] for r in rows]
    ax.plot(st, [r["time_ratio_mean"] for r in rows], label="self-play T / T0 (train)", alpha=0.6)
    ev = [(r["step"], r["eval_time_ratio"], r["eval_greedy_ratio"]) for r in rows if r.get("eval_time_ratio") not in (None, "")]
    if ev:
        ax.plot([e[0] for e in ev], [e[1] for e in ev], "o-", label="held-out T / T0 (agent, search)")
        ax.plot([e[0] for e in ev], [e[2] for e in ev], "--", label="held-out T / T0 (greedy reference)")
    ax.set_xlabel("learner step")
    ax.set_ylabel("modelled time / all-slow time (lower is better)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=100)
    plt.close(fig)


class _TensorBoard:
    def __init__(self, out: Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401 - optional
            except ImportError:
                self.w = None
                return
        self.w = SummaryWriter(str(out / "tensorboard"))

    def log(self, row: dict) -> None:
        if self.w is None:
            return
        for k in COLUMNS[3:]:
            v = row.get(k)
            if isinstance(v, (int, float)):
                self.w.add_scalar(k, v, row["step"])
        self.w.flush()


# -- self-play ---------------------------------------------------------------------------------

def _play_local(agent: Agent, params, cfg: TrainConfig, iteration: int, stop) -> tuple[list[Trajectory], dict]:
    insts = selfplay_instances(cfg, iteration, 0, cfg.games_per_iter)
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), iteration)
    return agent.play(params, key, insts, stop=stop)


class _RayPool:
    """``ray_actors`` Ray actors, each playing its share of an iteration's games."""

    def __init__(self, cfg: TrainConfig):
        import ray

        self.ray = ray
        cfg_dict = cfg.to_dict()

        @ray.remote
        class SelfPlayActor:
            def __init__(self, d):
                self.cfg = TrainConfig.from_dict(d)
                self.agent = Agent(self.cfg.agent)

            def play(self, params, iteration, actor, count):
                insts = selfplay_instances(self.cfg, iteration, actor, count)
                key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.cfg.seed), iteration), actor)
                trs, counters = self.agent.play(params, key, insts)
                for t in trs:
                    t.state = None
                return trs, counters

        self.actors = [SelfPlayActor.remote(cfg_dict) for _ in range(cfg.ray_actors)]
        self.cfg = cfg

    def play(self, params, iteration) -> tuple[list[Trajectory], dict]:
        n = len(self.actors)
        shares = [self.cfg.games_per_iter // n + (1 if a < self.cfg.games_per_iter % n else 0) for a in range(n)]
        ref = self.ray.put(jax.tree_util.tree_map(np.asarray, params))
        futs = [a.play.remote(ref, iteration, k, c) for k, (a, c) in enumerate(zip(self.actors, shares)) if c]
        trs, counters = [], {"moves": 0, "simulations": 0, "transitions": 0}
        for t, c in self.ray.get(futs):
            trs.extend(t)
            for k in counters:
                counters[k] += c[k]
        return trs, counters


# -- the loop ----------------------------------------------------------------------------------

_COMPILED: dict = {}


def _agent_and_learner(cfg: TrainConfig) -> tuple[Agent, Learner]:
    """One Agent + Learner per configuration and process (their jit caches are reused)."""
    key = (cfg.agent, cfg.learner)
    if key not in _COMPILED:
        agent = Agent(cfg.agent)
        _COMPILED[key] = (agent, Learner(agent, cfg.learner))
    return _COMPILED[key]

def train(cfg: TrainConfig, out_dir, *, resume: bool = False, progress=None, ray_init: dict | None = None) -> dict:
    """Train; returns the final metadata (``step``, ``iteration``, ...). ``progress(meta, row)``
    is called after every iteration. Raises :class:`Interrupted` (checkpoint written) on
    SIGINT/SIGTERM."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT
    agent, learner = _agent_and_learner(cfg)
    replay = Replay(cfg.replay_positions or 1)
    meta = {"step": 0, "iteration": 0, "phase": "selfplay", "updates_done": 0, "episodes": 0,
            "wall_s": 0.0, "cpu_s": 0.0, "rows": []}
    if resume and ckpt.exists():
        old_cfg, params, opt_leaves, arrays, old_meta = load_checkpoint(ckpt)
        if dataclasses.replace(old_cfg, steps=cfg.steps) != cfg:
            raise ValueError(f"{ckpt}: the checkpoint was made with other settings; resume with the same "
                             f"arguments (or a new --out)")
        opt_state = learner.init(params)
        treedef = jax.tree_util.tree_structure(opt_state)
        opt_state = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(x) for x in opt_leaves])
        replay.load_arrays(arrays)
        meta.update(old_meta)
    else:
        params = agent.init(jax.random.PRNGKey(cfg.seed))
        opt_state = learner.init(params)
    rows: list[dict] = meta["rows"]
    tb = _TensorBoard(out)
    pool = None
    if cfg.ray_actors:
        import ray

        if not ray.is_initialized():
            ray.init(**(ray_init or {}))
        pool = _RayPool(cfg)

    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    wall0, cpu0 = time.perf_counter(), time.process_time()
    base_wall, base_cpu = meta["wall_s"], meta["cpu_s"]

    def snapshot():
        meta["wall_s"] = base_wall + time.perf_counter() - wall0
        meta["cpu_s"] = base_cpu + time.process_time() - cpu0
        save_checkpoint(ckpt, cfg, params, opt_state, replay, meta)
        write_metrics(out, rows)

    try:
        while meta["step"] < cfg.steps:
            it = meta["iteration"]
            row: dict = {"iteration": it}
            if meta["phase"] == "selfplay":
                t0 = time.perf_counter()
                if pool is not None:
                    trs, counters = pool.play(params, it)
                else:
                    trs, counters = _play_local(agent, params, cfg, it, lambda: stop["flag"])
                if stop["flag"]:
                    raise Interrupted
                dt = max(1e-9, time.perf_counter() - t0)
                for t in trs:
                    replay.add(t)
                meta["episodes"] += len(trs)
                meta["phase"], meta["updates_done"] = "updates", 0
                row.update(moves_per_s=counters["moves"] / dt, simulations_per_s=counters["simulations"] / dt,
                           return_mean=float(np.mean([t.reward.sum() for t in trs])),
                           time_ratio_mean=float(np.mean([t.time_s / t.time0_s for t in trs])))
                meta["last_selfplay"] = {k: row[k] for k in ("moves_per_s", "simulations_per_s", "return_mean",
                                                              "time_ratio_mean")}
            else:
                row.update(meta.get("last_selfplay", {}))
            losses = []
            while meta["updates_done"] < cfg.updates_per_iter and meta["step"] < cfg.steps:
                if stop["flag"]:
                    raise Interrupted
                rng = np.random.default_rng([cfg.seed, meta["step"], 29])
                batch = replay.sample(rng, cfg.learner.batch_size, cfg.learner.unroll_steps, cfg.learner.td_steps)
                params, opt_state, aux = learner.update(params, opt_state, batch)
                losses.append({k: float(v) for k, v in aux.items()})
                meta["step"] += 1
                meta["updates_done"] += 1
            for k in ("loss", "loss_policy", "loss_value", "loss_reward"):
                row[k] = float(np.mean([x[k] for x in losses])) if losses else float("nan")
            meta["iteration"] += 1
            meta["phase"], meta["updates_done"] = "selfplay", 0
            done = meta["step"] >= cfg.steps
            row.update(step=meta["step"], episodes=meta["episodes"])
            rows.append(row)
            if cfg.eval_every and (meta["iteration"] % cfg.eval_every == 0 or done) and cfg.eval_instances:
                ev = eval_instances(cfg)
                trs, _ = agent.play(params, jax.random.PRNGKey(cfg.seed), ev, gumbel_scale=0.0,
                                    stop=lambda: stop["flag"])
                if stop["flag"]:
                    raise Interrupted
                row["eval_time_ratio"] = float(np.mean([t.time_s / t.time0_s for t in trs]))
                row["eval_greedy_ratio"] = float(np.mean([greedy_ratio(i) for i in ev]))
            row.update(wall_s=base_wall + time.perf_counter() - wall0, cpu_s=base_cpu + time.process_time() - cpu0)
            tb.log(row)
            if progress is not None:
                progress(meta, row)
            if done or (cfg.checkpoint_every and meta["iteration"] % cfg.checkpoint_every == 0):
                snapshot()
                plot_curve(out, rows)
    except Interrupted:
        snapshot()
        raise
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    return meta
