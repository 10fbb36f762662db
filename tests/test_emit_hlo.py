"""Annotated HLO (memmap.emit_hlo) and reading plans back from it (memmap.import_plan).

Round trips on the bundled examples, the external dumps and random HLO modules; a hand-made
module with a tuple-producing call, a while loop, a spill, a prefetched reload, a writeback and
tiered slow reads whose annotated text is checked line by line; bad input; numerics of the
CPU-executable variant against jax.jit on real models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memmap
from memmap.budgets import compute_budgets
from memmap.cli import main
from memmap.emit.hlo import EmitError, executable_variant, run_hlo_on_cpu
from memmap.emit.hlo_plan import AnnotatedHloError
from memmap.errors import PlanError
from memmap.ir.synthetic import random_hlo
from memmap.plan import Plan, Residency, Transfer
from memmap.problem import Problem, Target

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [ROOT / "examples" / "small_cnn_train.after.hlo", ROOT / "examples" / "lstm.before.hlo"]
EXTERNAL = sorted((ROOT / "tests" / "data" / "external").glob("*.hlo"))


def budgets(g, activations_only=False):
    return compute_budgets(Problem(g, Target("t", 1 << 50), "strict", activations_only))


def assert_round_trip(g, plan):
    """emit -> XLA's parser + HloSchedule.verify() -> import_plan == plan, and it verifies."""
    from jaxlib import _hlo

    text = memmap.emit_hlo(g, plan)
    module = _hlo.hlo_module_from_text(text)
    module.schedule().verify()
    assert "is_scheduled=true" in text.splitlines()[0]
    back = memmap.import_plan(text)
    assert back.problem.graph == g
    assert (back.problem.mode, back.problem.activations_only, back.problem.target) == \
        (plan.problem.mode, plan.problem.activations_only, plan.problem.target)
    assert back.schedule == plan.schedule
    assert back.residencies == plan.residencies
    assert back.transfers == plan.transfers
    assert memmap.verify_plan(back, graph=g).ok
    return text


@pytest.mark.parametrize("path", EXAMPLES + EXTERNAL, ids=lambda p: p.name)
@pytest.mark.parametrize("mode", ["strict", "tiered"])
def test_round_trip_bundled_and_external(path, mode):
    g = memmap.import_hlo(path, xla_cost=False)
    cap = budgets(g).m_r_bytes if mode == "strict" else budgets(g).m_r_bytes // 2
    plan = memmap.optimize(g, scratchpad=cap, mode=mode, solver="belady")
    text = assert_round_trip(g, plan)
    n_moves = sum(t.kind != "evict" for t in plan.transfers)
    assert text.count(" copy-start(") == n_moves and text.count(" copy-done(") == n_moves
    assert ":S(1)}" in text
    # The Plan's JSON written by `memmap optimize` is what the annotations say.
    again = Plan.from_json(plan.to_json())
    back = memmap.import_plan(text)
    assert (back.schedule, back.residencies, back.transfers) == \
        (again.schedule, again.residencies, again.transfers)


# --------------------------------------------------------------------------------------------
# A hand-made module, a hand-made tiered plan, and the text it must give

HAND = """HloModule handmade

body {
  s = (s32[], f32[64]{0}) parameter(0)
  i = s32[] get-tuple-element(s), index=0
  one = s32[] constant(1)
  i2 = s32[] add(i, one)
  x = f32[64]{0} get-tuple-element(s), index=1
  x2 = f32[64]{0} add(x, x)
  ROOT t = (s32[], f32[64]{0}) tuple(i2, x2)
}

cond {
  s = (s32[], f32[64]{0}) parameter(0)
  i = s32[] get-tuple-element(s), index=0
  n = s32[] constant(3)
  ROOT lt = pred[] compare(i, n), direction=LT
}

pair {
  a = f32[64]{0} parameter(0)
  na = f32[64]{0} negate(a)
  ea = f32[64]{0} exponential(a)
  ROOT t = (f32[64]{0}, f32[64]{0}) tuple(na, ea)
}

ENTRY main {
  p = f32[64]{0} parameter(0)
  w = f32[64]{0} parameter(1)
  c = (f32[64]{0}, f32[64]{0}) call(p), to_apply=pair
  c0 = f32[64]{0} get-tuple-element(c), index=0
  c1 = f32[64]{0} get-tuple-element(c), index=1
  ca = f32[64]{0} add(c0, w)
  b = f32[64]{0} multiply(ca, ca)
  zero = s32[] constant(0)
  init = (s32[], f32[64]{0}) tuple(zero, b)
  loop = (s32[], f32[64]{0}) while(init), condition=cond, body=body
  lx = f32[64]{0} get-tuple-element(loop), index=1
  d = f32[64]{0} add(lx, c1)
  ROOT out = (f32[64]{0}, f32[64]{0}) tuple(d, c0)
}
"""


