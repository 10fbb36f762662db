"""Generate a Triton attention kernel from the 1-pass cascade (FuseMax / FlashAttention-2).

The generator walks the Einsums of :func:`memmap.cascade.library.attention_1pass` and emits one
Triton statement per Einsum, using a fixed binding of ranks to tile axes:

====  ============================  =============================
rank  meaning                       in the kernel
====  ============================  =============================
p     queries                       axis of length BLOCK_M (one program per p tile)
m1    K/V tiles (iterative rank)    the ``for`` loop; running states are loop-carried
m0    keys within a tile            axis of length BLOCK_N
e, f  embedding                     axis of length BLOCK_D (head dim padded to a power of 2)
====  ============================  =============================

Einsum -> code: a ``x`` / ``+`` contraction becomes ``tl.dot``; a ``max``/``+`` reduction over
``m0`` becomes ``tl.max``/``tl.sum``; map operators become elementwise expressions with
broadcasting from the ranks; ``r+1`` outputs are written to ``<name>_next`` and copied back at the
end of the loop body; a final-index read (``RNV[f,M1,p]``) reads the state after the loop. Causal
and out-of-range keys are masked to ``-inf`` in the score tile (the contraction of Q with K).

BLOCK_M and BLOCK_N are chosen as the largest tile whose on-chip footprint (computed from the
cascade: input tiles x pipeline stages, running states, largest intermediate tile) fits the
given byte budget (e.g. an SM's shared memory, :data:`SM90_SHARED_MEMORY_BYTES`).

torch and triton are optional: importing this module does not import them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from memmap.cascade.einsum import Cascade, Einsum, Index, TensorRef
from memmap.cascade.library import attention_1pass
from memmap.cascade.passes import analyze_passes

__all__ = [
    "SM90_SHARED_MEMORY_BYTES",
    "GeneratedKernel",
    "choose_tiles",
    "generate_attention_kernel",
    "attention",
]

#: Largest dynamic shared memory per thread block on sm_90 (H100/H200): 227 KiB.
SM90_SHARED_MEMORY_BYTES = 227 * 1024

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_TL_DTYPE = {"float32": "tl.float32", "float16": "tl.float16", "bfloat16": "tl.bfloat16"}
_AXIS = {"p": "BLOCK_M", "m0": "BLOCK_N", "e": "BLOCK_D", "f": "BLOCK_D"}
_AXIS_ORDER = ("p", "m0", "e", "f")
_NUM_STAGES = 2
_TILE_CHOICES = (16, 32, 64, 128)


def _install_hint(pkg: str) -> ImportError:
    return ImportError(f"{pkg} is required for Triton emission: pip install {pkg}" + ("==2.13.0" if pkg == "torch" else ""))


def _axes(ref: TensorRef) -> tuple[str, ...]:
    """Tile axes of a reference: its non-loop ranks in canonical order."""
    for r in ref.ranks:
        if r not in _AXIS and r != "m1":
            raise ValueError(f"triton_attention: rank {r!r} of {ref} has no tile axis (use p, m1, m0, e, f)")
    return tuple(r for r in _AXIS_ORDER if r in ref.ranks)


def _tensor_axes(c: Cascade, tensor: str) -> tuple[str, ...]:
    """Tile axes of a cascade tensor (its ranks other than the loop rank m1)."""
    return _axes(TensorRef(tensor, tuple(Index(r) for r in c.tensor_ranks(tensor))))


def _tile_elems(axes: tuple[str, ...], block_m: int, block_n: int, block_d: int) -> int:
    size = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_D": block_d}
    return math.prod(size[_AXIS[a]] for a in axes)


def _footprint_bytes(c: Cascade, block_m: int, block_n: int, block_d: int, elem_bytes: int) -> int:
    """On-chip bytes of one program: input tiles (K/V x stages), fp32 states, largest temp tile."""
    loop_inputs = {t for t in c.inputs if "m1" in c.tensor_ranks(t)}
    total = 0
    for t in c.inputs:
        n = _tile_elems(_tensor_axes(c, t), block_m, block_n, block_d)
        total += n * elem_bytes * (_NUM_STAGES if t in loop_inputs else 1)
    for t in c.state_tensors:
        total += 4 * _tile_elems(_tensor_axes(c, t), block_m, block_n, block_d)
    temps = [e for e in c.einsums if e.name not in c.state_tensors]
    total += 4 * max(_tile_elems(_axes(e.output), block_m, block_n, block_d) for e in temps)
    return total


def choose_tiles(
    *, head_dim: int, dtype: str, onchip_budget_bytes: int, cascade: Cascade | None = None
) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, footprint_bytes): the largest tile (by BLOCK_M x BLOCK_N, then BLOCK_M)
    whose footprint fits ``onchip_budget_bytes``."""
    c = cascade or attention_1pass()
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"triton_attention: dtype {dtype!r} not in {sorted(_DTYPE_BYTES)}")
    block_d = max(16, 1 << (head_dim - 1).bit_length())
    best = None
    for bm in _TILE_CHOICES:
        for bn in _TILE_CHOICES:
            fp = _footprint_bytes(c, bm, bn, block_d, _DTYPE_BYTES[dtype])
            if fp <= onchip_budget_bytes:
                key = (bm * bn, bm)
                if best is None or key > best[0]:
                    best = (key, bm, bn, fp)
    if best is None:
        need = _footprint_bytes(c, 16, 16, block_d, _DTYPE_BYTES[dtype])
        raise ValueError(
            f"triton_attention: on-chip budget {onchip_budget_bytes} B is below the smallest tile "
            f"(16x16, head_dim {head_dim}, {dtype}) footprint of {need} B"
        )
    return best[1], best[2], best[3]


