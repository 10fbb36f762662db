"""Tests for memmap.ir.hlo: HLO text / file / dump-folder import (sizes, aliasing, control flow,
costs, schedules, errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memmap.ir import Graph, HloImportError, import_hlo
from memmap.ir.hlo import benchmark_import

# real TF-exported dumps from openxla/xla, copied into the repository (tests/data/SOURCES.md)
EXTERNAL = sorted((Path(__file__).resolve().parent / "data" / "external").glob("*.hlo"))
assert len(EXTERNAL) == 2, "expected the two external dumps in tests/data/external"

SMALL = """HloModule small, input_output_alias={ {1}: (1, {}, may-alias) }

ENTRY main {
  p0 = (f32[4,8], s4[3]) parameter(0)
  p1 = bf16[3,5] parameter(1)
  a = f32[4,8] get-tuple-element(p0), index=0
  s = s4[3] get-tuple-element(p0), index=1
  c = f32[32] bitcast(a)
  n = f32[32] negate(c), metadata={op_name="jit(f)/neg"}
  k = pred[32] compare(n, c), direction=GT
  u = u4[5] constant({1, 2, 3, 4, 5})
  tok = token[] after-all()
  m = bf16[3,5] multiply(p1, p1)
  t = (f32[32], pred[32]) tuple(n, k)
  ROOT r = ((f32[32], pred[32]), bf16[3,5], s4[3], u4[5], token[]) tuple(t, m, s, u, tok)
}
"""

# A scheduled while loop whose body peak is checkable by hand (see test_while_body_peak).
LOOP = """HloModule loop, is_scheduled=true

add {
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT s = f32[] add(a, b)
}

cond {
  cp = (s32[], f32[16]) parameter(0)
  i = s32[] get-tuple-element(cp), index=0
  lim = s32[] constant(4)
  ROOT lt = pred[] compare(i, lim), direction=LT
}

body {
  bp = (s32[], f32[16]) parameter(0)
  i = s32[] get-tuple-element(bp), index=0
  x = f32[16] get-tuple-element(bp), index=1
  one = s32[] constant(1)
  i2 = s32[] add(i, one)
  e = f32[16] exponential(x)
  bc = f32[4,16] broadcast(e), dimensions={1}
  sq = f32[4,16] multiply(bc, bc)
  zero = f32[] constant(0)
  red = f32[16] reduce(sq, zero), dimensions={0}, to_apply=add
  ROOT t = (s32[], f32[16]) tuple(i2, red)
}