def hand_plan():
    """Tiered, steps c(0) a(1) b(2) loop(3) d(4): c's two results are created in the scratchpad;
    c{1} is spilled at step 0 and prefetched back at step 2 for d (step 4); c{0} (an output) is
    written back at step 1; p is loaded; w, b and the loop counter are read from off-chip memory;
    the loop's state leaf {1} and its body peak live in the scratchpad; d is produced off-chip."""
    g = memmap.import_hlo(HAND, xla_cost=False)
    v = {x.name: x.id for x in g.values}
    problem = Problem(g, Target("t", 4096, alignment_bytes=64), "tiered", False)
    res = [Residency(v["p"], 0, 0, 768), Residency(v["c{0}"], 0, 1, 0),
           Residency(v["c{1}"], 0, 0, 256), Residency(v["ca"], 1, 2, 1024),
           Residency(v["c{1}"], 2, 4, 512), Residency(v["loop{1}"], 3, 4, 1280),
           Residency(v["loop.body_peak"], 3, 3, 1536)]
    trs = [Transfer(0, "load", v["p"], 256), Transfer(0, "spill", v["c{1}"], 256),
           Transfer(1, "writeback", v["c{0}"], 256), Transfer(2, "reload", v["c{1}"], 256)]
    plan = Plan.assemble(problem, [0, 1, 2, 3, 4], res, trs, solver="hand")
    assert memmap.verify_plan(plan).ok, memmap.verify_plan(plan).errors
    return g, plan


def entry_lines(text):
    body = text[text.index("ENTRY"):].splitlines()[1:]
    return [line.strip() for line in body[:body.index("}")]]


def line_of(lines, name):
    (hit,) = [k for k, line in enumerate(lines) if line.lstrip("ROOT ").startswith(f"%{name} =")]
    return hit


