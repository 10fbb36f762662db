"""import -> solve -> prefetch -> verify -> score, as named stages. Used by the API and the CLI."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from memmap import limits
from memmap.cost import simulate
from memmap.errors import BadInputError, InfeasibleError, MemmapError, SolverTimeoutError
from memmap.ir.graph import Graph, GraphError
from memmap.plan import Plan
from memmap.prefetch import hoist_prefetches
from memmap.problem import MODES, Problem, Target, get_target, parse_rate, parse_size  # noqa: F401
from memmap.solvers import SOLVERS
from memmap.verify import verify_plan

ProgressFn = Callable[[str], None]


class SolverFailed(MemmapError):
    """A solver produced a plan that the verifier rejected (a bug in that solver)."""


def load_graph(source: str | os.PathLike, *, stage: str = "after", train: bool = False) -> Graph:
    """Import an HLO file, HLO text, an XLA dump folder, or a ``torch.export.save`` program
    (``.pt2``, or any zip archive; ``train=True`` adds its backward, see
    :func:`memmap.ir.torch_import.import_pt2`). Errors become :class:`BadInputError`."""
    from memmap.ir.hlo import import_hlo

    if stage not in ("before", "after"):
        raise BadInputError(f"invalid stage {stage!r}; expected 'before' or 'after'")
    if is_torch_program(source):
        from memmap.ir.torch_import import TorchImportError, import_pt2

        try:
            return import_pt2(source, train=train)
        except TorchImportError as e:
            raise BadInputError(str(e)) from None
    if train:
        raise BadInputError(f"{source}: --train applies to torch programs (.pt2) only; an HLO "
                            f"module is imported as it is (export the training step itself)")
    return _bad_input(lambda: import_hlo(source, stage=stage), source)


def load_graph_text(text: str, *, where: str = "<string>") -> Graph:
    """Import HLO module text (for example read from standard input; ``where`` names it in
    errors). Empty text and every import error become :class:`BadInputError`."""
    from memmap.ir.hlo import import_hlo_text

    return _bad_input(lambda: import_hlo_text(text, where=where, source=where), where)


def read_stdin_text() -> str:
    """HLO text from standard input (the CLI's ``-``); not UTF-8, empty or only whitespace
    raise :class:`BadInputError` naming ``<stdin>``."""
    import sys

    stream = getattr(sys.stdin, "buffer", sys.stdin)
    data = stream.read()
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadInputError(f"<stdin>: not HLO text (byte 0x{data[e.start]:02x} at offset "
                                f"{e.start} is not UTF-8)") from None
    if not data.strip():
        raise BadInputError("<stdin>: empty input; pipe HLO module text into '-' "
                            "(e.g. memmap optimize - --scratchpad 4MiB -o out < model.hlo)")
    return data


def _bad_input(importer: Callable[[], Graph], source) -> Graph:
    from memmap.ir.hlo import HloImportError

    try:
        return importer()
    except HloImportError as e:
        raise BadInputError(str(e)) from None
    except GraphError as e:
        raise BadInputError(f"{source}: {e}") from None


def is_torch_program(source: str | os.PathLike) -> bool:
    """A path to a ``.pt2`` file or to a zip archive (``torch.export.save`` writes zips; HLO is
    text)."""
    if isinstance(source, str) and "\n" in source:
        return False
    p = Path(source)
    try:
        if not p.is_file():
            return False
        if p.suffix == ".pt2":
            return True
        with open(p, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def make_target(target: str | Target | None = None, scratchpad: str | int | None = None, *,
                alignment_bytes: str | int | None = None,
                offchip_bandwidth: str | float | None = None,
                onchip_bandwidth: str | float | None = None,
                compute: str | float | None = None, dma_engines: int | None = None) -> Target:
    """A preset (by name) or a Target, with the capacity overridden by ``scratchpad``
    (``4MiB``, ``512KiB``, bytes). With neither, a clear error. Without a preset the target is
    ``custom``: the :class:`~memmap.problem.Target` defaults (64 B alignment, 100 GB/s
    off-chip, 1 TB/s on-chip, 10 TFLOP/s, one DMA engine). Any of its numbers can be set:
    ``alignment_bytes`` (a size), ``offchip_bandwidth`` / ``onchip_bandwidth`` (``25.6GB/s``,
    bytes/s), ``compute`` (``4TFLOP/s``, FLOP/s), ``dma_engines``; bad values raise
    :class:`BadInputError`."""
    if target is None and scratchpad is None:
        raise BadInputError("give a target preset (--target) or a scratchpad size (--scratchpad)")
    if isinstance(target, Target):
        tgt = target
    elif target is not None:
        tgt = get_target(target)
    else:
        tgt = Target(name="custom", capacity_bytes=1,
                     source="custom target: the defaults of memmap.problem.Target unless set "
                            "explicitly (docs/cli.md)")
    if scratchpad is not None:
        tgt = tgt.with_capacity(parse_size(scratchpad))
    changes: dict = {}
    if alignment_bytes is not None:
        changes["alignment_bytes"] = parse_size(alignment_bytes)
    if offchip_bandwidth is not None:
        changes["offchip_bandwidth_bytes_per_s"] = parse_rate(offchip_bandwidth, "bandwidth")
    if onchip_bandwidth is not None:
        changes["onchip_bandwidth_bytes_per_s"] = parse_rate(onchip_bandwidth, "bandwidth")
    if compute is not None:
        changes["compute_flops_per_s"] = parse_rate(compute, "compute")
    if dma_engines is not None:
        changes["dma_engines"] = int(dma_engines)
    return dataclasses.replace(tgt, **changes) if changes else tgt


def _ranking_key(mode: str):
    if mode == "strict":
        return lambda m: (m["noncompulsory_bytes"], m["modeled_time_s"])
    return lambda m: (m["modeled_time_s"], m["noncompulsory_bytes"])


# --solver best: the rl solver's share of the time limit. It runs after the baselines and before
# the ILP, which gets the rest (its nominal budget is taken from that rest). The agent is trained
# for tiered mode (docs/rl.md); in strict mode it is playable, not trained, so it gets less.
RL_SHARE = {"tiered": 0.5, "strict": 0.2}


def _time_shares(names: list[str], mode: str, time_limit_s: float) -> dict[str, float]:
    """``best``: the ``time_limit_s`` each solver is given (a function of the limit only, so
    the deterministic budgets derived from it do not depend on the machine's speed); solvers
    not named get the whole limit (the baselines take no budget; the deadline cuts them)."""
    if len(names) < 2 or "rl" not in names:
        return {}
    rl = RL_SHARE[mode] * time_limit_s
    return {"rl": rl, "ilp": time_limit_s - rl}


def _run_order(names: list[str]) -> list[str]:
    """The ILP last: it uses whatever time the others leave, starting from their plans."""
    return [n for n in names if n != "ilp"] + [n for n in names if n == "ilp"]


def verify_reserve_s(problem: Problem) -> float:
    """Seconds kept after a solver's deadline to hoist prefetches, verify and score its plan
    (measured: 0.35 s for the 1711 operators of resnet50.train.after on the loaded 2-core
    machine; twice that, plus a constant)."""
    return 0.1 + 4e-4 * problem.graph.num_ops


def output_reserve_s(graph: Graph, *, plot: bool, annotate: bool = False) -> float:
    """Seconds ``memmap optimize`` keeps after the solvers' deadline: verifying and scoring the
    plan, plan.json, report.md, (``annotate``) annotated.hlo and (``plot``) timeline.png,
    matplotlib already imported (measured on the loaded 2-core machine: drawing 2.2 s for
    small_cnn_train's 136 residencies, 4.1 s for resnet50.train.after's 2596; plan.json and
    report.md 0.3-1.2 s; annotating 1.5-2.3 s for the 1,700-6,900-instruction zoo programs,
    benchmarks/RESULTS.md's emit section)."""
    return (0.3 + 6e-4 * graph.num_ops + ((2.5 + 1e-3 * graph.num_ops) if plot else 0.0)
            + ((0.3 + 1.2e-3 * graph.num_ops) if annotate else 0.0))


def run_solver(problem: Problem, name: str, *, seed: int = 0, time_limit_s: float = 60.0,
               prefetch: bool = True, workers: int = 2, progress: ProgressFn | None = None,
               solver_options: dict | None = None, given: tuple[Plan, ...] = ()) -> Plan:
    """Run one solver, hoist its prefetches, verify and score the plan. ``workers``: solver
    threads (CP-SAT; the heuristics are single-threaded). ``solver_options``: solver name -> its
    options object (``rl``: ``memmap.rl.solver.RLSolverOptions``). ``time_limit_s`` bounds the
    wall time of the call (as does a deadline of :mod:`memmap.limits`, when one is set); the
    solver stops :func:`verify_reserve_s` before it. ``given``: verified plans of other solvers
    on the same problem (the ILP starts from them instead of running the baselines again).
    Raises :class:`memmap.limits.TimeLimitReached` when the deadline passes before the solver
    has a plan."""
    if workers < 1:
        raise BadInputError(f"workers must be >= 1, got {workers}")
    try:
        fn = SOLVERS[name]
    except KeyError:
        raise BadInputError(f"unknown solver {name!r}; available: {', '.join(sorted(SOLVERS))}, best") from None
    t0 = time.perf_counter()
    extra = {"options": solver_options[name]} if solver_options and name in solver_options else {}
    with limits.time_limit(time_limit_s):
        with limits.time_limit(at=limits.deadline() - verify_reserve_s(problem)):
            plan = fn(problem, seed=seed, time_limit_s=time_limit_s, workers=workers, progress=progress,
                      given=given, **extra)
        if prefetch:
            plan = hoist_prefetches(plan)
        plan.solve_time_s = time.perf_counter() - t0
        result = verify_plan(plan)
        if not result.ok:
            raise SolverFailed(f"solver {name!r} produced an invalid plan: {result.reason}")
        plan.metrics = simulate(plan)
    return plan


def optimize(graph: Graph, *, target: str | Target | None = None, scratchpad: str | int | None = None,
             mode: str = "strict", solver: str = "best", time_limit_s: float = 60.0, seed: int = 0,
             activations_only: bool = False, progress: ProgressFn | None = None, workers: int = 2,
             solver_options: dict | None = None) -> Plan:
    """Plan ``graph`` for a target: schedule, scratchpad offsets, spills/reloads/prefetches.

    ``time_limit_s`` bounds the wall time of the whole call (and a deadline of
    :mod:`memmap.limits`, when one is set, too: the CLI sets one for the whole command).
    ``solver="best"`` runs the baselines, then ``rl`` with its share of the limit
    (:data:`RL_SHARE`), then the ILP with the rest (starting from the baselines' plans), and
    keeps the best verified plan (strict: fewest non-compulsory bytes, then modelled time;
    tiered: modelled time first; ties: the registry's order); the comparison is in
    ``plan.info["comparison"]``. At the deadline the best verified plan so far is returned;
    with none, :class:`SolverTimeoutError` (exit 4). ``workers``: CP-SAT threads (same seed
    and workers give the same plan when no deadline cuts a search). Raises
    :class:`InfeasibleError` (strict mode below M_R) and :class:`BadInputError` for bad
    options.
    """
    if mode not in MODES:
        raise BadInputError(f"invalid mode {mode!r}; expected one of {', '.join(MODES)}")
    if workers < 1:
        raise BadInputError(f"--workers must be >= 1, got {workers}")
    if not time_limit_s > 0:
        raise BadInputError(f"time limit must be positive, got {time_limit_s}")
    tgt = make_target(target, scratchpad)
    problem = Problem(graph, tgt, mode, activations_only)
    problem.check_feasible()
    names = list(SOLVERS) if solver == "best" else [solver]
    if solver != "best" and solver not in SOLVERS:
        raise BadInputError(f"unknown solver {solver!r}; available: {', '.join(sorted(SOLVERS))}, best")
    plans: list[Plan] = []
    failures: dict[str, str] = {}
    timed_out = False
    shares = _time_shares(names, mode, time_limit_s)
    with limits.time_limit(time_limit_s):
        for name in _run_order(names):
            if progress:
                progress(f"solving with {name}")
            try:
                plans.append(run_solver(problem, name, seed=seed, time_limit_s=shares.get(name, time_limit_s),
                                        workers=workers, progress=progress, solver_options=solver_options,
                                        given=tuple(plans)))
            except InfeasibleError:
                raise
            except MemmapError as e:
                if solver != "best":
                    raise
                failures[name] = str(e)
                timed_out = timed_out or isinstance(e, SolverTimeoutError)
                if timed_out and limits.expired():
                    break          # no time left for the others
    ran = {p.solver for p in plans} | set(failures)
    for name in names:
        if name not in ran:
            failures[name] = "not run: time limit reached"
    if not plans:
        if timed_out:
            raise SolverTimeoutError(f"time limit of {time_limit_s:g} s reached before any solver had "
                                     f"a plan ({'; '.join(f'{k}: {v}' for k, v in failures.items())})")
        raise SolverFailed("no solver produced a valid plan: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
    key = _ranking_key(mode)
    best = min(plans, key=lambda p: (key(p.metrics), names.index(p.solver)))
    if len(names) > 1:
        best.info["comparison"] = [
            {"solver": p.solver, "status": p.status, "solve_time_s": p.solve_time_s,
             **{k: p.metrics[k] for k in ("noncompulsory_bytes", "compulsory_bytes",
                                          "peak_scratchpad_bytes", "modeled_time_s")}}
            for p in plans
        ] + [{"solver": k, "status": "FAILED", "error": v} for k, v in failures.items()]
    return best


OUTPUT_NAMES = ("plan.json", "annotated.hlo", "report.md", "timeline.png")


def check_output_writable(outdir: str | os.PathLike) -> None:
    """Refuse, before any work, an OUTDIR that cannot be created or written: under a regular
    file, or in a folder where this user cannot create files (probed with a temporary file,
    removed at once; nothing else is created)."""
    outdir = Path(outdir)
    probe = outdir
    while not probe.exists() and probe.parent != probe:  # nearest existing folder
        probe = probe.parent
    if not probe.is_dir():
        where = "is" if probe == outdir else f"is under {probe}, which is"
        raise BadInputError(f"-o {outdir}: {where} not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".memmap-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise BadInputError(f"-o {outdir}: cannot write in {probe}: {e.strerror or e}") from None


def check_output_dir(outdir: Path, inputs: list[Path]) -> None:
    """Refuse an OUTDIR that is an input, or in which plan.json, report.md or timeline.png is
    an input file (same file: also a hard or symbolic link to it, :func:`memmap.limits.refuse_overwrite`)."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise BadInputError(f"{outdir}: exists and is not a directory")
    for src in inputs:
        if outdir.exists() and Path(src).exists() and os.path.samefile(outdir, src):
            raise BadInputError(f"{outdir}: the output directory is the input; choose another -o")
    limits.refuse_overwrite([outdir / name for name in OUTPUT_NAMES], inputs)


__all__ = ["is_torch_program", "load_graph", "load_graph_text", "read_stdin_text", "make_target",
           "optimize", "run_solver", "check_output_dir", "check_output_writable", "SolverFailed",
           "verify_reserve_s", "output_reserve_s"]
