"""GPU benchmark: the Triton kernel generated from the 1-pass cascade vs torch SDPA.

Checks correctness against ``torch.nn.functional.scaled_dot_product_attention`` first, then prints
TFLOP/s with the standard forward count ``4 * N^2 * d * H * B`` (halved when causal).

    python benchmarks/gpu_attention.py                      # default configs, fp16
    python benchmarks/gpu_attention.py --seq-lens 4096 16384 --head-dims 64 128 --dtype bfloat16

Needs a CUDA GPU (H100/H200: the tile budget defaults to sm_90's 227 KiB of shared memory);
exits with status 2 and a message otherwise.
"""

from __future__ import annotations

import argparse
import sys


def _flops(b: int, h: int, n: int, d: int, causal: bool) -> float:
    f = 4.0 * n * n * d * h * b
    return f / 2 if causal else f


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--causal", choices=["both", "yes", "no"], default="both")
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--budget-bytes", type=int, default=None, help="on-chip budget for tile sizes")
    parser.add_argument("--rep-ms", type=int, default=200, help="triton.testing.do_bench repetition time")
    args = parser.parse_args(argv)

    try:
        import torch
        import triton.testing
    except ImportError as exc:
        print(f"gpu_attention: {exc.name} is not installed (pip install torch==2.13.0 triton)")
        return 2
    if not torch.cuda.is_available():
        print("gpu_attention: no CUDA GPU available; this benchmark needs one (e.g. an H100)")
        return 2

    from memmap.emit.triton_attention import SM90_SHARED_MEMORY_BYTES, attention, generate_attention_kernel

    budget = args.budget_bytes or SM90_SHARED_MEMORY_BYTES
    dtype = getattr(torch, args.dtype)
    causals = {"both": [False, True], "yes": [True], "no": [False]}[args.causal]
    print(f"device: {torch.cuda.get_device_name()}  dtype={args.dtype}  B={args.batch} H={args.heads}")
    header = f"{'N':>7} {'d':>4} {'causal':>6} {'tile':>8} {'max_err':>9} {'gen TFLOP/s':>12} {'SDPA TFLOP/s':>13} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    failures = 0
    for d in args.head_dims:
        for n in args.seq_lens:
            for causal in causals:
                g = generate_attention_kernel(head_dim=d, causal=causal, dtype=args.dtype, onchip_budget_bytes=budget)
                gen = torch.Generator(device="cuda").manual_seed(0)
                q, k, v = (
                    torch.randn(args.batch, args.heads, n, d, device="cuda", dtype=dtype, generator=gen)
                    for _ in range(3)
                )
                ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
                out = attention(q, k, v, causal=causal, onchip_budget_bytes=budget)
                err = (out.float() - ref.float()).abs().max().item()
                ok = err <= 2e-2
                failures += not ok
                t_gen = triton.testing.do_bench(lambda: attention(q, k, v, causal=causal, onchip_budget_bytes=budget), rep=args.rep_ms)
                t_ref = triton.testing.do_bench(
                    lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal), rep=args.rep_ms
                )
                fl = _flops(args.batch, args.heads, n, d, causal)
                tf_gen, tf_ref = fl / t_gen * 1e-9, fl / t_ref * 1e-9
                print(
                    f"{n:>7} {d:>4} {str(causal):>6} {g.block_m:>3}x{g.block_n:<4} {err:>9.2e}{'' if ok else '!'} "
                    f"{tf_gen:>12.1f} {tf_ref:>13.1f} {tf_gen / tf_ref:>6.2f}"
                )
    if failures:
        print(f"gpu_attention: {failures} configuration(s) differ from SDPA by more than 2e-2")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