def test_hand_made_module_annotations():
    g, plan = hand_plan()
    text = assert_round_trip(g, plan)
    lines = entry_lines(text)
    get = lambda name: lines[line_of(lines, name)]  # noqa: E731
    # Results created in the scratchpad carry S(1) and their offsets / last steps.
    assert get("c").startswith("%c = (f32[64]{0:S(1)}, f32[64]{0:S(1)}) call(%memmap.load.p.done)")
    assert 'memmap_scratchpad="{0}:0:1;{1}:256:0"' in get("c")
    assert 'memmap_operands="0=p"' in get("c")
    # w is read from off-chip memory (tiered): a reads the scratchpad c{0} and the original w.
    assert get("ca").startswith("%ca = f32[64]{0:S(1)} add(%c0, %w)")
    # b is produced off-chip; the loop reads the original tuple (no copy involved).
    assert get("b").startswith("%b = f32[64]{0} multiply(%ca, %ca)")
    assert get("loop").startswith("%loop = (s32[], f32[64]{0:S(1)}) while(%init)")
    assert 'memmap_temporary="1536:3"' in get("loop")
    # Spill of c{1}: issued after c (step 0), done after the last step of its residency (0).
    spill, spill_done = line_of(lines, "memmap.spill.c.1"), line_of(lines, "memmap.spill.c.1.done")
    assert line_of(lines, "c") < spill < spill_done < line_of(lines, "ca")
    assert "(f32[64]{0}, f32[64]{0:S(1)}, u32[]) copy-start(%c1)" in lines[spill]
    assert 'memmap_inserted="spill"' in lines[spill] and 'memmap_value="c{1}"' in lines[spill]
    # Writeback of c{0} after a (step 1); the ROOT reads it.
    wb = line_of(lines, "memmap.writeback.c.0")
    assert line_of(lines, "ca") < wb < line_of(lines, "b")
    # The reload of c{1} is a prefetch: issued before b (step 2), done just before d (step 4).
    re_, re_done = line_of(lines, "memmap.reload.c.1"), line_of(lines, "memmap.reload.c.1.done")
    assert line_of(lines, "ca") < re_ < line_of(lines, "b") < line_of(lines, "loop") < re_done < line_of(lines, "d")
    assert "(f32[64]{0:S(1)}, f32[64]{0}, u32[]) copy-start(%memmap.spill.c.1.done)" in lines[re_]
    assert 'memmap_scratchpad="{0}:512:4"' in lines[re_]
    assert get("d").startswith("%d = f32[64]{0} add(%lx, %memmap.reload.c.1.done)")
    assert 'memmap_operands="1=c1"' in get("d")
    assert lines[-1].startswith("ROOT %memmap.tuple.out = (f32[64]{0}, f32[64]{0}) "
                                "tuple(%d, %memmap.writeback.c.0.done)")
    # The loop state {1} lives in the scratchpad across iterations.
    body = text[text.index("%body"):text.index("%cond")]
    assert "%s = (s32[], f32[64]{0:S(1)}) parameter(0)" in body
    assert "%x2 = f32[64]{0:S(1)} add(%x, %x)" in body
    assert "ROOT %t = (s32[], f32[64]{0:S(1)}) tuple(%i2, %x2)" in body
    cond = text[text.index("%cond"):text.index("ENTRY")]
    assert "%s.1 = (s32[], f32[64]{0:S(1)}) parameter(0)" in cond
    # The annotated module computes what the input does (XLA:CPU, async copies made synchronous).
    args = [np.linspace(-1, 1, 64, dtype=np.float32), np.linspace(2, 3, 64, dtype=np.float32)]
    variant = executable_variant(text)
    assert "copy-start" not in variant and ":S(1)}" in variant
    for want, got in zip(run_hlo_on_cpu(HAND, args), run_hlo_on_cpu(variant, args), strict=True):
        assert want.tobytes() == got.tobytes()


def test_while_in_place_pair_shares_its_offset():
    """A while loop's operand leaf and result leaf sharing one scratchpad buffer (an in-place
    pair, docs/semantics.md) are both S(1) at the same offset in the annotated module."""
    g = memmap.import_hlo(EXAMPLES[1], xla_cost=False)
    plan = memmap.optimize(g, scratchpad=budgets(g).m_r_bytes, mode="strict", solver="msa")
    pos = {o: t for t, o in enumerate(plan.schedule)}
    at = lambda v, t: next(r for r in plan.residencies if r.value == v and r.start <= t <= r.end)  # noqa: E731
    shared = [(op, out, inp) for op in g.ops for out, inp in op.inplace
              if at(out, pos[op.id]).offset == at(inp, pos[op.id]).offset]
    assert shared
    text = assert_round_trip(g, plan)
    op, out, inp = shared[0]
    lines = entry_lines(text)
    loop = lines[line_of(lines, op.name)]
    k = g.hlo_values[op.name].index(out)   # the loop state is a flat tuple: leaf k is {k}
    entries = loop.split('memmap_scratchpad="')[1].split('"')[0].split(";")
    offset = at(inp, pos[op.id]).offset
    assert f"{{{k}}}:{offset}:{at(out, pos[op.id]).end}" in entries
    assert loop.split(" while(")[0].count(":S(1)}") >= 1


def test_strict_and_activations_only_on_the_hand_module():
    g = memmap.import_hlo(HAND, xla_cost=False)
    for ao in (False, True):
        b = budgets(g, ao)
        for cap in sorted({b.m_r_bytes, b.m_h_bytes}):
            for solver in ("msa", "minpeak"):
                plan = memmap.optimize(g, scratchpad=cap, mode="strict", solver=solver,
                                       activations_only=ao)
                text = assert_round_trip(g, plan)
                if ao:  # parameters stay off-chip: never copied
                    assert "memmap.load.p" not in text and "memmap.load.w" not in text


# --------------------------------------------------------------------------------------------
# Random HLO modules (while loops, tuple-returning calls), every baseline, budgets and modes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), num_ops=st.integers(1, 24), params=st.integers(1, 4),
       consts=st.integers(0, 2), mode=st.sampled_from(["strict", "tiered"]), ao=st.booleans(),
       solver=st.sampled_from(["msa", "belady", "minpeak"]), budget=st.sampled_from(["M_R", "M_H", "M_P"]),
       align=st.sampled_from([1, 64, 512]))
