"""Benchmark harness: workload x budget x solver tables, printed and written to RESULTS.md.

    python benchmarks/run.py                 # everything (about 10-20 minutes on 2 cores)
    python benchmarks/run.py --quick         # small workloads only, for a smoke run
    python benchmarks/run.py --workloads resnet50.fwd.after external/ssd_mobilenet_tf --modes strict

Workloads: the zoo (benchmarks/zoo.py; weight-free JAX models, pre- and post-optimization
HLO) and the external dumps in ../shared/workloads/external. Budgets: COSMA's M_R, M_H, M_P,
with weights and activations only. Every plan is verified before it is counted.
Measurements are single runs of deterministic solvers; solve seconds are wall-clock on a shared
machine (noisy: compare within one run only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from memmap.budgets import compute_budgets  # noqa: E402
from memmap.pipeline import load_graph, run_solver  # noqa: E402
from memmap.problem import Problem, Target  # noqa: E402
from memmap.solvers import BASELINES, SOLVERS  # noqa: E402

EXTERNAL = ROOT.parent / "shared" / "workloads" / "external"
ZOO_MODELS = ("mobilenet_v1", "resnet50", "bert_base", "gpt2_small")
QUICK = ("mlp.train.after", "lstm.train.before", "small_cnn.train.after", "external/graphsage_tf")
ALIGN = 64


def workload_names(quick: bool) -> list[str]:
    if quick:
        return list(QUICK)
    names = [f"{m}.{v}.{s}" for m in ZOO_MODELS for v in ("fwd", "train") for s in ("before", "after")]
    names += ["lstm.train.before", "lstm.train.after"]
    names += [f"external/{p.stem}" for p in sorted(EXTERNAL.glob("*.hlo"))]
    return names


def workload_path(name: str) -> Path:
    if name.startswith("external/"):
        return EXTERNAL / f"{name.split('/', 1)[1]}.hlo"
    from benchmarks.zoo import cached_hlo_path

    model, variant, stage = name.rsplit(".", 2)
    return cached_hlo_path(f"{model}.{variant}", stage)


def import_speed(console: Console) -> dict:
    """Our importer vs XLA's C++ parser alone on the largest workload (median of 3)."""
    from memmap.ir.hlo import benchmark_import

    path = workload_path("gpt2_small.train.after")
    text = path.read_text()
    runs = [benchmark_import(text) for _ in range(3)]
    res = {k: statistics.median(r[k] for r in runs) for k in ("xla_parse_s", "import_s")}
    res["ratio"] = res["import_s"] / res["xla_parse_s"]
    res["workload"] = "gpt2_small.train.after"
    res["size_mb"] = len(text) / 1e6
    console.print(f"import speed on {res['workload']} ({res['size_mb']:.1f} MB): XLA parser "
                  f"{res['xla_parse_s']:.3f} s, memmap import {res['import_s']:.3f} s, ratio {res['ratio']:.2f}x")
    return res


def graph_rows(name: str, g, solvers, modes, time_limit_s: float, *, import_s: float = 0.0,
               activations_only=(False, True), status=None) -> list[dict]:
    """Rows for one graph: budgets M_R/M_H/M_P x modes x solvers (every plan verified by
    ``run_solver``). ``status(text)`` reports progress."""
    rows = []
    for act in activations_only:
        base = Problem(g, Target("bench", 1 << 50, alignment_bytes=ALIGN), "strict", act)
        b = compute_budgets(base)
        budgets = {"M_R": b.m_r_bytes, "M_H": b.m_h_bytes, "M_P": b.m_p_bytes}
        for mode in modes:
            for bname, cap in budgets.items():
                if cap <= 0:
                    continue
                row = {"workload": name, "ops": len(g.ops), "weights": not act, "mode": mode,
                       "budget": bname, "capacity_bytes": cap, "import_s": import_s,
                       "compulsory_bytes": None, "results": {}}
                p = Problem(g, Target("bench", cap, alignment_bytes=ALIGN), mode, act)
                for s in solvers:
                    if status:
                        status(f"{name} {'w' if not act else 'a'} {mode} {bname} {s}")
                    plan = run_solver(p, s, time_limit_s=time_limit_s)  # verified inside
                    m = plan.metrics
                    row["compulsory_bytes"] = m["compulsory_bytes"]
                    row["results"][s] = {"noncompulsory_bytes": m["noncompulsory_bytes"],
                                         "modeled_time_s": m["modeled_time_s"],
                                         "solve_s": plan.solve_time_s, "status": plan.status}
                rows.append(row)
    return rows


