"""The ``memmap`` command line (docs/cli.md).

Exit codes: 0 success, 1 internal error, 2 bad input (missing/unreadable/malformed file, bad
size or flag, invalid plan), 3 infeasible, 4 time limit reached without an answer, 130
interrupted (Ctrl-C). Errors are one line on stderr; ``--debug`` shows tracebacks.
``--time-limit`` bounds the whole command's wall time, from the process's start
(:mod:`memmap.limits`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from memmap import limits
from memmap.errors import (EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, BadInputError,
                           MemmapError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _progress():
    """A rich status line on stderr (shown on terminals; silent otherwise)."""
    from rich.console import Console

    console = Console(stderr=True)
    return console


def _add_input(sp):
    sp.add_argument("input", help="HLO text file, XLA dump folder (--xla_dump_to), torch.export "
                    "program (.pt2, needs memmap[torch]) or '-' for stdin")
    sp.add_argument("--stage", choices=["after", "before"], default="after",
                    help="for dump folders: *after_optimizations.txt (default) or *before_optimizations.txt")
    sp.add_argument("--train", action="store_true",
                    help="for .pt2 programs: import forward + backward (loss = first output)")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="memmap", description="Accelerator memory mapping: operator scheduling, "
                 "scratchpad allocation and tensor replacement for XLA HLO programs.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    o = sub.add_parser("optimize", help="plan an HLO program for a scratchpad")
    _add_input(o)
    o.add_argument("--target", help="target preset (npu-4mib, tpu-cmem-32mib, fusemax)")
    o.add_argument("--scratchpad", help="scratchpad capacity, e.g. 4MiB, 512KiB, 1048576 (overrides the preset's)")
    o.add_argument("--mode", choices=["strict", "tiered"], default="strict")
    o.add_argument("--solver", default="best", help="msa, belady, minpeak, ilp, rl, or best (all, keep the best)")
    o.add_argument("--time-limit", type=limits.parse_seconds, default=60.0, metavar="S",
                   help="wall-clock seconds for the whole command, from process start to the "
                   "written outputs (default 60; docs/cli.md)")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--workers", type=int, default=2,
                   help="CP-SAT threads for the ilp solver (default 2); same seed and workers give the same plan")
    o.add_argument("--activations-only", action="store_true",
                   help="parameters and constants stay off-chip (COSMA's activations-only setting)")
    o.add_argument("--checkpoint", help="rl solver: a memmap-train checkpoint (default: the shipped one)")
    o.add_argument("--simulations", type=int, help="rl solver: search simulations per move (0: no search)")
    o.add_argument("-o", "--outdir", required=True,
                   help="directory for plan.json, annotated.hlo, report.md, timeline.png")
    o.add_argument("--json", action="store_true", help="print one JSON object with the result on stdout")
    o.add_argument("--no-plot", action="store_true", help="skip timeline.png")

    v = sub.add_parser("verify", help="re-check and re-score a plan (plan.json, or annotated HLO alone)")
    _add_input(v)
    v.add_argument("plan", nargs="?",
                   help="plan.json written by memmap optimize; without it INPUT is an annotated.hlo")
    v.add_argument("--json", action="store_true")

    b = sub.add_parser("budgets", help="COSMA's budgets M_R, M_P, M_H")
    _add_input(b)
    b.add_argument("--activations-only", action="store_true")
    b.add_argument("--target", help="take the alignment from this preset")
    b.add_argument("--alignment", type=int, help="allocation alignment in bytes (default 64)")
    b.add_argument("--json", action="store_true")

    c = sub.add_parser("cascade", help="FuseMax einsum cascades (see `memmap cascade -h`)", add_help=False)
    c.add_argument("rest", nargs=argparse.REMAINDER)

    a = sub.add_parser("alloc", help="fixed-lifetime allocation, MiniMalloc CSV (see `memmap alloc -h`)",
                       add_help=False)
    a.add_argument("rest", nargs=argparse.REMAINDER)
    return ap


def _read_input(path: str, stage: str, train: bool = False):
    from memmap.pipeline import load_graph

    if path == "-":
        return load_graph(sys.stdin.read(), stage=stage, train=train), []
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{path}: no such file or directory")
    return load_graph(p, stage=stage, train=train), [p]


def cmd_optimize(args) -> int:
    from memmap.emit.hlo import has_hlo_module
    from memmap.pipeline import check_output_dir, optimize, output_reserve_s

    outdir = Path(args.outdir)
    console = _progress()
    with limits.command_time_limit(args.time_limit):
        with console.status(f"importing {args.input}..."):
            graph, inputs = _read_input(args.input, args.stage, args.train)
        limits.checkpoint("importing")
        check_output_dir(outdir, inputs)
        if not args.no_plot:       # import matplotlib now, so that only drawing is left at the end
            with console.status("loading matplotlib..."):
                import matplotlib

                matplotlib.use("Agg")
                import matplotlib.pyplot  # noqa: F401
        solver_options = None
        if args.checkpoint is not None or args.simulations is not None:
            from memmap.rl.solver import RLSolverOptions

            solver_options = {"rl": RLSolverOptions(checkpoint=args.checkpoint, simulations=args.simulations)}
        t0 = time.perf_counter()
        # the solvers stop early enough to verify the plan and write the outputs in time
        reserve = output_reserve_s(graph, plot=not args.no_plot, annotate=has_hlo_module(graph))
        with console.status("importing done; solving...") as status, \
                limits.time_limit(at=limits.deadline() - reserve):
            plan = optimize(graph, target=args.target, scratchpad=args.scratchpad, mode=args.mode,
                            solver=args.solver, time_limit_s=args.time_limit, seed=args.seed,
                            activations_only=args.activations_only, workers=args.workers,
                            solver_options=solver_options,
                            progress=lambda msg: status.update(f"{msg} ({time.perf_counter() - t0:.1f} s)"))
        limits.answered()          # a verified plan: the time-limit net leaves the writing alone
        plan_path = outdir / "plan.json"
        with console.status(f"writing {outdir}/..."):
            from memmap.emit.hlo import emit_hlo

            # HLO inputs: the annotated module, made before anything is written (it may refuse)
            annotated = emit_hlo(graph, plan) if has_hlo_module(graph) else None
            annotated_path = outdir / "annotated.hlo" if annotated is not None else None
            _write_outputs(plan, outdir, args, annotated=annotated)
    m = plan.metrics
    if args.json:
        out = {"solver": plan.solver, "status": plan.status,
               "noncompulsory_bytes": m["noncompulsory_bytes"], "compulsory_bytes": m["compulsory_bytes"],
               "peak_scratchpad_bytes": m["peak_scratchpad_bytes"], "modeled_time_s": m["modeled_time_s"],
               "solve_time_s": plan.solve_time_s, "plan_path": str(plan_path),
               "annotated_hlo_path": str(annotated_path) if annotated_path else None,
               "mode": plan.problem.mode, "capacity_bytes": plan.problem.target.capacity_bytes,
               "comparison": plan.info.get("comparison", [])}
        print(json.dumps(out))
    else:
        print(f"{plan.solver}: non-compulsory {m['noncompulsory_bytes']} B, compulsory {m['compulsory_bytes']} B, "
              f"peak {m['peak_scratchpad_bytes']} B of {plan.problem.target.capacity_bytes} B, "
              f"modelled {m['modeled_time_s'] * 1e3:.4f} ms -> {outdir}/")
    return EXIT_OK


def _write_outputs(plan, outdir: Path, args, *, annotated: str | None = None) -> None:
    """plan.json, annotated.hlo (``annotated``: HLO inputs), report.md and timeline.png, all or
    none (:class:`memmap.limits.OutputFiles`); a folder this call creates is removed again when
    writing fails."""
    from memmap.report import plan_report

    created = not outdir.exists()
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        with limits.OutputFiles(outdir) as out:
            out.write_text("plan.json", plan.to_json() + "\n")
            if annotated is not None:
                out.write_text("annotated.hlo", annotated)
            out.write_text("report.md", plan_report(plan, input_name=args.input))
            if not args.no_plot:
                from memmap.timeline import draw_timeline

                draw_timeline(plan, out.path("timeline.png"))
            out.commit()
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                outdir.rmdir()
        raise


def cmd_verify(args) -> int:
    from memmap.cost import simulate
    from memmap.plan import Plan
    from memmap.verify import verify_plan

    if args.plan is None:   # INPUT is annotated HLO: the plan is read back from it
        from memmap.emit.hlo_plan import import_plan

        source = sys.stdin.read() if args.input == "-" else Path(args.input)
        plan = import_plan(source)
        result = verify_plan(plan)
        plan_name = args.input
    else:
        plan_name = args.plan
        graph, _ = _read_input(args.input, args.stage, args.train)
        plan = Plan.from_json(Path(args.plan))
        result = verify_plan(plan, graph=graph)
    metrics = simulate(plan) if result.ok else {}
    if args.json:
        print(json.dumps({"valid": result.ok, "errors": list(result.errors), "metrics": metrics}))
    elif result.ok:
        print(f"valid: non-compulsory {metrics['noncompulsory_bytes']} B, peak {metrics['peak_scratchpad_bytes']} B, "
              f"modelled {metrics['modeled_time_s'] * 1e3:.4f} ms")
    if not result.ok:
        if not args.json:
            print(f"memmap: error: invalid plan {plan_name}: {result.reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def cmd_budgets(args) -> int:
    from memmap.budgets import compute_budgets
    from memmap.pipeline import make_target
    from memmap.problem import Problem, Target, format_bytes

    graph, _ = _read_input(args.input, args.stage, args.train)
    tgt = make_target(args.target or Target("custom", 1 << 50, source="memmap budgets"), None,
                      alignment_bytes=args.alignment)
    with _progress().status("searching a min-peak schedule and a spill-free allocation..."):
        b = compute_budgets(Problem(graph, tgt.with_capacity(1 << 50), "strict", args.activations_only))
    d = b.to_dict() | {"alignment_bytes": tgt.alignment_bytes, "activations_only": args.activations_only,
                       "num_ops": len(graph.ops)}
    if args.json:
        print(json.dumps(d))
    else:
        print(f"M_R = {b.m_r_bytes} B ({format_bytes(b.m_r_bytes)})  M_H = {b.m_h_bytes} B  "
              f"M_P = {b.m_p_bytes} B ({format_bytes(b.m_p_bytes)}, {d['m_p_kind']})")
    return EXIT_OK


def cmd_cascade(args) -> int:
    try:
        from memmap.cascade.cli import main as cascade_main
    except ImportError as e:  # pragma: no cover - present in the package
        raise MemmapError(f"cascade tools unavailable: {e}") from None
    return cascade_main(list(args.rest))


def cmd_alloc(args) -> int:
    from memmap.ilp.alloc_cli import main as alloc_main

    return alloc_main(list(args.rest))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")   # keep XLA's C++ info logs off stderr
    # a shell command's time limit counts from the process's start (interpreter and imports)
    from_shell = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:   # argparse: --help (0) or a one-line usage error (2)
        return int(e.code or 0)
    handlers = {"optimize": cmd_optimize, "verify": cmd_verify, "budgets": cmd_budgets,
                "cascade": cmd_cascade, "alloc": cmd_alloc}
    with limits.command(from_process_start=from_shell):
        code = _run(handlers[args.cmd], args, from_shell)
    if from_shell:
        # the answer is out: end the process now. Python's own shutdown (XLA's client, CP-SAT,
        # numba) takes 1-1.5 s on a loaded machine, which would count past the time limit.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):
                stream.flush()
        os._exit(code)
    return code


def _run(handler, args, from_shell: bool) -> int:
    try:
        # a process of its own (not main([...]) from Python): Ctrl-C and the watchdog
        with limits.watch() if from_shell else contextlib.nullcontext():
            return handler(args)
    except MemmapError as e:
        if args.debug:
            raise
        print(f"memmap: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("memmap: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the one place that turns bugs into exit 1
        if args.debug:
            raise
        print(f"memmap: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              f"(rerun with --debug for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