def test_random_modules_round_trip(seed, num_ops, params, consts, mode, ao, solver, budget, align):
    text = random_hlo(seed, num_ops=num_ops, num_params=params, num_consts=consts,
                      loop_prob=0.2, pair_prob=0.2)
    g = memmap.import_hlo(text, xla_cost=False)
    b = compute_budgets(Problem(g, Target("t", 1 << 50, alignment_bytes=align), "strict", ao))
    cap = {"M_R": b.m_r_bytes, "M_H": b.m_h_bytes, "M_P": b.m_p_bytes}[budget]
    if cap <= 0:
        return
    tgt = Target("t", cap, alignment_bytes=align)
    plan = memmap.optimize(g, target=tgt, mode=mode, solver=solver, activations_only=ao)
    assert_round_trip(g, plan)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_modules_numerics(seed):
    text = random_hlo(seed, num_ops=14, num_params=3, num_consts=1, loop_prob=0.25, pair_prob=0.25)
    g = memmap.import_hlo(text, xla_cost=False)
    rng = np.random.default_rng(seed)
    params = sorted((v for v in g.values if v.kind == "parameter"), key=lambda v: int(v.name[1:]))
    args = [rng.standard_normal(v.shape).astype(np.float32) for v in params]
    want = run_hlo_on_cpu(text, args)
    mode = ("strict", "tiered")[seed % 2]
    plan = memmap.optimize(g, scratchpad=budgets(g).m_r_bytes, mode=mode, solver="belady")
    got = run_hlo_on_cpu(executable_variant(memmap.emit_hlo(g, plan)), args)
    assert [x.tobytes() for x in got] == [x.tobytes() for x in want]


# --------------------------------------------------------------------------------------------
# Numerics on real models: bit for bit against jax.jit


@pytest.mark.parametrize("name", ["mlp.train", "small_cnn.train", "lstm.train"])
def test_real_models_match_jax_jit_bit_for_bit(name):
    sys.path.insert(0, str(ROOT))
    from benchmarks.emit_bench import numerics_round_trip

    result = numerics_round_trip(name, mode="strict", seed=0)
    assert result["copies"] > 0 and result["outputs"] > 1
    assert result["bitwise_equal"], result


def _jax_programs():
    import jax
    import jax.numpy as jnp

    def mlp(p, x):  # returns a pytree
        h = jnp.tanh(x @ p["w1"] + p["b1"])
        return {"out": h @ p["w2"], "aux": (h.sum(), jnp.maximum(h, 0))}

    def rnn(w, xs):  # lax.scan: a while loop
        def step(h, x):
            h = jnp.tanh(h @ w + x)
            return h, h.sum()
        return jax.lax.scan(step, jnp.zeros(xs.shape[1:]), xs)

    def train(p, x):  # a gradient step
        loss, grads = jax.value_and_grad(lambda q: jnp.sum(mlp(q, x)["out"] ** 2))(p)
        return loss, jax.tree.map(lambda a, b: a - 0.1 * b, p, grads)

    rng = np.random.default_rng(0)
    p = {"w1": rng.standard_normal((16, 32)).astype(np.float32),
         "b1": rng.standard_normal(32).astype(np.float32),
         "w2": rng.standard_normal((32, 8)).astype(np.float32)}
    x = rng.standard_normal((4, 16)).astype(np.float32)
    w, xs = rng.standard_normal((8, 8)).astype(np.float32), rng.standard_normal((5, 3, 8)).astype(np.float32)
    return [(mlp, (p, x)), (rnn, (w, xs)), (train, (p, x))]


@pytest.mark.parametrize("k", [0, 1, 2], ids=["pytree_mlp", "scan", "grad_step"])
def test_jax_programs_both_stages(k):
    """from_jax, post-optimization (what memmap.jit plans by default) and pre-optimization; the
    pre-optimization annotated module runs bit for bit like jax.jit."""
    import jax

    fn, args = _jax_programs()[k]
    for stage, mode in (("optimized", "strict"), ("lowered", "tiered")):
        g = memmap.from_jax(fn, *args, stage=stage)
        plan = memmap.optimize(g, scratchpad=budgets(g).m_r_bytes, mode=mode, solver="belady")
        text = assert_round_trip(g, plan)
        assert " copy-start(" in text
    want = [np.asarray(a) for a in jax.tree_util.tree_leaves(jax.jit(fn)(*args))]
    got = run_hlo_on_cpu(executable_variant(text), jax.tree_util.tree_leaves(args))
    assert [a.tobytes() for a in got] == [a.tobytes() for a in want]


