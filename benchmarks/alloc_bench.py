"""MiniMalloc's 11 challenging benchmarks: ``memmap.ilp.alloc`` side by side with omnimalloc.

    python benchmarks/alloc_bench.py [--time-limit 60] [--omni-timeout 20] [-o RESULTS.md] [--json]

For each file: our status, height vs capacity and seconds (median of ``--runs`` runs when the
first run takes under 10 s), and omnimalloc's ``supermalloc`` (its strongest allocator that
installs from PyPI: a C++ branch-and-bound portfolio minimizing the height; omnimalloc's
``minimalloc`` wrapper needs google/minimalloc's own Python module, which is not on PyPI) with
``--omni-timeout`` seconds and 2 threads. Every placement is re-checked with ``check_alloc``.
omnimalloc is optional: without it the table says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from memmap.ilp.alloc import AllocProblem, check_alloc, read_minimalloc_csv, solve_alloc
from memmap.ilp.alloc_cli import capacity_from_name

CHALLENGING = Path(__file__).resolve().parents[1].parent / "shared" / "minimalloc" / "challenging"
OMNI_ALLOCATOR = "supermalloc"


def _run_ours(problem: AllocProblem, capacity: int, time_limit_s: float, runs: int) -> dict:
    times, res = [], None
    for k in range(runs):
        res = solve_alloc(problem, capacity, time_limit_s=time_limit_s)
        times.append(res.wall_s)
        if k == 0 and (res.wall_s > 10 or not res.placed):
            break
    errors = check_alloc(problem, capacity, res.offsets) if res.placed else []
    return {"status": res.status if not errors else "INVALID", "height_bytes": res.height_bytes,
            "seconds": statistics.median(times), "runs": len(times), "method": res.method,
            "nodes": res.nodes}


def _run_omni(problem: AllocProblem, capacity: int, timeout_s: float) -> dict:
    try:
        import omnimalloc as om
        from omnimalloc.allocators.supermalloc import SupermallocAllocator
    except ImportError:
        return {"status": "not installed", "height_bytes": None, "seconds": None}
    allocs = [om.Allocation(id=k, size=problem.size_bytes[k], start=problem.lower[k],
                            end=problem.upper[k]) for k in range(problem.n)]
    t0 = time.perf_counter()
    placed = om.allocate(allocs, SupermallocAllocator(timeout=timeout_s, num_threads=2))
    seconds = time.perf_counter() - t0
    by_id = {a.id: a.offset for a in placed}
    offsets = [int(by_id[k]) for k in range(problem.n)]
    height = max(o + s for o, s in zip(offsets, problem.size_bytes))
    overlaps = check_alloc(problem, max(height, capacity), offsets)
    status = "INVALID" if overlaps else ("placed" if height <= capacity else "over capacity")
    return {"status": status, "height_bytes": height, "seconds": seconds}


def run(time_limit_s: float = 60.0, omni_timeout_s: float = 20.0, runs: int = 3,
        names: list[str] | None = None, echo=None) -> list[dict]:
    """One row per benchmark file (sorted by name)."""
    rows = []
    for path in sorted(CHALLENGING.glob("*.csv")):
        if names and path.name.split(".")[0] not in names:
            continue
        problem = read_minimalloc_csv(path)
        capacity = capacity_from_name(path)
        row = {"name": path.name, "buffers": problem.n, "capacity_bytes": capacity,
               "ours": _run_ours(problem, capacity, time_limit_s, runs),
               "omni": _run_omni(problem, capacity, omni_timeout_s)}
        rows.append(row)
        if echo is not None:
            echo(row)
    return rows


def _pct(height, capacity) -> str:
    if height is None:
        return "-"
    return f"{height} ({100.0 * (height - capacity) / capacity:+.1f}%)"


def results_markdown(rows: list[dict], time_limit_s: float = 60.0,
                     omni_timeout_s: float = 20.0) -> str:
    """A markdown table of ``rows`` (from :func:`run`) with a one-line summary."""
    lines = [f"| benchmark | buffers | capacity | ours: status | ours: height | ours: s | "
             f"omnimalloc {OMNI_ALLOCATOR}: status | height | s |",
             "|---|---:|---:|---|---:|---:|---|---:|---:|"]
    for r in rows:
        o, m = r["ours"], r["omni"]
        secs = f"{o['seconds']:.2f}" + (f" (median of {o['runs']})" if o["runs"] > 1 else "")
        msecs = "-" if m["seconds"] is None else f"{m['seconds']:.1f}"
        lines.append(f"| {r['name']} | {r['buffers']} | {r['capacity_bytes']} | {o['status']} "
                     f"({o['method']}) | {_pct(o['height_bytes'], r['capacity_bytes'])} | {secs} "
                     f"| {m['status']} | {_pct(m['height_bytes'], r['capacity_bytes'])} | {msecs} |")
    ours = sum(r["ours"]["status"] in ("OPTIMAL", "FEASIBLE") for r in rows)
    omni = sum(r["omni"]["status"] == "placed" for r in rows)
    lines.append("")
    lines.append(f"Placed within capacity: ours {ours}/{len(rows)} (time limit {time_limit_s:g} s "
                 f"each), omnimalloc {OMNI_ALLOCATOR} {omni}/{len(rows)} (timeout "
                 f"{omni_timeout_s:g} s, 2 threads).")
    return "\n".join(lines) + "\n"


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="MiniMalloc challenging benchmarks")
    for col in ("benchmark", "ours", "height", "s", f"omni {OMNI_ALLOCATOR}", "height", "s"):
        t.add_column(col)
    for r in rows:
        o, m = r["ours"], r["omni"]
        t.add_row(r["name"], o["status"], _pct(o["height_bytes"], r["capacity_bytes"]),
                  f"{o['seconds']:.2f}", m["status"], _pct(m["height_bytes"], r["capacity_bytes"]),
                  "-" if m["seconds"] is None else f"{m['seconds']:.1f}")
    Console().print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-limit", type=float, default=60.0, help="ours, seconds per file")
    ap.add_argument("--omni-timeout", type=float, default=20.0, help="omnimalloc, seconds")
    ap.add_argument("--runs", type=int, default=3, help="runs of ours per file (median)")
    ap.add_argument("--only", nargs="*", help="benchmark letters, e.g. A F")
    ap.add_argument("-o", "--output", help="write the markdown table here")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    if not CHALLENGING.is_dir():
        print(f"alloc_bench: {CHALLENGING} not found", file=sys.stderr)
        return 2
    rows = run(args.time_limit, args.omni_timeout, args.runs, args.only,
               echo=lambda r: print(f"{r['name']}: ours {r['ours']['status']} "
                                    f"{r['ours']['seconds']:.2f} s; omni {r['omni']['status']}",
                                    file=sys.stderr, flush=True))
    _print_table(rows)
    md = results_markdown(rows, args.time_limit, args.omni_timeout)
    if args.output:
        Path(args.output).write_text(md)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
