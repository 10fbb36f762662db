"""``memmap-train``: train the mallocGame agent (docs/rl.md).

Exit codes: 0 done, 1 internal error, 2 bad arguments (one line), 130 interrupted (after
writing the checkpoint; rerun with ``--resume`` to continue).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from memmap.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK

EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="memmap-train", description="Train the mallocGame MuZero-style agent (self-play + learner).")
    ap.add_argument("--out", required=True, help="output folder: checkpoint.npz, metrics.csv, learning_curve.png")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz (same arguments)")
    ap.add_argument("--steps", type=int, default=2000, help="learner updates in total (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", choices=["tiered", "strict"], default="tiered")
    ap.add_argument("--instances", choices=["train", "random", "mixed"], default="train",
                    help="self-play graphs: the shipped train split, random graphs, or both")
    ap.add_argument("--num-ops", type=int, default=32, help="operators of random graphs")
    ap.add_argument("--games", type=int, default=4, help="self-play episodes per iteration")
    ap.add_argument("--updates", type=int, default=16, help="learner updates per iteration")
    ap.add_argument("--simulations", type=int, default=8, help="search simulations per move")
    ap.add_argument("--search", choices=["true", "learned"], default="true",
                    help="search model: the game's own transitions (default) or MuZero's learned dynamics")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--unroll", type=int, default=3, help="dynamics unroll steps")
    ap.add_argument("--td-steps", type=int, default=10, help="n of the n-step value targets")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--replay", type=int, default=50_000, help="replay capacity in positions")
    ap.add_argument("--eval-every", type=int, default=10, help="iterations between held-out evaluations (0: never)")
    ap.add_argument("--eval-instances", type=int, default=4)
    ap.add_argument("--checkpoint-every", type=int, default=5, help="iterations between checkpoints")
    ap.add_argument("--ray", action="store_true", help="self-play in Ray actors (pip install 'memmap[ray]')")
    ap.add_argument("--ray-actors", type=int, default=2)
    ap.add_argument("--ray-cpus", type=int, default=None, help="num_cpus for ray.init (default: all)")
    ap.add_argument("--export-policy", metavar="FILE",
                    help="write OUT/checkpoint.npz's configuration and parameters (no optimiser, no replay) to FILE "
                         "for memmap optimize --solver rl --checkpoint FILE, and exit")
    ap.add_argument("--quiet", action="store_true", help="no progress display")
    ap.add_argument("--debug", action="store_true", help="tracebacks on errors")
    return ap


def _config(args):
    from memmap.rl.agent import AgentConfig
    from memmap.rl.learner import LearnerConfig
    from memmap.rl.train import TrainConfig

    return TrainConfig(
        steps=args.steps, seed=args.seed, mode=args.mode, instances=args.instances, num_ops=args.num_ops,
        games_per_iter=args.games, updates_per_iter=args.updates, replay_positions=args.replay,
        eval_every=args.eval_every, eval_instances=args.eval_instances, checkpoint_every=args.checkpoint_every,
        ray_actors=args.ray_actors if args.ray else 0,
        agent=AgentConfig(hidden=args.hidden, latent=args.latent, num_simulations=args.simulations, search=args.search),
        learner=LearnerConfig(batch_size=args.batch_size, unroll_steps=args.unroll, td_steps=args.td_steps,
                              learning_rate=args.lr))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    ap = build_parser()
    try:
        args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        return int(e.code or 0)
    prog = "memmap-train"
    try:
        cfg = _config(args)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = Path(args.out)
    if args.export_policy:
        from memmap.rl.train import export_policy

        try:
            meta = export_policy(out / "checkpoint.npz", args.export_policy)
        except ValueError as e:
            print(f"{prog}: error: {str(e).splitlines()[0]}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"policy at step {meta.get('step')} -> {args.export_policy}")
        return EXIT_OK
    if out.exists() and not out.is_dir():
        print(f"{prog}: error: {out}: exists and is not a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.resume and not (out / "checkpoint.npz").exists():
        print(f"{prog}: error: {out / 'checkpoint.npz'}: no checkpoint to resume", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.resume and (out / "checkpoint.npz").exists():
        print(f"{prog}: error: {out / 'checkpoint.npz'} exists; pass --resume to continue it or choose another --out",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    ray_init = None
    if args.ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            print(f"{prog}: error: --ray needs Ray: pip install 'memmap[ray]'", file=sys.stderr)
            return EXIT_BAD_INPUT
        ray_init = {"num_cpus": args.ray_cpus, "include_dashboard": False, "log_to_driver": False}
    from memmap.rl.train import Interrupted, train

    try:
        if args.quiet:
            meta = train(cfg, out, resume=args.resume, ray_init=ray_init)
        else:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(stderr=True)
            with Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TextColumn("{task.fields[status]}"), console=console) as bar:
                task = bar.add_task("train", total=cfg.steps, status="self-play...")

                def progress(meta, row):
                    ev = row.get("eval_time_ratio")
                    status = (f"it {row['iteration']} T/T0 {row.get('time_ratio_mean', float('nan')):.3f} "
                              f"loss {row.get('loss', float('nan')):.3f} {row.get('moves_per_s', 0):.0f} moves/s")
                    if ev is not None:
                        status += f" | held-out {ev:.3f} (greedy {row['eval_greedy_ratio']:.3f})"
                    bar.update(task, completed=meta["step"], status=status)

                meta = train(cfg, out, resume=args.resume, progress=progress, ray_init=ray_init)
    except Interrupted:
        print(f"{prog}: interrupted; checkpoint written to {out / 'checkpoint.npz'} (rerun with --resume)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValueError as e:
        print(f"{prog}: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # noqa: BLE001 - the one place that turns bugs into exit 1
        if args.debug:
            raise
        print(f"{prog}: internal error: {type(e).__name__}: {e} (rerun with --debug)", file=sys.stderr)
        return EXIT_INTERNAL
    print(f"done: {meta['step']} steps, {meta['episodes']} episodes, {meta['wall_s']:.0f} s wall, "
          f"{meta['cpu_s']:.0f} s CPU -> {out}/")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
