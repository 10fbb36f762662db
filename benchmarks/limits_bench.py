"""Ctrl-C at several points of a ``memmap`` command: exit code, seconds from the signal to the
exit, last line on stderr, files left (benchmarks/RESULTS.md, "Limits").

    python -m benchmarks.limits_bench [--python PYTHON] [--workdir DIR] [CASE ...]

``--python``: the interpreter whose ``memmap`` to run (another checkout's venv, to compare);
cases: ``import``, ``msa``, ``search``, ``ilpsolve``, ``write``, ``alloc`` (default: all). Each
runs ``PYTHON -m memmap ...`` with rich's status line forced into the pipe (``TTY_COMPATIBLE``)
and sends SIGINT once it shows the case's stage (``import``: 1 s after the start; ``write``: as
soon as a file appears in the output folder). The program is ``tests/helpers.py``'s
1,500-instruction residual network at its M_R; the trace has 30,000 random buffers
(:mod:`benchmarks.large_traces`). Prints one Markdown table row per case.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _case(python: str, workdir: Path, name: str, args: list[str], *, marker: str | None = None,
          delay: float | None = None, first_file: bool = False) -> str:
    d = Path(tempfile.mkdtemp(dir=workdir))
    args = [a.replace("OUT", str(d / "out")) for a in args]
    env = dict(os.environ, TTY_COMPATIBLE="1", TTY_INTERACTIVE="1", COLUMNS="300")
    t0 = time.perf_counter()
    p = subprocess.Popen([python, "-m", "memmap", *args], cwd=d, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    buf = bytearray()
    reader = threading.Thread(target=lambda: [buf.extend(c) for c in iter(lambda: p.stderr.read1(4096), b"")],
                              daemon=True)
    reader.start()
    reached = False
    while p.poll() is None and time.perf_counter() - t0 < 600:
        out = d / "out"
        if ((marker and re.search(marker.encode(), bytes(buf)))
                or (delay is not None and time.perf_counter() - t0 >= delay)
                or (first_file and out.is_dir() and any(out.iterdir()))):
            reached = True
            break
        time.sleep(0.02)
    if not reached:
        p.kill()
        return f"| {name} | point not reached (exit {p.poll()}) |"
    t_sig = time.perf_counter()
    p.send_signal(signal.SIGINT)
    try:
        code = p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        code = "still running 120 s later"
    after = time.perf_counter() - t_sig
    reader.join(3)
    text = bytes(buf).decode(errors="replace").replace("\x1b[2K", "\n").replace("\r", "\n")
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).splitlines() if ln.strip()]
    left = sorted(str(f.relative_to(d)) for f in d.rglob("*") if f.is_file() and f.suffix != ".hlo"
                  and not f.name.startswith("trace."))
    note = "; `Exception ignored`" if "Exception ignored" in text else ""
    return (f"| {name} | exit {code} {after:.1f} s after the signal; last line "
            f"`{lines[-1][:70] if lines else ''}`; files left: {', '.join(left) or 'none'}{note} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--workdir", default=None, help="where the runs' folders go (default: a temp dir)")
    ap.add_argument("cases", nargs="*", default=["import", "msa", "search", "ilpsolve", "write", "alloc"])
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks.large_traces import random_trace, write_trace
    from memmap.ilp.alloc import AllocProblem, peak_live
    from tests.helpers import residual_hlo_text

    work = Path(args.workdir or tempfile.mkdtemp(prefix="limits_bench"))
    work.mkdir(parents=True, exist_ok=True)
    big = work / "residual.hlo"
    big.write_text(residual_hlo_text(250))
    lower, upper, size = random_trace(30_000)
    cap = peak_live(AllocProblem.from_lists(lower.tolist(), upper.tolist(), size.tolist()))[0]
    trace = write_trace(work / f"trace.{cap}.csv", lower, upper, size)
    program = ["optimize", str(big), "--scratchpad", "393216", "-o", "OUT"]
    cases = {
        "import": ("`optimize`, importing (1 s after start)", program, {"delay": 1.0}),
        "msa": ("`optimize best`, the msa baseline", program, {"marker": "solving with msa"}),
        "search": ("`optimize best`, the ILP's schedule search", program, {"marker": "ilp: schedule search"}),
        "ilpsolve": ("`optimize --solver ilp`, a CP-SAT solve", program + ["--solver", "ilp"],
                     {"marker": "ilp: (address-free|schedule ')"}),
        "write": ("`optimize`, writing the outputs", ["optimize", str(ROOT / "examples" / "small_cnn_train.after.hlo"),
                                                      "--scratchpad", "14MiB", "--solver", "minpeak", "-o", "OUT"],
                  {"first_file": True}),
        "alloc": ("`alloc`, the branch and bound (30k buffers)",
                  ["alloc", str(trace), "--time-limit", "600", "-o", "OUT.csv"], {"marker": "branch and bound"}),
    }
    print("| SIGINT during | result |\n|---|---|")
    for key in args.cases:
        name, argv, how = cases[key]
        print(_case(args.python, work, name, argv, **how), flush=True)


if __name__ == "__main__":
    main()
