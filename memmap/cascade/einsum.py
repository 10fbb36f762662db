"""Einsum cascades: ranks, Einsums with map/reduce operators, iterative ranks with running state.

Glossary (FuseMax, Nayak et al., MICRO 2024; EDGE-style extended Einsums):

* **rank**: a named index variable, lower case in references (``m``, ``p``, ``m1``). Its extent is
  the upper-case name (``M``, ``P``, ``M1``).
* **partition**: a rank split into coarse/fine ranks, e.g. ``m -> (m1, m0)`` with
  ``m = m1 * M0 + m0``. Traversing ``m1`` or ``m0`` traverses the fiber of ``m``.
* **Einsum**: ``OUT[idx] = map(IN1[idx], IN2[idx]) :: reduce``. Every rank that appears on the
  right-hand side but not in the output is reduced with the reduce operator.
* **iterative rank / running state**: an output indexed ``m1+1`` defines the state after
  iteration ``m1`` from the state at ``m1`` (``RM[m1+1,p] = max(RM[m1,p], BQK[m1,p])``). The
  value after the last iteration is read with the upper-case extent: ``RM[M1,p]``. Initial
  values (at ``m1 = 0``) are given per tensor in :attr:`Cascade.initial`.

Text syntax accepted by :func:`einsum` (one Einsum per line in :func:`cascade`)::

    QK[m,p]   = Q[e,p] * K[e,m] :: +          # contraction over e
    GM[p]     = QK[m,p] :: max                # reduction over m
    SN[m,p]   = exp(QK[m,p] - GM[p])          # map operator exp(a-b)
    RM[m1+1,p] = max(RM[m1,p], BQK[m1,p])     # running state
    AV[f,p]   = RNV[f,M1,p] / RD[M1,p]        # final state

Map operators: ``id`` (a single operand), ``+``, ``-``, ``*``, ``/``, ``max``, ``exp_sub``
(``exp(a - b)``). Reduce operators: ``+``, ``max``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

__all__ = [
    "MAP_OPS",
    "REDUCE_OPS",
    "CascadeError",
    "Index",
    "TensorRef",
    "Einsum",
    "Cascade",
    "einsum",
    "cascade",
]

#: map operator -> number of operands
MAP_OPS: Mapping[str, int] = MappingProxyType(
    {"id": 1, "+": 2, "-": 2, "*": 2, "/": 2, "max": 2, "exp_sub": 2}
)
#: reduce operators
REDUCE_OPS: frozenset[str] = frozenset({"+", "max"})


class CascadeError(ValueError):
    """A malformed Einsum or cascade; the message names the Einsum text."""


@dataclass(frozen=True)
class Index:
    """One index position of a tensor reference.

    Attributes:
      rank: lower-case rank variable (``m1``).
      shift: ``1`` for ``m1+1`` (next running state), else ``0``.
      final: ``True`` for the upper-case extent (``M1``): the state after the last iteration.
    """

    rank: str
    shift: int = 0
    final: bool = False

    def __str__(self) -> str:
        if self.final:
            return self.rank.upper()
        return f"{self.rank}+{self.shift}" if self.shift else self.rank


_IDX_RE = re.compile(r"^([a-z][a-z0-9]*)(?:\+(\d+))?$|^([A-Z][A-Z0-9]*)$")
_REF_RE = r"[A-Za-z_][A-Za-z0-9_]*\[[^\]]*\]"


@dataclass(frozen=True)
class TensorRef:
    """A tensor with index expressions, e.g. ``RM[m1+1,p]``."""

    tensor: str
    indices: tuple[Index, ...]

    @classmethod
    def parse(cls, text: str) -> "TensorRef":
        """Parse ``NAME[i,j+1,K]``; raises :class:`CascadeError` on bad syntax."""
        m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\[([^\]]*)\]\s*", text)
        if not m:
            raise CascadeError(f"bad tensor reference {text!r}: expected NAME[i,j,...]")
        name, body = m.group(1), m.group(2).strip()
        indices = []
        for part in [p.strip() for p in body.split(",")] if body else []:
            im = _IDX_RE.match(part)
            if not im:
                raise CascadeError(f"bad index {part!r} in {text!r}: use r, r+1 or R")
            if im.group(3):
                indices.append(Index(im.group(3).lower(), final=True))
            else:
                indices.append(Index(im.group(1), int(im.group(2) or 0)))
        return cls(name, tuple(indices))

    @property
    def ranks(self) -> tuple[str, ...]:
        """Rank variables of this reference, in order (final indices included)."""
        return tuple(i.rank for i in self.indices)

    @property
    def walked_ranks(self) -> tuple[str, ...]:
        """Ranks iterated over by this reference (final indices excluded)."""
        return tuple(i.rank for i in self.indices if not i.final)

    def __str__(self) -> str:
        return f"{self.tensor}[{','.join(str(i) for i in self.indices)}]"


@dataclass(frozen=True)
class Einsum:
    """``output = op(*inputs) :: reduce``; see the module docstring."""

    output: TensorRef
    op: str
    inputs: tuple[TensorRef, ...]
    reduce: str | None = None

    def __post_init__(self) -> None:
        if self.op not in MAP_OPS:
            raise CascadeError(f"{self}: unknown map operator {self.op!r}")
        if len(self.inputs) != MAP_OPS[self.op]:
            raise CascadeError(f"{self}: operator {self.op!r} takes {MAP_OPS[self.op]} operands")
        if self.reduce is not None and self.reduce not in REDUCE_OPS:
            raise CascadeError(f"{self}: unknown reduce operator {self.reduce!r}")
        if any(i.final for i in self.output.indices):
            raise CascadeError(f"{self}: the output cannot be indexed by a final extent")
        if self.reduced_ranks and self.reduce is None:
            raise CascadeError(
                f"{self}: ranks {list(self.reduced_ranks)} are reduced but no '::' operator is given"
            )
        if not self.reduced_ranks and self.reduce is not None:
            raise CascadeError(f"{self}: '::{self.reduce}' given but no rank is reduced")

    @property
    def name(self) -> str:
        """The output tensor's name (unique within a cascade)."""
        return self.output.tensor

    @property
    def iteration_ranks(self) -> tuple[str, ...]:
        """Ranks of the iteration space (output and walked input ranks), first-seen order."""
        seen: dict[str, None] = {}
        for ref in (self.output, *self.inputs):
            for r in ref.walked_ranks:
                seen.setdefault(r, None)
        return tuple(seen)

    @property
    def reduced_ranks(self) -> tuple[str, ...]:
        """Iteration ranks absent from the output."""
        out = set(self.output.ranks)
        return tuple(r for r in self.iteration_ranks if r not in out)

    @property
    def is_recurrence(self) -> bool:
        """True if the output is a running state (some output index is ``r+1``)."""
        return any(i.shift for i in self.output.indices)

    def __str__(self) -> str:
        a = [str(x) for x in self.inputs]
        if self.op == "id":
            rhs = a[0]
        elif self.op == "exp_sub":
            rhs = f"exp({a[0]} - {a[1]})"
        elif self.op == "max":
            rhs = f"max({a[0]}, {a[1]})"
        else:
            rhs = f"{a[0]} {self.op} {a[1]}"
        red = f" :: {self.reduce}" if self.reduce else ""
        return f"{self.output} = {rhs}{red}"


