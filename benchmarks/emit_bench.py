"""Annotated HLO over the whole workload zoo and the external dumps: writes the ``emit`` section
of benchmarks/RESULTS.md.

    python benchmarks/emit_bench.py                  # every workload, both stages (long)
    python benchmarks/emit_bench.py --quick          # mlp, lstm, small_cnn and the dumps
    python benchmarks/emit_bench.py --no-numerics --no-write
    python benchmarks/emit_bench.py --json-out rows.json; ... --from-json rows.json
    python benchmarks/emit_bench.py --rerun-numerics --json-out benchmarks/emit_results.json
                                                     # numerics only; round-trip rows kept

Round trip: for every zoo workload (pre- and post-optimization HLO) and both dumps of
tests/data/external, in strict and tiered mode at M_R and M_H (solver ``msa`` at M_R, ``minpeak``
at M_H, prefetches hoisted as ``memmap optimize`` does), the plan is written as plan.json and as
annotated.hlo; ``memmap.import_plan`` on the annotated file must give the schedule, residencies
and transfers of plan.json and a plan the verifier accepts. Emit seconds (``emit_hlo``: XLA's
parse, annotation, XLA's print, re-parse and schedule check), read-back seconds, annotated size
and the number of copy pairs are recorded.

Numerics: for every zoo workload with a pre-optimization form, the strict M_R plan's annotated
module, made CPU-executable (``executable_variant``), is compiled and run by XLA:CPU on random
inputs and compared bit for bit with ``jax.jit`` and with the input module itself compiled the
same way (``run_hlo_on_cpu``: HLO text -> the export's broadcast chains folded back ->
``hlo_to_stablehlo`` -> XLA:CPU). Post-optimization HLO does not recompile on XLA:CPU, so it has
no numerics row. ``--rerun-numerics`` reruns only the numerics (the same strict M_R plans, solver
``msa``) and keeps the round-trip rows of ``--from-json`` (default benchmarks/emit_results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import memmap  # noqa: E402
from memmap.budgets import compute_budgets  # noqa: E402
from memmap.emit.hlo import emit_hlo, executable_variant, run_hlo_on_cpu  # noqa: E402
from memmap.emit.hlo_plan import import_plan  # noqa: E402
from memmap.pipeline import load_graph, run_solver  # noqa: E402
from memmap.plan import Plan  # noqa: E402
from memmap.problem import Problem, Target  # noqa: E402
from memmap.verify import verify_plan  # noqa: E402

EXTERNAL = ROOT / "tests" / "data" / "external"
SAVED = ROOT / "benchmarks" / "emit_results.json"
QUICK_MODELS = ("mlp", "lstm", "small_cnn")
ALL_MODELS = ("mlp", "lstm", "small_cnn", "mobilenet_v1", "resnet50", "bert_base", "gpt2_small")
ALIGN = 64
SOLVER_AT = {"M_R": "msa", "M_H": "minpeak"}


def workloads(models) -> list[str]:
    names = [f"{m}.{v}.{s}" for m in models for v in ("fwd", "train") for s in ("before", "after")]
    return names + [f"external/{p.stem}" for p in sorted(EXTERNAL.glob("*.hlo"))]


def workload_path(name: str) -> Path:
    if name.startswith("external/"):
        return EXTERNAL / f"{name.split('/', 1)[1]}.hlo"
    from benchmarks.zoo import cached_hlo_path

    model, variant, stage = name.rsplit(".", 2)
    return cached_hlo_path(f"{model}.{variant}", stage)


def round_trip(graph, plan: Plan, workdir: Path) -> dict:
    """Write plan.json and annotated.hlo, read the annotated file back, compare and verify."""
    plan_path, hlo_path = workdir / "plan.json", workdir / "annotated.hlo"
    plan.to_json(plan_path)
    t0 = time.perf_counter()
    text = emit_hlo(graph, plan)
    emit_s = time.perf_counter() - t0
    hlo_path.write_text(text)
    t0 = time.perf_counter()
    back = import_plan(hlo_path)
    read_s = time.perf_counter() - t0
    saved = Plan.from_json(plan_path)
    same = (back.schedule == saved.schedule and back.residencies == saved.residencies
            and back.transfers == saved.transfers and back.problem.graph == graph)
    result = verify_plan(back)
    return {"round_trip": same and result.ok, "verify": result.reason, "emit_s": emit_s,
            "read_s": read_s, "annotated_bytes": len(text.encode()),
            "copies": text.count(" copy-start("), "text": text}


def random_inputs(abstract_args, seed: int):
    """Random arrays for a pytree of ShapeDtypeStructs: floats |N(0, 1)| (non-negative, so that
    optimizer second moments are valid and no NaN appears), integers in [0, 10)."""
    import jax

    rng = np.random.default_rng(seed)

    def one(s):
        if np.issubdtype(s.dtype, np.integer):
            return rng.integers(0, 10, size=s.shape).astype(s.dtype)
        return np.abs(rng.standard_normal(s.shape)).astype(s.dtype)

    return jax.tree_util.tree_map(one, abstract_args)


def _same(xs, ys) -> bool:
    return len(xs) == len(ys) and all(a.shape == b.shape and a.dtype == b.dtype
                                      and a.tobytes() == b.tobytes() for a, b in zip(xs, ys))


def _max_abs_diff(xs, ys) -> float:
    diffs = [float(np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
             for a, b in zip(xs, ys) if a.dtype.kind == "f" and a.tobytes() != b.tobytes()]
    return max(diffs, default=0.0)


def numerics_round_trip(name: str, *, mode: str = "strict", seed: int = 0, graph=None,
                        annotated: str | None = None, unannotated: bool = False) -> dict:
    """Run a zoo workload's annotated pre-optimization module (CPU-executable variant) and
    ``jax.jit(fn)`` on the same random inputs and compare every output bit for bit (with
    ``unannotated``, also the input module compiled the same way). Without ``annotated``, plans
    ``name`` itself (``belady`` at M_R)."""
    import jax

    from benchmarks import zoo

    fn, abstract = zoo.WORKLOADS[name].build()
    text = zoo.hlo_text(name, "before") if graph is None else graph.info["hlo_text"]
    if annotated is None:
        graph = memmap.import_hlo(text, xla_cost=False)
        b = compute_budgets(Problem(graph, Target("t", 1 << 50, alignment_bytes=ALIGN), "strict", False))
        plan = memmap.optimize(graph, target=Target("t", b.m_r_bytes, alignment_bytes=ALIGN), mode=mode,
                               solver="belady")
        annotated = emit_hlo(graph, plan)
    args = random_inputs(abstract, seed)
    leaves = jax.tree_util.tree_leaves(args)
    t0 = time.perf_counter()
    want = [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.jit(fn)(*args))]
    jit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = run_hlo_on_cpu(executable_variant(annotated), leaves)
    run_s = time.perf_counter() - t0
    out = {"workload": name, "bitwise_equal": _same(got, want), "outputs": len(want),
           "differing_outputs": sum(a.tobytes() != b.tobytes() for a, b in zip(got, want)),
           "max_abs_diff": _max_abs_diff(got, want),
           "copies": annotated.count(" copy-start("), "jax_jit_s": jit_s, "annotated_cpu_s": run_s}
    if unannotated:
        plain = run_hlo_on_cpu(text, leaves)
        out["unannotated_equal_jax_jit"] = _same(plain, want)
        out["annotated_equal_unannotated"] = _same(got, plain)
    return out


def solve(graph, budgets, mode: str, budget: str) -> Plan:
    """The sweep's plan: solver ``SOLVER_AT[budget]`` at that budget, alignment ``ALIGN``."""
    cap = {"M_R": budgets.m_r_bytes, "M_H": budgets.m_h_bytes}[budget]
    problem = Problem(graph, Target("t", cap, alignment_bytes=ALIGN), mode, False)
    return run_solver(problem, SOLVER_AT[budget])


