"""The ``memmap`` command line (docs/cli.md).

Exit codes: 0 success, 1 internal error, 2 bad input (missing/unreadable/malformed file, bad
size or flag, invalid plan), 3 infeasible, 4 time limit reached without an answer, 130
interrupted (Ctrl-C), 141 standard output closed before everything was written (``| head``:
silent). Errors are one line on stderr; ``--debug`` shows tracebacks. ``--time-limit`` bounds
the whole command's wall time, from the process's start (:mod:`memmap.limits`).
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
from memmap.errors import (EXIT_BAD_INPUT, EXIT_BROKEN_PIPE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK,
                           BadInputError, MemmapError, OneLineArgumentParser)

_Parser = OneLineArgumentParser
# Subcommands that parse their own arguments (``memmap alloc -h`` reaches alloc's parser).
_PASSTHROUGH = ("alloc", "cascade")


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

    from memmap.problem import PRESETS
    from memmap.solvers import SOLVERS

    o = sub.add_parser("optimize", help="plan an HLO program for a scratchpad",
                       description="Plan an HLO program: operator schedule, scratchpad offsets, "
                       "spills, reloads and prefetches (docs/cli.md).")
    _add_input(o)
    o.add_argument("--target", help=f"target preset: {', '.join(PRESETS)} (docs/cli.md); without "
                   "it, --scratchpad alone uses the 'custom' target")
    o.add_argument("--scratchpad", help="scratchpad capacity, e.g. 4MiB, 512KiB, 1048576 (overrides the preset's)")
    _add_target_numbers(o)
    o.add_argument("--mode", choices=["strict", "tiered"], default="strict",
                   help="strict: operands in the scratchpad (COSMA); tiered: operands may stay "
                   "off-chip (XLA memory space assignment) (default: strict)")
    o.add_argument("--solver", choices=[*SOLVERS, "best"], default="best", metavar="SOLVER",
                   help=f"{', '.join(SOLVERS)}, or best: run all and keep the best verified plan "
                   "(default: best)")
    o.add_argument("--time-limit", type=limits.parse_seconds, default=60.0, metavar="S",
                   help="wall-clock seconds for the whole command, from process start to the "
                   "written outputs; docs/cli.md (default: 60)")
    o.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    o.add_argument("--workers", type=int, default=2,
                   help="CP-SAT threads for the ilp solver; same seed and workers give the same plan "
                   "(default: 2)")
    o.add_argument("--activations-only", action="store_true",
                   help="parameters and constants stay off-chip (COSMA's activations-only setting)")
    o.add_argument("--checkpoint", help="rl solver: a memmap-train checkpoint (default: the shipped one)")
    o.add_argument("--simulations", type=int, help="rl solver: search simulations per move (0: no search)")
    o.add_argument("--search", choices=["true", "learned"], default=None,
                   help="rl solver: the model the search steps: the game's own transitions (true) or the "
                   "checkpoint's learned dynamics (learned) (default: true)")
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
    b.add_argument("--alignment", help="allocation alignment in bytes (default: 64, or the preset's)")
    b.add_argument("--json", action="store_true")

    c = sub.add_parser("cascade", help="FuseMax einsum cascades (see `memmap cascade -h`)", add_help=False)
    c.add_argument("rest", nargs=argparse.REMAINDER)

    a = sub.add_parser("alloc", help="fixed-lifetime allocation, MiniMalloc CSV (see `memmap alloc -h`)",
                       add_help=False)
    a.add_argument("rest", nargs=argparse.REMAINDER)
    return ap


def _add_target_numbers(p) -> None:
    """Flags that set the target's numbers (docs/cli.md: the 'custom' target's defaults)."""
    g = p.add_argument_group("target numbers (override the preset's; the 'custom' target's "
                             "defaults are 64 B, 100GB/s, 1TB/s, 10TFLOP/s, 1 DMA engine)")
    g.add_argument("--alignment", help="scratchpad alignment, a power of two: 64, 512B, 4KiB")
    g.add_argument("--offchip-bandwidth", metavar="RATE",
                   help="off-chip (DRAM/HBM) bandwidth: 25.6GB/s, 512GiB/s, or bytes/s")
    g.add_argument("--onchip-bandwidth", metavar="RATE",
                   help="scratchpad bandwidth seen by operators: 512GB/s, or bytes/s")
    g.add_argument("--compute", metavar="RATE", help="peak compute: 4TFLOP/s, 138e12 (FLOP/s)")
    g.add_argument("--dma-engines", type=int, metavar="N",
                   help="concurrent transfer queues sharing the off-chip bandwidth (1..1024)")


def _read_input(path: str, stage: str, train: bool = False):
    """The graph and the input paths (none for stdin). ``-`` reads HLO text from stdin."""
    from memmap.pipeline import load_graph, load_graph_text, read_stdin_text

    if path == "-":
        if train:
            raise BadInputError("--train applies to torch programs (.pt2) only, not to HLO text "
                                "on stdin")
        return load_graph_text(read_stdin_text(), where="<stdin>"), []
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{path}: no such file or directory")
    return load_graph(p, stage=stage, train=train), [p]


def cmd_optimize(args) -> int:
    from memmap.emit.hlo import has_hlo_module
    from memmap.pipeline import check_output_dir, check_output_writable, make_target, optimize, output_reserve_s

    outdir = Path(args.outdir)
    check_output_writable(outdir)
    target = make_target(args.target, args.scratchpad, alignment_bytes=args.alignment,
                         offchip_bandwidth=args.offchip_bandwidth,
                         onchip_bandwidth=args.onchip_bandwidth, compute=args.compute,
                         dma_engines=args.dma_engines)
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
        if args.checkpoint is not None or args.simulations is not None or args.search is not None:
            from memmap.rl.solver import RLSolverOptions

            solver_options = {"rl": RLSolverOptions(checkpoint=args.checkpoint, simulations=args.simulations,
                                                    search=args.search or "true")}
        t0 = time.perf_counter()
        # the solvers stop early enough to verify the plan and write the outputs in time
        reserve = output_reserve_s(graph, plot=not args.no_plot, annotate=has_hlo_module(graph))
        with console.status("importing done; solving...") as status, \
                limits.time_limit(at=limits.deadline() - reserve):
            plan = optimize(graph, target=target, mode=args.mode,
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


def cmd_cascade(argv: list[str]) -> int:
    from memmap.cascade.cli import main as cascade_main

    return cascade_main(argv)


def cmd_alloc(argv: list[str]) -> int:
    from memmap.ilp.alloc_cli import main as alloc_main

    return alloc_main(argv)


def _stdout_gone() -> int:
    """The reader of stdout left (``memmap ... --json | head``): stop quietly like a Unix tool.
    Further writes (the interpreter's final flush included) go to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (tests)
        pass
    return EXIT_BROKEN_PIPE


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")   # keep XLA's C++ info logs off stderr
    # a shell command's time limit counts from the process's start (interpreter and imports)
    from_shell = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    k = 0
    while k < len(argv) and argv[k] == "--debug":
        k += 1
    if k < len(argv) and argv[k] in _PASSTHROUGH:  # they parse their own arguments, -h included
        handler, arg, debug = (cmd_alloc if argv[k] == "alloc" else cmd_cascade), argv[k + 1:], k > 0
    else:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:   # argparse: --help (0) or a one-line usage error (2)
            return int(e.code or 0)
        handlers = {"optimize": cmd_optimize, "verify": cmd_verify, "budgets": cmd_budgets}
        handler, arg, debug = handlers[args.cmd], args, args.debug
    with limits.command(from_process_start=from_shell):
        code = _run(handler, arg, debug, from_shell)
    if from_shell:
        # the answer is out: end the process now. Python's own shutdown (XLA's client, CP-SAT,
        # numba) takes 1-1.5 s on a loaded machine, which would count past the time limit.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):
                stream.flush()
        os._exit(code)
    return code


def _run(handler, arg, debug: bool, from_shell: bool) -> int:
    """Run one subcommand; every failure becomes one line on stderr and its exit code."""
    try:
        # a process of its own (not main([...]) from Python): Ctrl-C and the watchdog
        with limits.watch() if from_shell else contextlib.nullcontext():
            code = handler(arg)
            sys.stdout.flush()
            return code
    except BrokenPipeError:
        return _stdout_gone()
    except SystemExit as e:  # a subcommand's own argparse: -h (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else EXIT_BAD_INPUT
    except MemmapError as e:
        if debug:
            raise
        print(f"memmap: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("memmap: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the one place that turns bugs into exit 1
        if debug:
            raise
        print(f"memmap: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              f"(rerun with --debug for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL



if __name__ == "__main__":
    sys.exit(main())
