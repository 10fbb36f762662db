"""Torch benchmarks: torch.export programs in the memory-mapping tables, and memmap's arena
against ExecuTorch's memory planning on the same programs; writes the ``torch`` section of
benchmarks/RESULTS.md.

    python benchmarks/torch_bench.py --executorch-python /tmp/etvenv/bin/python

The ExecuTorch side runs in a separate, benchmark-only environment (never memmap's):

    python3.11 -m venv /tmp/etvenv && /tmp/etvenv/bin/pip install executorch torch==2.13.0

Workloads (benchmarks/torch_zoo.py): the JAX-parity models (mlp, cnn, block) and a ResNet-18
layout CNN and a 4-layer GPT-style decoder; forward programs (eval mode,
``torch.export.export``) and training programs (``_export_forward_backward``: the joint graph
ExecuTorch trains with), saved as ``.pt2`` under benchmarks/cache/torch/ and imported with
``memmap.import_pt2`` (the CLI's path).

1. Mapping tables: budgets M_R/M_H/M_P x strict/tiered x every solver, weights included (as
   benchmarks/run.py, every plan verified).
2. Arena sizes: ExecuTorch plans user inputs, activations and outputs into one arena (weights
   are constants). On ExecuTorch's own planned buffers and lifetimes (fixed order): its
   ``greedy`` and ``naive`` against memmap's exact allocator (``memmap alloc``:
   ``ilp.alloc.solve_alloc``, minimal height by bisection). On memmap's import of the same
   program with the weights left out: the spill-free arena in the program's order and in
   memmap's min-peak schedule (both placed by ``solve_alloc``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import torch_zoo  # noqa: E402
from benchmarks.run import graph_rows, summary_markdown, tables_markdown, write_results  # noqa: E402
from memmap.ilp.alloc import AllocProblem, peak_live, solve_alloc  # noqa: E402
from memmap.problem import Problem, Target, align_up  # noqa: E402
from memmap.scheduling import live_ranges, min_peak_schedule  # noqa: E402
from memmap.solvers import SOLVERS  # noqa: E402
from memmap.static_alloc import greedy_allocate  # noqa: E402

CACHE = ROOT / "benchmarks" / "cache" / "torch"
ET_ALIGN = 16  # ExecuTorch's default alignment


def programs() -> dict[str, Path]:
    """Save (once) and list the benchmark programs: ``name -> .pt2 path``."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in torch_zoo.TORCH_WORKLOADS:
        for train in (False, True):
            label = f"{name}.{'train' if train else 'fwd'}"
            path = CACHE / f"{label}.pt2"
            if not path.exists():
                torch_zoo.save_program(name, train, path)
            out[label] = path
    return out


