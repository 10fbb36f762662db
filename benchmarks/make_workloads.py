"""Fill the HLO cache of the workload zoo and print what it holds.

Usage::

    python benchmarks/make_workloads.py                       # every workload, both stages
    python benchmarks/make_workloads.py --only mlp.train lstm.fwd --stage after
    python benchmarks/make_workloads.py --force               # regenerate even if cached

Writes ``benchmarks/cache/<name>.<stage>.hlo`` (plus a ``.json`` sidecar; see
:func:`benchmarks.zoo.cached_hlo_path`) and prints one row per file: ENTRY instruction count,
file size, lowering and compile seconds (as measured when the file was generated) and whether
this run generated it or found it cached.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks import zoo


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=sorted(zoo.WORKLOADS),
        help="workloads to build (default: all)",
    )
    parser.add_argument("--stage", choices=("before", "after", "both"), default="both", help="HLO stage(s)")
    parser.add_argument("--cache-dir", type=Path, default=zoo.DEFAULT_CACHE_DIR, help="cache folder")
    parser.add_argument("--force", action="store_true", help="regenerate files that are already cached")
    return parser.parse_args(argv)


def _format_size(size_bytes: int) -> str:
    if size_bytes >= 1 << 20:
        return f"{size_bytes / (1 << 20):.2f} MiB"
    return f"{size_bytes / 1024:.1f} KiB"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = _parse_args(argv)
    names = args.only or list(zoo.WORKLOADS)
    stages = zoo.STAGES if args.stage == "both" else (args.stage,)
    jobs = [(name, stage) for name in names for stage in stages]
    console = Console()

    table = Table(title=f"workload zoo -> {args.cache_dir}")
    for column in ("workload", "stage", "ENTRY instrs", "size", "lower s", "compile s", "wall s", "status"):
        table.add_column(column, justify="left" if column in ("workload", "stage", "status") else "right")

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("building", total=len(jobs))
        for name, stage in jobs:
            progress.update(task, description=f"{name} ({stage})")
            sidecar = Path(args.cache_dir) / f"{name}.{stage}.json"
            mtime_before = sidecar.stat().st_mtime_ns if sidecar.exists() else None
            start = time.perf_counter()
            zoo.cached_hlo_path(name, stage, args.cache_dir, force=args.force)
            wall_s = time.perf_counter() - start
            meta = zoo.cache_metadata(name, stage, args.cache_dir)
            generated = mtime_before is None or sidecar.stat().st_mtime_ns != mtime_before
            compile_s = meta["compile_s"]
            table.add_row(
                name,
                stage,
                str(meta["entry_instructions"]),
                _format_size(meta["size_bytes"]),
                f"{meta['lower_s']:.2f}",
                "-" if compile_s is None else f"{compile_s:.2f}",
                f"{wall_s:.2f}",
                "generated" if generated else "cached",
            )
            progress.advance(task)

    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
