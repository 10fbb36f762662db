"""Every user mistake gives its documented exit code, one line on stderr and no traceback.

``CASES`` is the table (tests/bad_input_cases.py, shared with benchmarks/bad_input_table.py,
which runs it as subprocesses; docs/cli.md, "What counts as bad input"): each row runs ``memmap`` in
process with ``memmap.cli.main`` and checks the exit code, that stderr is exactly one line
naming the problem, and that no traceback appears. Rows tagged *regression* were internal errors
(exit 1) or process crashes (XLA's parser aborting or segfaulting) before. ``test_fuzzed_hlo``
runs 1000 seeded mutations of the bundled examples' HLO text (tests/hlo_mutations.py): exit 0 or
2 (3 in strict mode: a mutated size can make the budget infeasible), never 1, never a traceback.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memmap.cli import main
from tests.bad_input_cases import (CASES, CNN, FUZZ_COUNT, LSTM, PLAN_ARGV, ROOT, fill, fuzz_allowed,
                                   fuzz_argv, fuzz_case, mismatch, opt_argv, write_inputs)
from tests.helpers import one_line_error


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bad_input")
    write_inputs(tmp)
    assert main([fill(a, tmp) for a in PLAN_ARGV]) == 0
    (tmp / "lstm_plan.json").write_bytes((tmp / "lstm_out" / "plan.json").read_bytes())
    return tmp


def run_cli(argv, capsys, monkeypatch, stdin: bytes | None = None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, inputs, capsys, monkeypatch):
    code, out, err = run_cli([fill(a, inputs) for a in case.argv], capsys, monkeypatch, case.stdin)
    assert mismatch(case, code, out, err) is None, (mismatch(case, code, out, err), err)
    assert not (inputs / "out").exists()  # nothing written by a refused run


def test_stdin_hlo_text_plans(tmp_path, capsys, monkeypatch):
    """``-`` reads HLO text from stdin (it was read as the path '.')."""
    code, out, err = run_cli(["optimize", "-", "--scratchpad", "64MiB", "--solver", "msa", "--no-plot",
                              "-o", tmp_path, "--json"], capsys, monkeypatch, LSTM.read_bytes())
    assert code == 0, err
    assert json.loads(out)["solver"] == "msa"
    assert json.loads((tmp_path / "plan.json").read_text())["graph"]["source"] == "<stdin>"


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root may write in a read-only folder")
def test_unwritable_outdir_refused_before_solving(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = run_cli(opt_argv(str(CNN), out=str(ro / "out")), capsys, monkeypatch)
    finally:
        ro.chmod(0o755)
    assert code == 2 and "cannot write" in one_line_error(err)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_outdir_where_nothing_can_be_created(capsys, monkeypatch):
    """/proc refuses new files even for root: refused before importing (was exit 1 after the
    whole solve)."""
    code, _, err = run_cli(opt_argv(str(CNN), out="/proc/memmap-out"), capsys, monkeypatch)
    assert code == 2 and "cannot write in /proc" in one_line_error(err)


def test_optimize_help_lists_every_solver_and_default(capsys, monkeypatch):
    code, out, _ = run_cli(["optimize", "--help"], capsys, monkeypatch)
    assert code == 0
    text = " ".join(out.split())
    for word in ("msa", "belady", "minpeak", "ilp", "best", "(default: best)", "(default: strict)",
                 "(default: 60)", "(default: 0)", "(default: 2)", "--offchip-bandwidth", "10TFLOP/s"):
        assert word in text, word


@pytest.mark.parametrize("argv", [["optimize", str(CNN), "--scratchpad", "14MiB", "--solver", "minpeak",
                                   "--json", "--no-plot"],
                                  ["budgets", str(CNN), "--json"],
                                  ["cascade", "passes", "--json"]])
def test_broken_pipe_is_quiet(argv, tmp_path):
    """``memmap ... --json | head -c0``: exit 141 (128 + SIGPIPE) with nothing on stderr (was a
    BrokenPipeError internal error and a traceback from the interpreter's final flush)."""
    if argv[0] == "optimize":
        argv = argv + ["-o", str(tmp_path / "o")]
    proc = subprocess.Popen([sys.executable, "-m", "memmap", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    proc.stdout.close()  # the reader goes away before memmap writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "Error" not in err and "error" not in err, err


def test_target_numbers_from_the_command_line(tmp_path, capsys, monkeypatch):
    code, out, err = run_cli(["optimize", str(CNN), "--scratchpad", "14MiB", "--solver", "msa",
                              "--no-plot", "-o", tmp_path, "--offchip-bandwidth", "25.6GB/s",
                              "--onchip-bandwidth", "512GiB/s", "--compute", "4TFLOP/s",
                              "--dma-engines", "2", "--alignment", "512B"], capsys, monkeypatch)
    assert code == 0, err
    target = json.loads((tmp_path / "plan.json").read_text())["target"]
    assert target["offchip_bandwidth_bytes_per_s"] == 25.6e9
    assert target["onchip_bandwidth_bytes_per_s"] == 512 * 2**30
    assert target["compute_flops_per_s"] == 4e12
    assert (target["dma_engines"], target["alignment_bytes"]) == (2, 512)
    report = (tmp_path / "report.md").read_text()
    assert "off-chip bandwidth 25.6 GB/s" in report and "compute 4 TFLOP/s" in report
    assert "glossary.md" in report


def test_custom_target_numbers_are_in_the_report(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["optimize", str(CNN), "--scratchpad", "14MiB", "--solver", "msa",
                            "--no-plot", "-o", tmp_path], capsys, monkeypatch)
    assert code == 0, err
    report = (tmp_path / "report.md").read_text()
    for text in ("`custom`", "alignment 64 B", "off-chip bandwidth 100 GB/s",
                 "on-chip (scratchpad) bandwidth 1 TB/s", "compute 10 TFLOP/s", "1 DMA engine"):
        assert text in report, text


def test_fuzzed_hlo_never_internal_error(tmp_path, capsys):
    """1000 seeded mutations through ``memmap optimize`` in process: exit 0 or 2 (3 in strict
    mode), one stderr line on failure, never exit 1, never a traceback or a crash."""
    seen = {0: 0, 2: 0, 3: 0}
    for i in range(FUZZ_COUNT):
        data, mode = fuzz_case(i)
        path = tmp_path / "case.hlo"
        path.write_bytes(data)
        code = main(fuzz_argv(path, mode, tmp_path / "out"))
        out, err = capsys.readouterr()
        allowed = fuzz_allowed(mode)
        assert code in allowed, f"mutation {i} ({mode}): exit {code}: {err}"
        assert "Traceback" not in err, f"mutation {i}: {err}"
        if code:
            assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, f"mutation {i}: {err}"
        seen[code] += 1
    assert seen[0] > 50 and seen[2] > 500, seen  # both outcomes are exercised