ENTRY main {
  p = f32[16] parameter(0)
  z = s32[] constant(0)
  init = (s32[], f32[16]) tuple(z, p)
  w = (s32[], f32[16]) while(init), condition=cond, body=body, backend_config={"known_trip_count":{"n":"4"}}
  ROOT out = f32[16] get-tuple-element(w), index=1
}
"""


def _value(g: Graph, name: str):
    (v,) = [v for v in g.values if v.name == name]
    return v


def _check_well_formed(g: Graph) -> None:
    assert g.num_ops > 0
    assert g.check_schedule(g.default_schedule) is None
    for op in g.ops:
        for v in op.inputs + op.outputs:
            assert 0 <= v < g.num_values
        for v in op.outputs:
            assert g.values[v].producer == op.id
    for name, ids in g.hlo_values.items():
        assert all(0 <= v < g.num_values for v in ids), name
    assert any(v.is_output for v in g.values)


@pytest.mark.parametrize("path", EXTERNAL, ids=lambda p: p.name)
def test_external_dumps_import(path):
    g = import_hlo(path)
    _check_well_formed(g)
    assert g.source == str(path)
    assert all(v.size_bytes > 0 for v in g.values if v.dtype not in ("token", "opaque"))
    # Every ENTRY instruction is named in hlo_values; every op is an ENTRY instruction.
    assert {op.name for op in g.ops} <= set(g.hlo_values)
    assert g.schedule_origin == "topological"  # TF exports are not scheduled
    assert sum(op.flops for op in g.ops) > 0
    xla = g.info["xla_cost"]
    assert xla is not None and xla["flops"] > 0


def test_sizes_tuples_aliases_and_outputs():
    g = import_hlo(SMALL)
    _check_well_formed(g)
    assert g.source == "<string>"
    sizes = {v.name: v.size_bytes for v in g.values}
    assert sizes == {"p0{0}": 128, "p0{1}": 2, "p1": 30, "n": 128, "k": 32, "m": 30,
                     "u": 3, "tok": 0}  # s4[3] packs to 2 bytes, u4[5] to 3, pred 1 byte each
    assert _value(g, "p0{1}").dtype == "s4" and _value(g, "p1").dtype == "bf16"
    assert _value(g, "u").kind == "constant"
    # get-tuple-element / bitcast / tuple are renames, not ops.
    assert sorted(op.opcode for op in g.ops) == ["after-all", "compare", "multiply", "negate"]
    hv = g.hlo_values
    assert hv["a"] == hv["c"] == (_value(g, "p0{0}").id,)
    assert hv["t"] == (_value(g, "n").id, _value(g, "k").id)
    assert len(hv["r"]) == 6
    # ROOT leaves are outputs; a returned parameter / constant keeps its kind.
    assert _value(g, "p0{1}").is_output and _value(g, "p0{1}").kind == "parameter"
    assert _value(g, "u").is_output and _value(g, "n").kind == "output"
    # input_output_alias {1}: (1, {}) -> m is written in place of p1.
    assert _value(g, "m").donated_param == _value(g, "p1").id
    neg = g.op_by_name("n")
    assert neg.flops == 32 and neg.bytes_accessed == 256 and neg.op_name == "jit(f)/neg"
    assert g.op_by_name("k").inputs == (_value(g, "n").id, _value(g, "p0{0}").id)
    # Unscheduled: topological with textual tie-break (tok is written before m).
    assert g.schedule_origin == "topological"
    assert [g.ops[i].name for i in g.default_schedule] == ["n", "k", "tok", "m"]


def test_while_body_peak_flops_and_xla_schedule(tmp_path):
    path = tmp_path / "loop.hlo"
    path.write_text(LOOP)
    g = import_hlo(path)
    _check_well_formed(g)
    assert g.schedule_origin == "xla" and g.info["is_scheduled"]
    (w,) = g.ops
    assert w.opcode == "while" and set(w.called) == {"body", "cond"}
    temps = [g.values[v] for v in w.outputs if g.values[v].kind == "temporary"]
    # Body, in schedule order: e (64 B) and bc (256 B) live together, then bc and sq (256 B)
    # -> 512 B; i2 and red reach the ROOT (they are the loop's outputs) and are excluded.
    assert [(t.name, t.size_bytes) for t in temps] == [("w.body_peak", 512)]
    # Per iteration: add 1 + multiply 64 + reduce 64 (body) + compare 1 (cond) = 130 flops,
    # exponential 16 transcendentals; known_trip_count 4.
    assert w.flops == 4 * 130 and w.transcendentals == 4 * 16
    assert g.info["while_trip_counts"] == {"w": 4}
    assert _value(g, "w{1}").is_output and not _value(g, "w{0}").is_output


def test_while_without_trip_count_counts_body_once():
    g = import_hlo(LOOP.replace(', backend_config={"known_trip_count":{"n":"4"}}', ""))
    assert g.ops[0].flops == 130
    assert g.info["while_trip_counts"] == {"w": None}


def test_while_state_is_an_inplace_pair_and_counts_once():
    """LOOP at alignment 1: the while's working set is z (4) + p (64) + w{0} (4) + w{1} (64) +
    body peak (512) = 648 B with the state counted twice; XLA writes the new state into the old
    one's buffers, so the pairs (w{0}, z) and (w{1}, p) make it 580 B, which is also the peak
    and M_P (z and p die at the loop)."""
    from memmap.budgets import compute_budgets
    from memmap.problem import Problem, Target

    g = import_hlo(LOOP)
    (w,) = g.ops
    assert w.inplace == ((_value(g, "w{0}").id, _value(g, "z").id), (_value(g, "w{1}").id, _value(g, "p").id))
    b = compute_budgets(Problem(g, Target("t", 1 << 30, alignment_bytes=1), "strict"))
    assert (b.m_r_bytes, b.m_p_bytes, b.m_p_peak_live_bytes) == (580, 580, 580)


def _three_leaf_loop(third: str, init: str, root: str) -> str:
    """LOOP with a third f32[16] state leaf: the body's third result is ``third`` (an HLO line
    defining ``y3`` from ``y = get-tuple-element(bp), index=2``), the ENTRY's initial state
    ``init`` and its ROOT ``root``."""
    return LOOP.replace("(s32[], f32[16])", "(s32[], f32[16], f32[16])").replace(
        "ROOT t = (s32[], f32[16], f32[16]) tuple(i2, red)",
        f"y = f32[16] get-tuple-element(bp), index=2\n  {third}\n"
        "  ROOT t = (s32[], f32[16], f32[16]) tuple(i2, red, y3)").replace(
        "init = (s32[], f32[16], f32[16]) tuple(z, p)", f"init = (s32[], f32[16], f32[16]) tuple({init})").replace(
        "ROOT out = f32[16] get-tuple-element(w), index=1",
        f"o1 = f32[16] get-tuple-element(w), index=1\n  o2 = f32[16] get-tuple-element(w), index=2\n  {root}")


# pre-optimization style: the state holds a parameter twice and one that is read after the loop
LOOP_SHARED_STATE = _three_leaf_loop("y3 = f32[16] negate(y)", "z, p, p",
                                     "ROOT out = f32[16] multiply(o1, p)")
# a loop-invariant leaf: the body returns its third state leaf unchanged
LOOP_INVARIANT = _three_leaf_loop("y3 = f32[16] bitcast(y)", "z, p, q",
                                  "ROOT out = f32[16] add(o1, o2)").replace(
    "p = f32[16] parameter(0)", "p = f32[16] parameter(0)\n  q = f32[16] parameter(1)")


def test_loop_invariant_state_is_the_operand_value():
    """XLA keeps a state leaf the body returns unchanged in the operand's buffer: the while's
    result leaf is q itself (no new value, no pair), read by the add after the loop."""
    g = import_hlo(LOOP_INVARIANT)
    w = g.op_by_name("w")
    q = _value(g, "q").id
    assert g.hlo_values["w"][2] == q and g.hlo_values["o2"] == (q,)
    assert [g.values[v].name for v in w.outputs] == ["w{0}", "w{1}", "w.body_peak"]
    assert w.inplace == ((_value(g, "w{0}").id, _value(g, "z").id), (_value(g, "w{1}").id, _value(g, "p").id))
    assert q in g.op_by_name("out").inputs and q in w.inputs


def test_while_state_with_a_repeated_and_a_later_read_parameter():
    """The state tuple (z, p, p): only the first p leaf pairs (XLA copies the second); p is also
    read after the loop, so a spill-free plan cannot give p's buffer away, but M_R counts the
    pair once (p is a parameter: its off-chip original stays valid, one reload suffices)."""
    from memmap.budgets import compute_budgets
    from memmap.cost import traffic
    from memmap.problem import Problem, Target
    from memmap.solvers import BASELINES, SOLVERS
    from memmap.verify import verify_plan

    g = import_hlo(LOOP_SHARED_STATE)
    w = g.op_by_name("w")
    p, z = _value(g, "p").id, _value(g, "z").id
    assert w.inplace == ((_value(g, "w{0}").id, z), (_value(g, "w{1}").id, p))
    b = compute_budgets(Problem(g, Target("t", 1 << 30, alignment_bytes=1), "strict"))
    # while: z 4 + p 64 + w{0..2} 132 + body peak 512, minus the pairs (4 + 64) = 644;
    # spill-free, p stays live and only the counter pair shares: 708; multiply: 192
    assert (b.m_r_bytes, b.m_p_peak_live_bytes) == (644, 708)
    prob = Problem(g, Target("t", b.m_r_bytes, alignment_bytes=1), "strict")
    for name in BASELINES:
        plan = SOLVERS[name](prob)
        assert verify_plan(plan).ok
        assert traffic(plan)["noncompulsory_bytes"] == 64      # p's reload for the multiply


def test_conditional_takes_the_largest_branch():
    text = """HloModule cond_mod, is_scheduled=true