def einsum(text: str) -> Einsum:
    """Parse one Einsum line (syntax in the module docstring)."""
    src = text.split("#", 1)[0].strip()
    if "=" not in src:
        raise CascadeError(f"bad Einsum {text!r}: expected OUT[...] = expression")
    lhs, rhs = (s.strip() for s in src.split("=", 1))
    reduce = None
    if "::" in rhs:
        rhs, reduce = (s.strip() for s in rhs.split("::", 1))
    out = TensorRef.parse(lhs)
    forms = [
        (rf"exp\(\s*({_REF_RE})\s*-\s*({_REF_RE})\s*\)", "exp_sub"),
        (rf"max\(\s*({_REF_RE})\s*,\s*({_REF_RE})\s*\)", "max"),
        (rf"({_REF_RE})\s*([-+*/])\s*({_REF_RE})", None),
        (rf"({_REF_RE})", "id"),
    ]
    for pattern, op in forms:
        m = re.fullmatch(pattern, rhs)
        if not m:
            continue
        groups = m.groups()
        if op is None:
            op, refs = groups[1], (groups[0], groups[2])
        else:
            refs = groups
        try:
            return Einsum(out, op, tuple(TensorRef.parse(r) for r in refs), reduce)
        except CascadeError as exc:
            raise CascadeError(f"in {text.strip()!r}: {exc}") from None
    raise CascadeError(f"bad Einsum right-hand side {rhs!r} in {text.strip()!r}")


