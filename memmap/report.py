"""Human-readable report (markdown) of a plan, with the solver comparison when several ran."""

from __future__ import annotations

from pathlib import Path

from memmap.plan import Plan
from memmap.problem import format_bytes, format_rate

#: docs/glossary.md of a source checkout (editable install), linked from the report when present.
_GLOSSARY = Path(__file__).resolve().parents[1] / "docs" / "glossary.md"


def _pct(a: float, b: float) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "n/a"


def plan_report(plan: Plan, *, input_name: str = "") -> str:
    p = plan.problem
    g = p.graph
    m = plan.metrics
    t = p.target
    lines = [
        f"# memmap plan: {g.name}",
        "",
        f"- input: `{input_name or g.source}` ({len(g.ops)} operators, {len(g.values)} values, "
        f"schedule origin: {g.schedule_origin})",
        f"- target: `{t.name}`: scratchpad {format_bytes(t.capacity_bytes)} ({t.capacity_bytes} B), "
        f"alignment {t.alignment_bytes} B; off-chip bandwidth "
        f"{format_rate(t.offchip_bandwidth_bytes_per_s, 'B/s')}, on-chip (scratchpad) bandwidth "
        f"{format_rate(t.onchip_bandwidth_bytes_per_s, 'B/s')}, compute "
        f"{format_rate(t.compute_flops_per_s, 'FLOP/s')}, {t.dma_engines} DMA engine(s) "
        f"(source: {t.source})",
        f"- mode: **{p.mode}**{' (activations only)' if p.activations_only else ''}; M_R = "
        f"{format_bytes(p.m_r_bytes)}",
        f"- solver: **{plan.solver}** ({plan.status}), solve time {plan.solve_time_s:.2f} s",
        "",
        "## Traffic",
        "",
        "| | bytes | |",
        "|---|---:|---|",
        f"| compulsory (first loads of inputs/weights + final output writes) | {m['compulsory_bytes']} | {format_bytes(m['compulsory_bytes'])} |",
        f"| **non-compulsory** (spills + reloads{' + slow round trips' if p.mode == 'tiered' else ''}) | "
        f"**{m['noncompulsory_bytes']}** | {_pct(m['noncompulsory_bytes'], m['compulsory_bytes'])} of compulsory |",
        f"| loads / reloads | {m['load_bytes']} / {m['reload_bytes']} | |",
        f"| spills / writebacks | {m['spill_bytes']} / {m['writeback_bytes']} | |",
    ]
    if p.mode == "tiered":
        lines.append(f"| slow-memory operand reads / result writes | {m['slow_read_bytes']} / {m['slow_write_bytes']} | |")
    lines += [
        "",
        "## Scratchpad and time",
        "",
        f"- peak scratchpad (highest address used): {format_bytes(m['peak_scratchpad_bytes'])} "
        f"({_pct(m['peak_scratchpad_bytes'], t.capacity_bytes)} of capacity); peak live bytes "
        f"{format_bytes(m['peak_live_bytes'])}",
        f"- spills: {m['num_spills']}, reloads: {m['num_reloads']}, prefetches (copies issued before "
        f"the step that needs them): {m['num_prefetches']}",
        f"- modelled time: {m['modeled_time_s'] * 1e3:.4f} ms (operators {m['operator_time_s'] * 1e3:.4f} ms, "
        f"stalls {m['stall_time_s'] * 1e3:.4f} ms)",
        "",
    ]
    comp = plan.info.get("comparison")
    if comp:
        lines += ["## Solver comparison", "",
                  "| solver | status | non-compulsory bytes | peak scratchpad | modelled time (ms) | solve s |",
                  "|---|---|---:|---:|---:|---:|"]
        for c in comp:
            if c.get("status") == "FAILED":
                lines.append(f"| {c['solver']} | FAILED: {c.get('error', '')} | | | | |")
                continue
            mark = " (chosen)" if c["solver"] == plan.solver else ""
            lines.append(f"| {c['solver']}{mark} | {c['status']} | {c['noncompulsory_bytes']} | "
                         f"{c['peak_scratchpad_bytes']} | {c['modeled_time_s'] * 1e3:.4f} | {c['solve_time_s']:.2f} |")
        lines.append("")
    lines += ["Every plan above passed the independent verifier (`memmap verify`).", ""]
    glossary = (f"[docs/glossary.md]({_GLOSSARY.as_uri()})" if _GLOSSARY.is_file()
                else "docs/glossary.md in the memmap repository")
    lines += [
        "## Terms",
        "",
        f"The words of this report are defined in memmap's glossary, {glossary}. In short: a "
        "**step** is one position of the schedule (one operator runs per step); **compulsory** "
        "traffic is what every plan moves (first loads of inputs and weights, final writes of "
        "outputs); **non-compulsory** traffic is everything else: **spills** (first write of an "
        "intermediate off-chip), **reloads** (copying a value back in) and, in tiered mode, "
        "round trips of intermediates through off-chip memory and repeated off-chip reads; a "
        "**prefetch** is a load or reload issued at an earlier step than the one that reads the "
        "value, so the copy overlaps with the operators in between; the **modelled time** is "
        "when the last operator (roofline: compute or bandwidth bound) and the last transfer "
        "(on the target's DMA engines) have finished; **stalls** are the waits for transfers.",
        "",
    ]
    return "\n".join(lines)
