"""Large fixed-lifetime allocation traces (MiniMalloc CSV) for ``memmap alloc``'s limits.

    python -m benchmarks.large_traces -o DIR [--seed 0] [--only NAME,...]

writes, each at its peak live bytes as the capacity (``NAME.<capacity>.csv``, the convention
``memmap alloc`` reads the capacity from):

* ``resnet50_train_x12``: the buffer lifetimes of 12 consecutive ``resnet50.train.after`` steps
  (about 27k buffers), ``bert_base_train_x25``: 25 ``bert_base.train.after`` steps (about 63k).
  One step's buffers are the full-residency live ranges of its values under XLA's schedule
  (:func:`memmap.scheduling.live_ranges`: produced values from their producer's step, parameters
  from their first use, to their last use), sizes the allocated (64-byte aligned) sizes. Step
  ``k`` is shifted by ``k`` times the step's length; a parameter of step ``k > 0`` becomes live
  at the last step of step ``k - 1`` (it is that step's updated parameter), so consecutive
  steps overlap and the trace does not split into independent steps.
* ``random_<n>``: :func:`random_trace` with ``n`` buffers (30k, 60k, 100k).

The zoo's HLO comes from :mod:`benchmarks.zoo` (cached in ``benchmarks/cache``; lowering and
compiling take about a minute the first time).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from memmap.ilp.alloc import AllocProblem, peak_live

__all__ = ["random_trace", "program_trace", "write_trace"]


def random_trace(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lower [n], upper [n], size [n])`` of ``n`` buffers shaped like a training step's: most
    live a few steps (lengths geometric, mean 4), 5% live long (uniform up to 2000 steps); sizes
    log-uniform between 64 B and 4 MiB in multiples of 64 B; one buffer starts per step, so the
    trace spans about ``n`` steps."""
    rng = np.random.default_rng(seed)
    lower = np.arange(n, dtype=np.int64) + rng.integers(0, 2, size=n)
    length = rng.geometric(0.25, size=n).astype(np.int64)
    long = rng.random(n) < 0.05
    length[long] = rng.integers(50, 2000, size=int(long.sum()))
    size = (np.exp(rng.uniform(np.log(1), np.log(1 << 16), size=n)).astype(np.int64) + 1) * 64
    return lower, lower + length, size


def program_trace(workload: str, repeats: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lower, upper, size)`` of ``repeats`` consecutive steps of a zoo program (post-optimization
    HLO, XLA's schedule), as described in the module docstring."""
    from benchmarks import zoo
    from memmap.pipeline import load_graph, make_target
    from memmap.problem import Problem
    from memmap.scheduling import live_ranges

    graph = load_graph(zoo.cached_hlo_path(workload, "after"))
    problem = Problem(graph, make_target(None, "1TiB"), "strict", False)
    ranges = live_ranges(problem, graph.default_schedule)
    values = sorted(ranges)
    first = np.array([ranges[v][0] for v in values], dtype=np.int64)
    upper = np.array([ranges[v][1] + 1 for v in values], dtype=np.int64)
    size = np.array([problem.alloc_size[v] for v in values], dtype=np.int64)
    is_param = np.array([graph.values[v].producer is None for v in values])
    steps = len(graph.default_schedule)
    lo, hi, sz = [], [], []
    for k in range(repeats):
        start = first + k * steps
        if k > 0:
            start = np.where(is_param, k * steps - 1, start)
        lo.append(start)
        hi.append(upper + k * steps)
        sz.append(size)
    keep = np.concatenate(sz) > 0
    return np.concatenate(lo)[keep], np.concatenate(hi)[keep], np.concatenate(sz)[keep]


def write_trace(path: Path, lower, upper, size) -> Path:
    """Write ``id,lower,upper,size`` to ``path``."""
    lines = ["id,lower,upper,size"]
    lines += [f"{k},{a},{b},{z}" for k, (a, b, z) in enumerate(zip(lower.tolist(), upper.tolist(),
                                                                    size.tolist()))]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--outdir", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="comma-separated names (default: all)")
    args = ap.parse_args()
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    makers = {
        "resnet50_train_x12": lambda: program_trace("resnet50.train", 12),
        "bert_base_train_x25": lambda: program_trace("bert_base.train", 25),
        "random_30000": lambda: random_trace(30_000, seed=args.seed),
        "random_60000": lambda: random_trace(60_000, seed=args.seed),
        "random_100000": lambda: random_trace(100_000, seed=args.seed),
    }
    only = set(args.only.split(",")) if args.only else set(makers)
    for name, make in makers.items():
        if name not in only:
            continue
        lower, upper, size = make()
        cap = peak_live(AllocProblem.from_lists(lower.tolist(), upper.tolist(), size.tolist()))[0]
        p = write_trace(out / f"{name}.{cap}.csv", lower, upper, size)
        print(f"{p}: {len(size)} buffers, {int(upper.max())} steps, capacity {cap}")


if __name__ == "__main__":
    main()