class _Emitter:
    """Turns the Einsums of a 1-pass cascade into Triton statements."""

    def __init__(self, c: Cascade, *, causal: bool, dtype: str) -> None:
        self.c = c
        self.causal = causal
        self.dtype = dtype
        self.states = c.state_tensors
        self.inputs = self._bind_inputs()

    def _bind_inputs(self) -> dict[str, str]:
        want = {("e", "p"): "q", ("e", "m1", "m0"): "bk", ("f", "m1", "m0"): "bv"}
        bound = {}
        for t in self.c.inputs:
            key = tuple(self.c.tensor_ranks(t))
            if key not in want:
                raise ValueError(f"triton_attention: cascade input {t}{list(key)} is not Q[e,p], K[e,m1,m0] or V[f,m1,m0]")
            bound[t] = want[key]
        if sorted(bound.values()) != ["bk", "bv", "q"]:
            raise ValueError(f"triton_attention: cascade inputs {list(self.c.inputs)} must be Q, K and V")
        return bound

    def var(self, ref: TensorRef) -> str:
        if ref.tensor in self.inputs:
            return self.inputs[ref.tensor]
        name = ref.tensor.lower()
        if ref.tensor in self.states and any(i.shift for i in ref.indices):
            return f"{name}_next"
        return name

    def bcast(self, ref: TensorRef, out_axes: tuple[str, ...]) -> str:
        axes = _axes(ref)
        if axes == out_axes:
            return self.var(ref)
        if any(a not in out_axes for a in axes) or [a for a in out_axes if a in axes] != list(axes):
            raise ValueError(f"triton_attention: cannot broadcast {ref} {axes} to {out_axes}")
        idx = ", ".join(":" if a in axes else "None" for a in out_axes)
        return f"{self.var(ref)}[{idx}]"

    def oriented(self, ref: TensorRef, rows: str, cols: str) -> str:
        axes = _axes(ref)
        v = self.var(ref)
        if ref.tensor not in self.inputs:
            v = f"{v}.to({_TL_DTYPE[self.dtype]})"
        if axes == (rows, cols):
            return v
        if axes == (cols, rows):
            return f"tl.trans({v})"
        raise ValueError(f"triton_attention: {ref} has axes {axes}, expected ({rows}, {cols})")

    def emit(self, e: Einsum) -> list[str]:
        out_axes = _axes(e.output)
        target = self.var(e.output)
        reduced = [r for r in e.reduced_ranks if r != "m1"]
        lines = [f"# {e}"]
        if e.op == "*" and e.reduce == "+":
            if len(out_axes) != 2 or len(reduced) != 1:
                raise ValueError(f"triton_attention: {e}: contraction must map 2 tile axes over 1 reduced rank")
            (k,) = reduced
            first = next(r for r in e.inputs if out_axes[0] in _axes(r))
            second = next(r for r in e.inputs if r is not first)
            prec = ', input_precision="ieee"' if self.dtype == "float32" else ""
            lines.append(
                f"{target} = tl.dot({self.oriented(first, out_axes[0], k)}, "
                f"{self.oriented(second, k, out_axes[1])}{prec})"
            )
            if {self.inputs.get(r.tensor) for r in e.inputs} == {"q", "bk"}:
                cond = "(offs_m[None, :] < N_CTX)"
                if self.causal:
                    cond += " & (offs_m[None, :] <= offs_p[:, None])"
                lines.append(f"{target} = tl.where({cond}, {target}, float('-inf'))")
            return lines
        if e.reduce is not None:
            if e.op != "id" or len(reduced) != 1:
                raise ValueError(f"triton_attention: {e}: only single-rank reductions of one operand are supported")
            axis = _axes(e.inputs[0]).index(reduced[0])
            fn = {"max": "tl.max", "+": "tl.sum"}[e.reduce]
            lines.append(f"{target} = {fn}({self.var(e.inputs[0])}, axis={axis})")
            return lines
        a = [self.bcast(r, out_axes) for r in e.inputs]
        expr = {
            "id": lambda: a[0],
            "exp_sub": lambda: f"tl.exp({a[0]} - {a[1]})",
            "max": lambda: f"tl.maximum({a[0]}, {a[1]})",
        }.get(e.op, lambda: f"{a[0]} {e.op} {a[1]}")()
        lines.append(f"{target} = {expr}")
        return lines


