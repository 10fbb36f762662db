"""While loops: memmap's peak live bytes, M_P and M_R against XLA's own buffers.

For each module, XLA:CPU compiles it with dumping on; the post-optimization module it writes is
imported into memmap and measured with this tree ("after": the ``while`` loop state as in-place
pairs, loop invariants as the operand's value) and, with ``--baseline-rev``, with the memmap of
that git revision, extracted into a temporary folder and run in a subprocess ("before": the loop
state counted as input and output at the while step). XLA's numbers: the "peak usage" line of its
``*-live-range.txt`` dump, and the largest number of bytes its buffer assignment keeps occupied
at one time (:func:`xla_occupancy_peak`, the reference for the ratios; the dump's line can miss
that maximum and can count shared buffers twice).

The two accountings differ on purpose in one respect: XLA keeps every entry parameter (and
constant) live for the whole program and every result until the end, memmap only from a value's
first to its last use (a parameter is loaded when first needed). So the table gives memmap's peak
both ways: with its own live ranges, and with XLA's lifetimes for parameters, constants and
outputs (:func:`peak_xla_lifetimes`), which is the like-for-like comparison. What remains is
what memmap does not model: XLA's tuple index tables (8 bytes per element of a tuple buffer),
a loop condition's result, and buffers XLA shares inside loop bodies.

Modules: the zoo's ``lstm.fwd`` and ``lstm.train`` (the only zoo workloads with a while loop),
``examples/lstm.before.hlo`` (compiled by XLA here, then its post-optimization module measured;
and, with no XLA counterpart, the pre-optimization module itself), and hand-made loops whose
peak is worked out by hand (``BY_HAND``).

    python benchmarks/while_peaks.py --baseline-rev e8b21a1   # prints the markdown table
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A counter and an f32[1024] state (4 KiB) updated 100 times: x' = exp(x) * exp(x) (XLA turns
# it into one fusion, exp(x + x), writing the new state).
SIMPLE = """HloModule simple_loop

cond {
  cp = (s32[], f32[1024]) parameter(0)
  i = s32[] get-tuple-element(cp), index=0
  lim = s32[] constant(100)
  ROOT lt = pred[] compare(i, lim), direction=LT
}

body {
  bp = (s32[], f32[1024]) parameter(0)
  i = s32[] get-tuple-element(bp), index=0
  x = f32[1024] get-tuple-element(bp), index=1
  one = s32[] constant(1)
  i2 = s32[] add(i, one)
  e = f32[1024] exponential(x)
  x2 = f32[1024] multiply(e, e)
  ROOT t = (s32[], f32[1024]) tuple(i2, x2)
}

ENTRY main {
  p = f32[1024] parameter(0)
  z = s32[] constant(0)
  x0 = f32[1024] negate(p)
  init = (s32[], f32[1024]) tuple(z, x0)
  w = (s32[], f32[1024]) while(init), condition=cond, body=body
  ROOT out = f32[1024] get-tuple-element(w), index=1
}
"""

# Two state arrays (h: 4 KiB, acc: 64 KiB); each iteration h' = tanh(h) and h' is written into
# row i of acc with dynamic-update-slice (in place in XLA).
ACCUMULATE = """HloModule accumulate_loop

cond {
  cp = (s32[], f32[1024], f32[16,1024]) parameter(0)
  i = s32[] get-tuple-element(cp), index=0
  lim = s32[] constant(16)
  ROOT lt = pred[] compare(i, lim), direction=LT
}

body {
  bp = (s32[], f32[1024], f32[16,1024]) parameter(0)
  i = s32[] get-tuple-element(bp), index=0
  h = f32[1024] get-tuple-element(bp), index=1
  acc = f32[16,1024] get-tuple-element(bp), index=2
  one = s32[] constant(1)
  i2 = s32[] add(i, one)
  h2 = f32[1024] tanh(h)
  row = f32[1,1024] reshape(h2)
  zero = s32[] constant(0)
  acc2 = f32[16,1024] dynamic-update-slice(acc, row, i, zero)
  ROOT t = (s32[], f32[1024], f32[16,1024]) tuple(i2, h2, acc2)
}

