"""Limits are promises (docs/cli.md, "Time limits, memory and Ctrl-C"): ``--time-limit`` bounds the
whole command, Ctrl-C stops it within seconds with exit 130 and no partial file, outputs never
replace an input and are written all or nothing.

The Ctrl-C and time-limit tests run ``python -m memmap`` in a subprocess (fault injection: SIGINT
sent once the status line shows a given stage; rich draws it into the pipe because of
``TTY_COMPATIBLE``). Their wall-clock bounds are generous (a loaded 2-core machine), but far
below what the command would take without the limit.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmarks.large_traces import random_trace, write_trace
from memmap.ilp.alloc import AllocProblem, peak_live
from tests.helpers import residual_hlo_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "small_cnn_train.after.hlo"
# what a Ctrl-C may take on a loaded machine (the promise is a second or two)
INTERRUPT_BOUND_S = 10.0
# what a time-limited command may take beyond its limit here: interpreter exit and, on a loaded
# machine, the slack of the estimates the solvers keep for writing outputs (docs/cli.md)
OVERSHOOT_BOUND_S = 8.0


# ---------------------------------------------------------------------------------------------
# helpers

def _env() -> dict:
    return dict(os.environ, TTY_COMPATIBLE="1", TTY_INTERACTIVE="1", COLUMNS="300")


class Run:
    """``python -m memmap ARGS`` in a subprocess; stderr collected as it comes."""

    def __init__(self, args, cwd: Path):
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "memmap", *map(str, args)], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        self.err = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for chunk in iter(lambda: self.proc.stderr.read1(4096), b""):
            self.err += chunk

    def wait_for(self, pattern: str, timeout: float = 240.0) -> bool:
        """Wait until stderr shows ``pattern`` (True) or the process ends (False)."""
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            if re.search(pattern.encode(), self.err):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen within {timeout} s; stderr: {self.text()[-2000:]}")

    def interrupt(self) -> tuple[int, float]:
        """SIGINT now; returns (exit code, seconds from the signal to the exit)."""
        t = time.perf_counter()
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the process did not stop within 60 s of Ctrl-C") from None
        self._reader.join(5)
        return code, time.perf_counter() - t

    def finish(self, timeout: float) -> tuple[int, float]:
        """Wait for the end; returns (exit code, seconds since the start)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"still running after {timeout} s") from None
        self._reader.join(5)
        return code, time.perf_counter() - self.t0

    def text(self) -> str:
        return self.err.decode(errors="replace")

    def last_line(self) -> str:
        """The last line on stderr, without the status line (erased with ESC [2K)."""
        clean = self.text().replace("\x1b[2K", "\n").replace("\r", "\n")
        clean = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", clean)
        return [ln for ln in clean.splitlines() if ln.strip()][-1]


def _leftovers(folder: Path) -> list[str]:
    """Temporary files of :class:`memmap.limits.OutputFiles` (``.NAME.XXXX.tmp.ext``)."""
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def _trace(path: Path, n: int, seed: int = 0) -> Path:
    """A random trace of ``n`` buffers (benchmarks/large_traces.py: most lifetimes short, 5%
    long), written with its peak live bytes as the capacity, where the greedy fails."""
    lower, upper, size = random_trace(n, seed=seed)
    cap = peak_live(AllocProblem.from_lists(lower.tolist(), upper.tolist(), size.tolist()))[0]
    return write_trace(path / f"trace.{cap}.csv", lower, upper, size)


@pytest.fixture(scope="module")
def big_program(tmp_path_factory) -> Path:
    """A 1,500-instruction residual network (tests/helpers.py), large enough that the ILP runs
    its large-graph path and the baselines take a noticeable time."""
    path = tmp_path_factory.mktemp("big") / "residual.hlo"
    path.write_text(residual_hlo_text(250))
    return path


# 384 KiB is the program's M_R (the largest working set: a dot's operands and result)
BIG_SCRATCHPAD = "393216"


# ---------------------------------------------------------------------------------------------
# --time-limit values (exit 2, one line, for every command that takes it)

@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf", "abc", ""])
@pytest.mark.parametrize("command", ["optimize", "alloc"])
def test_bad_time_limit_is_a_usage_error(command, value, capsys):
    from memmap.cli import main

    if command == "optimize":
        argv = ["optimize", str(EXAMPLE), "--scratchpad", "14MiB", "--solver", "msa", "-o", "unused",
                "--time-limit", value]
    else:
        argv = ["alloc", str(ROOT / "tests" / "data" / "minimalloc" / "A.1048576.csv"),
                "--time-limit", value]
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--time-limit" in err[0] and "Traceback" not in err[0], err