def run(names, solvers, modes, console: Console, time_limit_s: float) -> list[dict]:
    rows = []
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task("benchmarks", total=len(names))
        for name in names:
            prog.update(task, description=f"{name}: importing")
            t0 = time.perf_counter()
            g = load_graph(workload_path(name))
            import_s = time.perf_counter() - t0
            rows += graph_rows(name, g, solvers, modes, time_limit_s, import_s=import_s,
                               status=lambda text: prog.update(task, description=text))
            prog.advance(task)
            console.log(f"{name}: {len(g.ops)} ops done in {time.perf_counter() - t0:.1f} s")
    return rows


def _mib(n):
    return f"{n / 2**20:.2f}"


def tables_markdown(rows, solvers) -> str:
    out = []
    for mode in sorted({r["mode"] for r in rows}):
        metric = "noncompulsory_bytes" if mode == "strict" else "modeled_time_s"
        unit = "non-compulsory MiB" if mode == "strict" else "modelled time (ms)"
        out.append(f"### {mode} mode: {unit} per solver\n")
        out.append("Reduction = 1 - (best solver) / (best baseline); `-` = no solver beat the best baseline. "
                   "Solve seconds are wall-clock for the slowest solver.\n")
        head = "| workload | ops | weights | budget | budget MiB | " + " | ".join(solvers) + \
               " | best baseline | best | reduction vs best baseline | solve s (max) |"
        out.append(head)
        out.append("|" + "---|" * (head.count("|") - 1))
        for r in rows:
            if r["mode"] != mode:
                continue
            vals = {s: r["results"][s][metric] for s in solvers}
            fmt = (lambda v: _mib(v)) if mode == "strict" else (lambda v: f"{v * 1e3:.4f}")
            base = min(vals[s] for s in solvers if s in BASELINES)
            best_name = min(solvers, key=lambda s: (vals[s], solvers.index(s)))
            best = vals[best_name]
            red = "-" if base == 0 or best >= base else f"{100 * (1 - best / base):.1f}%"
            out.append(f"| {r['workload']} | {r['ops']} | {'yes' if r['weights'] else 'no'} | {r['budget']} | "
                       f"{_mib(r['capacity_bytes'])} | " + " | ".join(fmt(vals[s]) for s in solvers) +
                       f" | {fmt(base)} | {best_name} | {red} | "
                       f"{max(r['results'][s]['solve_s'] for s in solvers):.2f} |")
        out.append("")
    return "\n".join(out)


def summary_markdown(rows, solvers) -> str:
    """Per mode and solver: median and mean of the solver's result divided by
    the best baseline's (strict: non-compulsory bytes, over rows where the best baseline moves
    something; tiered: modelled time), and how often it is the best (or tied)."""
    lines = ["| mode | metric | solver | rows | median ratio to best baseline | mean ratio | best or tied |",
             "|---|---|---|---:|---:|---:|---:|"]
    for mode in sorted({r["mode"] for r in rows}):
        metric = "noncompulsory_bytes" if mode == "strict" else "modeled_time_s"
        sel = [r for r in rows if r["mode"] == mode]
        for s in solvers:
            ratios, wins = [], 0
            for r in sel:
                vals = {k: v[metric] for k, v in r["results"].items() if k in solvers}
                base = min(vals[b] for b in solvers if b in BASELINES)
                if vals[s] <= min(vals.values()) * (1 + 1e-9):
                    wins += 1
                if base > 0:
                    ratios.append(vals[s] / base)
            med = f"{statistics.median(ratios):.3f}" if ratios else "n/a"
            mean = f"{statistics.mean(ratios):.3f}" if ratios else "n/a"
            lines.append(f"| {mode} | {metric} | {s} | {len(sel)} | {med} | {mean} | {wins} |")
    return "\n".join(lines) + "\n"


SECTION_ORDER = ("mapping", "fusemax", "alloc", "ilp", "rl", "torch", "emit", "jit", "limits", "badinput")


def _sections(text: str) -> dict[str, str]:
    """Split RESULTS.md into its marked sections (``<!-- section:NAME -->`` ... next marker)."""
    out: dict[str, str] = {}
    parts = text.split("<!-- section:")
    for p in parts[1:]:
        name, _, body = p.partition(" -->\n")
        out[name.strip()] = body
    return out


def write_results(path: Path, new_sections: dict[str, str]) -> None:
    """Rewrite the given sections of RESULTS.md, keeping the others as they were."""
    old = _sections(path.read_text()) if path.exists() else {}
    old.update(new_sections)
    text = ["# Benchmark results", "",
            "Sections are regenerated independently: `python benchmarks/run.py` (memory mapping), "
            "`python benchmarks/run.py --sections fusemax`, `python benchmarks/alloc_bench.py` via "
            "`python benchmarks/run.py --sections alloc`, `python benchmarks/ilp_bench.py` (ilp), "
            "`python benchmarks/rl_bench.py` (rl), `python benchmarks/torch_bench.py` (torch), "
            "`python benchmarks/emit_bench.py` (emit), "
            "`python benchmarks/jit_bench.py` (memmap.jit), `python benchmarks/limits_bench.py` (limits), "
            "`python -m benchmarks.bad_input_table` (badinput).", ""]
    for name in SECTION_ORDER:
        if name in old:
            text.append(f"<!-- section:{name} -->\n{old[name].rstrip()}\n")
    path.write_text("\n".join(text))