# --------------------------------------------------------------------------------------------
# Numerics: the chains the StableHLO -> HLO export writes for degenerate broadcasts


def _export_of_import(text_or_proto) -> str:
    """What XLA compiles when run_hlo_on_cpu hands it a module: HLO -> hlo_to_stablehlo -> the
    StableHLO -> HLO export (the one compile_and_load runs)."""
    from jaxlib import _hlo, _jax

    if isinstance(text_or_proto, str):
        serialized = _hlo.hlo_module_from_text(text_or_proto).as_serialized_hlo_module_proto()
    else:
        serialized = text_or_proto.SerializeToString()
    stablehlo = _jax.mlir.hlo_to_stablehlo(serialized)
    return _jax.mlir.mlir_module_to_xla_computation(stablehlo, use_tuple_args=False,
                                                    return_tuple=False).as_hlo_text()


def _opcode_counts(text: str) -> dict[str, int]:
    from collections import Counter

    from jaxlib import _hlo

    module = _hlo.hlo_module_from_text(text)
    return dict(Counter(str(i.opcode) for c in module.computations() for i in c.instructions()))


def _folded(text: str):
    from jaxlib import _hlo

    from memmap.emit.hlo import _restore_degenerate_broadcasts
    from memmap.ir.hlo_proto import parse_module_proto

    proto = parse_module_proto(_hlo.hlo_module_from_text(text).as_serialized_hlo_module_proto())
    return proto, _restore_degenerate_broadcasts(proto)