sum {
  x = f32[] parameter(0)
  y = f32[] parameter(1)
  ROOT r = f32[] add(x, y)
}

small {
  a = f32[8] parameter(0)
  ROOT n = f32[8] negate(a)
}

large {
  b = f32[8] parameter(0)
  big = f32[100,8] broadcast(b), dimensions={1}
  e = f32[100,8] exponential(big)
  z = f32[] constant(0)
  ROOT s = f32[8] reduce(e, z), dimensions={0}, to_apply=sum
}

ENTRY main {
  pr = pred[] parameter(0)
  v = f32[8] parameter(1)
  ROOT c = f32[8] conditional(pr, v, v), true_computation=small, false_computation=large
}
"""
    g = import_hlo(text)
    (c,) = g.ops
    peak = _value(g, "c.body_peak")
    # large branch in schedule order: big (3200 B) and e (3200 B) are live together at e;
    # z (4 B) comes after big is freed; s reaches the ROOT (excluded). small: n is the ROOT.
    assert peak.kind == "temporary" and peak.size_bytes == 6400
    assert c.flops == 800 and c.transcendentals == 800  # reduce of 800 elements; exp of 800


def test_copy_start_aliases_its_source():
    text = """HloModule cs, is_scheduled=true

ENTRY main {
  p = f32[8] parameter(0)
  cs = (f32[8]{0:S(1)}, f32[8]{0}, u32[]) copy-start(p)
  n = f32[8] negate(p)
  cd = f32[8]{0:S(1)} copy-done(cs)
  ROOT a = f32[8] add(cd, n)
}
"""
    g = import_hlo(text)
    _check_well_formed(g)
    p = _value(g, "p").id
    assert g.hlo_values["cs"] == (_value(g, "cs{0}").id, p, _value(g, "cs{2}").id)
    assert [g.values[v].size_bytes for v in g.op_by_name("cs").outputs] == [32, 4]
    assert _value(g, "cd").size_bytes == 32
    assert [g.ops[i].name for i in g.default_schedule] == ["cs", "n", "cd", "a"]


def test_async_start_aliases_operands_and_counts_the_wrapped_work():
    text = """HloModule a, is_scheduled=true

