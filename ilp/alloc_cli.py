"""``memmap alloc FILE.csv --capacity N [-o OUT.csv]``: fixed-lifetime allocation alone.

Reads a MiniMalloc CSV (``id,lower,upper,size``, lifetimes half-open ``[lower, upper)``), places
every buffer below the capacity and writes the input columns plus ``offset``.

Exit codes: 0 placed, 2 bad input, 3 proved infeasible, 4 time limit without an answer.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from pathlib import Path

from memmap import limits
from memmap.errors import (EXIT_INFEASIBLE, EXIT_OK, EXIT_TIMEOUT, BadInputError, MemmapError,
                           OneLineArgumentParser)
from memmap.ilp.alloc import (SEARCH_MEMORY_BYTES, AllocProblem, AllocResult, check_alloc,
                              read_minimalloc_csv, solve_alloc)
from memmap.problem import parse_size

__all__ = ["main", "capacity_from_name", "format_csv"]

_NAME_CAPACITY = re.compile(r"\.(\d+)\.csv$", re.IGNORECASE)
# seconds per buffer kept for checking and writing the answer after the search (measured: 63k
# buffers checked and formatted in 1.3 s on the loaded 2-core machine)
_OUTPUT_S_PER_BUFFER = 4e-5


def _parser() -> argparse.ArgumentParser:
    ap = OneLineArgumentParser(prog="memmap alloc", description="Place buffers with fixed lifetimes "
                 "(MiniMalloc CSV) below a capacity; writes the input columns plus 'offset'.")
    ap.add_argument("input", help="CSV with columns id,lower,upper,size")
    ap.add_argument("--capacity", help="bytes (1048576, 1MiB, ...); default: from a file name "
                    "like A.1048576.csv")
    ap.add_argument("-o", "--output", help="output CSV (default: stdout)")
    ap.add_argument("--time-limit", type=limits.parse_seconds, default=60.0, metavar="S",
                    help="wall-clock seconds for the whole command, from process start to the "
                    "written output (default 60; docs/cli.md)")
    ap.add_argument("--max-memory", default=f"{SEARCH_MEMORY_BYTES >> 30}GiB",
                    metavar="SIZE", help="memory budget of the exact search's arrays "
                    "(default %(default)s; docs/alloc.md)")
    ap.add_argument("--workers", type=int, default=2, help="CP-SAT workers (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--json", action="store_true",
                    help="print a JSON summary on stdout (needs -o for the CSV)")
    return ap


def capacity_from_name(path: str | Path) -> int | None:
    """The capacity in a MiniMalloc file name (``A.1048576.csv`` -> 1048576), else ``None``."""
    m = _NAME_CAPACITY.search(Path(path).name)
    return int(m.group(1)) if m else None


def format_csv(problem: AllocProblem, offsets) -> str:
    """The input columns and rows plus an ``offset`` column."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(problem.columns) + ["offset"])
    for row, off in zip(problem.rows, offsets):
        w.writerow(list(row) + [off])
    return buf.getvalue()


def _summary(problem: AllocProblem, res: AllocResult) -> dict:
    return {"input": problem.source, "buffers": problem.n, "status": res.status,
            "capacity_bytes": res.capacity_bytes, "height_bytes": res.height_bytes,
            "peak_live_bytes": res.peak_live_bytes, "wall_s": round(res.wall_s, 3),
            "method": res.method, "nodes": res.nodes, "culprits": list(res.culprits)}


def _run(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.workers < 1:
        raise BadInputError(f"--workers must be >= 1, got {args.workers}")
    if not Path(args.input).is_file():
        raise BadInputError(f"{args.input}: no such file")
    if args.capacity is not None:
        capacity = parse_size(args.capacity)
    else:
        capacity = capacity_from_name(args.input)
        if capacity is None:
            raise BadInputError(f"{args.input}: no --capacity given and none in the file name "
                                f"(expected NAME.<bytes>.csv, e.g. A.1048576.csv)")
        capacity = parse_size(capacity)  # the same limits as --capacity
    with limits.command_time_limit(args.time_limit):
        return _placed(args, capacity)


def _placed(args, capacity: int) -> int:
    max_memory = parse_size(args.max_memory)
    if args.output is not None and args.output != "-":
        limits.refuse_overwrite([args.output], [args.input])
        if not Path(args.output).resolve().parent.is_dir():
            raise BadInputError(f"-o {args.output}: folder does not exist")
    problem = read_minimalloc_csv(args.input)

    from rich.console import Console

    console = Console(stderr=True)
    # the solve stops early enough to check and write the answer before the deadline
    with limits.time_limit(at=limits.deadline() - _OUTPUT_S_PER_BUFFER * problem.n), \
            console.status(f"allocating {problem.n} buffers in {capacity} bytes") as status:
        def progress(msg: str) -> None:
            status.update(f"{Path(args.input).name}: {msg}")

        res = solve_alloc(problem, capacity, time_limit_s=args.time_limit, workers=args.workers,
                          seed=args.seed, progress=progress, max_memory_bytes=max_memory)
    summary = _summary(problem, res)
    if res.placed:
        errors = check_alloc(problem, capacity, res.offsets)
        if errors:   # never expected: the checker is independent of every solver
            raise MemmapError(f"internal error: placement fails the checker: {errors[0]}")
        limits.answered()
        text = format_csv(problem, res.offsets)
        if args.output is not None and args.output != "-":
            limits.write_text_atomic(args.output, text)
        elif not args.json:
            sys.stdout.write(text)
        print(f"memmap alloc: {res.status}: {problem.n} buffers, height {res.height_bytes} / "
              f"capacity {capacity} bytes (peak live {res.peak_live_bytes}), {res.method}, "
              f"{res.wall_s:.2f} s", file=sys.stderr)
        code = EXIT_OK
    elif res.status == "INFEASIBLE":
        why = res.culprits[0] if res.culprits else "no placement fits"
        print(f"memmap alloc: infeasible: {why}", file=sys.stderr)
        code = EXIT_INFEASIBLE
    elif "memory budget" in res.method:
        print(f"memmap alloc: the memory budget ({args.max_memory}) ended the search without a "
              f"placement ({res.method}, {res.nodes:,} nodes); try a larger --max-memory",
              file=sys.stderr)
        code = EXIT_TIMEOUT
    else:
        print(f"memmap alloc: time limit {args.time_limit:g} s reached without a placement "
              f"({res.method}, {res.nodes:,} nodes searched); try a longer --time-limit",
              file=sys.stderr)
        code = EXIT_TIMEOUT
    if args.json:
        print(json.dumps(summary, indent=2))
    return code


def main(argv: list[str]) -> int:
    """Entry point of ``memmap alloc``; returns the exit code (errors: one line on stderr).
    The time limit counts from :func:`memmap.limits.command_start` (the start of the process
    when ``memmap`` runs from a shell)."""
    try:
        return _run(list(argv))
    except MemmapError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"memmap alloc: error: {msg}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
