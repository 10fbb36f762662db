"""``memmap cascade``: pass counts of the attention cascades and the FuseMax performance model.

Usage::

    memmap cascade passes
    memmap cascade fusemax [--json] [--models BERT-Base XLM] [--seq-lens 1024 4096] [--batch 64]
    memmap cascade detect INPUT [--target NAME | --scratchpad SIZE] [--stage before] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from memmap.cascade.detect import add_detect_arguments, run_detect
from memmap.cascade.library import ATTENTION_CASCADES
from memmap.cascade.model import PAPER_MODELS, PAPER_SEQ_LENS, PointResult, evaluate_point
from memmap.cascade.passes import analyze_passes
from memmap.errors import EXIT_BAD_INPUT, OneLineArgumentParser

__all__ = ["main", "results_markdown", "evaluate_grid", "PAPER_MEANS"]

#: Arithmetic means over the 24 points reported by the FuseMax paper (see docs/fusemax.md).
PAPER_MEANS = {
    "attn_speedup_vs_flat": 6.7,
    "attn_speedup_vs_unfused": 10.0,
    "e2e_speedup_vs_flat": 5.3,
    "e2e_speedup_vs_unfused": 7.6,
    "energy_fusemax_vs_flat": 0.79,
}
_MEAN_KEYS = tuple(PAPER_MEANS)


def evaluate_grid(models=None, seq_lens=None, *, batch: int = 64) -> list[PointResult]:
    """Evaluate every (model, seq_len) pair; models by name from :data:`PAPER_MODELS`."""
    names = list(models or PAPER_MODELS)
    for n in names:
        if n not in PAPER_MODELS:
            raise ValueError(f"unknown model {n!r}; choose from {', '.join(PAPER_MODELS)}")
    return [evaluate_point(PAPER_MODELS[n], s, batch=batch) for n in names for s in (seq_lens or PAPER_SEQ_LENS)]


def _means(points: list[PointResult]) -> dict[str, float]:
    return {k: statistics.fmean(p.as_dict()[k] for p in points) for k in _MEAN_KEYS}


def results_markdown() -> str:
    """Markdown table of the 24 paper points plus means vs the paper's means (for RESULTS.md)."""
    pts = evaluate_grid()
    lines = [
        "| model | seq_len | attn vs FLAT | attn vs unfused | e2e vs FLAT | e2e vs unfused | "
        "2D util FuseMax | 2D util FLAT | energy vs FLAT | FLAT tiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in pts:
        d = p.as_dict()
        lines.append(
            f"| {p.model} | {p.seq_len} | {d['attn_speedup_vs_flat']:.2f} | {d['attn_speedup_vs_unfused']:.2f} | "
            f"{d['e2e_speedup_vs_flat']:.2f} | {d['e2e_speedup_vs_unfused']:.2f} | {d['util_2d_fusemax']:.3f} | "
            f"{d['util_2d_flat']:.3f} | {d['energy_fusemax_vs_flat']:.2f} | {p.flat.detail} |"
        )
    m = _means(pts)
    lines += [
        "",
        "| mean over the 24 points | this model | FuseMax paper |",
        "|---|---:|---:|",
    ]
    for k in _MEAN_KEYS:
        lines.append(f"| {k} | {m[k]:.2f} | {PAPER_MEANS[k]:.2f} |")
    return "\n".join(lines) + "\n"


def _cmd_passes(args) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Passes over the key rank m")
    for col in ("cascade", "passes", "crossing tensors", "on-chip words / query (M=1024)"):
        table.add_column(col)
    ext = {"E": 64, "F": 64, "M": 1024, "P": 1024, "M0": 256, "M1": 4}
    rows = []
    for name, make in ATTENTION_CASCADES.items():
        a = analyze_passes(make())
        crossing = ", ".join(f"{t.tensor}({t.produced_pass}->{max(t.read_passes)})" for t in a.crossing) or "-"
        rows.append({"cascade": name, "passes": a.num_passes, "footprint_words_per_query": a.footprint_words(ext)})
        table.add_row(name, str(a.num_passes), crossing, str(a.footprint_words(ext)))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        Console().print(table)
    return 0


def _cmd_fusemax(args) -> int:
    try:
        pts = evaluate_grid(args.models, args.seq_lens, batch=args.batch)
    except ValueError as exc:
        print(f"memmap cascade fusemax: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps([p.as_dict() for p in pts], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"FuseMax vs FLAT vs unfused (batch {args.batch})")
    cols = ("model", "seq_len", "attn/FLAT", "attn/unfused", "e2e/FLAT", "2D util FuseMax", "2D util FLAT", "energy/FLAT", "FLAT tiling")
    for col in cols:
        table.add_column(col)
    for p in pts:
        d = p.as_dict()
        table.add_row(
            p.model, str(p.seq_len), f"{d['attn_speedup_vs_flat']:.2f}", f"{d['attn_speedup_vs_unfused']:.2f}",
            f"{d['e2e_speedup_vs_flat']:.2f}", f"{d['util_2d_fusemax']:.3f}", f"{d['util_2d_flat']:.3f}",
            f"{d['energy_fusemax_vs_flat']:.2f}", p.flat.detail,
        )
    m = _means(pts)
    table.add_row(
        "mean", "", f"{m['attn_speedup_vs_flat']:.2f}", f"{m['attn_speedup_vs_unfused']:.2f}",
        f"{m['e2e_speedup_vs_flat']:.2f}", "", "", f"{m['energy_fusemax_vs_flat']:.2f}", "",
    )
    table.add_row("paper mean", "", "6.7", "10", "5.3", "", "", "0.79", "")
    Console().print(table)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str]) -> int:
    """Entry point of ``memmap cascade``; returns the exit status (usage errors: one line on
    stderr, exit 2; ``-h``: exit 0)."""
    parser = OneLineArgumentParser(prog="memmap cascade",
                                   description="Einsum cascades and the FuseMax model")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("passes", help="pass counts of the attention cascades")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_passes)
    f = sub.add_parser("fusemax", help="FuseMax / FLAT / unfused performance model")
    f.add_argument("--json", action="store_true", help="print a JSON list, one object per (model, seq_len)")
    f.add_argument("--models", nargs="+", default=None, help=f"subset of: {', '.join(PAPER_MODELS)}")
    f.add_argument("--seq-lens", nargs="+", type=_positive_int, default=None,
                   help="sequence lengths (default: 1K..1M)")
    f.add_argument("--batch", type=_positive_int, default=64, help="batch size (default 64)")
    f.set_defaults(func=_cmd_fusemax)
    d = sub.add_parser("detect", help="find softmax(Q K^T) V in an HLO module and plan it 1-pass")
    add_detect_arguments(d)
    d.set_defaults(func=run_detect)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_BAD_INPUT
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
