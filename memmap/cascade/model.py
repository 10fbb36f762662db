"""Analytical performance model of attention cascades on a spatial accelerator (FuseMax).

The accelerator (:class:`SpatialArch`) has a 2D PE array, a 1D PE array, a global buffer and
DRAM. Every number below is derived from the cascades (:mod:`memmap.cascade.library`): the work
of an Einsum is its iteration-space size times the cost of its operators on the array it is bound
to; what must cross DRAM follows from :func:`memmap.cascade.passes.analyze_passes`. Three mappings:

* :func:`model_unfused`: the 3-pass cascade; each contraction and each softmax pass is a separate
  phase whose inputs come from and outputs go to DRAM; phases run back to back.
* :func:`model_flat`: the 3-pass cascade fused at row granularity (FLAT): R query rows at a time,
  QK/AV on the 2D array, softmax on the 1D array, the two arrays pipelined across row groups; rows
  that do not fit the buffer are spilled (the pass analysis's crossing tensors go through DRAM).
  The best (R, K/V resident or streamed, fused or spilled) is chosen per workload.
* :func:`model_fusemax`: the 1-pass cascade; Einsums that walk ``m0`` run on the 2D array (tiles of
  M0 x P0 never leave the PEs), the per-query running-state Einsums on the 1D array; the two
  arrays and DRAM are software-pipelined over (m1, p1) tiles.

Modelling choices are explained in docs/fusemax.md. Cycles are for the whole batch and all heads
of one layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

from memmap.cascade.einsum import Cascade, Einsum
from memmap.cascade.library import attention_1pass, attention_3pass
from memmap.cascade.passes import analyze_passes, extent_of

__all__ = [
    "EnergyTable",
    "SpatialArch",
    "FUSEMAX_ARCH",
    "FLAT_ARCH",
    "TransformerModel",
    "PAPER_MODELS",
    "PAPER_SEQ_LENS",
    "EinsumCost",
    "MappingResult",
    "PointResult",
    "einsum_ops",
    "model_unfused",
    "model_flat",
    "model_fusemax",
    "linear_layers_cycles",
    "evaluate_point",
]


@dataclass(frozen=True)
class EnergyTable:
    """Energy per operation / word moved, in pJ (16-bit words).

    Order-of-magnitude 45 nm values after Horowitz, "Computing's energy problem", ISSCC 2014
    (fp16 multiply ~1.1 pJ, add ~0.4 pJ; ~100 pJ per 64-bit read of a 1 MB SRAM; 1.3-2.6 nJ per
    64-bit DRAM access). Used only for energy *relative* to another mapping on the same table.
    """

    mac_pj: float = 1.5
    add_pj: float = 0.4
    mul_pj: float = 1.1
    div_pj: float = 4.4
    buffer_pj_per_word: float = 25.0
    dram_pj_per_word: float = 500.0


@dataclass(frozen=True)
class SpatialArch:
    """A 2D + 1D PE-array accelerator.

    Attributes:
      rows_2d, cols_2d: 2D array shape; each PE does one +, x, max or MAC per cycle.
      width_1d: 1D array PEs; each does one +, x, max or / per cycle.
      exp_ops_2d: PE-cycles of one ``exp(a - b)`` on the 2D array (6 MACs + 1 subtract).
      exp_ops_1d: PE-cycles of one ``exp(a - b)`` on the 1D array (a pipelined exp unit: 1).
      buffer_bytes: global buffer capacity.
      dram_bandwidth_bytes_per_s, clock_hz, word_bytes: as named.
    """

    name: str
    rows_2d: int = 256
    cols_2d: int = 256
    width_1d: int = 256
    exp_ops_2d: int = 7
    exp_ops_1d: int = 1
    buffer_bytes: int = 16 * 2**20
    dram_bandwidth_bytes_per_s: float = 400e9
    clock_hz: float = 940e6
    word_bytes: int = 2
    energy: EnergyTable = field(default_factory=EnergyTable)

    def __post_init__(self) -> None:
        for k in ("rows_2d", "cols_2d", "width_1d", "exp_ops_2d", "exp_ops_1d", "buffer_bytes", "word_bytes"):
            if getattr(self, k) <= 0:
                raise ValueError(f"SpatialArch.{k} must be positive, got {getattr(self, k)}")

    @property
    def pes_2d(self) -> int:
        return self.rows_2d * self.cols_2d

    @property
    def buffer_words(self) -> int:
        return self.buffer_bytes // self.word_bytes

    @property
    def dram_words_per_cycle(self) -> float:
        return self.dram_bandwidth_bytes_per_s / self.word_bytes / self.clock_hz


#: FuseMax as evaluated in the paper: 256x256 + 256, 16 MB, 400 GB/s, 940 MHz, 16-bit words.
FUSEMAX_ARCH = SpatialArch("fusemax")
#: The FLAT / unfused baselines: same arrays, 32 MB buffer.
FLAT_ARCH = SpatialArch("flat", buffer_bytes=32 * 2**20)


@dataclass(frozen=True)
class TransformerModel:
    """Encoder-layer dimensions (E = F = d_model / heads)."""

    name: str
    d_model: int
    heads: int
    ffn_dim: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


PAPER_MODELS: Mapping[str, TransformerModel] = {
    "BERT-Base": TransformerModel("BERT-Base", 768, 12, 3072),
    "TrXL-wt103": TransformerModel("TrXL-wt103", 1024, 16, 4096),
    "T5-small": TransformerModel("T5-small", 512, 8, 2048),
    "XLM": TransformerModel("XLM", 2048, 16, 8192),
}
PAPER_SEQ_LENS: tuple[int, ...] = (1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20)


# ---------------------------------------------------------------------------------------------
# Work of one Einsum


def einsum_ops(e: Einsum, extents: Mapping[str, int], *, exp_ops: int) -> int:
    """PE-cycles of ``e``: iteration-space points x (map cost + reduce cost).

    ``x`` followed by ``+`` reduction is one MAC; ``exp_sub`` costs ``exp_ops``; ``id`` is free
    (only its reduction costs); every other operator costs 1.
    """
    points = math.prod(extent_of(r, extents) for r in e.iteration_ranks)
    if e.op == "*" and e.reduce == "+":
        return points
    cost = {"id": 0, "exp_sub": exp_ops}.get(e.op, 1) + (1 if e.reduce else 0)
    return points * cost


def _op_energy_pj(e: Einsum, table: EnergyTable, exp_ops: int) -> float:
    if e.op == "*" and e.reduce == "+":
        return table.mac_pj
    map_pj = {
        "id": 0.0,
        "+": table.add_pj,
        "-": table.add_pj,
        "max": table.add_pj,
        "*": table.mul_pj,
        "/": table.div_pj,
        "exp_sub": 6 * table.mac_pj + table.add_pj,
    }[e.op]
    return map_pj + (table.add_pj if e.reduce else 0.0)


@dataclass(frozen=True)
class EinsumCost:
    """Per-Einsum outputs of a mapping (whole layer: batch x heads).

    Attributes:
      name: Einsum output name.
      array: ``"2d"`` or ``"1d"``.
      ops: PE-cycles of work.
      busy_cycles: cycles the array spends on it.
      buffer_words: global-buffer words read + written by it.
      energy_pj: compute + buffer energy (DRAM energy is reported per mapping).
    """

    name: str
    array: str
    ops: int
    busy_cycles: float
    buffer_words: float
    energy_pj: float


@dataclass(frozen=True)
class MappingResult:
    """Attention on one layer under one mapping.

    Attributes:
      mapping: ``"unfused"``, ``"flat"`` or ``"fusemax"``.
      cycles: total cycles.
      util_2d, util_1d: busy PE-cycles / (cycles x PEs) of each array.
      dram_words: DRAM words moved.
      energy_pj: compute + buffer + DRAM energy.
      einsums: per-Einsum costs.
      detail: the chosen tiling in words.
    """

    mapping: str
    cycles: float
    util_2d: float
    util_1d: float
    dram_words: float
    energy_pj: float
    einsums: tuple[EinsumCost, ...]
    detail: str


def _size(ranks, extents) -> int:
    return math.prod(extent_of(r, extents) for r in ranks)


def _costs(
    c: Cascade,
    extents: Mapping[str, int],
    arch: SpatialArch,
    bind: Callable[[Einsum], str],
    *,
    heads: int,
    eff_2d: float = 1.0,
    register_resident: frozenset[str] = frozenset(),
) -> list[EinsumCost]:
    """Per-Einsum work, busy cycles and buffer traffic, for ``heads`` (batch x heads) instances.

    Buffer traffic: on the 2D array an operand missing an iteration rank is broadcast along it
    and re-read once per 256-wide tile of that rank; on the 1D array each operand is read once per
    point of its own ranks. Tensors in ``register_resident`` never touch the buffer.
    """
    out = []
    for e in c.einsums:
        array = bind(e)
        exp_ops = arch.exp_ops_2d if array == "2d" else arch.exp_ops_1d
        ops = einsum_ops(e, extents, exp_ops=exp_ops) * heads
        busy = ops / (arch.pes_2d * eff_2d) if array == "2d" else ops / arch.width_1d
        words = 0.0
        for ref in e.inputs:
            if ref.tensor in register_resident:
                continue
            w = _size(ref.walked_ranks, extents)
            if array == "2d":
                for r in e.iteration_ranks:
                    if r not in ref.walked_ranks:
                        w *= math.ceil(extent_of(r, extents) / arch.rows_2d)
            words += w
        if e.name not in register_resident:
            words += _size(e.output.walked_ranks, extents)
        words *= heads
        energy = (
            einsum_ops(e, extents, exp_ops=1) * heads * _op_energy_pj(e, arch.energy, exp_ops)
            + words * arch.energy.buffer_pj_per_word
        )
        out.append(EinsumCost(e.name, array, ops, busy, words, energy))
    return out


def _pipeline(n_steps: int, stages: list[float]) -> float:
    """Cycles of ``n_steps`` steps through a pipeline whose stages take ``stages`` cycles each."""
    return (n_steps - 1) * max(stages) + sum(stages)


def _result(mapping, cycles, costs, arch, dram_words, detail) -> MappingResult:
    busy2 = sum(x.ops for x in costs if x.array == "2d")
    busy1 = sum(x.ops for x in costs if x.array == "1d")
    energy = sum(x.energy_pj for x in costs) + dram_words * arch.energy.dram_pj_per_word
    return MappingResult(
        mapping,
        cycles,
        busy2 / (cycles * arch.pes_2d),
        busy1 / (cycles * arch.width_1d),
        dram_words,
        energy,
        tuple(costs),
        detail,
    )


def _extents(seq_len: int, head_dim: int, arch: SpatialArch) -> dict[str, int]:
    m0 = arch.cols_2d
    m1 = math.ceil(seq_len / m0)
    return {"E": head_dim, "F": head_dim, "M": seq_len, "P": seq_len, "M1": m1, "M0": m0}


def _is_contraction(e: Einsum) -> bool:
    return e.op == "*" and e.reduce == "+"


# ---------------------------------------------------------------------------------------------
# Mappings


def model_unfused(
    model: TransformerModel, seq_len: int, *, batch: int = 64, arch: SpatialArch = FLAT_ARCH
) -> MappingResult:
    """3-pass cascade, one phase per contraction and per softmax pass, all through DRAM."""
    c = attention_3pass()
    a = analyze_passes(c)
    ext = _extents(seq_len, model.head_dim, arch)
    heads = batch * model.heads
    bind = lambda e: "2d" if _is_contraction(e) else "1d"  # noqa: E731
    costs = _costs(c, ext, arch, bind, heads=heads)
    by_name = {x.name: x for x in costs}
    phases: dict[tuple[int, str], list[Einsum]] = {}
    for e in c.einsums:
        phases.setdefault((a.einsum_pass[e.name], bind(e)), []).append(e)
    consumers: dict[str, set[tuple[int, str]]] = {}
    for key, es in phases.items():
        for e in es:
            for ref in e.inputs:
                consumers.setdefault(ref.tensor, set()).add(key)
    cycles = dram = 0.0
    for key, es in phases.items():
        names = {e.name for e in es}
        words = 0
        reads = {ref.tensor: ref for e in es for ref in e.inputs if ref.tensor not in names}
        for ref in reads.values():
            words += _size(ref.walked_ranks or c.tensor_ranks(ref.tensor), ext)
        for e in es:
            if consumers.get(e.name, set()) - {key} or e.name in c.outputs:
                words += _size(e.output.walked_ranks, ext)
        words *= heads
        compute = sum(by_name[e.name].busy_cycles for e in es)
        cycles += max(compute, words / arch.dram_words_per_cycle)
        dram += words
    return _result("unfused", cycles, costs, arch, dram, f"{len(phases)} phases through DRAM")


def model_flat(
    model: TransformerModel, seq_len: int, *, batch: int = 64, arch: SpatialArch = FLAT_ARCH
) -> MappingResult:
    """3-pass cascade fused at row granularity; the fastest feasible FLAT tiling is returned."""
    c = attention_3pass()
    a = analyze_passes(c)
    ext = _extents(seq_len, model.head_dim, arch)
    E, F, M, P = ext["E"], ext["F"], ext["M"], ext["P"]
    heads = batch * model.heads
    bind = lambda e: "2d" if _is_contraction(e) else "1d"  # noqa: E731
    fused_rows_words = a.footprint_words(ext)  # per query row, to keep all passes on chip
    fiber = c.fiber("m")
    scalar_rows_words = sum(  # per query, crossing values without the fiber (GM, SD)
        _size([r for r in t.ranks if r != "p"], ext)
        for t in a.crossing
        if not any(r in fiber for r in t.ranks)
    )
    spill_words = a.spill_traffic_words(ext)
    kv_tile = arch.cols_2d * (E + F)
    best: MappingResult | None = None
    rows_options = sorted({2**k for k in range(0, P.bit_length())} | {P})
    for rows in rows_options:
        eff_2d = min(rows, arch.rows_2d) / arch.rows_2d
        costs = _costs(c, ext, arch, bind, heads=heads, eff_2d=eff_2d)
        groups = math.ceil(P / rows)
        busy2 = sum(x.busy_cycles for x in costs if x.array == "2d")
        busy1 = sum(x.busy_cycles for x in costs if x.array == "1d")
        for kv_resident in (True, False):
            for fused in (True, False):
                need = 2 * rows * (fused_rows_words if fused else scalar_rows_words)
                need += 2 * rows * (E + F) + (M * (E + F) if kv_resident else 2 * kv_tile)
                if need > arch.buffer_words:
                    continue
                words = P * E + P * F + (1 if kv_resident else groups) * M * (E + F)
                words = (words + (0 if fused else spill_words)) * heads
                n = heads * groups
                stages = [words / arch.dram_words_per_cycle / n, busy2 / n, busy1 / n]
                cycles = _pipeline(n, stages)
                detail = (
                    f"R={rows} rows, K/V {'resident' if kv_resident else 'streamed'}, "
                    f"{'fused' if fused else 'spilled'}"
                )
                r = _result("flat", cycles, costs, arch, words, detail)
                if best is None or r.cycles < best.cycles:
                    best = r
    if best is None:
        raise ValueError(f"model_flat: no FLAT tiling fits {arch.buffer_bytes} bytes for N={seq_len}")
    return best


def model_fusemax(
    model: TransformerModel, seq_len: int, *, batch: int = 64, arch: SpatialArch = FUSEMAX_ARCH
) -> MappingResult:
    """1-pass cascade, M -> (M1, M0), P -> (P2, P1, P0), loop order p2 -> m1 -> p1 -> (p0, m0)."""
    c = attention_1pass()
    a = analyze_passes(c)
    if a.num_passes != 1:
        raise ValueError(f"model_fusemax: cascade {c.name!r} needs {a.num_passes} passes, not 1")
    ext = _extents(seq_len, model.head_dim, arch)
    E, F, M, P, M1 = ext["E"], ext["F"], ext["M"], ext["P"], ext["M1"]
    heads = batch * model.heads
    fiber = c.fiber("m")

    def bind(e: Einsum) -> str:
        return "2d" if "m0" in e.iteration_ranks else "1d"

    producers = c.producers
    consumers: dict[str, set[str]] = {}
    for e in c.einsums:
        for ref in e.inputs:
            consumers.setdefault(ref.tensor, set()).add(bind(e))
    resident = frozenset(  # produced and consumed only inside the 2D array
        t for t, arrays in consumers.items() if t in producers and bind(producers[t]) == "2d" and arrays == {"2d"}
    )
    costs = _costs(c, ext, arch, bind, heads=heads, register_resident=resident)
    # Per-query state kept in the buffer across m1: Q row + running states (without m1).
    state_words = _size([r for r in c.tensor_ranks("Q") if r != "p"], ext) + sum(
        _size([r for r in c.tensor_ranks(t) if r != "p" and r not in fiber], ext) for t in c.state_tensors
    )
    p0 = arch.rows_2d
    kv_tile = ext["M0"] * (E + F)
    queries = (arch.buffer_words - 2 * kv_tile) // state_words // p0 * p0
    if queries < p0:
        raise ValueError(f"model_fusemax: buffer of {arch.buffer_bytes} bytes holds < {p0} queries")
    p_tiles = math.ceil(P / p0)
    queries = min(queries, p_tiles * p0)
    p2 = math.ceil(P / queries)
    words = (P * E + P * F + p2 * M * (E + F)) * heads
    n = heads * p_tiles * M1
    busy2 = sum(x.busy_cycles for x in costs if x.array == "2d")
    busy1 = sum(x.busy_cycles for x in costs if x.array == "1d")
    cycles = _pipeline(n, [words / arch.dram_words_per_cycle / n, busy2 / n, busy1 / n])
    detail = f"P1*P0={queries} queries per pass, P2={p2}, M1={M1} K/V tiles of {ext['M0']}"
    return _result("fusemax", cycles, costs, arch, words, detail)


# ---------------------------------------------------------------------------------------------
# Non-attention layers and one evaluation point


def _gemm_cycles(tokens: int, k: int, n: int, arch: SpatialArch) -> float:
    """Output-stationary GEMM [tokens, k] x [k, n] on the 2D array, bounded by DRAM."""
    compute = math.ceil(tokens / arch.rows_2d) * math.ceil(n / arch.cols_2d) * k
    cols_resident = max(1, (arch.buffer_words // 2) // k)  # weight columns held at once
    words = tokens * k * math.ceil(n / cols_resident) + tokens * n + k * n
    return max(compute, words / arch.dram_words_per_cycle)


def linear_layers_cycles(
    model: TransformerModel, seq_len: int, *, batch: int = 64, arch: SpatialArch = FUSEMAX_ARCH
) -> float:
    """QKV and output projections plus the FFN of one layer, on the 2D array."""
    t, d, ff = batch * seq_len, model.d_model, model.ffn_dim
    return (
        _gemm_cycles(t, d, 3 * d, arch)
        + _gemm_cycles(t, d, d, arch)
        + _gemm_cycles(t, d, ff, arch)
        + _gemm_cycles(t, ff, d, arch)
    )


@dataclass(frozen=True)
class PointResult:
    """One (model, seq_len) evaluation."""

    model: str
    seq_len: int
    unfused: MappingResult
    flat: MappingResult
    fusemax: MappingResult
    linear_cycles: float

    @property
    def attn_speedup_vs_flat(self) -> float:
        return self.flat.cycles / self.fusemax.cycles

    @property
    def attn_speedup_vs_unfused(self) -> float:
        return self.unfused.cycles / self.fusemax.cycles

    @property
    def e2e_speedup_vs_flat(self) -> float:
        return (self.flat.cycles + self.linear_cycles) / (self.fusemax.cycles + self.linear_cycles)

    @property
    def e2e_speedup_vs_unfused(self) -> float:
        return (self.unfused.cycles + self.linear_cycles) / (self.fusemax.cycles + self.linear_cycles)

    @property
    def energy_vs_flat(self) -> float:
        return self.fusemax.energy_pj / self.flat.energy_pj

    def as_dict(self) -> dict:
        """The JSON record of ``memmap cascade fusemax --json``."""
        return {
            "model": self.model,
            "seq_len": self.seq_len,
            "attn_speedup_vs_flat": self.attn_speedup_vs_flat,
            "attn_speedup_vs_unfused": self.attn_speedup_vs_unfused,
            "e2e_speedup_vs_flat": self.e2e_speedup_vs_flat,
            "e2e_speedup_vs_unfused": self.e2e_speedup_vs_unfused,
            "util_2d_fusemax": self.fusemax.util_2d,
            "util_1d_fusemax": self.fusemax.util_1d,
            "util_2d_flat": self.flat.util_2d,
            "util_1d_flat": self.flat.util_1d,
            "energy_fusemax_vs_flat": self.energy_vs_flat,
            "dram_bytes_fusemax": self.fusemax.dram_words * FUSEMAX_ARCH.word_bytes,
            "dram_bytes_flat": self.flat.dram_words * FLAT_ARCH.word_bytes,
            "flat_tiling": self.flat.detail,
            "fusemax_tiling": self.fusemax.detail,
        }


def evaluate_point(
    model: TransformerModel,
    seq_len: int,
    *,
    batch: int = 64,
    fusemax_arch: SpatialArch = FUSEMAX_ARCH,
    flat_arch: SpatialArch = FLAT_ARCH,
) -> PointResult:
    """Model all three mappings (and the linear layers, on ``fusemax_arch``) for one point."""
    return PointResult(
        model.name,
        seq_len,
        model_unfused(model, seq_len, batch=batch, arch=flat_arch),
        model_flat(model, seq_len, batch=batch, arch=flat_arch),
        model_fusemax(model, seq_len, batch=batch, arch=fusemax_arch),
        linear_layers_cycles(model, seq_len, batch=batch, arch=fusemax_arch),
    )
