"""timeline.png: every residency as a rectangle over (step x address), spills and reloads marked."""

from __future__ import annotations

from pathlib import Path

from memmap.plan import Plan

_COLORS = {"parameter": "#4c72b0", "constant": "#8172b2", "intermediate": "#55a868",
           "output": "#dd8452", "temporary": "#937860"}


def draw_timeline(plan: Plan, path: str | Path, *, max_rects: int = 20000) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    p = plan.problem
    g = p.graph
    asz = p.alloc_size
    n = max(1, len(plan.schedule))
    fig, ax = plt.subplots(figsize=(12, 6), dpi=110)
    rects, colors = [], []
    res = plan.residencies[:max_rects]
    for r in res:
        rects.append(Rectangle((r.start - 0.5, r.offset), r.end - r.start + 1, asz[r.value]))
        colors.append(_COLORS.get(g.values[r.value].kind, "#999999"))
    ax.add_collection(PatchCollection(rects, facecolor=colors, edgecolor="black", linewidth=0.2, alpha=0.85))
    where = {}
    by_value: dict[int, list] = {}
    for r in plan.residencies:
        where[(r.value, r.start)] = r
        by_value.setdefault(r.value, []).append(r)
    spill_x, spill_y, rel_x, rel_y = [], [], [], []
    for tr in plan.transfers:
        if tr.kind == "spill":
            rs = [r for r in by_value.get(tr.value, ()) if r.start <= tr.step <= r.end]
            if rs:
                spill_x.append(tr.step)
                spill_y.append(rs[0].offset + asz[tr.value] / 2)
        elif tr.kind == "reload":
            r = where.get((tr.value, tr.step))
            if r is not None:
                rel_x.append(tr.step - 0.5)
                rel_y.append(r.offset + asz[tr.value] / 2)
    ax.scatter(spill_x, spill_y, marker="v", color="red", s=18, zorder=3)
    ax.scatter(rel_x, rel_y, marker="^", color="blue", s=18, zorder=3)
    cap = p.target.capacity_bytes
    ax.axhline(cap, color="black", linestyle="--", linewidth=1)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(0, cap * 1.05)
    ax.set_xlabel("step (schedule index)")
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y / 2**20:.2f}"))
    ax.set_ylabel("scratchpad address (MiB)")
    m = plan.metrics
    title = f"{g.name} - {plan.solver}, {p.mode} mode, capacity {cap} B"
    if m:
        title += f"\nnon-compulsory {m.get('noncompulsory_bytes', 0)} B, peak {m.get('peak_scratchpad_bytes', 0)} B"
    if len(plan.residencies) > max_rects:
        title += f" (first {max_rects} of {len(plan.residencies)} residencies drawn)"
    ax.set_title(title, fontsize=10)
    handles = [Patch(color=c, label=k) for k, c in _COLORS.items()]
    handles += [Line2D([], [], marker="v", color="red", linestyle="", label="spill"),
                Line2D([], [], marker="^", color="blue", linestyle="", label="reload"),
                Line2D([], [], color="black", linestyle="--", label="capacity")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