def min_arena(lower, upper, sizes, *, time_limit_s: float = 10.0) -> tuple[int, bool]:
    """Smallest arena ``solve_alloc`` places the buffers in (half-open lifetimes), and whether
    it is proven minimal (equal to the peak live bytes). Bisection between the peak live bytes
    and the greedy height, each probe with a share of the time limit."""
    if not sizes:
        return 0, True
    prob = AllocProblem.from_lists(lower, upper, sizes)
    peak, _ = peak_live(prob)
    _, hi = greedy_allocate(lower, [u - 1 for u in upper], sizes)
    res = solve_alloc(prob, peak, time_limit_s=time_limit_s / 4)
    if res.placed:
        return int(res.height_bytes), True
    lo = peak
    for _ in range(8):
        if hi - lo <= ET_ALIGN:
            break
        mid = align_up((lo + hi) // 2, ET_ALIGN)
        res = solve_alloc(prob, mid, time_limit_s=time_limit_s / 12)
        if res.placed:
            hi = int(res.height_bytes)
        else:
            lo = mid
    return hi, False


def activations_graph(g):
    """The graph with its weights (parameters, buffers, constants) at 0 bytes, so only what
    ExecuTorch plans (user inputs, activations, outputs) is managed."""
    roles = g.info.get("torch_inputs", {})
    values = tuple(dataclasses.replace(v, size_bytes=0)
                   if v.producer is None and roles.get(v.name, "user_input") != "user_input"
                   else v for v in g.values)
    return dataclasses.replace(g, values=values)


def our_arenas(g) -> dict:
    """Spill-free arenas of memmap's import (weights left out): program order and min-peak."""
    ga = activations_graph(g)
    p = Problem(ga, Target("arena", 1 << 50, alignment_bytes=ET_ALIGN))
    out = {}
    for label, sched in (("program_order", ga.default_schedule),
                         ("min_peak", min_peak_schedule(p)[0])):
        lr = live_ranges(p, sched)
        vals = sorted(lr)
        lo = [lr[v][0] for v in vals]
        hi = [lr[v][1] + 1 for v in vals]
        sz = [p.alloc_size[v] for v in vals]
        out[label], out[f"{label}_proven"] = min_arena(lo, hi, sz)
    return out


def executorch_rows(progs: dict[str, Path], et_python: str | None, et_json: Path) -> tuple[dict, list]:
    if et_python:
        subprocess.run([et_python, str(ROOT / "benchmarks" / "executorch_plan.py"), str(et_json),
                        *map(str, progs.values())], check=True)
    et = json.loads(et_json.read_text())
    from memmap.ir import import_pt2

    rows = []
    for label, path in progs.items():
        r = et["programs"].get(str(path), {"error": "not planned"})
        row = {"workload": label}
        if "error" not in r:
            bufs = r["buffers"]
            lo = [b[0] for b in bufs]
            hi = [b[1] + 1 for b in bufs]
            sz = [b[2] for b in bufs]
            t0 = time.perf_counter()
            ours, proven = min_arena(lo, hi, sz)
            row.update(et_greedy=r["greedy_bytes"], et_naive=r["naive_bytes"], et_nodes=r["nodes"],
                       et_buffers=len(bufs), ours_fixed=ours, ours_fixed_proven=proven,
                       et_peak_live=peak_live(AllocProblem.from_lists(lo, hi, sz))[0],
                       ours_fixed_s=time.perf_counter() - t0)
        else:
            row["et_error"] = r["error"]
        g = import_pt2(path)
        row.update(ops=g.num_ops, **{f"ours_{k}": v for k, v in our_arenas(g).items()})
        rows.append(row)
        print(label, row, file=sys.stderr)
    return et, rows


def _mib(n) -> str:
    return f"{n / 2**20:.2f}"


def arena_markdown(et: dict, rows: list) -> str:
    lines = [
        f"ExecuTorch {et['executorch_version']} (torch {et['torch_version']}), installed beside "
        "torch 2.13.0 in a benchmark-only venv. Arena = user inputs + activations + outputs "
        "(weights are constants in both). MiB.",
        "",
        "| program | ExecuTorch nodes / buffers | ExecuTorch naive | ExecuTorch greedy | peak live (same buffers) | "
        "memmap, same buffers + order | vs greedy | memmap ops | memmap import, program order | "
        "memmap import, min-peak schedule |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mark = lambda ok: "" if ok else "*"  # noqa: E731
        ours = (f"{_mib(r['ours_program_order'])}{mark(r['ours_program_order_proven'])} | "
                f"{_mib(r['ours_min_peak'])}{mark(r['ours_min_peak_proven'])}")
        if "et_error" in r:
            lines.append(f"| {r['workload']} | failed: `{r['et_error']}` | - | - | - | - | - | "
                         f"{r['ops']} | {ours} |")
            continue
        gain = 1 - r["ours_fixed"] / r["et_greedy"] if r["et_greedy"] else 0.0
        lines.append(
            f"| {r['workload']} | {r['et_nodes']} / {r['et_buffers']} | {_mib(r['et_naive'])} | "
            f"{_mib(r['et_greedy'])} | {_mib(r['et_peak_live'])} | "
            f"{_mib(r['ours_fixed'])}{mark(r['ours_fixed_proven'])} | {100 * gain:.1f}% | "
            f"{r['ops']} | {ours} |")
    lines += ["", "`*`: not proven minimal (the allocator's bisection stopped above the peak live "
              "bytes); unmarked memmap arenas equal the peak live bytes of their lifetimes, so no "
              "allocator can do better on that order."]
    ok = [r for r in rows if "et_error" not in r]
    if ok:
        tight = [r["workload"] for r in ok if r["et_greedy"] == r["et_peak_live"]]
        gains = [1 - r["ours_fixed"] / r["et_greedy"] for r in ok]
        joint = [1 - r["ours_min_peak"] / r["et_greedy"] for r in ok]
        best = max(ok, key=lambda r: 1 - r["ours_fixed"] / r["et_greedy"])
        lines += ["", f"**Same buffers, same order** ({len(ok)} programs ExecuTorch plans): "
                  f"memmap's arena is {100 * min(gains):.1f}% to {100 * max(gains):.1f}% smaller "
                  f"than ExecuTorch's greedy (mean {100 * sum(gains) / len(gains):.1f}%; largest on "
                  f"{best['workload']}); greedy already reaches the peak live bytes on "
                  f"{len(tight)} of them ({', '.join(tight) or 'none'}). "
                  f"**memmap's import + min-peak schedule** vs ExecuTorch's greedy arena: "
                  f"{100 * min(joint):.1f}% to {100 * max(joint):.1f}% smaller (mean "
                  f"{100 * sum(joint) / len(joint):.1f}%); this adds the graph difference (views "
                  "are renames in memmap, ExecuTorch's edge dialect copies `permute`/`expand`/"
                  "`split` results) to the scheduling gain, which the program-order column "
                  "isolates."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--executorch-python", help="python of a venv with executorch (runs executorch_plan.py)")
    ap.add_argument("--executorch-json", default=str(CACHE / "executorch.json"),
                    help="ExecuTorch results (written by executorch_plan.py, read here)")
    ap.add_argument("--time-limit", type=float, default=10.0, help="ILP seconds per plan")
    ap.add_argument("--solvers", nargs="*", default=list(SOLVERS))
    ap.add_argument("--no-mapping", action="store_true")
    ap.add_argument("--mapping-from", help="reuse the mapping rows of an earlier --json file")
    ap.add_argument("--json", help="also write the raw rows here")
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args(argv)
    progs = programs()
    et, arena_rows = executorch_rows(progs, args.executorch_python, Path(args.executorch_json))
    rows = json.loads(Path(args.mapping_from).read_text())["mapping"] if args.mapping_from else []
    if not args.no_mapping and not rows:
        from memmap.ir import import_pt2

        for label, path in progs.items():
            t0 = time.perf_counter()
            g = import_pt2(path)
            rows += graph_rows(f"torch/{label}", g, args.solvers, ("strict", "tiered"),
                               args.time_limit, import_s=time.perf_counter() - t0,
                               activations_only=(False,))
            print(f"{label}: {g.num_ops} ops, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    import torch

    parts = ["## Torch programs: mapping tables and ExecuTorch's memory planning", "",
             f"Generated by `python benchmarks/torch_bench.py --executorch-python /tmp/etvenv/bin/python` "
             f"on {time.strftime('%Y-%m-%d')} (torch {torch.__version__}, 2 CPU cores, shared "
             f"machine). Programs: benchmarks/torch_zoo.py; forward = `torch.export.export` (eval "
             "mode), train = `_export_forward_backward` (the joint graph ExecuTorch trains with), "
             "imported from `.pt2` with `memmap.import_pt2`.", "",
             "### Arena size: memmap vs ExecuTorch's memory planning", "", arena_markdown(et, arena_rows), ""]
    if rows:
        parts += ["### Mapping tables (weights included, every plan verified)", "",
                  f"Alignment 64 B; ILP time limit {args.time_limit:.0f} s.", "",
                  summary_markdown(rows, args.solvers), tables_markdown(rows, args.solvers)]
    write_results(Path(args.output), {"torch": "\n".join(parts)})
    if args.json:
        Path(args.json).write_text(json.dumps({"arena": arena_rows, "mapping": rows}, indent=1))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