# ---------------------------------------------------------------------------------------------
# never overwrite an input; outputs all or nothing

def test_hard_linked_input_is_refused_and_intact(tmp_path, capsys):
    from memmap.cli import main

    src = tmp_path / "model.hlo"
    src.write_bytes(EXAMPLE.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    os.link(src, out / "plan.json")                       # plan.json IS the input (hard link)
    os.symlink(src, tmp_path / "report-link")
    before = src.read_bytes()
    assert main(["optimize", str(src), "--scratchpad", "14MiB", "--solver", "msa", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "plan.json" in err and "input" in err
    assert src.read_bytes() == before and (out / "plan.json").read_bytes() == before
    assert not (out / "report.md").exists()
    # a symbolic link in the output folder is the input too
    (out / "plan.json").unlink()
    os.symlink(src, out / "report.md")
    assert main(["optimize", str(src), "--scratchpad", "14MiB", "--solver", "msa", "-o", str(out)]) == 2
    assert "report.md" in capsys.readouterr().err and src.read_bytes() == before


def test_alloc_output_hard_linked_to_input_is_refused(tmp_path, capsys):
    from memmap.cli import main

    src = tmp_path / "A.1048576.csv"
    src.write_bytes((ROOT / "tests" / "data" / "minimalloc" / "A.1048576.csv").read_bytes())
    os.link(src, tmp_path / "out.csv")
    before = src.read_bytes()
    assert main(["alloc", str(src), "-o", str(tmp_path / "out.csv")]) == 2
    assert "same file" in capsys.readouterr().err
    assert src.read_bytes() == before


def test_output_files_are_all_or_nothing(tmp_path):
    from memmap import limits

    (tmp_path / "plan.json").write_text("old plan")
    with pytest.raises(RuntimeError):
        with limits.OutputFiles(tmp_path) as out:
            out.write_text("plan.json", "new plan")
            out.write_text("report.md", "new report")
            raise RuntimeError("drawing failed")
    assert (tmp_path / "plan.json").read_text() == "old plan"      # the previous run's output
    assert not (tmp_path / "report.md").exists() and _leftovers(tmp_path) == []
    with limits.OutputFiles(tmp_path) as out:
        out.write_text("plan.json", "new plan")
        out.write_text("report.md", "new report")
        out.commit()
    assert (tmp_path / "plan.json").read_text() == "new plan" and _leftovers(tmp_path) == []
    mode = (tmp_path / "report.md").stat().st_mode & 0o777
    assert mode == 0o666 & ~limits._UMASK                          # not mkstemp's private 0600


# ---------------------------------------------------------------------------------------------
# the deadline

def test_deadline_nests_and_cuts_cpsat():
    from ortools.sat.python import cp_model

    from memmap import limits

    assert limits.remaining_s() == float("inf")
    with limits.time_limit(10.0) as outer:
        with limits.time_limit(100.0) as inner:
            assert inner == outer                         # a nested limit never extends it
        with limits.time_limit(0.5):
            assert limits.remaining_s() <= 0.5
            # a hard model (pigeonhole) that CP-SAT would work on for its full 60 s
            m = cp_model.CpModel()
            x = [[m.new_bool_var(f"x{i}_{j}") for j in range(11)] for i in range(12)]
            for row in x:
                m.add_exactly_one(row)
            for j in range(11):
                m.add_at_most_one(x[i][j] for i in range(12))
            solver = cp_model.CpSolver()
            solver.parameters.max_time_in_seconds = 60.0
            solver.parameters.num_workers = 1
            t = time.perf_counter()
            limits.solve_cpsat(solver, m)
            assert time.perf_counter() - t < 5.0
        with limits.time_limit(-1.0):
            with pytest.raises(limits.TimeLimitReached):
                limits.checkpoint("a test")
    assert limits.remaining_s() == float("inf")


def test_api_optimize_returns_a_baseline_plan_when_the_deadline_cuts_the_ilp():
    """With the deadline already close, ``solver='best'`` still returns a verified plan (the
    baselines finish first); with no time at all it is exit 4 (SolverTimeoutError)."""
    import memmap
    from memmap import limits

    g = memmap.import_hlo(str(EXAMPLE))
    plan = memmap.optimize(g, scratchpad="14MiB", solver="best", time_limit_s=3.0)
    assert memmap.verify_plan(plan).ok
    with limits.time_limit(-1.0):
        with pytest.raises(memmap.SolverTimeoutError):
            memmap.optimize(g, scratchpad="14MiB", solver="best", time_limit_s=30.0)


def test_alloc_time_limit_holds_on_a_large_trace(tmp_path):
    """30,000 buffers at their peak live bytes (the greedy fails there): the search is cut at
    the limit, counted from the process's start."""
    trace = _trace(tmp_path, 30_000)
    limit = 4.0
    run = Run(["alloc", trace, "--time-limit", limit, "-o", tmp_path / "out.csv"], tmp_path)
    code, wall = run.finish(timeout=120)
    assert code in (0, 4), run.text()
    assert wall < limit + OVERSHOOT_BOUND_S, (wall, run.last_line())
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("solver, limit", [("ilp", 4.0), ("best", 15.0)])
def test_optimize_time_limit_holds_on_a_large_program(big_program, tmp_path, solver, limit):
    """A tiny limit (about what importing takes: exit 4 or a plan) and a short one (a plan,
    the ILP cut). Before the limits were kept, these ran 22 s and 25 s."""
    out = tmp_path / "out"
    run = Run(["optimize", big_program, "--scratchpad", BIG_SCRATCHPAD, "--solver", solver,
               "--time-limit", limit, "-o", out, "--json"], tmp_path)
    code, wall = run.finish(timeout=300)
    assert code in (0, 4), run.text()
    assert wall < limit + OVERSHOOT_BOUND_S, (wall, run.last_line())
    if code == 0:
        assert {p.name for p in out.iterdir()} == {"plan.json", "annotated.hlo", "report.md", "timeline.png"}
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Ctrl-C at several points

def _interrupted(run: Run, folder: Path) -> None:
    code, after = run.interrupt()
    assert code == 130, run.text()[-2000:]
    assert run.last_line() == "memmap: interrupted", run.text()[-2000:]
    assert after < INTERRUPT_BOUND_S, after
    assert "Traceback" not in run.text() and "Exception ignored" not in run.text()
    assert _leftovers(folder) == []


# the baselines take a fraction of a second each: a status line may skip one, so any of them
@pytest.mark.parametrize("stage, solver", [(r"importing", "best"),
                                           (r"solving with (msa|belady|minpeak|rl)", "best"),
                                           (r"ilp: schedule search", "ilp"),
                                           (r"ilp: (address-free|schedule ')", "ilp")])
def test_ctrl_c_while_optimizing(big_program, tmp_path, stage, solver):
    out = tmp_path / "out"
    out.mkdir()
    (out / "plan.json").write_text("previous run")
    run = Run(["optimize", big_program, "--scratchpad", BIG_SCRATCHPAD, "--time-limit", "600",
               "--solver", solver, "-o", out], tmp_path)
    assert run.wait_for(stage), run.text()[-2000:]
    _interrupted(run, tmp_path)
    assert (out / "plan.json").read_text() == "previous run"
    assert not (out / "report.md").exists()


def test_ctrl_c_while_writing_outputs(tmp_path):
    """SIGINT as soon as the first output (or its temporary file) shows up in the folder."""
    out = tmp_path / "out"
    run = Run(["optimize", EXAMPLE, "--scratchpad", "14MiB", "--solver", "minpeak", "-o", out],
              tmp_path)
    end = time.perf_counter() + 240
    while not (out.exists() and any(out.iterdir())):
        assert run.proc.poll() is None and time.perf_counter() < end, run.text()[-2000:]
        time.sleep(0.01)
    code, after = run.interrupt()
    if code == 0:
        pytest.skip("the outputs were in place before the signal arrived")
    assert code == 130 and run.last_line() == "memmap: interrupted", run.text()[-2000:]
    assert after < INTERRUPT_BOUND_S
    # nothing, not a partial set (the folder this run created is gone again)
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


def test_ctrl_c_during_the_allocation_search(tmp_path):
    trace = _trace(tmp_path, 30_000)
    run = Run(["alloc", trace, "--time-limit", "600", "-o", tmp_path / "out.csv"], tmp_path)
    assert run.wait_for(r"branch and bound"), run.text()[-2000:]
    _interrupted(run, tmp_path)
    assert not (tmp_path / "out.csv").exists()
