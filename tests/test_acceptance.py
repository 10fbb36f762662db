"""Acceptance: `memmap optimize` on real dumps nobody here wrote (the external TF dumps), on a
recurrent model with a while loop (pre-optimization), a fused post-optimization train step and
an XLA dump folder, in both modes; every plan is re-checked by `memmap verify` and by a small
independent overlap/capacity checker written here from docs/plan-format.md alone."""

import json
from pathlib import Path

import pytest

from memmap.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = ROOT / "tests" / "data" / "external"   # copies of openxla/xla dumps (tests/data/SOURCES.md)
INPUTS = [EXTERNAL / "ssd_mobilenet_tf.hlo", EXTERNAL / "graphsage_tf.hlo",
          ROOT / "examples" / "lstm.before.hlo", ROOT / "examples" / "small_cnn_train.after.hlo"]


def tiny_checker(plan: dict) -> None:
    """Independent of memmap.verify: capacity, alignment, no overlap among co-resident values
    (an operator's in-place pair [output, input] is one buffer at its step when the input's
    residency ends there and the output's starts there at the same offset), strict-mode operands
    resident, schedule is a permutation."""
    cap = plan["target"]["capacity_bytes"]
    align = plan["target"]["alignment_bytes"]
    sizes = {v["id"]: -(-v["size_bytes"] // align) * align for v in plan["graph"]["values"]}
    n = len(plan["schedule"])
    assert sorted(plan["schedule"]) == list(range(len(plan["graph"]["ops"])))
    ends = {(v, e): off for v, s, e, off in plan["residencies"]}
    starts = {(v, s): off for v, s, e, off in plan["residencies"]}
    one_buffer = set()       # (input, step): written over by its in-place output at that step
    for t, o in enumerate(plan["schedule"]):
        for out, inp in plan["graph"]["ops"][o].get("inplace", []):
            if (inp, t) in ends and ends[(inp, t)] == starts.get((out, t)):
                one_buffer.add((inp, t))
    at_step = [[] for _ in range(n)]
    for v, s, e, off in plan["residencies"]:
        assert off % align == 0 and off + sizes[v] <= cap
        for t in range(s, e + 1):
            if (v, t) not in one_buffer:
                at_step[t].append((off, off + sizes[v], v))
    for t, blocks in enumerate(at_step):
        blocks.sort()
        for (a0, a1, va), (b0, b1, vb) in zip(blocks, blocks[1:]):
            assert a1 <= b0, f"step {t}: values {va} and {vb} overlap"
    if plan["mode"] == "strict" and not plan["activations_only"]:
        resident = [{v for _, _, v in blocks} for blocks in at_step]
        for v, t in one_buffer:
            resident[t].add(v)
        for t, o in enumerate(plan["schedule"]):
            op = plan["graph"]["ops"][o]
            for v in op["inputs"] + op["outputs"]:
                if plan["graph"]["values"][v]["size_bytes"] > 0:
                    assert v in resident[t], f"step {t}: value {v} not resident"


def optimize_and_check(src, mode, tmp_path, capsys, extra=()):
    code = main(["budgets", str(src), "--json", *[a for a in extra if a == "--activations-only"]])
    out, err = capsys.readouterr()
    assert code == 0, err
    b = json.loads(out)
    for budget in ("m_r_bytes", "m_h_bytes"):
        outdir = tmp_path / f"{mode}-{budget}"
        code = main(["optimize", str(src), "--scratchpad", str(b[budget]), "--mode", mode,
                     "-o", str(outdir), "--json", "--no-plot", "--time-limit", "5", *extra])
        out, err = capsys.readouterr()
        assert code == 0, err
        res = json.loads(out)
        assert res["peak_scratchpad_bytes"] <= b[budget]
        assert main(["verify", str(src), str(outdir / "plan.json")]) == 0
        capsys.readouterr()
        tiny_checker(json.loads((outdir / "plan.json").read_text()))


@pytest.mark.parametrize("src", INPUTS, ids=lambda p: p.name)
@pytest.mark.parametrize("mode", ["strict", "tiered"])
def test_real_dumps_both_modes(src, mode, tmp_path, capsys):
    optimize_and_check(src, mode, tmp_path, capsys)


def test_while_loop_is_one_op_with_body_peak():
    from memmap.pipeline import load_graph

    g = load_graph(ROOT / "examples" / "lstm.before.hlo")
    loops = [op for op in g.ops if op.opcode == "while"]
    assert loops
    assert any(g.values[v].kind == "temporary" for op in loops for v in op.outputs)


def test_xla_dump_folder_both_stages(tmp_path, capsys):
    from benchmarks.zoo import dump_folder

    d = dump_folder("mlp.train", tmp_path / "dump")
    for stage in ("after", "before"):
        code = main(["optimize", str(d), "--stage", stage, "--target", "npu-4mib", "-o",
                     str(tmp_path / f"o-{stage}"), "--json", "--no-plot", "--time-limit", "5"])
        out, err = capsys.readouterr()
        assert code == 0, err
        tiny_checker(json.loads((tmp_path / f"o-{stage}" / "plan.json").read_text()))
    # the two stages really are different programs
    a = json.loads((tmp_path / "o-after" / "plan.json").read_text())["graph"]
    b = json.loads((tmp_path / "o-before" / "plan.json").read_text())["graph"]
    assert len(a["ops"]) != len(b["ops"])


def test_activations_only(tmp_path, capsys):
    src = EXTERNAL / "ssd_mobilenet_tf.hlo"
    optimize_and_check(src, "strict", tmp_path, capsys, extra=("--activations-only",))