def _tiny_transformer_step():
    """One pre-LN attention block + softmax cross-entropy, SGD step: B=2, T=8, D=16, V=32."""
    import jax
    import jax.numpy as jnp

    def layer_norm(x, g):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) * jax.lax.rsqrt(v + 1e-5) * g

    def loss(p, tok, lab):
        x = p["emb"][tok]
        h = layer_norm(x, p["g1"])
        q, k, v = h @ p["wq"], h @ p["wk"], h @ p["wv"]
        a = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]), axis=-1)
        x = x + (a @ v) @ p["wo"]
        logp = jax.nn.log_softmax(layer_norm(x, p["g2"]) @ p["out"])
        return -jnp.take_along_axis(logp, lab[..., None], -1).mean()

    def step(p, tok, lab):
        value, grads = jax.value_and_grad(loss)(p, tok, lab)
        return value, jax.tree.map(lambda a, b: a - 0.1 * b, p, grads)

    rng = np.random.default_rng(0)
    f = lambda *s: (0.5 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    d, v = 16, 32
    p = {"emb": f(v, d), "g1": np.abs(f(d)), "g2": np.abs(f(d)), "wq": f(d, d), "wk": f(d, d),
         "wv": f(d, d), "wo": f(d, d), "out": f(d, v)}
    tok, lab = (rng.integers(0, v, (2, 8)).astype(np.int32) for _ in range(2))
    return step, (p, tok, lab)


def test_transformer_step_from_exported_hlo_matches_jax_jit():
    """The exported pre-optimization HLO of a softmax / layer-norm gradient, run by
    run_hlo_on_cpu (plain and annotated), is bit for bit jax.jit. Without
    _restore_degenerate_broadcasts 8 of its 9 outputs differ in the last bits (jaxlib 0.10.2):
    the export inside compile_and_load folds the broadcast chains and XLA keeps a divide that it
    turns into a multiply by the reciprocal for jax.jit."""
    import jax

    fn, args = _tiny_transformer_step()
    g = memmap.from_jax(fn, *args, stage="lowered")
    text = g.info["hlo_text"]
    _, folded = _folded(text)
    assert folded >= 10            # every `x - mean`, `/ sum`, `* rsqrt` of the program
    want = [np.asarray(a) for a in jax.tree_util.tree_leaves(jax.jit(fn)(*args))]
    leaves = jax.tree_util.tree_leaves(args)
    got = run_hlo_on_cpu(text, leaves)
    assert len(got) == len(want) == 9
    assert [a.tobytes() for a in got] == [a.tobytes() for a in want]
    plan = memmap.optimize(g, scratchpad=budgets(g).m_r_bytes, mode="strict", solver="belady")
    annotated = executable_variant(memmap.emit_hlo(g, plan))
    assert " copy(" in annotated
    got = run_hlo_on_cpu(annotated, leaves)
    assert [a.tobytes() for a in got] == [a.tobytes() for a in want]


def test_folded_module_exports_to_what_jax_exported():
    """After the fold, the export inside the compile writes every chain again: the module XLA
    optimizes has the exported module's instructions, opcode for opcode (without the fold it
    has fewer broadcasts and reshapes)."""
    import jax

    fn, args = _tiny_transformer_step()
    text = jax.jit(fn, keep_unused=True).lower(*args).as_text(dialect="hlo")
    proto, folded = _folded(text)
    assert folded > 0
    assert _opcode_counts(_export_of_import(proto)) == _opcode_counts(text)


# Three exact export chains (an identity b1, a b1 that adds a dimension, two expanded dimensions)
# and four look-alikes (b1 read twice, a reshape that moves elements, an expanded 1-dimension
# that is not the operand's, a transposing b2).
_CHAINS = """
  a = f32[4,8,1]{2,1,0} parameter(0)
  b1 = f32[4,8,1]{2,1,0} broadcast(a), dimensions={0,1,2}
  r1 = f32[4,8]{1,0} reshape(b1)
  o1 = f32[4,8,16]{2,1,0} broadcast(r1), dimensions={0,1}
  c = s32[1,5]{1,0} parameter(1)
  b2 = s32[3,1,5]{2,1,0} broadcast(c), dimensions={1,2}
  r2 = s32[3,5]{1,0} reshape(b2)
  o2 = s32[3,6,5]{2,1,0} broadcast(r2), dimensions={0,2}
  d = f32[1,8,1]{2,1,0} parameter(2)
  b3 = f32[1,8,1]{2,1,0} broadcast(d), dimensions={0,1,2}
  r3 = f32[8]{0} reshape(b3)
  o3 = f32[4,8,2]{2,1,0} broadcast(r3), dimensions={1}
"""
_LOOK_ALIKES = """
  n1b = f32[4,8,1]{2,1,0} broadcast(a), dimensions={0,1,2}
  n1r = f32[4,8]{1,0} reshape(n1b)
  n1 = f32[4,8,16]{2,1,0} broadcast(n1r), dimensions={0,1}
  n1x = f32[4,8,1]{2,1,0} negate(n1b)
  e = f32[2,3,1]{2,1,0} parameter(3)
  n2b = f32[2,3,1]{2,1,0} broadcast(e), dimensions={0,1,2}
  n2r = f32[3,2]{1,0} reshape(n2b)
  n2 = f32[3,2,4]{2,1,0} broadcast(n2r), dimensions={0,1}
  f = f32[4]{0} parameter(4)
  n3b = f32[4,1]{1,0} broadcast(f), dimensions={0}
  n3r = f32[4]{0} reshape(n3b)
  n3 = f32[4,8]{1,0} broadcast(n3r), dimensions={0}
  g = f32[4,4,1]{2,1,0} parameter(5)
  n4b = f32[4,4,1]{2,1,0} broadcast(g), dimensions={0,1,2}
  n4r = f32[4,4]{1,0} reshape(n4b)
  n4 = f32[4,4,16]{2,1,0} broadcast(n4r), dimensions={1,0}
"""
_CHAIN_OUT = "(f32[4,8,16]{2,1,0}, s32[3,6,5]{2,1,0}, f32[4,8,2]{2,1,0}"
CHAINS_ONLY = ("HloModule chains\n\nENTRY e {" + _CHAINS
               + f"  ROOT out = {_CHAIN_OUT}) tuple(o1, o2, o3)\n}}\n")
HAND_CHAINS = ("HloModule chains\n\nENTRY e {" + _CHAINS + _LOOK_ALIKES
               + f"  ROOT out = {_CHAIN_OUT}, f32[4,8,16]{{2,1,0}}, f32[4,8,1]{{2,1,0}}, "
               "f32[3,2,4]{2,1,0}, f32[4,8]{1,0}, f32[4,4,16]{2,1,0}) "
               "tuple(o1, o2, o3, n1, n1x, n2, n3, n4)\n}\n")


def test_restore_degenerate_broadcasts_keeps_values():
    """The three exact chains are folded, the four look-alikes are not; every output is bit for
    bit numpy's broadcast, and the export of the folded chains writes them again."""
    proto, folded = _folded(CHAINS_ONLY)
    assert folded == 3
    assert _opcode_counts(_export_of_import(proto)) == _opcode_counts(CHAINS_ONLY)
    proto, folded = _folded(HAND_CHAINS)
    assert folded == 3
    entry = next(c for c in proto.computations if c.id == proto.entry_computation_id)
    names = {i.name for i in entry.instructions}
    assert not names & {"b1", "r1", "b2", "r2", "b3", "r3"}
    assert {"n1b", "n1r", "n2b", "n2r", "n3b", "n3r", "n4b", "n4r"} <= names

    rng = np.random.default_rng(0)
    a, d, e, f, g = (rng.standard_normal(s).astype(np.float32)
                     for s in ((4, 8, 1), (1, 8, 1), (2, 3, 1), (4,), (4, 4, 1)))
    c = rng.integers(-100, 100, (1, 5)).astype(np.int32)
    got = run_hlo_on_cpu(HAND_CHAINS, [a, c, d, e, f, g])
    want = [np.broadcast_to(a, (4, 8, 16)), np.broadcast_to(c[0], (3, 6, 5)),
            np.broadcast_to(d[0, :, 0][None, :, None], (4, 8, 2)), np.broadcast_to(a, (4, 8, 16)),
            -a, np.broadcast_to(e.reshape(3, 2)[:, :, None], (3, 2, 4)),
            np.broadcast_to(f[:, None], (4, 8)), np.broadcast_to(g[:, :, 0].T[:, :, None], (4, 4, 16))]
    assert [(x.dtype, x.shape, x.tobytes()) for x in got] == \
        [(w.dtype, w.shape, np.ascontiguousarray(w).tobytes()) for w in want]


def test_emit_bench_rerun_numerics_keeps_the_round_trip_rows(tmp_path, monkeypatch, capsys):
    """--rerun-numerics replaces only the numerics rows it reran; bad input is exit 2."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import emit_bench, zoo

    monkeypatch.setattr(emit_bench, "workload_path", lambda name: zoo.cached_hlo_path(
        name.rsplit(".", 1)[0], name.rsplit(".", 1)[1], tmp_path / "cache"))
    saved = json.loads((ROOT / "benchmarks" / "emit_results.json").read_text())
    for n in saved["numerics"]:
        n["max_abs_diff"] = -1.0           # marks the rows that were not rerun
    src, out = tmp_path / "saved.json", tmp_path / "out.json"
    src.write_text(json.dumps(saved))
    assert emit_bench.main(["--rerun-numerics", "--workloads", "mlp.fwd", "--from-json", str(src),
                            "--json-out", str(out), "--no-write"]) == 0
    new = json.loads(out.read_text())
    assert new["rows"] == saved["rows"]
    assert [n["workload"] for n in new["numerics"]] == [n["workload"] for n in saved["numerics"]]
    rerun = [n for n in new["numerics"] if n["max_abs_diff"] != -1.0]
    assert [n["workload"] for n in rerun] == ["mlp.fwd"] and rerun[0]["bitwise_equal"]
    assert "annotated = `jax.jit` bit for bit on" in capsys.readouterr().out
    assert emit_bench.main(["--rerun-numerics", "--workloads", "nope.fwd", "--from-json", str(src),
                            "--no-write"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.fwd" in err[0]


# --------------------------------------------------------------------------------------------
# Bad input


def test_a_plan_that_fails_verification_is_never_emitted():
    g, plan = hand_plan()
    r = plan.residencies[0]
    bad = Plan.assemble(plan.problem, plan.schedule,
                        [Residency(r.value, r.start, r.end, r.offset + 1)] + list(plan.residencies[1:]),
                        plan.transfers, solver="hand")
    with pytest.raises(PlanError, match="does not verify.*alignment"):
        memmap.emit_hlo(g, bad)


def test_graph_without_hlo_and_already_annotated_input():
    g, plan = hand_plan()
    from_json = Plan.from_json(plan.to_json())
    with pytest.raises(EmitError, match="no HLO module"):
        memmap.emit_hlo(from_json.problem.graph, from_json)
    annotated = memmap.import_hlo(memmap.emit_hlo(g, plan), xla_cost=False)
    with pytest.raises(EmitError, match="already annotated"):
        memmap.emit_hlo(annotated, memmap.optimize(annotated, scratchpad="1MiB", solver="msa"))


def test_recovered_plan_can_be_annotated_again():
    g, plan = hand_plan()
    back = memmap.import_plan(memmap.emit_hlo(g, plan))
    again = memmap.import_plan(memmap.emit_hlo(back.problem.graph, back))
    assert (again.schedule, again.residencies, again.transfers) == \
        (plan.schedule, plan.residencies, plan.transfers)


def test_hand_edits_are_caught_with_one_line():
    g, plan = hand_plan()
    text = memmap.emit_hlo(g, plan)
    # d reads the spilled-and-evicted original c{1} instead of the reload: not what the plan says
    edited = text.replace("add(%lx, %memmap.reload.c.1.done)", "add(%lx, %c1)")
    with pytest.raises(AnnotatedHloError, match=r"operator 'd' \(step 4\) reads its original buffer of 'c\{1\}'"):
        memmap.import_plan(edited)
    # a copy that names another value than it copies
    edited = text.replace('memmap_value="c{1}"', 'memmap_value="c{0}"', 1)
    with pytest.raises(AnnotatedHloError, match=r"says it copies 'c\{0\}' but copies 'c\{1\}'"):
        memmap.import_plan(edited)
    # a reload whose destination is not the scratchpad
    edited = text.replace("(f32[64]{0:S(1)}, f32[64]{0}, u32[]) copy-start(%memmap.spill",
                          "(f32[64]{0}, f32[64]{0}, u32[]) copy-start(%memmap.spill")
    with pytest.raises(AnnotatedHloError, match="a reload copies into the scratchpad"):
        memmap.import_plan(edited)
    with pytest.raises(AnnotatedHloError, match="not annotated by memmap"):
        memmap.import_plan(HAND)


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_optimize_writes_annotated_hlo_and_verify_reads_it(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(["optimize", EXAMPLES[1], "--scratchpad", "2MiB", "--mode", "tiered",
                             "--solver", "belady", "-o", out, "--json", "--no-plot"], capsys)
    assert code == 0, err
    annotated = Path(json.loads(stdout)["annotated_hlo_path"])
    assert annotated == out / "annotated.hlo"
    plan = Plan.from_json(out / "plan.json")
    back = memmap.import_plan(annotated)
    assert (back.schedule, back.residencies, back.transfers) == \
        (plan.schedule, plan.residencies, plan.transfers)
    code, stdout, err = run(["verify", annotated, "--json"], capsys)
    assert code == 0 and json.loads(stdout)["valid"] is True
    code, stdout, err = run(["verify", EXAMPLES[1], out / "plan.json"], capsys)
    assert code == 0, err
    # Hand edit: move one scratchpad buffer onto another that is resident at the same time.
    (tmp_path / "edited.hlo").write_text(_overlap_edit(annotated.read_text(), plan))
    code, stdout, err = run(["verify", tmp_path / "edited.hlo"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "overlaps" in lines[0], err
    assert "Traceback" not in err
    code, stdout, err = run(["verify", EXAMPLES[1]], capsys)
    assert code == 2 and "not annotated by memmap" in err and len(err.strip().splitlines()) == 1


def _overlap_edit(text: str, plan: Plan) -> str:
    """Give a load's residency the offset of another value resident at its first step."""
    g = plan.problem.graph
    for tr in plan.transfers:
        if tr.kind != "load":
            continue
        mine = next(r for r in plan.residencies if r.value == tr.value and r.start == tr.step)
        other = next((r for r in plan.residencies if r.value != tr.value
                      and r.start <= mine.start <= r.end and r.offset != mine.offset), None)
        if other is None:
            continue
        old = f'memmap_scratchpad="{{0}}:{mine.offset}:{mine.end}",memmap_value="{g.values[tr.value].name}"'
        assert old in text
        return text.replace(old, old.replace(f":{mine.offset}:", f":{other.offset}:"))
    raise AssertionError("no load to move")