_HEADER = '''\
# Generated by memmap.emit.triton_attention from the cascade "{cascade}".
# head_dim={head_dim} causal={causal} dtype={dtype} BLOCK_M={block_m} BLOCK_N={block_n}
# on-chip footprint {footprint} B of a {budget} B budget.
import triton
import triton.language as tl


@triton.jit
def {name}(
    Q, K, V, Out, sm_scale,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, N_CTX,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = off_bh // H
    off_h = off_bh % H
    offs_p = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_p[:, None] * stride_qn + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=(offs_p[:, None] < N_CTX) & d_ok[None, :], other=0.0)
    q = (q * sm_scale).to({tl_dtype})
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
'''

_LOOP = '''\
    for start_n in range(0, {hi}, BLOCK_N):
        offs_m = start_n + tl.arange(0, BLOCK_N)
        kv_ok = (offs_m[:, None] < N_CTX) & d_ok[None, :]
        bk = tl.load(k_base + offs_m[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=kv_ok, other=0.0)
        bv = tl.load(v_base + offs_m[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=kv_ok, other=0.0)
'''

_STORE = '''\
    o_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_p[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, {out}.to(Out.dtype.element_ty), mask=(offs_p[:, None] < N_CTX) & d_ok[None, :])
'''


@dataclass(frozen=True)
class GeneratedKernel:
    """A generated kernel: source text, tile sizes, and a lazily loaded ``@triton.jit`` function.

    Attributes:
      source: Python/Triton source of the module.
      name: the kernel function's name.
      head_dim, causal, dtype: what it was generated for.
      block_m, block_n, block_d: tile sizes (BLOCK_D = head_dim padded to a power of 2, >= 16).
      footprint_bytes: on-chip bytes of one program (see :func:`choose_tiles`).
      num_warps, num_stages: launch options.
    """

    source: str
    name: str
    head_dim: int
    causal: bool
    dtype: str
    block_m: int
    block_n: int
    block_d: int
    footprint_bytes: int
    num_warps: int
    num_stages: int = _NUM_STAGES
    _module: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def kernel(self) -> Any:
        """The ``triton.jit`` function, loaded from a temporary module file (Triton needs a file)."""
        if "fn" not in self._module:
            digest = hashlib.sha256(self.source.encode()).hexdigest()[:16]
            folder = os.path.join(tempfile.gettempdir(), "memmap_triton")
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"attn_{digest}.py")
            if not os.path.exists(path):
                tmp = f"{path}.{os.getpid()}.tmp"
                with open(tmp, "w") as fh:
                    fh.write(self.source)
                os.replace(tmp, path)
            mod_name = f"memmap_triton_attn_{digest}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = mod
            spec.loader.exec_module(mod)
            self._module["fn"] = getattr(mod, self.name)
        return self._module["fn"]

    def constexprs(self) -> dict[str, int]:
        """Values of the kernel's constexpr parameters."""
        return {"HEAD_DIM": self.head_dim, "BLOCK_M": self.block_m, "BLOCK_N": self.block_n, "BLOCK_D": self.block_d}

    def compile_ptx(self, *, capability: int = 90, warp_size: int = 32) -> str:
        """Compile ahead of time for ``sm_<capability>`` (no GPU needed); returns the PTX text."""
        try:
            import triton
            from triton.backends.compiler import GPUTarget
            from triton.compiler import ASTSource
        except ImportError:
            raise _install_hint("triton") from None
        ptr = {"float32": "*fp32", "float16": "*fp16", "bfloat16": "*bf16"}[self.dtype]
        sig: dict[str, str] = {n: ptr for n in ("Q", "K", "V", "Out")}
        sig["sm_scale"] = "fp32"
        for t in "qkvo":
            for s in "bhnd":
                sig[f"stride_{t}{s}"] = "i32"
        sig["H"] = sig["N_CTX"] = "i32"
        sig.update({k: "constexpr" for k in self.constexprs()})
        src = ASTSource(fn=self.kernel, signature=sig, constexprs=self.constexprs())
        os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
        compiled = triton.compile(
            src,
            target=GPUTarget("cuda", capability, warp_size),
            options={"num_warps": self.num_warps, "num_stages": self.num_stages},
        )
        return compiled.asm["ptx"]

    def launch(self, q, k, v, out) -> None:
        """Run on torch tensors ``[B, H, N, d]`` (``out`` preallocated like ``q``)."""
        b, h, n, d = q.shape
        if d != self.head_dim:
            raise ValueError(f"GeneratedKernel.launch: head_dim {d} != generated {self.head_dim}")
        grid = ((n + self.block_m - 1) // self.block_m, b * h)
        self.kernel[grid](
            q, k, v, out, 1.0 / math.sqrt(d),
            *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            h, n,
            **self.constexprs(),
            num_warps=self.num_warps, num_stages=self.num_stages,
        )


def generate_attention_kernel(
    *, head_dim: int, causal: bool, dtype: str, onchip_budget_bytes: int, cascade: Cascade | None = None
) -> GeneratedKernel:
    """Generate the Triton kernel of the 1-pass ``cascade`` (default :func:`attention_1pass`)."""
    c = cascade or attention_1pass()
    if head_dim <= 0 or head_dim > 256:
        raise ValueError(f"generate_attention_kernel: head_dim must be in 1..256, got {head_dim}")
    passes = analyze_passes(c)
    if passes.num_passes != 1:
        raise ValueError(f"generate_attention_kernel: cascade {c.name!r} needs {passes.num_passes} passes; only 1-pass cascades stream K/V once")
    block_m, block_n, footprint = choose_tiles(head_dim=head_dim, dtype=dtype, onchip_budget_bytes=onchip_budget_bytes, cascade=c)
    block_d = max(16, 1 << (head_dim - 1).bit_length())
    em = _Emitter(c, causal=causal, dtype=dtype)
    name = f"attn_fwd_d{head_dim}_{'causal' if causal else 'full'}_{dtype}"
    src = [_HEADER.format(
        cascade=c.name, head_dim=head_dim, causal=causal, dtype=dtype, block_m=block_m, block_n=block_n,
        footprint=footprint, budget=onchip_budget_bytes, name=name, tl_dtype=_TL_DTYPE[dtype],
    )]
    for t in sorted(em.states):
        shape = ", ".join(_AXIS[a] for a in _tensor_axes(c, t))
        init = c.initial[t]
        src.append(f"    {t.lower()} = tl.full([{shape}], float('{init}'), tl.float32)\n")
    hi = "tl.minimum(N_CTX, (start_m + 1) * BLOCK_M)" if causal else "N_CTX"
    src.append(_LOOP.format(hi=hi))
    in_loop = [e for e in c.einsums if "m1" in e.iteration_ranks]
    after = [e for e in c.einsums if "m1" not in e.iteration_ranks]
    for e in in_loop:
        src.extend(f"        {ln}\n" for ln in em.emit(e))
    for t in sorted(em.states):
        src.append(f"        {t.lower()} = {t.lower()}_next\n")
    for e in after:
        src.extend(f"    {ln}\n" for ln in em.emit(e))
    (out_name,) = c.outputs
    src.append(_STORE.format(out=out_name.lower()))
    num_warps = 4 if block_m * block_n <= 64 * 64 else 8
    return GeneratedKernel("".join(src), name, head_dim, causal, dtype, block_m, block_n, block_d, footprint, num_warps)


@functools.lru_cache(maxsize=64)
def _cached_kernel(head_dim: int, causal: bool, dtype: str, budget: int) -> GeneratedKernel:
    return generate_attention_kernel(head_dim=head_dim, causal=causal, dtype=dtype, onchip_budget_bytes=budget)


def attention(q, k, v, causal: bool = False, *, onchip_budget_bytes: int = SM90_SHARED_MEMORY_BYTES):
    """Scaled dot-product attention of torch tensors ``[B, H, N, d]`` with the generated kernel."""
    try:
        import torch
    except ImportError:
        raise _install_hint("torch") from None
    if q.shape != k.shape or q.shape != v.shape or q.dim() != 4:
        raise ValueError(f"attention: q, k, v must share one [B, H, N, d] shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    dtype = str(q.dtype).removeprefix("torch.")
    gk = _cached_kernel(q.shape[-1], bool(causal), dtype, int(onchip_budget_bytes))
    out = torch.empty_like(q)
    gk.launch(q, k, v, out)
    return out
