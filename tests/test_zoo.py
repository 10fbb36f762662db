"""Tests of the benchmark workload zoo (benchmarks/zoo.py), on the small MLP and LSTM only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jaxlib._hlo
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not installed
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import zoo  # noqa: E402

SMALL = ("mlp.fwd", "mlp.train", "lstm.fwd", "lstm.train")


def test_every_network_has_fwd_and_train():
    networks = {name.split(".")[0] for name in zoo.WORKLOADS}
    assert networks == {"mobilenet_v1", "resnet50", "bert_base", "gpt2_small", "small_cnn", "lstm", "mlp"}
    for network in networks:
        assert f"{network}.fwd" in zoo.WORKLOADS and f"{network}.train" in zoo.WORKLOADS
    for name, spec in zoo.WORKLOADS.items():
        assert spec.name == name and spec.description


@pytest.mark.parametrize("name", SMALL)
def test_build_gives_abstract_args_that_lower(name):
    fn, args = zoo.WORKLOADS[name].build()
    leaves = jax.tree_util.tree_leaves(args)
    assert leaves and all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)
    lowered = jax.jit(fn).lower(*args)
    assert "HloModule" in lowered.as_text(dialect="hlo")


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("stage", zoo.STAGES)
def test_hlo_text_parses_with_xla(name, stage):
    text = zoo.hlo_text(name, stage)
    module = jaxlib._hlo.hlo_module_from_text(text)
    assert module.name == f"jit_{name.replace('.', '_')}"
    assert ("is_scheduled=true" in text.splitlines()[0]) == (stage == "after")
    assert zoo.entry_instruction_count(text) > 0
    # Metadata carries no absolute checkout path.
    assert str(REPO_ROOT) not in text


@pytest.mark.parametrize("stage", zoo.STAGES)
@pytest.mark.parametrize("name", ("lstm.fwd", "lstm.train"))
def test_lstm_keeps_a_while_loop(name, stage):
    text = zoo.hlo_text(name, stage)
    assert " while(" in text


def test_train_step_updates_every_parameter():
    fn, (params, state, opt_state, batch) = zoo.WORKLOADS["mlp.train"].build()
    new_params, new_state, _, loss = jax.eval_shape(fn, params, state, opt_state, batch)
    assert jax.tree_util.tree_structure(new_params) == jax.tree_util.tree_structure(params)
    assert loss.shape == () and loss.dtype == jax.numpy.float32
    # features [8, 64] -> 128 -> 128 -> 10
    shapes = sorted(leaf.shape for leaf in jax.tree_util.tree_leaves(params))
    assert shapes == sorted([(64, 128), (128,), (128, 128), (128,), (128, 10), (10,)])


def test_hlo_text_is_deterministic():
    assert zoo.hlo_text("mlp.train", "after") == zoo.hlo_text("mlp.train", "after")


def test_entry_instruction_count_counts_entry_only():
    text = """HloModule m

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

ENTRY %main (x: f32[2]) -> f32[2] {
  %x = f32[2]{0} parameter(0)
  ROOT %y = f32[2]{0} negate(%x)
}
"""
    assert zoo.entry_instruction_count(text) == 2
    with pytest.raises(ValueError, match="no ENTRY"):
        zoo.entry_instruction_count("HloModule m\n")


def test_unknown_names_fail_clearly(tmp_path):
    with pytest.raises(KeyError, match="unknown workload 'nope'"):
        zoo.hlo_text("nope", "before")
    with pytest.raises(ValueError, match="unknown HLO stage 'middle'"):
        zoo.cached_hlo_path("mlp.fwd", "middle", tmp_path)


def test_cached_hlo_path_writes_once_and_regenerates_on_key_change(tmp_path):
    path = zoo.cached_hlo_path("mlp.fwd", "before", tmp_path)
    assert path == tmp_path / "mlp.fwd.before.hlo"
    assert path.read_text() == zoo.hlo_text("mlp.fwd", "before")
    meta = zoo.cache_metadata("mlp.fwd", "before", tmp_path)
    assert meta["key"]["jax"] == jax.__version__
    assert meta["size_bytes"] == path.stat().st_size
    assert meta["compile_s"] is None

    # A second call reuses the file untouched.
    mtime_ns = path.stat().st_mtime_ns
    assert zoo.cached_hlo_path("mlp.fwd", "before", tmp_path) == path
    assert path.stat().st_mtime_ns == mtime_ns

    # A different jax version in the sidecar (or an edited file) forces regeneration.
    sidecar = tmp_path / "mlp.fwd.before.json"
    meta["key"]["jax"] = "0.0.0"
    sidecar.write_text(json.dumps(meta))
    path.write_text("stale")
    zoo.cached_hlo_path("mlp.fwd", "before", tmp_path)
    assert path.read_text() == zoo.hlo_text("mlp.fwd", "before")
    assert zoo.cache_metadata("mlp.fwd", "before", tmp_path)["key"]["jax"] == jax.__version__


def test_dump_folder_has_xla_dump_files(tmp_path):
    out = zoo.dump_folder("mlp.train", tmp_path / "dump")
    names = [p.name for p in out.iterdir()]
    for suffix in (
        ".before_optimizations.txt",
        "after_optimizations.txt",
        "-buffer-assignment.txt",
        "-live-range.txt",
    ):
        assert any(n.endswith(suffix) and "jit_mlp_train" in n for n in names), suffix


@pytest.mark.parametrize(
    ("filename", "scheduled", "has_while"),
    [("small_cnn_train.after.hlo", True, False), ("lstm.before.hlo", False, True)],
)
def test_bundled_examples_parse(filename, scheduled, has_while):
    path = REPO_ROOT / "examples" / filename
    text = path.read_text()
    module = jaxlib._hlo.hlo_module_from_text(text)
    assert module.name in ("jit_small_cnn_train", "jit_lstm_train")
    assert ("is_scheduled=true" in text.splitlines()[0]) == scheduled
    assert (" while(" in text) == has_while
    assert zoo.entry_instruction_count(text) > 100
    assert str(REPO_ROOT) not in text