ENTRY main {
  p = f32[1024] parameter(0)
  z = s32[] constant(0)
  h0 = f32[1024] negate(p)
  f0 = f32[] constant(0)
  acc0 = f32[16,1024] broadcast(f0), dimensions={}
  init = (s32[], f32[1024], f32[16,1024]) tuple(z, h0, acc0)
  w = (s32[], f32[1024], f32[16,1024]) while(init), condition=cond, body=body
  ROOT out = f32[16,1024] get-tuple-element(w), index=2
}
"""

# The peaks worked out by hand from XLA's post-optimization modules (XLA rewrites exp(x) *
# exp(x) as exp(x + x), one fusion writing the new state, and fuses tanh into the
# dynamic-update-slice). At the while step, with XLA's lifetimes (p and the entry constants live
# throughout): p + entry constants + the loop state once + the body's own buffers.
BY_HAND = {
    "hand: simple loop": "p 4096 + constant 4 + state (counter 4 + x 4096) + body constant 4 = 8,204; "
                         "memmap's own lifetimes: 8,192 at the negate (p and x0), the loop needs 4,104. "
                         "XLA occupies 8,217: the state, p, a 16-byte tuple table, the counter, the "
                         "condition's constant and its 1-byte result",
    "hand: accumulate loop": "p 4096 + constants 8 + state (4 + 4096 + 65536) + body (constant 4 + counter "
                             "copy 4) = 73,748; memmap's own lifetimes: 69,644 at the loop (p is dead). "
                             "XLA occupies 73,761 (its tuple table is 24 bytes)",
}


def xla_peak_bytes(dump: Path) -> int:
    """The peak of XLA's live-range dump of the (largest) module in ``dump``."""
    files = sorted(dump.glob("*-live-range.txt"), key=lambda p: -p.stat().st_size)
    if not files:
        raise FileNotFoundError(f"{dump}: no *-live-range.txt (compile with xla_dump_to)")
    m = re.search(r"Stack trace breakdown for peak usage: ([\d ]+) bytes", files[0].read_text())
    if m is None:
        raise ValueError(f"{files[0]}: no peak line")
    return int(m.group(1).replace(" ", ""))


def xla_occupancy_peak(dump: Path) -> int:
    """The largest number of bytes XLA's buffer assignment keeps occupied at one time: at each
    time of the live-range dump, the union of the byte ranges ``[offset, offset + size)`` of
    the live values in each allocation (values that share a buffer count once), maximised over
    time. The dump's own "peak" line is a diagnostic that can miss this maximum: XLA picks its
    moment (``HloLiveRange::ComputePeakMemoryMoment``) by summing ``ByteSizeOf`` of each value's
    *instruction* shape, which is the small tuple index table for every element of a tuple (a
    while loop's state leaves), and then prints the live values at that moment."""
    live = max(dump.glob("*-live-range.txt"), key=lambda p: p.stat().st_size)
    prefix = live.name[: -len("-live-range.txt")]
    ranges = {n: (int(a), int(b)) for n, a, b in
              re.findall(r"^    (\S+):(\d+)-(\d+)$", live.read_text(), re.M)}
    values = []          # (allocation, name as in the live-range dump, offset, size)
    alloc = None
    for line in (dump / f"{prefix}-buffer-assignment.txt").read_text().splitlines():
        m = re.match(r"allocation (\d+): size \d+", line)
        if m:
            alloc = int(m.group(1))
            continue
        m = re.match(r" value: <\d+ (\S+)(?: \(phi\))? @\d+> \(size=(\d+),offset=(\d+)\)", line)
        if m and alloc is not None:
            name = m.group(1) if "{" in m.group(1) else m.group(1) + "{}"
            values.append((alloc, name, int(m.group(3)), int(m.group(2))))
        elif line and not line.startswith((" ", "allocation")):
            alloc = None          # past the allocation list
    horizon = max((b for _, b in ranges.values()), default=-1) + 1
    best = 0
    for t in range(horizon):
        spans: dict[int, list[tuple[int, int]]] = {}
        for a, name, off, size in values:
            r = ranges.get(name)
            if r is not None and r[0] <= t <= r[1]:
                spans.setdefault(a, []).append((off, off + size))
        total = 0
        for iv in spans.values():
            iv.sort()
            lo, hi = iv[0]
            for x, y in iv[1:]:
                if x > hi:
                    total += hi - lo
                    lo, hi = x, y
                else:
                    hi = max(hi, y)
            total += hi - lo
        best = max(best, total)
    return best