def sweep(names, log) -> tuple[list[dict], dict[str, tuple]]:
    rows = []
    keep: dict[str, tuple] = {}   # workload -> (graph, strict M_R annotated text) for numerics
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = workload_path(name)
            graph = load_graph(path)
            b = compute_budgets(Problem(graph, Target("t", 1 << 50, alignment_bytes=ALIGN), "strict", False))
            for mode in ("strict", "tiered"):
                for budget in ("M_R", "M_H"):
                    solver = SOLVER_AT[budget]
                    plan = solve(graph, b, mode, budget)
                    r = round_trip(graph, plan, Path(tmp))
                    text = r.pop("text")
                    if mode == "strict" and budget == "M_R" and name.endswith(".before"):
                        keep[name.rsplit(".", 1)[0]] = (graph, text)
                    row = {"workload": name, "ops": len(graph.ops), "input_bytes": path.stat().st_size,
                           "mode": mode, "budget": budget, "solver": solver,
                           "transfers": sum(t.kind != "evict" for t in plan.transfers), **r}
                    rows.append(row)
                    log(f"{name:32s} {mode:6s} {budget} {solver:7s} round trip "
                        f"{'ok' if row['round_trip'] else 'FAILED: ' + row['verify']} emit "
                        f"{row['emit_s']:.2f} s read {row['read_s']:.2f} s copies {row['copies']}")
    return rows, keep


