"""Triton emission from the 1-pass cascade: generator, interpreter correctness, AOT PTX for sm_90.

Interpreter runs happen in a subprocess with TRITON_INTERPRET=1 set before triton is imported, so
the setting does not leak into other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from memmap.cascade.library import attention_3pass_deferred
from memmap.emit.triton_attention import (
    SM90_SHARED_MEMORY_BYTES,
    choose_tiles,
    generate_attention_kernel,
)


def test_tiles_follow_the_budget():
    big = choose_tiles(head_dim=64, dtype="float16", onchip_budget_bytes=SM90_SHARED_MEMORY_BYTES)
    small = choose_tiles(head_dim=64, dtype="float16", onchip_budget_bytes=48 * 1024)
    assert big[2] <= SM90_SHARED_MEMORY_BYTES and small[2] <= 48 * 1024
    assert big[0] * big[1] > small[0] * small[1]
    # A larger head dim leaves room for fewer keys per tile under the same budget.
    d128 = choose_tiles(head_dim=128, dtype="float16", onchip_budget_bytes=SM90_SHARED_MEMORY_BYTES)
    assert d128[0] * d128[1] < big[0] * big[1]
    with pytest.raises(ValueError, match="below the smallest tile"):
        choose_tiles(head_dim=64, dtype="float32", onchip_budget_bytes=1024)


def test_source_is_generated_from_the_cascade():
    g = generate_attention_kernel(head_dim=64, causal=False, dtype="float16", onchip_budget_bytes=SM90_SHARED_MEMORY_BYTES)
    for einsum_comment in ("# RM[m1+1,p] = max(RM[m1,p], BQK[m1,p])", "# AV[f,p] = RNV[f,M1,p] / RD[M1,p]"):
        assert einsum_comment in g.source
    assert "rm_next = tl.maximum(rm, bqk)" in g.source
    assert "prm = tl.exp(rm - rm_next)" in g.source
    assert "offs_m[None, :] <= offs_p[:, None]" not in g.source
    causal = generate_attention_kernel(head_dim=64, causal=True, dtype="float16", onchip_budget_bytes=SM90_SHARED_MEMORY_BYTES)
    assert "offs_m[None, :] <= offs_p[:, None]" in causal.source
    compile(g.source, "<generated>", "exec")


def test_multi_pass_cascade_is_rejected():
    with pytest.raises(ValueError, match="needs 2 passes"):
        generate_attention_kernel(
            head_dim=16, causal=False, dtype="float32", onchip_budget_bytes=1 << 20, cascade=attention_3pass_deferred()
        )


_CHECK = textwrap.dedent(
    """
    import json, math, sys
    import torch
    from memmap.emit.triton_attention import generate_attention_kernel
    out = []
    for (b, h, n, d, causal, budget) in json.loads(sys.argv[1]):
        g = generate_attention_kernel(head_dim=d, causal=causal, dtype="float32", onchip_budget_bytes=budget)
        gen = torch.Generator().manual_seed(n * 131 + d)
        q, k, v = (torch.randn(b, h, n, d, generator=gen, dtype=torch.float32) for _ in range(3))
        o = torch.empty_like(q)
        g.launch(q, k, v, o)
        q64, k64, v64 = q.double(), k.double(), v.double()
        s = q64 @ k64.transpose(-1, -2) / math.sqrt(d)
        if causal:
            s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        ref = torch.softmax(s, dim=-1) @ v64
        err = ((o.double() - ref).abs().max() / ref.abs().max()).item()
        out.append({"n": n, "d": d, "causal": causal, "bm": g.block_m, "bn": g.block_n, "rel_err": err})
    print(json.dumps(out))
    """
)


def test_interpreter_matches_float64_reference():
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    # Budgets small enough to force 16x16 / 32x16 tiles, so N spans several K/V tiles with a
    # ragged last one; d=24 exercises head-dim padding.
    configs = [
        (1, 2, 40, 16, False, 8 * 1024),
        (1, 2, 40, 16, True, 8 * 1024),
        (2, 1, 37, 24, True, 16 * 1024),
    ]
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-c", _CHECK, json.dumps(configs)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == len(configs)
    for r in results:
        assert r["n"] % r["bn"] != 0 and r["n"] > r["bn"], r  # ragged, several tiles
        assert r["rel_err"] <= 1e-3, r


def test_aot_ptx_for_sm90_without_gpu():
    pytest.importorskip("triton")
    g = generate_attention_kernel(head_dim=64, causal=True, dtype="float16", onchip_budget_bytes=SM90_SHARED_MEMORY_BYTES)
    ptx = g.compile_ptx(capability=90)
    assert ".target sm_90" in ptx
    assert g.name in ptx
    assert "mma" in ptx  # the two contractions became tensor-core instructions


def test_gpu_benchmark_fails_gracefully_without_gpu(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run benchmarks/gpu_attention.py directly")
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_attention.py"
    spec = importlib.util.spec_from_file_location("gpu_attention_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([]) == 2
    have_triton = importlib.util.find_spec("triton") is not None
    # without the triton extra the script stops one check earlier, as gracefully
    expected = "no CUDA GPU" if have_triton else "triton is not installed"
    assert expected in capsys.readouterr().out
    assert mod._flops(1, 1, 1024, 64, causal=True) == 2 * 1024 * 1024 * 64
