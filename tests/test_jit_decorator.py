"""memmap.jit: a drop-in for jax.jit that plans memory (docs/jit.md).

The programs here are written for these tests (an MLP returning a pytree, a lax.scan recurrence,
a gradient step, static arguments, donation, keyword arguments): every result is compared bit for
bit with jax.jit's, every plan with the verifier.
"""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memmap
from memmap import jax_apply
from memmap.errors import BadInputError, InfeasibleError, MemmapError, TraceError
from memmap.plan import Residency
from memmap.solvers import SOLVERS

KEEP_BARRIERS = {"xla_disable_hlo_passes": "cse_barrier_expander"}


def _same(a, b) -> bool:
    """Same pytree structure and the same bits in every leaf."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    return ta == tb and all(np.asarray(x).dtype == np.asarray(y).dtype and
                            np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
                            for x, y in zip(la, lb, strict=True))


def _keys(n):
    return jax.random.split(jax.random.PRNGKey(7), n)


# --------------------------------------------------------------------------------------------
# Programs written for these tests


def mlp_pytree(params, x):
    """[B, 48] -> {"logits": [B, 10], "hidden": [[B, 32], [B, 32]], "stats": (mean, max)}."""
    hidden = []
    for w, b in params[:-1]:
        x = jax.nn.softplus(x @ w + b)
        hidden.append(x)
    w, b = params[-1]
    logits = x @ w + b
    return {"logits": logits, "hidden": hidden, "stats": (jnp.mean(logits), jnp.max(logits))}


def mlp_params():
    k = _keys(3)
    sizes = [(48, 32), (32, 32), (32, 10)]
    return [(jax.random.normal(kk, s) * 0.2, jnp.full((s[1],), 0.01)) for kk, s in zip(k, sizes)]


def gru_like_scan(h0, xs, w_h, w_x):
    """A gated recurrence over T steps with lax.scan: h [B, H], xs [T, B, D]."""
    def cell(h, x):
        z = jax.nn.sigmoid(h @ w_h + x @ w_x)
        h = z * h + (1 - z) * jnp.tanh(x @ w_x)
        return h, jnp.sum(h, axis=-1)
    return jax.lax.scan(cell, h0, xs)


def train_step(params, x, y):
    """One SGD step of a 5-layer GELU MLP on a squared error: (loss, new params)."""
    def loss(p):
        h = x
        for w, b in p:
            h = jax.nn.gelu(h @ w + b)
        return jnp.mean((h - y) ** 2)
    value, grads = jax.value_and_grad(loss)(params)
    return value, jax.tree_util.tree_map(lambda a, g: a - 0.05 * g, params, grads)


def train_inputs(width=192, batch=96, layers=5):
    k = _keys(layers + 1)
    params = [(jax.random.normal(k[i], (width, width)) * 0.05, jnp.zeros(width)) for i in range(layers)]
    x = jax.random.normal(k[-1], (batch, width))
    return params, x, jnp.ones((batch, width))


# --------------------------------------------------------------------------------------------
# Drop-in behaviour


def test_mlp_pytree_bitwise_no_retrace_cached_plan():
    traces = []

    def f(params, x):
        traces.append(1)
        return mlp_pytree(params, x)

    fast = memmap.jit(f)
    params, x = mlp_params(), jax.random.normal(_keys(1)[0], (16, 48))
    out = fast(params, x)
    assert _same(out, jax.jit(mlp_pytree)(params, x))
    assert len(traces) == 1
    out2 = fast(params, x)
    assert len(traces) == 1 and _same(out2, out)          # no re-trace on the second call
    plan = fast.plan(params, x)
    assert fast.plan(params, x) is plan                    # cached per signature
    assert memmap.verify_plan(plan).ok
    assert plan.info["jit"]["stage"] == "optimized" and plan.problem.graph.schedule_origin == "xla"
    # a new shape is a new signature: traced and planned once more
    x8 = x[:8]
    assert _same(fast(params, x8), jax.jit(mlp_pytree)(params, x8))
    assert len(traces) == 2 and fast.plan(params, x8) is not plan
    assert memmap.verify_plan(fast.plan(params, x8)).ok
    report = fast.report(params, x)
    assert report.startswith("# memmap plan: f") and "float32[48,32], ~float32[32]" in report
    assert "(7 arrays)" in report


def test_scan_recurrence_bitwise_and_planned_with_its_loop():
    k = _keys(4)
    h0 = jnp.zeros((4, 24))
    xs = jax.random.normal(k[0], (12, 4, 16))
    w_h, w_x = jax.random.normal(k[1], (24, 24)) * 0.3, jax.random.normal(k[2], (16, 24)) * 0.3
    fast = memmap.jit(gru_like_scan, scratchpad="64KiB", mode="strict", solver="minpeak")
    assert _same(fast(h0, xs, w_h, w_x), jax.jit(gru_like_scan)(h0, xs, w_h, w_x))
    plan = fast.plan(h0, xs, w_h, w_x)
    assert memmap.verify_plan(plan).ok and plan.solver == "minpeak"
    assert "while" in {op.opcode for op in plan.problem.graph.ops}


def test_gradient_step_with_donation_matches_jax_jit():
    params, x, y = train_inputs(width=64, batch=32, layers=3)
    copy = lambda t: jax.tree_util.tree_map(jnp.array, t)   # noqa: E731 - donated buffers die
    ref = jax.jit(train_step, donate_argnums=0)(copy(params), x, y)
    fast = memmap.jit(train_step, donate_argnums=0)
    donated = copy(params)
    out = fast(donated, x, y)
    assert _same(out, ref)
    assert all(a.is_deleted() for a in jax.tree_util.tree_leaves(donated))   # donation happened
    plan = fast.plan(params, x, y)
    assert memmap.verify_plan(plan).ok
    assert plan.problem.graph.info["input_output_alias"]        # the donation is in the module
    assert any(v.donated_param is not None for v in plan.problem.graph.values)


def test_static_args_kwargs_and_keep_unused():
    traces = []

    def f(x, n, *, scale, mode="sum", unused=None):
        traces.append((n, mode))
        y = jnp.sin(x) * scale["a"] + n
        return jnp.sum(y) if mode == "sum" else jnp.max(y, axis=0)

    kw = dict(static_argnums=1, static_argnames="mode")
    fast = memmap.jit(f, keep_unused=True, **kw)
    ref = jax.jit(f, keep_unused=True, **kw)
    x, scale, spare = jnp.arange(12.0).reshape(3, 4), {"a": jnp.float32(0.5)}, jnp.ones(5)
    calls = [(2, "sum"), (2, "sum"), (3, "sum"), (2, "max")]
    got = [fast(x, n, scale=scale, mode=mode, unused=spare) for n, mode in calls]
    assert traces == [(2, "sum"), (3, "sum"), (2, "max")]       # one trace per signature
    assert len(fast._entries) == 3
    for (n, mode), out in zip(calls, got):
        assert _same(out, ref(x, n, scale=scale, mode=mode, unused=spare))
    plan = fast.plan(x, 2, scale=scale, mode="sum", unused=spare)
    sizes = sorted(v.size_bytes for v in plan.problem.graph.values if v.kind == "parameter")
    assert sizes == [4, 20, 48]                          # keep_unused kept the unused argument
    assert fast.plan(jax.ShapeDtypeStruct((3, 4), jnp.float32), 2, scale=scale, mode="sum",
                     unused=spare) is plan          # abstract arguments: same signature


def test_lowered_stage_and_lower_trace_like_jax():
    fast = memmap.jit(mlp_pytree, stage="lowered")
    params, x = mlp_params(), jnp.ones((4, 48))
    plan = fast.plan(params, x)
    assert plan.problem.graph.info["stage"] == "lowered" and memmap.verify_plan(plan).ok
    assert "fusion" not in {op.opcode for op in plan.problem.graph.ops}
    ours = fast.lower(params, x).as_text()
    assert ours == jax.jit(mlp_pytree).lower(params, x).as_text()
    assert fast.trace(params, x).jaxpr.eqns


def test_inside_outer_transformations_it_is_jax_jit():
    fast = memmap.jit(lambda w, x: jnp.sum(jnp.tanh(x @ w) ** 2))
    w, x = jnp.ones((8, 4)) * 0.1, jnp.ones((3, 8))
    g = jax.grad(fast)(w, x)
    assert _same(g, jax.grad(jax.jit(fast.__wrapped__))(w, x))
    assert not fast._entries                 # tracers: nothing planned
    with pytest.raises(BadInputError, match="tracers"):
        jax.grad(lambda w: fast.plan(w, x) and 0.0)(w)


def test_tagged_program_compiles_to_the_same_instructions():
    """Name scopes only change metadata: the tagged program the plan is made on is what
    jax.jit(f) compiles, instruction for instruction."""
    params, x, y = train_inputs(width=64, batch=32, layers=3)
    traced = jax.jit(train_step).trace(params, x, y)
    tagged, program = jax_apply.tagged_function(train_step, traced, (), ())

    def canon(text):
        keep = [ln for ln in text.splitlines()
                if not re.match(r"^(\d+ |FileNames|FunctionNames|FileLocations|StackFrames|HloModule)", ln)]
        return re.sub(r", metadata=\{[^}]*\}", "", "\n".join(keep))

    a = jax.jit(tagged).lower(params, x, y).compile().as_text()
    b = traced.lower().compile().as_text()
    assert canon(a) == canon(b)
    sites = program().sites
    assert len(sites) > 50 and f"{jax_apply.TAG}{len(sites) - 1}/" in a
    jax.make_jaxpr(tagged)(params, x, y)          # a second trace numbers the sites from 0 again
    assert program().sites == sites


# --------------------------------------------------------------------------------------------
# Applying the plan through JAX


def _offloaded_sites(hlo: str) -> list[int]:
    """Site of the operand of every device->host annotate_device_placement in HLO text."""
    defs = {m.group(1): m.group(2) for m in re.finditer(
        r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{op_name=\"([^\"]*)\"", hlo, re.M)}
    out = []
    for m in re.finditer(r"custom-call\(%?([\w.\-]+)\).*?_xla_buffer_placement=\"pinned_host\"", hlo):
        out.append(jax_apply.site_of_op_name(defs.get(m.group(1), "")))
    return out


@pytest.fixture(scope="module")
def spilling_step():
    """A training step and a strict budget under which the plan spills activations."""
    params, x, y = train_inputs()
    return (params, x, y), dict(target="npu-4mib", scratchpad="1MiB", mode="strict", solver="belady")


def test_offload_annotates_exactly_the_planned_tensors_for_cuda(spilling_step):
    args, opts = spilling_step
    fast = memmap.jit(train_step, apply="offload", **opts)
    assert _same(fast(*args), jax.jit(train_step)(*args))      # on CPU the program is unchanged
    plan = fast.plan(*args)
    assert plan.info["apply"]["numerics"] == "bitwise equal to jax.jit on the first call"
    assert memmap.verify_plan(plan).ok
    decisions = plan.info["apply"]["decisions"]
    planned = sorted(d["site"] for d in decisions if d["action"] == "offload")
    spilled = {t.value for t in plan.transfers if t.kind == "spill"}
    assert len(decisions) == len(spilled) and len(planned) >= 3
    hlo = fast.trace(*args).lower(lowering_platforms=("cuda",)).as_text(dialect="hlo", debug_info=True)
    assert sorted(_offloaded_sites(hlo)) == planned
    assert hlo.count('_xla_buffer_placement="device"') == len(planned)   # one reload each
    assert "## Applied through JAX" in fast.report(*args)


def test_remat_cuts_temp_bytes_with_identical_numerics(spilling_step):
    args, opts = spilling_step
    fast = memmap.jit(train_step, apply="remat", **opts)
    assert _same(fast(*args), jax.jit(train_step)(*args))
    plan = fast.plan(*args)
    assert plan.info["apply"]["numerics"] == "bitwise equal to jax.jit on the first call"
    decisions = plan.info["apply"]["decisions"]
    remat = [d for d in decisions if d["action"] == "remat"]
    assert remat and all(d["recompute_s"] < d["reload_s"] for d in remat)
    before = jax.jit(train_step, compiler_options=KEEP_BARRIERS).lower(*args).compile()
    after = fast.lower(*args).compile()
    assert after.memory_analysis().temp_size_in_bytes < before.memory_analysis().temp_size_in_bytes
    assert after.cost_analysis()["flops"] >= before.cost_analysis()["flops"]


def test_applied_plan_that_changes_bits_is_not_used(monkeypatch, spilling_step):
    """The first call of a signature with apply= compares the applied program with jax.jit bit
    for bit; a difference (here injected: one ulp) falls back to jax.jit or raises, and donated
    arguments survive the check."""
    args, opts = spilling_step
    real_applied = jax_apply.applied_function

    def off_by_one_ulp(*a, **k):
        fn = real_applied(*a, **k)
        return lambda *xs, **kw: jax.tree_util.tree_map(lambda v: jnp.nextafter(v, jnp.inf), fn(*xs, **kw))

    monkeypatch.setattr(jax_apply, "applied_function", off_by_one_ulp)
    ref = jax.jit(train_step)(*args)
    fast = memmap.jit(train_step, apply="offload", on_failure="warn", **opts)
    with pytest.warns(memmap.PlanningWarning, match="changes the result's bits"):
        assert _same(fast(*args), ref)
    assert _same(fast(*args), ref)
    assert fast.plan(*args).info["apply"]["numerics"].startswith("differs")
    strict = memmap.jit(train_step, apply="remat", donate_argnums=0, **opts)
    params = jax.tree_util.tree_map(jnp.array, args[0])
    with pytest.raises(MemmapError, match="changes the result's bits"):
        strict(params, *args[1:])
    assert not any(a.is_deleted() for a in jax.tree_util.tree_leaves(params))   # nothing lost


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="lazy"), "invalid mode"),
    (dict(solver="magic"), "unknown solver"),
    (dict(on_failure="ignore"), "on_failure"),
    (dict(apply="swap"), "apply must be"),
    (dict(stage="final"), "invalid stage"),
    (dict(target="gpu-9000"), "unknown target"),
    (dict(scratchpad="lots"), "invalid size"),
    (dict(static_argnums="0"), "static_argnums"),
    (dict(time_limit_s=0), "time_limit_s"),
    (dict(keep_unused="yes"), "keep_unused"),
    (dict(static_argnames="nope"), "invalid argnames"),        # jax.jit's own check
])
def test_bad_options_fail_at_decoration(kwargs, match):
    with pytest.raises(BadInputError, match=match) as e:
        memmap.jit(jnp.sin, **kwargs)
    assert "\n" not in str(e.value) and str(e.value).startswith("memmap.jit")


def _branchy(x):
    if x.sum() > 0:            # Python control flow on a traced value: jax.jit cannot trace it
        return x
    return -x


def test_untraceable_function():
    with pytest.raises(TraceError, match=r"memmap.jit\(_branchy\): jax.jit cannot trace it") as e:
        memmap.jit(_branchy)(jnp.ones(3))
    assert "\n" not in str(e.value) and isinstance(e.value.__cause__, jax.errors.JAXTypeError)
    with pytest.warns(memmap.PlanningWarning, match="cannot trace"):
        with pytest.raises(jax.errors.JAXTypeError):             # then plain jax.jit's own error
            memmap.jit(_branchy, on_failure="warn")(jnp.ones(3))


def test_budget_below_m_r():
    f = lambda x, w: jnp.tanh(x @ w)   # noqa: E731
    x, w = jnp.ones((64, 64)), jnp.ones((64, 64))
    with pytest.raises(InfeasibleError, match="M_R"):
        memmap.jit(f, scratchpad="1KiB", mode="strict")(x, w)
    fast = memmap.jit(f, scratchpad="1KiB", mode="strict", on_failure="warn")
    with pytest.warns(memmap.PlanningWarning, match="infeasible"):
        out = fast(x, w)
    assert _same(out, jax.jit(f)(x, w))
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # warned once per signature
        assert _same(fast(x, w), out)
    with pytest.raises(InfeasibleError):
        fast.plan(x, w)


def test_plan_failing_verification(monkeypatch):
    def broken(problem, **_):
        plan = SOLVERS["belady"](problem)
        bad = Residency(plan.residencies[0].value, 0, len(plan.schedule) - 1, problem.target.capacity_bytes)
        return type(plan).assemble(problem, plan.schedule, plan.residencies + (bad,), plan.transfers,
                                   solver="broken")

    monkeypatch.setitem(SOLVERS, "broken", broken)
    f = lambda x: jnp.cos(x) * 2   # noqa: E731
    x = jnp.arange(8.0)
    with pytest.raises(MemmapError, match="invalid plan") as e:
        memmap.jit(f, solver="broken")(x)
    assert "\n" not in str(e.value)
    with pytest.warns(memmap.PlanningWarning, match="invalid plan"):
        assert _same(memmap.jit(f, solver="broken", on_failure="warn")(x), jax.jit(f)(x))


# --------------------------------------------------------------------------------------------
# Acceptance: annotated HLO round trip (needs memmap.emit_hlo / memmap.import_plan, issue 10)


@pytest.mark.skipif(not hasattr(memmap, "emit_hlo"),
                    reason="memmap.emit_hlo / memmap.import_plan (issue 10, branch emit) have not landed")
@pytest.mark.parametrize("program", ["mlp", "scan", "grad"])
def test_annotated_hlo_round_trips(program):
    from jaxlib import _hlo

    if program == "mlp":
        fast, args = memmap.jit(mlp_pytree, scratchpad="16KiB", mode="strict"), (mlp_params(), jnp.ones((16, 48)))
    elif program == "scan":
        k = _keys(3)
        fast = memmap.jit(gru_like_scan, scratchpad="64KiB", mode="strict")
        args = (jnp.zeros((4, 24)), jax.random.normal(k[0], (12, 4, 16)), jnp.eye(24), jnp.ones((16, 24)))
    else:
        fast, args = memmap.jit(train_step, scratchpad="1MiB", mode="strict"), train_inputs()
    ref = {"mlp": mlp_pytree, "scan": gru_like_scan, "grad": train_step}[program]
    assert _same(fast(*args), jax.jit(ref)(*args))
    plan = fast.plan(*args)
    text = fast.annotated_hlo(*args)
    _hlo.hlo_module_from_text(text)                      # XLA's parser accepts it
    assert "S(1)" in text
    if any(t.kind != "evict" for t in plan.transfers):
        assert "copy-start" in text and "copy-done" in text
    back = memmap.import_plan(text)
    assert (back.schedule, back.residencies, back.transfers) == (plan.schedule, plan.residencies,
                                                                 plan.transfers)
    assert memmap.verify_plan(back).ok


def test_remat_that_does_not_lower_temp_bytes_is_not_used(monkeypatch, spilling_step):
    """apply="remat" is kept only when XLA's temp bytes fall. Injected here: the applied program
    also materialises a 16 MiB buffer (behind an optimization barrier, selected away), so its
    temp bytes grow; the signature then runs as plain jax.jit, with a warning, and the report and
    plan.info say why, with both numbers."""
    args, opts = spilling_step
    real_applied = jax_apply.applied_function

    def with_a_big_temporary(*a, **k):
        fn = real_applied(*a, **k)

        def run(*xs, **kw):
            big = jax.lax.optimization_barrier(jnp.zeros((2048, 2048), jnp.float32))
            flag = big[7, 7] == 12345.0               # never true; XLA cannot see through the barrier
            return jax.tree_util.tree_map(lambda v: jax.lax.select(flag, v + 1, v), fn(*xs, **kw))
        return run

    monkeypatch.setattr(jax_apply, "applied_function", with_a_big_temporary)
    fast = memmap.jit(train_step, apply="remat", **opts)
    with pytest.warns(memmap.PlanningWarning, match="does not lower XLA's temp bytes"):
        plan = fast.plan(*args)
    temp = plan.info["apply"]["temp_bytes"]
    assert temp["with"] > temp["without"] + (8 << 20)
    assert plan.info["apply"]["numerics"] == "not applied: temp bytes did not fall"
    assert _same(fast(*args), jax.jit(train_step)(*args))
    assert "XLA's temp bytes" in fast.report(*args) and "not applied" in fast.report(*args)
    assert "optimization_barrier" not in fast.lower(*args).as_text()      # plain jax.jit runs