def numerics_row(base: str, graph, text: str, log) -> dict:
    n = numerics_round_trip(base, graph=graph, annotated=text, unannotated=True)
    log(f"numerics {base:24s} = jax.jit {n['bitwise_equal']} = unannotated "
        f"{n['annotated_equal_unannotated']} (unannotated = jax.jit "
        f"{n['unannotated_equal_jax_jit']}) outputs {n['outputs']} differing "
        f"{n['differing_outputs']} max abs diff {n['max_abs_diff']:.3g} jax.jit "
        f"{n['jax_jit_s']:.2f} s annotated {n['annotated_cpu_s']:.2f} s")
    return n


def rerun_numerics(bases, rows, log) -> list[dict]:
    """The numerics rows of ``bases`` (``model.variant``) again: the strict M_R plan of each
    pre-optimization module, solved as the sweep solves it; its number of copy pairs must be the
    saved round-trip row's (else the plan is not the one the round trip checked)."""
    saved = {(r["workload"], r["mode"], r["budget"]): r for r in rows}
    out = []
    for base in bases:
        name = f"{base}.before"
        graph = load_graph(workload_path(name))
        b = compute_budgets(Problem(graph, Target("t", 1 << 50, alignment_bytes=ALIGN), "strict", False))
        text = emit_hlo(graph, solve(graph, b, "strict", "M_R"))
        row = saved.get((name, "strict", "M_R"))
        if row is not None and row["copies"] != text.count(" copy-start("):
            raise SystemExit(f"emit_bench: {name}: the strict M_R plan has "
                             f"{text.count(' copy-start(')} copy pairs, the saved round-trip row "
                             f"{row['copies']}: rerun the whole sweep")
        out.append(numerics_row(base, graph, text, log))
    return out


