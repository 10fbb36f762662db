"""The CLI: outputs, exit codes and one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memmap.cli import main
from tests.helpers import one_line_error

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "small_cnn_train.after.hlo"
BAD = ROOT / "tests" / "data" / "bad_syntax.hlo"


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_optimize_writes_outputs_and_json(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(["optimize", EXAMPLE, "--scratchpad", "14MiB", "-o", out, "--json",
                             "--time-limit", "20"], capsys)
    assert code == 0, err
    d = json.loads(stdout)
    for k in ("solver", "status", "noncompulsory_bytes", "compulsory_bytes", "peak_scratchpad_bytes",
              "modeled_time_s", "solve_time_s", "plan_path"):
        assert k in d
    assert d["solver"] in ("msa", "belady", "minpeak", "ilp")
    assert {c["solver"] for c in d["comparison"]} >= {"msa", "belady", "minpeak", "ilp"}
    assert d["peak_scratchpad_bytes"] <= 14 << 20
    for name in ("plan.json", "report.md", "timeline.png"):
        assert (out / name).stat().st_size > 0
    assert "Solver comparison" in (out / "report.md").read_text()
    code, stdout, err = run(["verify", EXAMPLE, out / "plan.json", "--json"], capsys)
    assert code == 0 and json.loads(stdout)["valid"] is True
    # a tampered plan is rejected with the reason
    plan = json.loads((out / "plan.json").read_text())
    plan["residencies"][0][3] += 1
    (tmp_path / "bad.json").write_text(json.dumps(plan))
    code, stdout, err = run(["verify", EXAMPLE, tmp_path / "bad.json"], capsys)
    assert code == 2 and "alignment" in one_line_error(err)


def test_tiered_single_solver(tmp_path, capsys):
    code, stdout, err = run(["optimize", EXAMPLE, "--target", "npu-4mib", "--mode", "tiered",
                             "--solver", "belady", "-o", tmp_path, "--json", "--no-plot"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["solver"] == "belady"


def test_missing_file(tmp_path, capsys):
    code, _, err = run(["optimize", tmp_path / "nope.hlo", "--scratchpad", "1MiB", "-o", tmp_path / "o"], capsys)
    assert code == 2 and "nope.hlo" in one_line_error(err)


def test_malformed_hlo(tmp_path, capsys):
    code, _, err = run(["optimize", BAD, "--scratchpad", "1MiB", "-o", tmp_path / "o"], capsys)
    line = one_line_error(err)
    assert code == 2 and "bad_syntax.hlo" in line


@pytest.mark.parametrize("size", ["4XB", "lots", "-3", "0"])
def test_garbage_size(tmp_path, capsys, size):
    code, _, err = run(["optimize", EXAMPLE, "--scratchpad", size, "-o", tmp_path / "o"], capsys)
    assert code == 2 and "size" in one_line_error(err)


def test_infeasible_budget(tmp_path, capsys):
    code, _, err = run(["optimize", EXAMPLE, "--scratchpad", "64KiB", "-o", tmp_path / "o"], capsys)
    line = one_line_error(err)
    assert code == 3 and "infeasible" in line and "65536" in line and "operator" in line
    assert not (tmp_path / "o").exists()


def test_refuses_to_overwrite_input(tmp_path, capsys):
    src = tmp_path / "plan.json"
    src.write_text(EXAMPLE.read_text())
    before = src.read_bytes()
    code, _, err = run(["optimize", src, "--scratchpad", "14MiB", "-o", tmp_path], capsys)
    assert code == 2 and "overwrite" in one_line_error(err)
    code, _, err = run(["optimize", src, "--scratchpad", "14MiB", "-o", src], capsys)
    assert code == 2
    assert src.read_bytes() == before


def test_bad_flag_is_one_line(capsys):
    code, _, err = run(["optimize", EXAMPLE, "--mode", "fast", "-o", "x"], capsys)
    assert code == 2 and "invalid choice" in one_line_error(err)
    code, _, err = run(["optimize", EXAMPLE, "-o", "x"], capsys)
    assert code == 2 and "--target" in one_line_error(err)


def test_unknown_solver(tmp_path, capsys):
    code, _, err = run(["optimize", EXAMPLE, "--scratchpad", "14MiB", "--solver", "magic", "-o", tmp_path], capsys)
    assert code == 2 and "magic" in one_line_error(err)


def test_budgets_json(capsys):
    code, out, err = run(["budgets", EXAMPLE, "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["m_r_bytes"] <= d["m_h_bytes"] <= d["m_p_bytes"]
    assert d["m_p_kind"] == "upper bound"
    code, out, _ = run(["budgets", EXAMPLE, "--json", "--activations-only"], capsys)
    da = json.loads(out)
    assert da["m_r_bytes"] <= d["m_r_bytes"]


def test_python_dash_m_no_traceback(tmp_path):
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "memmap", "optimize", str(BAD), "--scratchpad", "1MiB",
                        "-o", str(tmp_path / "o")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len([l for l in r.stderr.splitlines() if l.strip()]) == 1, r.stderr


def test_workers_flag(tmp_path, capsys):
    code, _, err = run(["optimize", EXAMPLE, "--scratchpad", "14MiB", "-o", tmp_path / "o", "--workers", "0"],
                       capsys)
    assert code == 2
    assert "workers" in one_line_error(err)
    code, stdout, err = run(["optimize", EXAMPLE, "--scratchpad", "14MiB", "-o", tmp_path / "o1", "--solver", "ilp",
                             "--workers", "1", "--time-limit", "3", "--json", "--no-plot"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["solver"] == "ilp"
    plan = json.loads((tmp_path / "o1" / "plan.json").read_text())
    assert plan["info"]["workers"] == 1


def test_timeline_units_and_prefetch_marks(tmp_path):
    """timeline.png: the address axis in a binary unit that suits the capacity; every load or
    reload whose first read comes later is drawn as a prefetch (as the cost model counts them)."""
    from memmap import import_hlo, optimize
    from memmap.cost import load_deadlines
    from memmap.timeline import _unit, draw_timeline

    assert _unit(14 << 20) == ("MiB", 1 << 20)
    assert _unit(512) == ("B", 1)
    assert _unit(3 << 30) == ("GiB", 1 << 30)
    plan = optimize(import_hlo(EXAMPLE), target="npu-4mib", mode="tiered", solver="msa")
    deadlines = load_deadlines(plan)
    assert sum(first > tr.step for tr, first in deadlines) == plan.metrics["num_prefetches"] > 0
    assert draw_timeline(plan, tmp_path / "t.png").stat().st_size > 0
