"""timeline.png: every residency as a rectangle over (step x address); transfers marked.

The address axis is in the binary unit that suits the capacity (B, KiB, MiB, GiB) with ticks at
round values of it. Markers (glossary words): a **spill** (red, down), a **writeback** (orange,
down), a **load** (black, up) and a **reload** (blue, up) at the step they are issued; a
**prefetch** -- a load or reload issued before the step that first reads the value -- is a magenta
right-pointing marker at its issue step joined by a magenta line to that first read.
"""

from __future__ import annotations

from pathlib import Path

from memmap.cost import load_deadlines
from memmap.plan import Plan
from memmap.problem import format_bytes

_COLORS = {"parameter": "#4c72b0", "constant": "#8172b2", "intermediate": "#55a868",
           "output": "#dd8452", "temporary": "#937860"}
_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1))


def _unit(capacity_bytes: int) -> tuple[str, int]:
    """The largest binary unit in which the capacity is at least 1."""
    return next((u for u in _UNITS if capacity_bytes >= u[1]), _UNITS[-1])


def draw_timeline(plan: Plan, path: str | Path, *, max_rects: int = 20000) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import MaxNLocator

    p = plan.problem
    g = p.graph
    asz = p.alloc_size
    n = max(1, len(plan.schedule))
    cap = p.target.capacity_bytes
    unit_name, unit = _unit(cap)
    fig, ax = plt.subplots(figsize=(12, 6), dpi=110)
    rects, colors = [], []
    for r in plan.residencies[:max_rects]:
        rects.append(Rectangle((r.start - 0.5, r.offset / unit), r.end - r.start + 1,
                               asz[r.value] / unit))
        colors.append(_COLORS.get(g.values[r.value].kind, "#999999"))
    ax.add_collection(PatchCollection(rects, facecolor=colors, edgecolor="black", linewidth=0.2,
                                      alpha=0.85))

    by_value: dict[int, list] = {}
    for r in plan.residencies:
        by_value.setdefault(r.value, []).append(r)

    def middle(value: int, step: int) -> float | None:
        """Address (in units) of the middle of ``value``'s residency holding ``step``."""
        for r in by_value.get(value, ()):
            if r.start <= step <= r.end:
                return (r.offset + asz[value] / 2) / unit
        return None

    marks: dict[str, tuple[list, list]] = {k: ([], []) for k in
                                           ("spill", "writeback", "load", "reload", "prefetch")}
    windows = []
    for tr in plan.transfers:
        if tr.kind in ("spill", "writeback"):
            y = middle(tr.value, tr.step)
            if y is not None:
                marks[tr.kind][0].append(tr.step + 0.5)
                marks[tr.kind][1].append(y)
    for tr, first_read in load_deadlines(plan):
        y = middle(tr.value, tr.step)
        if y is None:
            continue
        kind = "prefetch" if first_read > tr.step else tr.kind
        marks[kind][0].append(tr.step - 0.5)
        marks[kind][1].append(y)
        if kind == "prefetch":
            windows.append([(tr.step - 0.5, y), (first_read - 0.5, y)])
    ax.add_collection(LineCollection(windows, colors="#c51b7d", linewidths=1.0, zorder=3))
    style = {"spill": ("v", "red"), "writeback": ("v", "#ff9f1c"), "load": ("^", "black"),
             "reload": ("^", "blue"), "prefetch": (">", "#c51b7d")}
    for kind, (xs, ys) in marks.items():
        marker, color = style[kind]
        ax.scatter(xs, ys, marker=marker, color=color, s=18, zorder=4)

    ax.axhline(cap / unit, color="black", linestyle="--", linewidth=1)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(0, cap / unit * 1.05)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=10, steps=[1, 2, 2.5, 4, 5, 10]))
    ax.set_xlabel("step (schedule index)")
    ax.set_ylabel(f"scratchpad address ({unit_name})")
    m = plan.metrics
    title = f"{g.name}: {plan.solver}, {p.mode} mode, scratchpad {format_bytes(cap)}"
    if m:
        title += (f"\nnon-compulsory traffic {format_bytes(m.get('noncompulsory_bytes', 0))}, "
                  f"peak address {format_bytes(m.get('peak_scratchpad_bytes', 0))}, "
                  f"{m.get('num_prefetches', 0)} prefetches")
    if len(plan.residencies) > max_rects:
        title += f" (first {max_rects} of {len(plan.residencies)} residencies drawn)"
    ax.set_title(title, fontsize=10)
    handles = [Patch(color=c, label=k) for k, c in _COLORS.items()]
    handles += [Line2D([], [], marker=style[k][0], color=style[k][1], linestyle="", label=k)
                for k in ("load", "reload", "spill", "writeback")]
    handles += [Line2D([], [], marker=">", color="#c51b7d", label="prefetch (issue -> first read)"),
                Line2D([], [], color="black", linestyle="--", label="capacity")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