wrapped {
  x = f32[64] parameter(0)
  e = f32[64] exponential(x)
  ROOT n = f32[64] negate(e)
}

ENTRY main {
  p = f32[64] parameter(0)
  s = ((f32[64]), f32[64], s32[]) async-start(p), calls=wrapped
  d = f32[64] async-done(s)
  ROOT r = f32[64] add(d, p)
}
"""
    g = import_hlo(text)
    _check_well_formed(g)
    start, done = g.op_by_name("s"), g.op_by_name("d")
    # {0} of the start tuple is the operand itself; {1} and {2} are new buffers; e (256 B) is
    # the wrapped computation's only non-parameter, non-result buffer.
    assert g.hlo_values["s"] == (_value(g, "p").id, _value(g, "s{1}").id, _value(g, "s{2}").id)
    assert _value(g, "s.body_peak").size_bytes == 256
    assert (start.flops, start.transcendentals) == (64, 64) and done.flops == 0
    assert sum(op.flops for op in g.ops) == g.info["xla_cost"]["flops"] == 128


def test_malformed_hlo_names_the_file(tmp_path):
    bad = tmp_path / "model.hlo"
    bad.write_text("HloModule m\n\nENTRY e {\n  ROOT a = f32[] frobnicate()\n}\n")
    with pytest.raises(HloImportError) as ei:
        import_hlo(bad)
    msg = str(ei.value)
    assert msg.startswith(f"{bad}: XLA's HLO parser rejected the module:")
    assert "frobnicate" in msg and "\n" not in msg
    assert ei.value.path == str(bad)


def test_malformed_text_string():
    with pytest.raises(HloImportError, match=r"^<string>: XLA's HLO parser rejected"):
        import_hlo("HloModule m\nENTRY e {\n  ROOT a = f32[] add(b, c)\n}\n")


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.hlo"
    with pytest.raises(HloImportError) as ei:
        import_hlo(missing)
    assert str(ei.value).startswith(f"{missing}: cannot read HLO file")
    assert ei.value.path == str(missing)


def test_dump_folder_without_modules(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(HloImportError) as ei:
        import_hlo(tmp_path, stage="before")
    assert str(tmp_path) in str(ei.value) and "*before_optimizations.txt" in str(ei.value)


def test_dump_folder_picks_the_largest_module(tmp_path):
    (tmp_path / "module_0001.jit_small.cpu_after_optimizations.txt").write_text(
        "HloModule small\nENTRY e {\n  p = f32[2] parameter(0)\n  ROOT n = f32[2] negate(p)\n}\n")
    (tmp_path / "module_0002.jit_loop.cpu_after_optimizations.txt").write_text(LOOP)
    (tmp_path / "module_0002.jit_loop.cpu_after_optimizations-buffer-assignment.txt").write_text(
        "not HLO")
    g = import_hlo(tmp_path)
    assert g.name == "loop"
    assert g.info["dump_file"] == "module_0002.jit_loop.cpu_after_optimizations.txt"
    assert len(g.info["dump_candidates"]) == 2 and g.info["stage"] == "after"


def test_bad_stage():
    with pytest.raises(ValueError, match="stage"):
        import_hlo(SMALL, stage="middle")


def test_benchmark_import_reports_times():
    r = benchmark_import(LOOP, repeats=1)
    assert set(r) == {"xla_parse_s", "import_s", "ratio"}
    assert r["xla_parse_s"] > 0 and r["import_s"] > 0
    assert r["ratio"] == pytest.approx(r["import_s"] / r["xla_parse_s"])


def test_while_peak_matches_xla_buffer_assignment(tmp_path):
    """The hand-made loops of benchmarks/while_peaks.py, compiled by XLA:CPU: with the loop state
    as in-place pairs, memmap's peak (under XLA's lifetimes for parameters and outputs) is within
    1% of the bytes XLA's buffer assignment occupies (XLA adds tuple tables and the condition's
    result); with the pairs removed it is at least 1.4x."""
    import dataclasses
    import sys

    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.while_peaks import ACCUMULATE, SIMPLE, compile_text, peak_xla_lifetimes, xla_occupancy_peak
    from memmap.problem import Problem, Target

    for name, text in (("simple", SIMPLE), ("accumulate", ACCUMULATE)):
        dump = compile_text(text, tmp_path / name)
        xla = xla_occupancy_peak(dump)
        g = import_hlo(dump, xla_cost=False)
        assert any(op.inplace for op in g.ops)
        plain = dataclasses.replace(g, ops=tuple(dataclasses.replace(o, inplace=()) for o in g.ops))
        peaks = [peak_xla_lifetimes(Problem(x, Target("t", 1 << 40, alignment_bytes=1), "strict"),
                                    x.default_schedule) for x in (g, plain)]
        assert 0.99 * xla <= peaks[0] <= xla, (name, peaks, xla)
        assert peaks[1] >= 1.4 * xla, (name, peaks, xla)
