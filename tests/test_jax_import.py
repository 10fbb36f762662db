"""Tests for memmap.ir.jax_import.from_jax (and import_hlo on XLA dump folders made by JAX)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from memmap.ir import from_jax, import_hlo


def mlp(params, x):
    for w, b in params:
        x = jnp.tanh(x @ w + b)
    return jnp.sum(x ** 2)


def _params(sizes=(32, 64, 64, 16)):
    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes))
    return [(jax.random.normal(k, (m, n)), jnp.zeros(n))
            for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def _check(g):
    assert g.num_ops > 0
    assert g.check_schedule(g.default_schedule) is None
    assert all(0 <= v < g.num_values for op in g.ops for v in op.inputs + op.outputs)


def test_lowered_is_unfused_and_topological():
    x = jnp.ones((8, 32))
    g = from_jax(mlp, _params(), x, stage="lowered")
    _check(g)
    assert g.source == "jax:mlp" and g.name == "mlp" and g.info["stage"] == "lowered"
    assert g.schedule_origin == "topological"
    assert "fusion" not in {op.opcode for op in g.ops}
    assert sum(op.opcode == "dot" for op in g.ops) == 3
    # 3 weights + 3 biases + x, each a parameter with its size.
    params = [v for v in g.values if v.kind == "parameter"]
    assert sorted(v.size_bytes for v in params) == sorted(
        [32 * 64 * 4, 64 * 4, 64 * 64 * 4, 64 * 4, 64 * 16 * 4, 16 * 4, 8 * 32 * 4])


def test_optimized_is_scheduled_by_xla_and_flops_match_xla():
    x = jnp.ones((8, 32))
    grad = jax.grad(mlp)
    g = from_jax(grad, _params(), x, stage="optimized")
    _check(g)
    assert g.schedule_origin == "xla" and g.info["is_scheduled"]
    assert "fusion" in {op.opcode for op in g.ops}
    ours = sum(op.flops for op in g.ops)
    xla = g.info["xla_cost"]["flops"]
    assert xla > 0 and 0.5 <= ours / xla <= 2.0
    assert g.info["xla_compiled_cost"]["flops"] == pytest.approx(xla)
    assert g.info["xla_memory"]["argument_size_in_bytes"] == sum(
        v.size_bytes for v in g.values if v.kind == "parameter")


def test_scan_becomes_one_while_op_with_body_peak():
    def f(x, w):
        def body(c, _):
            h = jnp.tanh(c @ w)
            return h * 2.0 + c, None
        c, _ = jax.lax.scan(body, x, None, length=5)
        return c

    x, w = jnp.ones((8, 16)), jnp.ones((16, 16))
    trip_counts = {}
    for stage in ("optimized", "lowered"):
        g = from_jax(f, x, w, stage=stage)
        _check(g)
        (loop,) = [op for op in g.ops if op.opcode == "while"]
        temps = [g.values[v] for v in loop.outputs if g.values[v].kind == "temporary"]
        assert [t.name for t in temps] == [f"{loop.name}.body_peak"]
        # The body holds at least the 8x16 f32 matmul result besides the loop state.
        assert temps[0].size_bytes >= 8 * 16 * 4
        trip_counts[stage] = list(g.info["while_trip_counts"].values())
        body_dot_flops = 2 * 8 * 16 * 16
        assert loop.flops >= body_dot_flops * (5 if stage == "optimized" else 1)
    # XLA annotates the trip count after optimization only.
    assert trip_counts == {"optimized": [5], "lowered": [None]}


def test_fori_loop_trip_count_multiplies_body_flops():
    def f(x):
        return jax.lax.fori_loop(0, 7, lambda i, c: jnp.sin(c) * 3.0, x)

    g = from_jax(f, jnp.ones((128,)))
    (loop,) = [op for op in g.ops if op.opcode == "while"]
    assert g.info["while_trip_counts"] == {loop.name: 7}
    assert loop.transcendentals == 7 * 128  # sin per element per iteration


def test_pytrees_shape_dtype_structs_and_static_args():
    def f(tree, n):
        return {"y": tree["a"] * n + tree["b"].astype(jnp.float32).sum()}

    tree = {"a": jax.ShapeDtypeStruct((4, 4), jnp.float32),
            "b": jax.ShapeDtypeStruct((3,), jnp.bfloat16)}
    g = from_jax(f, tree, 3, static_argnums=1, stage="lowered", name="tree_fn")
    assert g.name == "tree_fn"
    params = sorted((v.dtype, v.size_bytes) for v in g.values if v.kind == "parameter")
    assert params == [("bf16", 6), ("f32", 64)]
    assert [v.size_bytes for v in g.values if v.is_output] == [64]


def test_donated_argument_sets_donated_param():
    def step(p, x):
        return p - 0.1 * x, jnp.sum(p * x)

    x = jnp.ones((8, 16))
    for stage in ("optimized", "lowered"):
        g = from_jax(step, x, x, donate_argnums=0, stage=stage)
        p0 = [v for v in g.values if v.kind == "parameter"][0]
        donated = [v for v in g.values if v.donated_param is not None]
        assert len(donated) == 1 and donated[0].donated_param == p0.id
        assert donated[0].is_output and donated[0].size_bytes == p0.size_bytes
        assert g.info["input_output_alias"]


def test_xla_dump_folder_both_stages(tmp_path):
    def f(x, w):
        return jnp.tanh(x @ w).sum(axis=0)

    x, w = jnp.ones((8, 16)), jnp.ones((16, 4))
    jax.jit(f).lower(x, w).compile(
        compiler_options={"xla_dump_to": str(tmp_path), "xla_dump_hlo_as_text": True})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.endswith(".cpu_after_optimizations.txt") for n in names)
    assert any(n.endswith(".before_optimizations.txt") for n in names)
    after = import_hlo(tmp_path)
    before = import_hlo(str(tmp_path), stage="before")
    assert after.info["dump_file"].endswith("jit_f.cpu_after_optimizations.txt")
    assert before.info["dump_file"].endswith("jit_f.before_optimizations.txt")
    assert after.schedule_origin == "xla" and before.schedule_origin == "topological"
    for g in (after, before):
        _check(g)
        assert [v.size_bytes for v in g.values if v.is_output] == [16]


def test_bad_stage():
    with pytest.raises(ValueError, match="stage"):
        from_jax(jnp.sin, jnp.ones(3), stage="fused")