def markdown(rows, numerics, cmd: str, note: str = "") -> str:
    import jax

    ok = sum(r["round_trip"] for r in rows)
    out = ["## Annotated HLO: round trips and numerics", "",
           f"Generated by `{cmd}`{note} on {time.strftime('%Y-%m-%d')} (jax {jax.__version__}, "
           f"{os.cpu_count()} CPU cores, shared machine: seconds are noisy). Solver `msa` at M_R, "
           f"`minpeak` at M_H (with weights, alignment {ALIGN} B), prefetches hoisted. "
           "Round trip = `memmap.import_plan(annotated.hlo)` gives plan.json's schedule, "
           "residencies and transfers (and the same graph), and the verifier accepts it; the "
           "annotated text parses with XLA's parser and `HloSchedule.verify()` passes (checked "
           "inside `emit_hlo`). Emit s = `emit_hlo` (XLA parse + annotate + XLA print + re-parse "
           "+ schedule check); read s = `import_plan` from the file. Format: docs/emit.md.", "",
           f"**{ok} of {len(rows)} rows round-trip.**", "",
           "| workload | ops | input MB | mode | budget | transfers | copy pairs | annotated MB | "
           "emit s | read s | round trip |",
           "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r['workload']} | {r['ops']} | {r['input_bytes'] / 1e6:.2f} | {r['mode']} | "
                   f"{r['budget']} | {r['transfers']} | {r['copies']} | "
                   f"{r['annotated_bytes'] / 1e6:.2f} | {r['emit_s']:.2f} | {r['read_s']:.2f} | "
                   f"{'ok' if r['round_trip'] else 'FAILED: ' + r['verify']} |")
    if numerics:
        eq = sum(n["bitwise_equal"] for n in numerics)
        same_plain = sum(n.get("annotated_equal_unannotated", False) for n in numerics)
        out += ["", "### Numerics: the annotated module on XLA:CPU vs `jax.jit`", "",
                "Strict M_R plan of each pre-optimization module; async copy pairs lowered to "
                "synchronous `copy` (`executable_variant`), `S(1)` kept; random inputs (floats "
                "|N(0, 1)|, integers in [0, 10)), seed 0. Both modules are compiled by "
                "`run_hlo_on_cpu`: HLO text -> the broadcast -> reshape -> broadcast chains that "
                "jax's StableHLO -> HLO export writes for degenerate broadcasts folded back into "
                "one broadcast (same values), so that the export inside `compile_and_load` writes "
                "them again as for `jax.jit` (docs/emit.md) -> `hlo_to_stablehlo` -> XLA:CPU. "
                "*unannotated* = the input HLO module compiled that way. jax.jit s and "
                "annotated s are compile + run. Post-optimization HLO does not recompile on XLA:CPU "
                "(fusions lack the backend config it wants), so it has no row.", "",
                f"**Annotated = unannotated bit for bit on {same_plain} of {len(numerics)} "
                f"workloads; annotated = `jax.jit` bit for bit on {eq} of {len(numerics)}.**", "",
                "| workload | outputs | copy pairs | = jax.jit | differing outputs | max abs diff | "
                "unannotated = jax.jit | annotated = unannotated | jax.jit s | annotated s |",
                "|---|---:|---:|---|---:|---:|---|---|---:|---:|"]
        yes = lambda b: "yes" if b else "no"  # noqa: E731
        for n in numerics:
            out.append(f"| {n['workload']} | {n['outputs']} | {n['copies']} | {yes(n['bitwise_equal'])} | "
                       f"{n['differing_outputs']} | {n['max_abs_diff']:.3g} | "
                       f"{yes(n['unannotated_equal_jax_jit'])} | {yes(n['annotated_equal_unannotated'])} | "
                       f"{n['jax_jit_s']:.2f} | {n['annotated_cpu_s']:.2f} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="mlp, lstm, small_cnn and the dumps only")
    ap.add_argument("--workloads", nargs="*", help="names like resnet50.fwd.after or external/graphsage_tf")
    ap.add_argument("--no-numerics", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write RESULTS.md")
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--json-out", help="also save the rows as JSON")
    ap.add_argument("--from-json", help="assemble the section from saved rows instead of running "
                    f"(with --rerun-numerics: the round-trip rows to keep; default {SAVED.relative_to(ROOT)})")
    ap.add_argument("--rerun-numerics", action="store_true",
                    help="rerun only the numerics (of --workloads given as model.variant, default all "
                    "saved ones) and keep the saved round-trip rows")
    args = ap.parse_args(argv)

    def bad_input(msg: str) -> int:
        print(f"emit_bench: error: {msg}", file=sys.stderr)
        return 2

    if args.rerun_numerics and args.no_numerics:
        return bad_input("--rerun-numerics and --no-numerics contradict each other")
    names = args.workloads or workloads(QUICK_MODELS if args.quick else ALL_MODELS)
    this_cmd = " ".join(["python benchmarks/emit_bench.py"] + list(sys.argv[1:] if argv is None else argv))

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.rerun_numerics:
        source = Path(args.from_json) if args.from_json else SAVED
        try:
            saved = json.loads(source.read_text())
            rows, numerics = saved["rows"], saved["numerics"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return bad_input(f"--rerun-numerics: cannot read the saved rows {source}: {e}")
        before = {r["workload"].rsplit(".", 1)[0] for r in rows if r["workload"].endswith(".before")}
        bases = args.workloads or [n["workload"] for n in numerics] or sorted(before)
        if args.quick and not args.workloads:
            bases = [b for b in bases if b.split(".")[0] in QUICK_MODELS]
        unknown = [b for b in bases if b not in before]
        if unknown:
            return bad_input(f"--rerun-numerics: no saved round-trip row for {unknown[0]}.before "
                             f"(known: {', '.join(sorted(before))})")
        fresh = {n["workload"]: n for n in rerun_numerics(bases, rows, log)}
        numerics = [fresh.pop(n["workload"], n) for n in numerics] + list(fresh.values())
        if args.json_out:
            Path(args.json_out).write_text(json.dumps({"rows": rows, "numerics": numerics}, indent=1))
        cmd = this_cmd
        shown = source.resolve().relative_to(ROOT) if source.resolve().is_relative_to(ROOT) else source
        note = (f" (numerics only; the round-trip rows are kept from `{shown}`, written by the "
                "full run `python benchmarks/emit_bench.py --json-out benchmarks/emit_results.json`)")
    elif args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        rows, numerics = saved["rows"], saved["numerics"]
        cmd = f"python benchmarks/emit_bench.py --json-out {args.from_json}"
        note = f" (the run's rows; this section rebuilt from them with `--from-json {args.from_json}`)"
    else:
        rows, keep = sweep(names, log)
        numerics = []
        if not args.no_numerics:
            numerics = [numerics_row(base, graph, text, log) for base, (graph, text) in keep.items()]
        if args.json_out:
            Path(args.json_out).write_text(json.dumps({"rows": rows, "numerics": numerics}, indent=1))
        cmd, note = this_cmd, ""
    md = markdown(rows, numerics, cmd, note)
    print(md)
    if not args.no_write:
        from benchmarks.run import write_results

        write_results(Path(args.output), {"emit": md})
        log(f"wrote section 'emit' of {args.output}")
    failed = [r for r in rows if not r["round_trip"]] + \
        [n for n in numerics if not n["annotated_equal_unannotated"]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
