"""Attention detection (memmap.cascade.detect): zoo transformers, hand-written JAX, planning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from benchmarks import zoo
from memmap.cascade.cli import main as cascade_main
from memmap.cascade.detect import detect_attention, plan_attention, report_attention
from memmap.cascade.library import ATTENTION_CASCADES
from memmap.cascade.passes import analyze_passes
from memmap.errors import InfeasibleError
from memmap.ir import import_hlo
from memmap.problem import get_target

ROOT = Path(__file__).resolve().parents[1]
ZOO = [(n, s) for n in ("bert_base.fwd", "gpt2_small.fwd") for s in ("before", "after")]
TARGETS = [get_target("npu-4mib"), get_target("fusemax"), get_target("npu-4mib").with_capacity(64 << 10)]


@pytest.fixture(scope="module")
def zoo_matches():
    out = {}
    for name, stage in ZOO:
        path = zoo.cached_hlo_path(name, stage)
        out[(name, stage)] = (path, detect_attention(path))
    return out


@pytest.mark.parametrize("name, stage", ZOO)
def test_zoo_transformers(zoo_matches, name, stage):
    path, matches = zoo_matches[(name, stage)]
    assert len(matches) == 12  # one per layer
    graph = import_hlo(path, xla_cost=False)
    op_names = {op.name for op in graph.ops}
    for i, m in enumerate(matches):
        assert m.index == i
        assert (m.batch, m.heads, m.query_len, m.key_len, m.qk_head_dim, m.v_head_dim) == (4, 12, 128, 128, 64, 64)
        assert m.causal is name.startswith("gpt2")
        assert m.masked  # BERT has a padding mask, GPT-2 a causal one
        assert m.dtype == "f32" and m.scale == pytest.approx(0.125)
        assert m.cascade_class == "3-pass" and m.passes == 3
        assert m.reciprocal is (stage == "after")  # XLA rewrites x / SD as x * (1 / SD)
        assert set(m.op_names) <= op_names and m.output_name in op_names
        assert {"qk", "max", "exp", "sum", "divide", "av"} <= set(m.roles)
        for v in (m.q_name, m.k_name, m.v_name):
            assert v in graph.hlo_values and v not in m.op_names
        # The program moves at least Q, K, V, AV plus the score tensor written and read once.
        assert m.program_dram_bytes >= 2 * m.score_bytes + 4 * 4 * 12 * 128 * 64 * 4
        by_name = {op.name: op for op in graph.ops}
        assert m.program_dram_bytes == sum(by_name[o].bytes_accessed for o in m.op_names)
    # Layers are distinct subgraphs.
    assert len({m.output_name for m in matches}) == 12
    # A Graph works as input too, with the same result.
    assert [m.op_names for m in detect_attention(graph)] == [m.op_names for m in matches]


@pytest.mark.parametrize("name, stage", ZOO)
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t.name}-{t.capacity_bytes}")
def test_plan_fits_and_is_maximal(zoo_matches, name, stage, target):
    m = zoo_matches[(name, stage)][1][0]
    p = plan_attention(m, target)
    assert p.working_set_bytes == sum(p.buffers.values()) <= target.capacity_bytes
    assert all(b % target.alignment_bytes == 0 for b in p.buffers.values())
    assert p.m1 == math.ceil(m.key_len / p.m0) and p.p2 == math.ceil(m.query_len / p.queries_per_block)
    # Q once, AV once, K and V once per query block (causal: only tiles up to the diagonal).
    per_head = m.query_len * (m.qk_head_dim + m.v_head_dim)
    kv_once = m.key_len * (m.qk_head_dim + m.v_head_dim)
    assert p.dram_bytes >= (per_head + kv_once) * 48 * 4
    assert p.dram_bytes <= (per_head + p.p2 * kv_once) * 48 * 4
    if p.p2 > 1:  # a bigger query block would not fit
        from memmap.cascade.detect import _state_words, _working_set  # noqa: PLC2701

        assert _state_words(m) == {"RD": 1, "RM": 1, "RNV": m.v_head_dim}
        bigger = _working_set(m, p.m0, p.queries_per_block + p.p0, target.alignment_bytes, _state_words(m))
        assert sum(bigger.values()) > target.capacity_bytes or p.p1 * p.p0 >= m.query_len


def test_plan_numbers_by_hand(zoo_matches):
    m = zoo_matches[("bert_base.fwd", "after")][1][0]
    p = plan_attention(m, "fusemax")  # 16 MiB: one block of all 128 queries, one tile of 128 keys
    assert (p.m0, p.p0, p.p1, p.p2) == (128, 128, 1, 1)
    # K, V, Q, RNV, AV tiles: 128 x 64 x 4 B each; RM, RD: 128 x 4 B.
    assert p.buffers == {"k_tile": 32768, "v_tile": 32768, "q_block": 32768, "state_RD": 512,
                         "state_RM": 512, "state_RNV": 32768, "out_block": 32768}
    assert p.dram_bytes == 48 * (128 * 64 * 2 + 128 * 128) * 4
    assert p.model_cycles is not None and p.model_cycles > 0
    # GPT-2 on 64 KiB: two blocks of 64 queries; causal, so block 0 reads only keys 0..63.
    g = zoo_matches[("gpt2_small.fwd", "after")][1][0]
    p = plan_attention(g, get_target("npu-4mib").with_capacity(64 << 10))
    assert (p.p0 * p.p1, p.p2) == (64, 2)
    assert p.dram_bytes == 48 * (128 * 128 + (64 + 128) * 128) * 4
    assert p.model_cycles is None and "not modelled" in p.model_detail


def test_infeasible(zoo_matches):
    m = zoo_matches[("bert_base.fwd", "before")][1][0]
    with pytest.raises(InfeasibleError, match="needs at least") as e:
        plan_attention(m, get_target("npu-4mib").with_capacity(1024))
    assert e.value.culprits[0].op_name == m.output_name


def test_no_attention():
    assert detect_attention(ROOT / "examples" / "small_cnn_train.after.hlo") == []
    assert detect_attention(ROOT / "examples" / "lstm.before.hlo") == []


def _manual(q, k, v, *, deferred=False, causal=False):
    s = jnp.einsum("bhpe,bhme->bhpm", q, k) / jnp.sqrt(q.shape[-1])
    if causal:
        s = jnp.where(jnp.arange(s.shape[-2])[:, None] >= jnp.arange(s.shape[-1])[None, :], s, -jnp.inf)
    e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
    d = jnp.sum(e, axis=-1, keepdims=True)
    if deferred:
        return jnp.einsum("bhpm,bhmf->bhpf", e, v) / d
    return jnp.einsum("bhpm,bhmf->bhpf", e / d, v)


def _texts(fn, *args):
    lowered = jax.jit(fn).lower(*args)
    return {"before": lowered.as_text(dialect="hlo"), "after": lowered.compile().as_text()}


QKV = (jax.ShapeDtypeStruct((2, 3, 16, 8), jnp.float32), jax.ShapeDtypeStruct((2, 3, 24, 8), jnp.float32),
       jax.ShapeDtypeStruct((2, 3, 24, 4), jnp.float32))


@pytest.mark.parametrize("deferred, causal, dtype", [
    (False, False, jnp.float32), (True, False, jnp.float32), (True, True, jnp.float32),
    (False, True, jnp.bfloat16)])
def test_hand_written_attention(deferred, causal, dtype):
    args = tuple(jax.ShapeDtypeStruct(a.shape, dtype) for a in QKV)
    cls = "3-pass deferred division" if deferred else "3-pass"
    passes = analyze_passes(ATTENTION_CASCADES[cls]()).num_passes
    assert passes == (2 if deferred else 3)
    for stage, text in _texts(lambda q, k, v: _manual(q, k, v, deferred=deferred, causal=causal), *args).items():
        (m,) = detect_attention(text)
        assert (m.cascade_class, m.passes, m.causal) == (cls, passes, causal), stage
        assert (m.batch_dims, m.query_len, m.key_len, m.qk_head_dim, m.v_head_dim) == ((2, 3), 16, 24, 8, 4)
        assert m.dtype == {"float32": "f32", "bfloat16": "bf16"}[jnp.dtype(dtype).name]
        assert m.scale == pytest.approx(8 ** -0.5, rel=1e-3)


@pytest.mark.parametrize("causal", [False, True])
def test_jax_dot_product_attention(causal):
    x = jax.ShapeDtypeStruct((2, 16, 4, 8), jnp.float32)  # [B, T, N, H]
    for stage, text in _texts(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal), x, x, x).items():
        (m,) = detect_attention(text)
        assert (m.cascade_class, m.causal, m.batch, m.heads, m.query_len, m.qk_head_dim) == (
            "3-pass", causal, 2, 4, 16, 8), stage


def test_near_misses_are_rejected():
    q, k, v = QKV

    def no_max(q, k, v):  # exp without the max subtraction is not the softmax cascade
        e = jnp.exp(jnp.einsum("bhpe,bhme->bhpm", q, k))
        return jnp.einsum("bhpm,bhmf->bhpf", e / jnp.sum(e, -1, keepdims=True), v)

    def wrong_axis(q, k, v):  # softmax over the queries, not the keys
        s = jnp.einsum("bhpe,bhme->bhpm", q, k)
        e = jnp.exp(s - jnp.max(s, axis=-2, keepdims=True))
        a = e / jnp.sum(e, axis=-2, keepdims=True)
        return jnp.einsum("bhpm,bhmf->bhpf", a, v)

    def softmax_only(q, k, v):
        return jax.nn.softmax(jnp.einsum("bhpe,bhme->bhpm", q, k))

    for fn in (no_max, wrong_axis, softmax_only):
        for stage, text in _texts(fn, q, k, v).items():
            assert detect_attention(text) == [], (fn.__name__, stage)


def test_report_and_cli(capsys, zoo_matches):
    path = zoo_matches[("gpt2_small.fwd", "after")][0]
    rep = report_attention(str(path), "npu-4mib")
    assert rep["num_matches"] == 12 and rep["cascade_classes"] == {"3-pass": 3}
    assert json.loads(json.dumps(rep)) == rep
    assert rep["totals"]["one_pass_dram_bytes"] < rep["totals"]["program_dram_bytes"]
    assert cascade_main(["detect", str(path), "--scratchpad", "64KiB", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["target"]["capacity_bytes"] == 64 << 10
    assert all(r["plan"]["working_set_bytes"] <= 64 << 10 for r in out["matches"])
    assert cascade_main(["detect", str(path), "--scratchpad", "1KiB"]) == 3  # infeasible
    assert "infeasible" in capsys.readouterr().out
    assert cascade_main(["detect", str(ROOT / "no_such_file.hlo")]) == 2
    assert "cannot read HLO file" in capsys.readouterr().err