def mapping_section(rows, solvers, speed, args) -> str:
    import jax

    parts = [
        "## Memory mapping: workload x budget x solver",
        "",
        f"Generated by `python benchmarks/run.py{' --quick' if args.quick else ''}` on "
        f"{time.strftime('%Y-%m-%d')} (jax {jax.__version__}, {os.cpu_count()} CPU cores, shared machine). "
        f"Alignment {ALIGN} B. Budgets M_R (smallest feasible), M_P (spill-free allocation under the best "
        "schedule found: an upper bound), M_H = (M_R + M_P)/2, with weights and activations only. "
        "Every plan was checked by the independent verifier before it was counted.",
        "",
    ]
    if speed:
        parts += ["### Import speed", "",
                  "| workload | size MB | XLA parser alone (s) | memmap import incl. parse (s) | ratio (target <= 3x) |",
                  "|---|---:|---:|---:|---:|",
                  f"| {speed['workload']} | {speed['size_mb']:.1f} | {speed['xla_parse_s']:.3f} | "
                  f"{speed['import_s']:.3f} | {speed['ratio']:.2f}x |", "", "Median of 3 runs.", ""]
    parts += ["### Summary", "", summary_markdown(rows, solvers), tables_markdown(rows, solvers)]
    return "\n".join(parts)


def fusemax_section() -> str:
    from memmap.cascade.cli import results_markdown

    return ("## FuseMax: attention cascades on the spatial-array model\n\n"
            "Generated by `python benchmarks/run.py --sections fusemax` (`memmap cascade fusemax`); "
            "model and choices in docs/fusemax.md.\n\n" + results_markdown())


def alloc_section() -> str:
    from benchmarks.alloc_bench import results_markdown
    from benchmarks.alloc_bench import run as run_alloc

    rows = run_alloc()
    return ("## MiniMalloc challenging set: `memmap alloc` vs omnimalloc\n\n"
            "Generated by `python benchmarks/run.py --sections alloc` (benchmarks/alloc_bench.py).\n\n"
            + results_markdown(rows))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small workloads only")
    ap.add_argument("--workloads", nargs="*", help="names like resnet50.fwd.after or external/graphsage_tf")
    ap.add_argument("--solvers", nargs="*", default=None, help=f"default: {', '.join(SOLVERS)}")
    ap.add_argument("--modes", nargs="*", default=["strict", "tiered"])
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--no-import-speed", action="store_true")
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--json", help="also write the raw rows to this JSON file")
    ap.add_argument("--from-json", help="rebuild the mapping tables from rows saved with --json (no solving)")
    ap.add_argument("--sections", nargs="*", default=["mapping", "fusemax"], choices=SECTION_ORDER,
                    help="which RESULTS.md sections to regenerate (default: mapping fusemax)")
    args = ap.parse_args(argv)
    out_path = Path(args.output)
    new: dict[str, str] = {}
    if "fusemax" in args.sections:
        new["fusemax"] = fusemax_section()
    if "alloc" in args.sections:
        new["alloc"] = alloc_section()
    if "mapping" not in args.sections:
        write_results(out_path, new)
        print(f"wrote {out_path} (sections: {', '.join(new)})")
        return 0
    console = Console()
    solvers = args.solvers or list(SOLVERS)
    unknown = [s for s in solvers if s not in SOLVERS]
    if unknown:
        console.print(f"unknown solvers: {unknown}")
        return 2
    names = args.workloads or workload_names(args.quick)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        rows, speed = saved["rows"], saved.get("import_speed")
        solvers = [s for s in solvers if all(s in r["results"] for r in rows)]
    else:
        speed = None if args.no_import_speed or args.quick else import_speed(console)
        rows = run(names, solvers, args.modes, console, args.time_limit)
    table = Table(title="strict mode: non-compulsory MiB")
    for col in ("workload", "weights", "budget", *solvers):
        table.add_column(col)
    for r in rows:
        if r["mode"] == "strict":
            table.add_row(r["workload"], "yes" if r["weights"] else "no", r["budget"],
                          *(_mib(r["results"][s]["noncompulsory_bytes"]) for s in solvers))
    console.print(table)
    console.print(summary_markdown(rows, solvers))
    new["mapping"] = mapping_section(rows, solvers, speed, args)
    write_results(out_path, new)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "import_speed": speed}, indent=1))
    console.print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