def compile_text(text: str, out: Path) -> Path:
    """Compile HLO text with XLA:CPU, dumping into ``out`` (as ``--xla_dump_to`` would)."""
    import jax
    from jax._src.lib import xla_client
    from jaxlib import _hlo, _jax

    out.mkdir(parents=True, exist_ok=True)
    mod = _hlo.hlo_module_from_text(text)
    shlo = _jax.mlir.hlo_to_stablehlo(mod.as_serialized_hlo_module_proto())
    dev = jax.devices("cpu")[0]
    opts = xla_client.CompileOptions()
    opts.env_option_overrides = [("xla_dump_to", str(out)), ("xla_dump_hlo_as_text", True)]
    dev.client.compile_and_load(shlo, _jax.DeviceList((dev,)), opts)
    return out


def peak_xla_lifetimes(problem, schedule) -> int:
    """Peak live bytes under ``schedule`` with XLA's lifetimes: parameters and constants live
    for the whole program, outputs until its end, everything else from creation to last use;
    an in-place pair counted once where its input's range ends at the operator. (Written against
    the API of every memmap version this script measures: without in-place pairs, no links.)"""
    import numpy as np

    from memmap.scheduling import live_ranges

    try:
        from memmap.scheduling import inplace_links
    except ImportError:             # a memmap from before in-place pairs
        def inplace_links(problem, schedule, segs):
            return []
    n = len(schedule)
    g = problem.graph
    asz = problem.alloc_size
    segs = []
    for v, (a, b) in live_ranges(problem, schedule).items():
        val = g.values[v]
        if val.producer is None:
            a, b = 0, n - 1
        if val.is_output:
            b = n - 1
        segs.append((v, a, b))
    delta = np.zeros(n + 1, dtype=np.int64)
    for v, a, b in segs:
        delta[a] += asz[v]
        delta[b + 1] -= asz[v]
    for i, _ in inplace_links(problem, schedule, segs):
        v, _, b = segs[i]
        delta[b] -= asz[v]
        delta[b + 1] += asz[v]
    return int(np.cumsum(delta)[:n].max())


def measure(dump: Path) -> dict:
    """memmap's numbers for the post-optimization module of an XLA dump folder (alignment 1,
    weights included, strict budgets)."""
    from memmap.budgets import compute_budgets
    from memmap.ir import import_hlo
    from memmap.problem import Problem, Target
    from memmap.scheduling import peak_live_bytes

    g = import_hlo(dump, xla_cost=False)
    p = Problem(g, Target("t", 1 << 40, alignment_bytes=1), "strict")
    b = compute_budgets(p)
    return {"ops": g.num_ops, "whiles": sum(o.opcode == "while" for o in g.ops),
            "pairs": sum(len(getattr(o, "inplace", ())) for o in g.ops),
            "peak": peak_live_bytes(p, g.default_schedule),
            "xpeak": peak_xla_lifetimes(p, g.default_schedule),
            "m_p": b.m_p_bytes, "m_r": b.m_r_bytes}


