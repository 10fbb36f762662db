"""``memmap.jit`` benchmark: planning time against XLA's compile time, and what ``apply="remat"``
does to XLA:CPU's temporary memory and FLOPs; writes the ``jit`` section of benchmarks/RESULTS.md.

    python benchmarks/jit_bench.py                       # every zoo workload, 3 runs
    python benchmarks/jit_bench.py --workloads mlp.train small_cnn.train --runs 1 --no-write

Part 1, per zoo workload (benchmarks/zoo.py) with the decorator's defaults (target
tpu-cmem-32mib, tiered mode, post-optimization module): the XLA compile the decorator does
anyway (``lowered.compile()``), and planning = HLO import + solve + verify + score, with the
default solver (belady) and with minpeak (same import, solved again). Medians over ``--runs``
fresh decorations (``jax.clear_caches()`` before each). Target: greedy planning no slower than
XLA's compile.

Part 2, per workload: a strict-mode budget of the planned graph (``--budget``: M_R, default, or
M_H; memmap.budgets, with weights, npu-4mib bandwidths), ``memmap.jit(..., apply="remat")``:
spilled values, how many are mapped to jaxpr values and recomputed, XLA:CPU temp bytes
(``memory_analysis()``) and FLOPs (``cost_analysis()``) before (``jax.jit`` with the same
``cse_barrier_expander`` option) and after, and whether memmap.jit's check on the first call
(random inputs) found the remat program bit-identical to ``jax.jit`` (else it runs
``jax.jit``). For ``apply="offload"`` only the counts (XLA:CPU drops host offload).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import memmap  # noqa: E402
from benchmarks import zoo  # noqa: E402
from memmap.pipeline import optimize  # noqa: E402

KEEP_BARRIERS = {"xla_disable_hlo_passes": "cse_barrier_expander"}
REMAT_TARGET = "npu-4mib"


def _materialize(args, seed: int = 0):
    """Random arrays for a pytree of ShapeDtypeStructs (floats uniform in [0, 0.1): optimiser
    second moments must not be negative; integers 0)."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    keys = jax.random.split(jax.random.PRNGKey(seed), max(1, len(leaves)))
    out = [jax.random.uniform(k, s.shape, s.dtype, 0.0, 0.1) if jnp.issubdtype(s.dtype, jnp.floating)
           else jnp.zeros(s.shape, s.dtype) for k, s in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(tree, out)


def _same(a, b) -> bool:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    return ta == tb and all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
                            for x, y in zip(la, lb))


def planning_row(name: str, runs: int, log) -> dict:
    """Part 1 for one workload: medians of XLA compile and planning seconds."""
    fn, args = zoo.WORKLOADS[name].build()
    compile_s, belady_s, minpeak_s = [], [], []
    plan = None
    for _ in range(runs):
        jax.clear_caches()
        plan = memmap.jit(fn).plan(*args)
        info = plan.info["jit"]
        compile_s.append(info["xla_compile_s"])
        belady_s.append(info["planning_s"])
        t0 = time.perf_counter()
        optimize(plan.problem.graph, target=plan.problem.target, mode=plan.problem.mode, solver="minpeak")
        minpeak_s.append(info["import_s"] + time.perf_counter() - t0)
    row = {"workload": name, "ops": plan.problem.graph.num_ops,
           "xla_compile_s": statistics.median(compile_s), "belady_s": statistics.median(belady_s),
           "minpeak_s": statistics.median(minpeak_s)}
    log(f"{name}: {row}")
    return row


