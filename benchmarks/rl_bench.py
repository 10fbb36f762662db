"""mallocGame agent vs msa, the best heuristic and CP-SAT on held-out workloads (tiered mode).

    python benchmarks/rl_bench.py [--checkpoint PATH] [--simulations 8] [--ilp-time 10] [--train-dir out/train]

Instances: the shipped held-out graphs (memmap/rl/data/instances, families resnet50, bert_base,
ssd_mobilenet_tf, graphsage_tf: never used in training) that are 48-operator windows, at
scratchpad fractions 0.125, 0.25, 0.5 of the default schedule's peak live bytes, target npu-4mib.
Solvers: ``rl`` with search on the game's true transitions (``search="true"``, the default), the
same network and simulations searching with its learned dynamics (``search="learned"``), the same
network without search (``--simulations 0``), ``msa``,
``belady``, ``minpeak`` (best heuristic = the fastest of the three), ``ilp`` (CP-SAT, tiered,
``--ilp-time`` nominal seconds) with its lower bound on the modelled time for the default schedule (``info["schedule_bound"]``, used
when the ILP's plan keeps the default schedule). Every plan
goes through ``memmap.pipeline.run_solver`` (prefetch hoisting, the verifier, the cost model).
Dynamics check (:func:`dynamics_check`): on the positions the true-model search visits, how
often the learned dynamics' predicted reward ranks a truly best action first, and how often the
learned-model search picks the true-model search's action.
Writes the ``rl`` section of RESULTS.md and benchmarks/rl_results.json; copies the training
learning curve (``--train-dir``) to benchmarks/rl_learning_curve.png. Without ``--train-dir``
the training facts come from the checkpoint's metadata.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from memmap.pipeline import run_solver  # noqa: E402
from memmap.rl import instances  # noqa: E402
from memmap.rl.solver import RLSolverOptions, default_checkpoint  # noqa: E402

FRACTIONS = (0.125, 0.25, 0.5)
REWARD_TIE = 1e-12    # true one-step rewards within this of the best count as best (ties)


def dynamics_check(ck: str, inst, sims: int, seed: int = 0) -> dict:
    """Replay the true-model search's episode (as ``solve_rl`` plays it: same checkpoint, key,
    simulations, no Gumbel noise) and, at every position it visits, compare the learned model
    with the truth. Returns counts:

    * ``positions``: moves of the episode; ``decisive``: positions whose legal actions do not all
      have the same true one-step reward;
    * ``reward_top1``: decisive positions where the legal action with the largest reward
      predicted by the learned dynamics, ``g(h(x), a)``, has the largest true one-step reward
      (``game.step``; ties within REWARD_TIE all count as best);
    * ``chance``: the sum over decisive positions of (#best / #legal), the expected count of a
      uniformly random legal action;
    * ``search_agree``: positions where the learned-model search (same parameters,
      simulations, no noise) picks the action the true-model search picked;
    * ``true_onestep``: decisive positions where the true-model search's own action has the
      largest true one-step reward (the reference: how greedy the true-model search is);
    * ``time_s``: the episode's final modelled time (equal to the solver's ``game_time_s``).
    """
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from memmap.rl import game
    from memmap.rl.agent import Agent
    from memmap.rl.solver import _policy

    agent, params = _policy(ck, "true")
    learned = Agent(dataclasses.replace(agent.cfg, search="learned"))
    trs, _ = agent.play(params, jax.random.PRNGKey(seed), [inst], gumbel_scale=0.0, num_simulations=sims)
    tr = trs[0]
    T, A = tr.length, agent.A
    true_r = np.full((T, A), -np.inf)
    state = game.initial_state(inst)
    for t, a in enumerate(tr.action):
        opts = game.options(inst, state)
        for b in np.flatnonzero(opts.mask):
            true_r[t, b] = game.step(inst, state, int(b), opts)[1]
        state, _ = game.step(inst, state, int(a), opts)
    assert state.time_s == tr.time_s
    # learned dynamics: predicted reward of every action at every position
    s = agent.represent(params, jnp.asarray(tr.obs))
    _, pred_r = agent.dynamics(params, jnp.repeat(s, A, axis=0), jnp.tile(jnp.arange(A), T))
    pred_r = np.where(tr.mask, np.asarray(pred_r).reshape(T, A), -np.inf)
    best = true_r >= true_r.max(axis=1, keepdims=True) - REWARD_TIE
    legal = tr.mask.sum(axis=1)
    decisive = best.sum(axis=1) < legal
    hit = best[np.arange(T), pred_r.argmax(axis=1)]
    # the learned-model search at the same positions, in batches of a fixed size (one compile)
    pad = -T % 64
    X = np.concatenate([tr.obs, np.repeat(tr.obs[:1], pad, axis=0)])
    M = np.concatenate([tr.mask, np.repeat(tr.mask[:1], pad, axis=0)])
    acts = []
    for i in range(0, len(X), 64):
        a, _, _ = learned.search(params, jax.random.PRNGKey(seed), X[i:i + 64], M[i:i + 64],
                                 np.zeros(64, np.int32), gumbel_scale=0.0, num_simulations=sims)
        acts.append(np.asarray(a))
    acts = np.concatenate(acts)[:T]
    illegal = ~tr.mask[np.arange(T), acts]          # as Agent.play: the first legal action instead
    acts[illegal] = tr.mask[illegal].argmax(axis=1)
    return {"positions": int(T), "decisive": int(decisive.sum()), "reward_top1": int(hit[decisive].sum()),
            "chance": float((best.sum(axis=1) / legal)[decisive].sum()),
            "search_agree": int((acts == tr.action).sum()),
            "true_onestep": int(best[np.arange(T), tr.action][decisive].sum()), "time_s": float(tr.time_s)}


def run(args) -> list[dict]:
    specs = [s for s in instances.shipped("heldout") if "@" in s.name]
    if args.per_family:
        kept, count = [], {}
        for s in specs:
            count[s.family] = count.get(s.family, 0) + 1
            if count[s.family] <= args.per_family:
                kept.append(s)
        specs = kept
    if args.limit:
        specs = specs[:args.limit]
    rows = []
    ck = args.checkpoint or str(default_checkpoint())
    for spec in specs:
        g = instances.load_graph(spec.name)
        for frac in FRACTIONS:
            p = instances.make_problem(g, frac)
            row = {"instance": spec.name, "family": spec.family, "fraction": frac,
                   "capacity_bytes": p.target.capacity_bytes, "ops": g.num_ops}
            for name in ("msa", "belady", "minpeak"):
                row[name] = run_solver(p, name).metrics["modeled_time_s"]
            t0 = time.perf_counter()
            plan = run_solver(p, "rl", time_limit_s=600,
                              solver_options={"rl": RLSolverOptions(ck, args.simulations, search="true")})
            row["rl_s"] = time.perf_counter() - t0
            assert plan.info["search"] == "true" and plan.info["searched_moves"] == plan.info["moves"]
            row["rl"] = plan.metrics["modeled_time_s"]
            row["moves"] = plan.info["moves"]
            row["simulations"] = plan.info["simulations"]
            row["all_slow"] = plan.info["all_slow_time_s"]
            t0 = time.perf_counter()
            learned = run_solver(p, "rl", time_limit_s=600,
                                 solver_options={"rl": RLSolverOptions(ck, args.simulations, search="learned")})
            row["rl_learned_s"] = time.perf_counter() - t0
            assert learned.info["search"] == "learned" and learned.info["searched_moves"] == learned.info["moves"]
            row["rl_learned"] = learned.metrics["modeled_time_s"]
            t0 = time.perf_counter()
            row["rl_nosearch"] = run_solver(p, "rl", solver_options={"rl": RLSolverOptions(ck, 0)}).metrics["modeled_time_s"]
            row["rl_nosearch_s"] = time.perf_counter() - t0
            from memmap.rl import game

            check = dynamics_check(ck, game.make_instance(p, num_offsets=_num_offsets(ck)), row["simulations"])
            assert check["time_s"] == plan.info["game_time_s"], "the replay left the solver's episode"
            row["check"] = check
            if args.ilp_time > 0:
                ilp = run_solver(p, "ilp", time_limit_s=args.ilp_time)
                row["ilp"] = ilp.metrics["modeled_time_s"]
                # CP-SAT's lower bound on the modelled time holds for the ILP plan's schedule only: use it
                # when that is the default schedule (the one the game plays)
                same = tuple(ilp.schedule) == tuple(p.graph.default_schedule)
                row["ilp_bound"] = float(ilp.info.get("schedule_bound") or 0.0) if same else 0.0
            rows.append(row)
            print(f"{spec.name:26s} {frac:5} msa {row['msa']:.4e} best-h {min(row['msa'], row['belady'], row['minpeak']):.4e} "
                  f"rl {row['rl']:.4e} learned {row['rl_learned']:.4e} nosearch {row['rl_nosearch']:.4e} "
                  f"ilp {row.get('ilp', float('nan')):.4e} ({row['rl_s']:.1f} s, learned {row['rl_learned_s']:.1f} s)",
                  flush=True)
    return rows


def _num_offsets(ck: str) -> int:
    from memmap.rl.solver import _config

    return _config(ck)[1]


def _training_line(args, train_rows) -> str | None:
    curve = (ROOT / "benchmarks" / "rl_learning_curve.png").exists()
    tail = " Learning curve: ![learning curve](rl_learning_curve.png)" if curve else ""
    if train_rows:
        last = train_rows[-1]
        return (f"- training: {last['step']} learner steps, {last['episodes']} episodes, "
                f"{float(last['wall_s']) / 60:.0f} min wall, {float(last['cpu_s']) / 60:.0f} min CPU (trainer process); "
                f"self-play {float(last['moves_per_s']):.1f} moves/s, {float(last['simulations_per_s']):.0f} "
                f"simulations/s at the last iteration (from {args.train_dir}/metrics.csv).{tail}")
    import json

    import numpy as np

    ck = args.checkpoint or str(default_checkpoint())
    with np.load(ck, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
    if not all(k in meta for k in ("step", "episodes", "wall_s", "cpu_s")):
        return None
    line = (f"- training (from the checkpoint's metadata): {meta['step']} learner steps, {meta['episodes']} episodes, "
            f"{float(meta['wall_s']) / 60:.0f} min wall, {float(meta['cpu_s']) / 60:.0f} min CPU (trainer process)")
    # the self-play speed is not in the checkpoint (export_policy keeps these four only): pass
    # --train-dir with the run's metrics.csv for it
    return line + "." + tail


VARIANTS = (("rl", "rl_s", "rl (search, true model)"), ("rl_learned", "rl_learned_s", "rl (learned search)"),
            ("rl_nosearch", "rl_nosearch_s", "rl (no search)"))


def section(rows, args, train_rows) -> str:
    n = len(rows)
    eps = 1e-9
    gm = statistics.geometric_mean

    def cnt(f):
        return sum(1 for r in rows if f(r))

    not_worse = cnt(lambda r: r["rl"] <= r["msa"] * (1 + eps))
    better = cnt(lambda r: r["rl"] < r["msa"] * (1 - eps))
    best_h = lambda r: min(r["msa"], r["belady"], r["minpeak"])  # noqa: E731
    beats_h = cnt(lambda r: r["rl"] < best_h(r) * (1 - eps))
    sims = sorted({r["simulations"] for r in rows})
    sims_txt = "/".join(map(str, sims)) + (" (the checkpoint's)" if args.simulations is None else "")
    lines = ["## mallocGame agent (tiered mode, held-out workloads)", "",
             f"Generated by `python benchmarks/rl_bench.py {' '.join(sys.argv[1:])}` (2 CPU cores, shared machine: "
             "other jobs ran at the same time, so the speed numbers are noisy; modelled times are deterministic). "
             f"Checkpoint `{args.checkpoint or 'shipped (memmap/rl/data/checkpoints/tiered-v0.npz)'}`; "
             f"search: Gumbel MuZero (mctx), {sims_txt} simulations per move, no Gumbel noise, either with the "
             "game's true transitions (`search=\"true\"`, the default) or with the checkpoint's learned dynamics "
             "network (`search=\"learned\"`: same parameters, same simulations). Held-out = the 48-operator windows "
             "of resnet50.fwd, bert_base.fwd, ssd_mobilenet_tf and graphsage_tf (families never used in training), "
             "target npu-4mib, scratchpad = fraction x peak live bytes of the default schedule. Every plan is "
             "prefetch-hoisted, verified and scored by memmap.cost (modelled time, lower is better).", "",
             "### Summary", "",
             f"- rl (search, true model) no worse than msa on **{not_worse}/{n}** ({100 * not_worse / n:.0f}%; "
             f"target >= 90%), strictly better on **{better}/{n}** ({100 * better / n:.0f}%; target >= 50%).",
             f"- rl (search, true model) strictly better than the best heuristic (fastest of msa, belady, minpeak) on "
             f"**{beats_h}/{n}**; geometric-mean time ratio rl (true model) / best heuristic "
             f"{gm([r['rl'] / best_h(r) for r in rows]):.4f} (ratios to msa for each variant in the table below).",
             f"- learned search vs true-model search (same checkpoint and simulations): lower modelled time on "
             f"{cnt(lambda r: r['rl_learned'] < r['rl'] * (1 - eps))}/{n}, higher on "
             f"{cnt(lambda r: r['rl_learned'] > r['rl'] * (1 + eps))}/{n}, geometric-mean time ratio learned / true "
             f"**{gm([r['rl_learned'] / r['rl'] for r in rows]):.4f}**; learned search vs no search: lower on "
             f"{cnt(lambda r: r['rl_learned'] < r['rl_nosearch'] * (1 - eps))}/{n}, higher on "
             f"{cnt(lambda r: r['rl_learned'] > r['rl_nosearch'] * (1 + eps))}/{n}."]
    if any("ilp" in r for r in rows):
        with_b = [r for r in rows if r.get("ilp_bound", 0) > 0]
        if with_b:
            gaps = [(r["rl"] - r["ilp_bound"]) / r["ilp_bound"] for r in with_b]
            lines.append(f"- mean gap of rl (true model) to the ILP's lower bound on the modelled time: "
                         f"{100 * statistics.mean(gaps):.1f}% "
                         f"(over {len(with_b)} rows where the ILP kept the default schedule; the bound is CP-SAT's "
                         "roofline + DMA-throughput lower bound for that schedule (docs/ilp.md), not a proven optimum, "
                         "so this gap over-states the distance to the optimum).")
        lines.append(f"- ilp (CP-SAT, {args.ilp_time:g} s nominal) better than rl (true model) on "
                     f"{cnt(lambda r: r.get('ilp', 1e30) < r['rl'] * (1 - eps))}/{n}.")
    training = _training_line(args, train_rows)
    if training:
        lines.append(training)
    moves = sum(r["moves"] for r in rows)
    total_sims = sum(r["moves"] * r["simulations"] for r in rows)
    lines += ["", "| variant | no worse than msa | strictly better than msa | strictly better than best heuristic "
              "| geo-mean time / msa | moves/s | simulations/s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, sec, label in VARIANTS:
        wall = sum(r[sec] for r in rows)
        sims_per_s = "-" if key == "rl_nosearch" else f"{total_sims / wall:.0f}"
        lines.append(f"| {label} | {cnt(lambda r: r[key] <= r['msa'] * (1 + eps))}/{n} | "
                     f"{cnt(lambda r: r[key] < r['msa'] * (1 - eps))}/{n} | "
                     f"{cnt(lambda r: r[key] < best_h(r) * (1 - eps))}/{n} | {gm([r[key] / r['msa'] for r in rows]):.4f} | "
                     f"{moves / wall:.1f} | {sims_per_s} |")
    lines += ["", f"Speed = all moves of the {n} episodes / the wall seconds of their `run_solver` calls, including "
              "each variant's JAX compile (first row), instance setup, prefetch hoisting and verification; the "
              "variants ran one after the other on each row."]
    pos = sum(r["check"]["positions"] for r in rows)
    dec = sum(r["check"]["decisive"] for r in rows)
    top1 = sum(r["check"]["reward_top1"] for r in rows)
    chance = sum(r["check"]["chance"] for r in rows)
    agree = sum(r["check"]["search_agree"] for r in rows)
    onestep = sum(r["check"]["true_onestep"] for r in rows)
    lines += ["", "### Dynamics check", "",
              "Over the positions the true-model search visits (its episode replayed move for move: same checkpoint, "
              "key, simulations, no noise; the replay's final modelled time equals the solver's on every row). "
              "At each position `x` with legal actions `L`: the *true* one-step reward of `a` in `L` is "
              "`game.step`'s (T(before) - T(after)) / T0; the *predicted* one is the dynamics head's "
              "`g(h(x), a)` reward. A position is *decisive* when the true rewards over `L` are not all equal "
              f"(within {REWARD_TIE:g}). **Reward rank-1** = the fraction of decisive positions where the "
              "legal action with the largest predicted reward has the largest true reward (every action tied "
              "for best counts); *chance* = the same for a uniformly random legal action (mean of #best / #L). "
              "**Search agreement** = the fraction of all positions where the learned-model search, run at "
              "that position, picks the action the true-model search picked. The true one-step rewards are also "
              "in the observation (each candidate's immediate saving), so the reward head can read them off.", "",
              f"- reward rank-1: **{top1}/{dec}** decisive positions ({100 * top1 / max(dec, 1):.1f}%; chance "
              f"{100 * chance / max(dec, 1):.1f}%), of {pos} positions.",
              f"- search agreement: **{agree}/{pos}** ({100 * agree / max(pos, 1):.1f}%).",
              f"- for reference, the true-model search's own action has the largest true one-step reward on "
              f"{onestep}/{dec} decisive positions ({100 * onestep / max(dec, 1):.1f}%): it is not greedy, so a "
              "perfect reward head alone would not reproduce it."]
    lines += ["", "### Per instance (modelled time in microseconds; gap = (rl - ILP bound) / ILP bound)", "",
              "| instance | fraction | capacity KiB | all slow | msa | belady | minpeak | rl (search, true model) "
              "| rl (learned search) | rl (no search) | ilp | ilp bound | gap rl | rl vs msa | reward rank-1 "
              "| search agreement |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        us = lambda x: f"{1e6 * x:.1f}" if x is not None else "-"  # noqa: E731
        bound = r.get("ilp_bound") or 0
        gap = f"{100 * (r['rl'] - bound) / bound:.1f}%" if bound else "-"
        cmp_ = "better" if r["rl"] < r["msa"] * (1 - eps) else ("worse" if r["rl"] > r["msa"] * (1 + eps) else "tie")
        c = r["check"]
        lines.append(f"| {r['instance']} | {r['fraction']} | {r['capacity_bytes'] / 1024:.0f} | {us(r['all_slow'])} | "
                     f"{us(r['msa'])} | {us(r['belady'])} | {us(r['minpeak'])} | **{us(r['rl'])}** | "
                     f"{us(r['rl_learned'])} | {us(r['rl_nosearch'])} | "
                     f"{us(r.get('ilp'))} | {us(bound) if bound else '-'} | {gap} | {cmp_} | "
                     f"{c['reward_top1']}/{c['decisive']} | {c['search_agree']}/{c['positions']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--simulations", type=int, default=None)
    ap.add_argument("--ilp-time", type=float, default=10.0)
    ap.add_argument("--limit", type=int, default=0, help="only the first N held-out graphs (smoke runs)")
    ap.add_argument("--per-family", type=int, default=0, help="only the first N windows of each held-out family")
    ap.add_argument("--train-dir", default=None, help="training output folder (metrics.csv, learning_curve.png)")
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args()
    rows = run(args)
    train_rows = []
    if args.train_dir:   # else the training facts come from the checkpoint (_training_line)
        td = Path(args.train_dir)
        if (td / "metrics.csv").exists():
            train_rows = list(csv.DictReader(open(td / "metrics.csv")))
        if (td / "learning_curve.png").exists():
            shutil.copy(td / "learning_curve.png", ROOT / "benchmarks" / "rl_learning_curve.png")
    (ROOT / "benchmarks" / "rl_results.json").write_text(json.dumps(rows, indent=1) + "\n")
    md = section(rows, args, train_rows)
    print(md)
    from benchmarks.run import write_results

    write_results(Path(args.output), {"rl": md})
    return 0


if __name__ == "__main__":
    sys.exit(main())
