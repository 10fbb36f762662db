"""Targets (the memory hierarchy) and Problems (graph x target x mode).

The precise semantics are written down in docs/semantics.md. In short:

* One operator per step. Steps index the schedule.
* ``strict`` mode (COSMA): every managed input and output of the running operator is in the
  scratchpad at its step.
* ``tiered`` mode (XLA memory space assignment / mallocGame): operands may be read from, and
  results written to, slow off-chip memory at off-chip bandwidth; the scratchpad only makes them
  faster.
* Parameters and constants start off-chip; outputs must end off-chip.
* A value is *managed* when it takes part in the problem: non-empty, and, with
  ``activations_only``, not a parameter or constant (those are then served from off-chip memory
  and never occupy the scratchpad).
* Sizes in the scratchpad are rounded up to the target's alignment ("allocated size").
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import math
import re
from typing import Literal

from memmap.errors import BadInputError, Culprit, InfeasibleError
from memmap.ir.graph import MAX_SIZE_BYTES, Graph

Mode = Literal["strict", "tiered"]
MODES: tuple[str, ...] = ("strict", "tiered")

_UNITS = {
    "": 1, "b": 1,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "k": 1 << 10, "m": 1 << 20, "g": 1 << 30,
}
#: Transfer queues the cost model simulates at most (one list entry each).
MAX_DMA_ENGINES = 1024
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Parse a byte size: ``4MiB``, ``512KiB``, ``1.5GiB``, ``4MB`` (decimal), ``4096``.

    Binary suffixes (KiB, MiB, GiB) are powers of 1024; decimal ones (kB, MB, GB) powers of 1000;
    bare K/M/G are binary. Anything else raises :class:`BadInputError`.
    """
    if isinstance(text, bool):
        raise BadInputError(f"invalid size {text!r}")
    if isinstance(text, int):
        if not 0 < text <= MAX_SIZE_BYTES:
            raise BadInputError(f"invalid size {text}: must be positive and at most 2**62 bytes")
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise BadInputError(f"invalid size {text!r}: expected e.g. 4MiB, 512KiB or a byte count")
    number, unit = m.groups()
    mult = _UNITS.get(unit.lower())
    if mult is None:
        raise BadInputError(f"invalid size {text!r}: unknown unit {unit!r} (use B, KiB, MiB, GiB, kB, MB, GB)")
    value = fractions.Fraction(number) * mult  # exact: '1.1GiB' is refused, not rounded
    if value.denominator != 1:
        raise BadInputError(f"invalid size {text!r}: not a whole number of bytes")
    if value <= 0:
        raise BadInputError(f"invalid size {text!r}: must be positive")
    if value > MAX_SIZE_BYTES:
        raise BadInputError(f"invalid size {text!r}: more than the 2**62 bytes memmap can plan")
    return int(value)


_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\s*([a-zA-Z/]*)\s*$")
_RATE_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
                "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}
_RATE_UNITS = {"bandwidth": ("B/s",), "compute": ("FLOP/s", "FLOPS")}


def parse_rate(text: str | float | int, kind: str) -> float:
    """Parse a bandwidth (``kind="bandwidth"``: ``25.6GB/s``, ``512GiB/s``, ``1e11``, bytes/s)
    or a compute rate (``kind="compute"``: ``4TFLOP/s``, ``4TFLOPS``, ``4e12``, FLOP/s).

    Decimal prefixes k, M, G, T, P are powers of 1000, binary Ki, Mi, Gi, Ti powers of 1024; a
    plain number is bytes/s or FLOP/s. The unit is case-sensitive where it matters (``B`` is a
    byte; ``Gb/s``, gigabits, is refused). Anything else, zero, negative, inf or nan raises
    :class:`BadInputError`."""
    units = _RATE_UNITS[kind]
    what = "bandwidth" if kind == "bandwidth" else "compute rate"
    example = "25.6GB/s, 512GiB/s or 1e11 (bytes/s)" if kind == "bandwidth" else \
        "4TFLOP/s, 138e12 or 4e12 (FLOP/s)"
    if isinstance(text, bool):
        raise BadInputError(f"invalid {what} {text!r}: expected e.g. {example}")
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        m = _RATE_RE.match(str(text))
        if not m:
            raise BadInputError(f"invalid {what} {text!r}: expected e.g. {example}")
        value, unit = float(m.group(1)), m.group(2)
    mult = None
    if unit == "":
        mult = 1.0
    else:
        for u in units:
            if unit.endswith(u) and unit[:-len(u)] in _RATE_PREFIX:
                mult = _RATE_PREFIX[unit[:-len(u)]]
                break
    if mult is None:
        raise BadInputError(f"invalid {what} {text!r}: unknown unit {unit!r} (use "
                            f"{', '.join(units)} with an optional k/M/G/T prefix, e.g. {example})")
    value *= mult
    if not math.isfinite(value) or value <= 0:
        raise BadInputError(f"invalid {what} {text!r}: must be a positive finite number")
    return value