@dataclass(frozen=True)
class Cascade:
    """An ordered list of Einsums.

    Attributes:
      name: label.
      einsums: in program order; each output tensor is defined by exactly one Einsum.
      outputs: tensors the cascade returns.
      partitions: fiber rank -> its partition ranks, e.g. ``{"m": ("m1", "m0")}``.
      initial: running-state tensor -> initial value (``float``), e.g. ``{"RM": -inf}``.
    """

    name: str
    einsums: tuple[Einsum, ...]
    outputs: tuple[str, ...]
    partitions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    initial: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        rank_sig: dict[str, tuple[str, ...]] = {}
        for e in self.einsums:
            if e.name in seen:
                raise CascadeError(f"{self.name}: tensor {e.name!r} defined twice ({e})")
            seen.add(e.name)
        for e in self.einsums:
            for ref in (e.output, *e.inputs):
                sig = rank_sig.setdefault(ref.tensor, ref.ranks)
                if sig != ref.ranks:
                    raise CascadeError(
                        f"{self.name}: {e}: {ref} has ranks {list(ref.ranks)}, elsewhere {list(sig)}"
                    )
                states = {i.rank for i in ref.indices if i.shift or i.final}
                if states and ref.tensor not in self.state_tensors:
                    raise CascadeError(
                        f"{self.name}: {e}: {ref} uses r+1/R indices but {ref.tensor} is not a running state"
                    )
        for t in self.state_tensors:
            if t not in self.initial:
                raise CascadeError(f"{self.name}: running state {t!r} has no initial value")
        for t in self.outputs:
            if t not in seen:
                raise CascadeError(f"{self.name}: output {t!r} is not produced by any Einsum")

    @property
    def producers(self) -> dict[str, Einsum]:
        """Tensor name -> the Einsum that defines it."""
        return {e.name: e for e in self.einsums}

    @property
    def inputs(self) -> tuple[str, ...]:
        """Tensors read but never produced, in first-use order."""
        produced = {e.name for e in self.einsums}
        seen: dict[str, None] = {}
        for e in self.einsums:
            for ref in e.inputs:
                if ref.tensor not in produced:
                    seen.setdefault(ref.tensor, None)
        return tuple(seen)

    @property
    def state_tensors(self) -> frozenset[str]:
        """Tensors defined by a recurrence (running state)."""
        return frozenset(e.name for e in self.einsums if e.is_recurrence)

    def tensor_ranks(self, tensor: str) -> tuple[str, ...]:
        """Ranks of ``tensor`` as referenced in this cascade."""
        for e in self.einsums:
            for ref in (e.output, *e.inputs):
                if ref.tensor == tensor:
                    return ref.ranks
        raise CascadeError(f"{self.name}: unknown tensor {tensor!r}")

    def fiber(self, rank: str) -> frozenset[str]:
        """The rank and its partition ranks."""
        return frozenset((rank, *self.partitions.get(rank, ())))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.einsums)


def cascade(
    name: str,
    text: str,
    *,
    outputs: tuple[str, ...],
    partitions: Mapping[str, tuple[str, ...]] | None = None,
    initial: Mapping[str, float] | None = None,
) -> Cascade:
    """Build a :class:`Cascade` from one Einsum per non-empty line (``#`` starts a comment)."""
    lines = [ln for ln in text.splitlines() if ln.split("#", 1)[0].strip()]
    return Cascade(
        name,
        tuple(einsum(ln) for ln in lines),
        outputs,
        dict(partitions or {}),
        dict(initial or {}),
    )