def baseline_tree(rev: str, out: Path) -> Path:
    """The memmap package of git revision ``rev``, laid out as installed (``memmap/`` with
    ``ir/``, ``ilp/``, ``rl/`` inside, as pyproject.toml maps them) under ``out``."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "memmap", "ir", "ilp", "rl"],
                          check=True, capture_output=True).stdout
    src = out / "src"
    src.mkdir(parents=True)
    archive = out / "rev.tar"
    archive.write_bytes(data)
    with tarfile.open(archive) as tar:
        tar.extractall(src, filter="data")
    pkg = out / "pkg" / "memmap"
    pkg.parent.mkdir(parents=True)
    (src / "memmap").rename(pkg)
    for sub in ("ir", "ilp", "rl"):
        if (src / sub).exists():
            (src / sub).rename(pkg / sub)
    return out / "pkg"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-rev", help="also measure this git revision's memmap (the 'before' columns)")
    ap.add_argument("--measure", nargs="*", help=argparse.SUPPRESS)   # internal: dump folders -> JSON
    args = ap.parse_args(argv)
    if args.measure is not None:
        import memmap

        print(json.dumps({"memmap": memmap.__file__, "rows": [measure(Path(d)) for d in args.measure]}))
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks import zoo

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dumps = [(f"{name} (post-opt)", zoo.dump_folder(name, tmp / name)) for name in ("lstm.fwd", "lstm.train")]
        text = (ROOT / "examples" / "lstm.before.hlo").read_text()
        dumps.append(("examples/lstm.before.hlo, compiled (post-opt)", compile_text(text, tmp / "example")))
        for name, text in (("hand: simple loop", SIMPLE), ("hand: accumulate loop", ACCUMULATE)):
            dumps.append((name, compile_text(text, tmp / name.split()[1])))
        # memmap only (no XLA live ranges for a pre-optimization module): the example as given
        dumps.append(("examples/lstm.before.hlo (pre-opt, as given)", ROOT / "examples" / "lstm.before.hlo"))
        after = [measure(d) for _, d in dumps]
        before = None
        if args.baseline_rev:
            pkg = baseline_tree(args.baseline_rev, tmp / "baseline")
            env = dict(os.environ, PYTHONPATH=str(pkg))
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure",
                                  *[str(d) for _, d in dumps]], env=env, cwd=tmp, check=True,
                                 capture_output=True, text=True).stdout
            got = json.loads(out)
            if not Path(got["memmap"]).resolve().is_relative_to(pkg.resolve()):
                raise RuntimeError(f"the baseline run imported {got['memmap']}, not {pkg}")
            before = got["rows"]
        xla = [(xla_peak_bytes(d), xla_occupancy_peak(d)) if d.is_dir() else (None, None) for _, d in dumps]
    na = {"peak": "-", "xpeak": "-", "m_p": "-", "m_r": "-"}
    print(f"before: memmap at {args.baseline_rev or '(not measured)'}; after: this tree; alignment 1, "
          "weights included; peaks under XLA's schedule; ratios against XLA's occupied peak")
    print()
    print("| workload | whiles | pairs | XLA peak (dump line) | XLA occupied peak | memmap, XLA lifetimes: before "
          "| after | before / XLA | after / XLA | memmap peak before | after | M_P before | M_P after "
          "| M_R before | M_R after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def ratio(a, x):
        return f"{a / x:.2f}" if isinstance(a, int) and x else "-"

    def num(a):
        return f"{a:,}" if isinstance(a, int) else a

    for (name, _), (line, occ), a, b in zip(dumps, xla, after, before or [na] * len(after)):
        print(f"| {name} | {a['whiles']} | {a['pairs']} | {num(line or '-')} | {num(occ or '-')} | {num(b['xpeak'])} "
              f"| {a['xpeak']:,} | {ratio(b['xpeak'], occ)} | {ratio(a['xpeak'], occ)} | {num(b['peak'])} "
              f"| {a['peak']:,} | {num(b['m_p'])} | {a['m_p']:,} | {num(b['m_r'])} | {a['m_r']:,} |")
    print()
    for name, how in BY_HAND.items():
        print(f"* {name}: {how}")


if __name__ == "__main__":
    main()