def format_rate(value: float, unit: str) -> str:
    """``25.6 GB/s`` / ``4 TFLOP/s``: decimal prefixes, three significant digits."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def format_bytes(n: float) -> str:
    """Human-readable binary size (``1.50 MiB``)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} PiB"


def align_up(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


@dataclasses.dataclass(frozen=True)
class Target:
    """A two-level memory hierarchy: a scratchpad (fast, small) and off-chip memory.

    Attributes:
      name: preset name or ``custom``.
      capacity_bytes: scratchpad capacity.
      alignment_bytes: every scratchpad offset and allocated size is a multiple of this.
      offchip_bandwidth_bytes_per_s: off-chip (DRAM/HBM) bandwidth; also what an operand read
        from slow memory in tiered mode gets.
      onchip_bandwidth_bytes_per_s: scratchpad bandwidth seen by operators.
      compute_flops_per_s: peak compute rate.
      dma_engines: number of concurrent transfer queues; each runs at
        ``offchip_bandwidth_bytes_per_s / dma_engines``.
      source: where the numbers come from.
    """

    name: str
    capacity_bytes: int
    alignment_bytes: int = 64
    offchip_bandwidth_bytes_per_s: float = 100e9
    onchip_bandwidth_bytes_per_s: float = 1e12
    compute_flops_per_s: float = 10e12
    dma_engines: int = 1
    source: str = "user-defined"

    def __post_init__(self):
        if not 0 < self.capacity_bytes <= MAX_SIZE_BYTES:
            raise BadInputError(f"target {self.name!r}: capacity {self.capacity_bytes} must be "
                                f"positive and at most 2**62 bytes")
        if not 0 < self.alignment_bytes <= 1 << 30 or self.alignment_bytes & (self.alignment_bytes - 1):
            raise BadInputError(f"target {self.name!r}: alignment {self.alignment_bytes} is not a power of "
                                f"two between 1 and 2**30 bytes")
        for field in ("offchip_bandwidth_bytes_per_s", "onchip_bandwidth_bytes_per_s", "compute_flops_per_s"):
            if not 0 < getattr(self, field) < math.inf:
                raise BadInputError(f"target {self.name!r}: {field} must be positive and finite")
        if not 1 <= self.dma_engines <= MAX_DMA_ENGINES:
            raise BadInputError(f"target {self.name!r}: dma_engines {self.dma_engines} must be "
                                f"between 1 and {MAX_DMA_ENGINES}")

    def with_capacity(self, capacity_bytes: int) -> "Target":
        return dataclasses.replace(self, capacity_bytes=int(capacity_bytes))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Target":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise BadInputError(f"target: unknown fields {sorted(unknown)}")
        return cls(**d)


PRESETS: dict[str, Target] = {
    "npu-4mib": Target(
        name="npu-4mib", capacity_bytes=4 << 20, alignment_bytes=64,
        offchip_bandwidth_bytes_per_s=25.6e9, onchip_bandwidth_bytes_per_s=512e9,
        compute_flops_per_s=4e12, dma_engines=2,
        source=("Small edge-NPU scratchpad. Compute 4 TOPS as the Google Coral Edge TPU datasheet "
                "(coral.ai/docs/edgetpu/benchmarks: 'capable of 4 trillion operations per second'); "
                "4 MiB SRAM, LPDDR4x-3200 x64 off-chip bandwidth (25.6 GB/s) and 512 GB/s SRAM "
                "bandwidth are assumptions typical of that class, not a datasheet."),
    ),
    "tpu-cmem-32mib": Target(
        name="tpu-cmem-32mib", capacity_bytes=32 << 20, alignment_bytes=512,
        offchip_bandwidth_bytes_per_s=614e9, onchip_bandwidth_bytes_per_s=2e12,
        compute_flops_per_s=138e12, dma_engines=4,
        source=("TPU-like: compute (138 TFLOP/s bf16) and HBM bandwidth (614 GB/s) of TPUv4i "
                "(Jouppi et al., ISCA 2021, 'Ten Lessons From Three Generations Shaped Google's "
                "TPUv4i'), whose CMEM is 128 MiB; scaled to a CMEM-style 32 MiB so that the "
                "benchmark workloads exercise replacement. On-chip bandwidth is an assumption."),
    ),
    "fusemax": Target(
        name="fusemax", capacity_bytes=16 << 20, alignment_bytes=64,
        offchip_bandwidth_bytes_per_s=400e9, onchip_bandwidth_bytes_per_s=2 * 256 * 2 * 940e6,
        compute_flops_per_s=2 * 256 * 256 * 940e6, dma_engines=1,
        source=("FuseMax configuration (Nayak et al., MICRO 2024, arXiv 2406.10491): 16 MB global "
                "buffer, 400 GB/s DRAM, 256x256 2D PE array at 940 MHz (2 flops per MAC); "
                "buffer bandwidth modelled as two 256-word 16-bit ports per cycle."),
    ),
}


def get_target(name: str) -> Target:
    try:
        return PRESETS[name]
    except KeyError:
        raise BadInputError(f"unknown target {name!r}; presets: {', '.join(sorted(PRESETS))}") from None


@dataclasses.dataclass(frozen=True)
class Problem:
    """What a solver solves: a graph, a target and a mode.

    Attributes:
      graph: the program.
      target: memory hierarchy (its capacity is the budget).
      mode: ``strict`` or ``tiered``.
      activations_only: parameters and constants are not managed (never in the scratchpad).
    """

    graph: Graph
    target: Target
    mode: str = "strict"
    activations_only: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise BadInputError(f"invalid mode {self.mode!r}; expected one of {', '.join(MODES)}")

    # -- value classification -------------------------------------------------------------
    @functools.cached_property
    def managed(self) -> tuple[bool, ...]:
        """``[num_values]``: does the value take part (occupy scratchpad / count traffic)?"""
        return tuple(v.size_bytes > 0 and not (self.activations_only and v.is_weight_like)
                     for v in self.graph.values)

    @functools.cached_property
    def alloc_size(self) -> tuple[int, ...]:
        """``[num_values]`` allocated size in the scratchpad (size rounded up to alignment)."""
        a = self.target.alignment_bytes
        return tuple(align_up(v.size_bytes, a) for v in self.graph.values)

    @functools.cached_property
    def op_values(self) -> tuple[tuple[int, ...], ...]:
        """``[num_ops]``: managed values an op touches (inputs then outputs)."""
        m = self.managed
        return tuple(tuple(v for v in op.inputs + op.outputs if m[v]) for op in self.graph.ops)

    @functools.cached_property
    def inplace_pairs(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """``[num_ops]``: the op's in-place pairs ``(output, input)`` whose two values are both
        managed (only those can share a scratchpad buffer; docs/semantics.md)."""
        m = self.managed
        return tuple(tuple((o, i) for o, i in op.inplace if m[o] and m[i]) for op in self.graph.ops)

    @functools.cached_property
    def working_set_bytes(self) -> tuple[int, ...]:
        """``[num_ops]``: allocated bytes of each op's managed inputs and outputs, an in-place
        pair counted once (the smallest room the op can run in: in strict mode a pair can
        always share its buffer, at the price of a spill and reload when the input is read
        later; see docs/semantics.md)."""
        s = self.alloc_size
        return tuple(sum(s[v] for v in vals) - sum(s[i] for _, i in pairs)
                     for vals, pairs in zip(self.op_values, self.inplace_pairs))

    @property
    def m_r_bytes(self) -> int:
        """Smallest budget under which strict mode can be feasible (max working set)."""
        return max(self.working_set_bytes, default=0)

    @functools.cached_property
    def compulsory_bytes(self) -> int:
        """First load of every used managed input/weight + final write of every output."""
        total = 0
        for v in self.graph.values:
            if not self.managed[v.id]:
                continue
            if v.producer is None and v.consumers:
                total += v.size_bytes
            elif v.producer is not None and v.is_output:
                total += v.size_bytes
        return total

    def infeasibility(self) -> InfeasibleError | None:
        """An :class:`InfeasibleError` naming the culprits when no plan can exist, else None."""
        if self.mode != "strict":
            return None
        cap = self.target.capacity_bytes
        ws = self.working_set_bytes
        bad = [i for i, b in enumerate(ws) if b > cap]
        if not bad:
            return None
        bad.sort(key=lambda i: (-ws[i], i))
        culprits = tuple(Culprit(self.graph.ops[i].name, self.graph.ops[i].opcode, ws[i]) for i in bad)
        worst = culprits[0]
        more = f" (and {len(culprits) - 1} more operators)" if len(culprits) > 1 else ""
        msg = (f"infeasible: operator {worst.op_name!r} ({worst.opcode}) needs "
               f"{worst.working_set_bytes} bytes ({format_bytes(worst.working_set_bytes)}) of inputs "
               f"and outputs in the scratchpad but the budget is {cap} bytes ({format_bytes(cap)})"
               f"{more}; strict mode needs at least M_R = {self.m_r_bytes} bytes")
        return InfeasibleError(msg, culprits, cap)

    def check_feasible(self) -> None:
        err = self.infeasibility()
        if err is not None:
            raise err
