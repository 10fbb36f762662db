"""The public Python API and determinism (same input, options and seed -> same plan)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import memmap

ROOT = Path(__file__).resolve().parents[1]


def _strip(plan):
    """The plan itself (timings in solve_time_s/info are wall-clock and may differ)."""
    d = plan.to_dict()
    keep = ("solver", "status", "schedule", "residencies", "transfers", "metrics")
    return json.dumps({k: d[k] for k in keep}, sort_keys=True)


def test_public_surface():
    for name in ("import_hlo", "from_jax", "Target", "PRESETS", "optimize", "verify_plan", "Plan"):
        assert name in memmap.__all__


@pytest.mark.parametrize("mode", ["strict", "tiered"])
def test_optimize_deterministic(mode):
    g = memmap.import_hlo(ROOT / "examples" / "lstm.before.hlo")
    b = memmap.compute_budgets(memmap.Problem(g, memmap.Target("t", 1 << 40), "strict"))
    # time_limit_s bounds the whole call: enough that the solvers' deterministic budgets, not
    # the deadline, end their searches on a loaded machine
    plans = [memmap.optimize(g, scratchpad=b.m_h_bytes, mode=mode, seed=3, time_limit_s=15) for _ in range(2)]
    assert _strip(plans[0]) == _strip(plans[1])
    assert memmap.verify_plan(plans[0]).ok
    again = memmap.Plan.from_json(plans[0].to_json())
    assert memmap.verify_plan(again, graph=g).ok


def test_from_jax_and_optimize():
    def f(x, w1, w2):
        return jnp.tanh(x @ w1) @ w2

    args = (jnp.ones((8, 64)), jnp.ones((64, 256)), jnp.ones((256, 16)))
    for stage in ("optimized", "lowered"):
        g = memmap.from_jax(f, *args, stage=stage)
        assert g.num_ops > 0
        plan = memmap.optimize(g, target="npu-4mib", mode="strict", time_limit_s=5)
        assert memmap.verify_plan(plan).ok
        assert plan.metrics["noncompulsory_bytes"] == 0   # everything fits in 4 MiB


def test_optimize_bad_options():
    g = memmap.import_hlo(ROOT / "examples" / "lstm.before.hlo")
    with pytest.raises(memmap.BadInputError):
        memmap.optimize(g)
    with pytest.raises(memmap.BadInputError):
        memmap.optimize(g, scratchpad="1MiB", mode="loose")
    with pytest.raises(memmap.InfeasibleError) as e:
        memmap.optimize(g, scratchpad=1024)
    assert e.value.culprits and e.value.budget_bytes == 1024


def test_module_docstring_example_runs(monkeypatch):
    """help(memmap)'s example is feasible on the bundled CNN (it was infeasible: strict mode
    on the 4 MiB preset, M_R is 12 MiB)."""
    import doctest

    monkeypatch.chdir(ROOT)
    result = doctest.testmod(memmap, raise_on_error=False)
    assert result.attempted >= 4 and result.failed == 0


def test_readme_jax_walkthrough_runs(tmp_path, monkeypatch, capsys):
    """The README's walk-through from a JAX function to a plan runs and prints what it says."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### From a JAX model to a plan", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.split("\n")
    assert out[0] == "15 operators, 21 values"
    assert out[1] == "6291456 6860800"
    assert out[2] == "2097152 5"
    assert (tmp_path / "plan.json").is_file()