def remat_row(name: str, budget: str, log) -> dict:
    """Part 2 for one workload: apply="remat" (and "offload" mapping) at a strict budget
    (``"M_R"`` or ``"M_H"`` of the planned graph)."""
    fn, args = zoo.WORKLOADS[name].build()
    probe = memmap.jit(fn, target=REMAT_TARGET).plan(*args)
    budgets = memmap.compute_budgets(memmap.Problem(
        probe.problem.graph, memmap.get_target(REMAT_TARGET).with_capacity(1 << 50), "strict"))
    cap = {"M_R": budgets.m_r_bytes, "M_H": budgets.m_h_bytes}[budget]
    opts = dict(target=REMAT_TARGET, scratchpad=cap, mode="strict")
    row = {"workload": name, "budget": budget, "budget_bytes": cap}
    for apply in ("offload", "remat"):
        fast = memmap.jit(fn, apply=apply, on_failure="warn", **opts)
        decisions = fast.plan(*args).info["apply"]["decisions"]
        row[f"{apply}_spilled"] = len(decisions)
        row[f"{apply}_mapped"] = sum(d["site"] is not None for d in decisions)
        row[f"{apply}_applied"] = sum(d["action"] == apply for d in decisions)
    applied = fast.plan(*args).info["apply"]
    if "temp_bytes" in applied:      # memmap.jit compiled both programs to judge the recomputation
        row.update(temp_before=applied["temp_bytes"]["without"], temp_after=applied["temp_bytes"]["with"],
                   flops_before=applied["flops"]["without"], flops_after=applied["flops"]["with"])
    else:                            # nothing recomputed: the program is jax.jit's
        before = jax.jit(fn, compiler_options=KEEP_BARRIERS).lower(*args).compile()
        after = fast.lower(*args).compile()
        row.update(temp_before=before.memory_analysis().temp_size_in_bytes,
                   temp_after=after.memory_analysis().temp_size_in_bytes,
                   flops_before=float(before.cost_analysis()["flops"]),
                   flops_after=float(after.cost_analysis()["flops"]))
    real = _materialize(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", memmap.PlanningWarning)
        out = fast(*real)                        # the first call checks the bits against jax.jit
    assert _same(out, jax.jit(fn)(*real)), name  # the result is jax.jit's either way
    outcome = fast.plan(*args).info["apply"]["numerics"]
    row["bitwise"] = outcome.startswith("bitwise")
    row["outcome"] = ("applied" if row["bitwise"] and row["remat_applied"] else
                      "nothing recomputed" if row["bitwise"] else
                      "not applied: temp did not fall" if outcome.startswith("not applied") else
                      "not applied: bits differ")
    log(f"{name}: {row}")
    return row


def _pct(after: float, before: float) -> str:
    return f"{100.0 * (after - before) / before:+.1f}%" if before else "n/a"


def results_markdown(plan_rows: list[dict], remat_rows: list[dict], runs: int, budget: str) -> str:
    lines = ["## `memmap.jit`: planning time vs XLA compile, and `apply=\"remat\"`", "",
             f"Generated by `python benchmarks/jit_bench.py --runs {runs} --budget {budget}` on {time.strftime('%Y-%m-%d')} "
             f"(jax {jax.__version__}, {os.cpu_count()} CPU cores, shared machine: times are noisy). "
             "Every plan was verified by the pipeline.", "",
             "### Planning vs XLA compile (decorator defaults: tpu-cmem-32mib, tiered, post-optimization module)", "",
             f"Median of {runs} fresh decorations. Planning = HLO import + solve + verify + score; the "
             "compile is the one `jax.jit` needs anyway. Target: greedy planning no slower than XLA's compile.", "",
             "| workload | operators | XLA compile s | planning s (belady, default) | ratio | planning s (minpeak) | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in plan_rows:
        lines.append(f"| {r['workload']} | {r['ops']} | {r['xla_compile_s']:.2f} | {r['belady_s']:.2f} | "
                     f"{r['belady_s'] / r['xla_compile_s']:.2f}x | {r['minpeak_s']:.2f} | "
                     f"{r['minpeak_s'] / r['xla_compile_s']:.2f}x |")
    if plan_rows:
        worst = max(r["belady_s"] / r["xla_compile_s"] for r in plan_rows)
        lines += ["", f"Default solver: {sum(r['belady_s'] <= r['xla_compile_s'] for r in plan_rows)} of "
                  f"{len(plan_rows)} workloads plan within their compile time (worst ratio {worst:.2f}x); "
                  f"minpeak: {sum(r['minpeak_s'] <= r['xla_compile_s'] for r in plan_rows)} of {len(plan_rows)}."]
    lines += ["", f"### `apply=\"remat\"` and `apply=\"offload\"` at the strict {budget} budget (npu-4mib bandwidths)", "",
              "Spilled = values the plan spills; mapped = traced back to a jaxpr value; applied = offloaded "
              "(every mapped value with a use after its reload) or recomputed (where the cost model says "
              "recomputing is faster than the spill and reloads). Temp bytes and FLOPs: XLA:CPU's "
              "`memory_analysis()` / `cost_analysis()` of the program with remat applied, before = "
              "`jax.jit` with the same `cse_barrier_expander` option (memmap.jit compiles both to "
              "decide). Outcome: memmap.jit keeps the recomputations only when XLA's temp bytes fall "
              "and, on the first call (random inputs), the results equal `jax.jit`'s bit for bit; "
              "otherwise the signature runs plain `jax.jit` and the row's temp/FLOP change is not "
              "realised.", "",
              "| workload | budget MiB | spilled | mapped | offloaded | recomputed | temp MiB before | after | change | GFLOP before | after | extra FLOPs | outcome |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in remat_rows:
        lines.append(
            f"| {r['workload']} | {r['budget_bytes'] / 2**20:.2f} | {r['remat_spilled']} | {r['remat_mapped']} | "
            f"{r['offload_applied']} | {r['remat_applied']} | {r['temp_before'] / 2**20:.2f} | "
            f"{r['temp_after'] / 2**20:.2f} | {_pct(r['temp_after'], r['temp_before'])} | "
            f"{r['flops_before'] / 1e9:.3f} | {r['flops_after'] / 1e9:.3f} | "
            f"{_pct(r['flops_after'], r['flops_before'])} | {r['outcome']} |")
    if remat_rows:
        kept = [r for r in remat_rows if r["outcome"] == "applied"]
        lines += ["", f"Remat kept on {len(kept)} of {len(remat_rows)} workloads"
                  + (": " + ", ".join(f"{r['workload']} temp {_pct(r['temp_after'], r['temp_before'])}, "
                                      f"FLOPs {_pct(r['flops_after'], r['flops_before'])}" for r in kept)
                     if kept else "") + "."]
    return "\n".join(lines) + "\n"


def _with_earlier_planning(results: Path, md: str) -> str:
    """``md`` (part 2 only) with part 1's subsection taken from the ``jit`` section RESULTS.md
    already has (say so in the header)."""
    from benchmarks.run import _sections

    old = _sections(results.read_text()).get("jit", "") if results.exists() else ""
    start = old.find("### Planning vs XLA compile")
    end = old.find("### `apply=")
    if start < 0 or end < 0:
        return md
    head, rest = md.split("### Planning vs XLA compile", 1)
    part2 = rest[rest.find("### `apply="):]
    return (head.rstrip() + " Part 1 (planning vs compile) is kept from an earlier full run of the "
            "same command.\n\n" + old[start:end] + part2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="*", default=sorted(zoo.WORKLOADS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--budget", choices=("M_R", "M_H"), default="M_R", help="strict budget of part 2")
    ap.add_argument("--no-remat", action="store_true", help="part 1 only")
    ap.add_argument("--no-planning", action="store_true",
                    help="part 2 only; part 1 (planning vs compile) is kept as RESULTS.md has it")
    ap.add_argument("--json-out", help="also write the raw rows here")
    ap.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args(argv)
    unknown = [w for w in args.workloads if w not in zoo.WORKLOADS]
    if unknown:
        print(f"unknown workloads: {unknown}; known: {sorted(zoo.WORKLOADS)}", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(msg, flush=True)

    plan_rows = [] if args.no_planning else [planning_row(w, args.runs, log) for w in args.workloads]
    remat_rows = [] if args.no_remat else [remat_row(w, args.budget, log) for w in args.workloads]
    md = results_markdown(plan_rows, remat_rows, args.runs, args.budget)
    if args.no_planning:
        md = _with_earlier_planning(Path(args.output), md)
    print(md)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"planning": plan_rows, "remat": remat_rows}, indent=1))
    if not args.no_write:
        from benchmarks.run import write_results

        write_results(Path(args.output), {"jit": md})
        log(f"wrote section 'jit' of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
