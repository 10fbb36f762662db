"""The program IR: a DAG of operators (Op) that read and write tensors (Value).

Glossary (see docs/glossary.md for the full one):

* **value** (tensor): one buffer. Dense integer id ``Value.id`` plus a human name. Its size is
  ``size_bytes`` (dtype x shape, sub-byte types packed, tuples flattened into one value per leaf).
* **operator** (op): one schedulable unit (an HLO instruction; a fusion or a while loop is one
  op). It reads ``inputs`` and writes ``outputs`` (value ids, deduplicated, operand order).
* **step**: an index into a schedule (one operator runs per step).
* Kinds: ``parameter`` and ``constant`` values have no producer and start off-chip;
  ``intermediate`` values are produced by an op; ``output`` values are produced by an op and
  are results of the program (they must end off-chip); ``temporary`` values are an op's internal
  working memory (for example a while loop's body peak), produced by the op and never read.
  A parameter that is returned unchanged keeps kind ``parameter`` and has ``is_output=True``.

Aliasing is resolved at import time: ``bitcast``, ``get-tuple-element`` and ``tuple`` create no
buffer and no operator; they only rename values. ``Graph.hlo_values`` maps every HLO instruction
name to the value ids it denotes.

**In-place pairs** (``Op.inplace``): ``(output, input)`` value ids of one operator, meaning "the
operator may write ``output`` into ``input``'s buffer" (a ``while`` loop's state, which XLA
updates in place). Values stay immutable: the pair is two values, and a plan decides whether
they share one buffer at the operator's step (docs/semantics.md, "In-place pairs": the input's
residency ends at that step and the output's starts there, at the same offset). Rules checked
here: the output is a non-temporary output of the operator, the input one of its inputs, both of
the same ``size_bytes``, and each output and each input is in at most one pair of the operator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Literal

import networkx as nx

#: The largest value size, and the largest total of a graph's value sizes, that memmap plans:
#: solvers keep sizes, offsets and sums of sizes in 64-bit integers (numpy, numba, CP-SAT).
MAX_SIZE_BYTES = 1 << 62

ValueKind = Literal["parameter", "constant", "intermediate", "output", "temporary"]
VALUE_KINDS: tuple[str, ...] = ("parameter", "constant", "intermediate", "output", "temporary")


class GraphError(ValueError):
    """A graph is malformed (cycle, dangling value id, ...). The message names the culprit."""


@dataclasses.dataclass(frozen=True)
class Value:
    """One tensor (buffer).

    Attributes:
      id: dense id, ``graph.values[id].id == id``.
      name: human-readable name (HLO instruction name, with ``{i}`` for tuple leaves).
      size_bytes: bytes of the buffer (0 for tokens).
      dtype: element type as printed by XLA (``f32``, ``bf16``, ``s4``, ...).
      shape: dimensions.
      kind: see module docstring.
      producer: id of the op that writes it, or None for parameters and constants.
      consumers: ids of the ops that read it (sorted, unique).
      is_output: it is part of the program's result.
      donated_param: for outputs written in place of a donated parameter
        (``input_output_alias``), the id of that parameter value; no new off-chip buffer.
    """

    id: int
    name: str
    size_bytes: int
    dtype: str
    shape: tuple[int, ...]
    kind: ValueKind
    producer: int | None = None
    consumers: tuple[int, ...] = ()
    is_output: bool = False
    donated_param: int | None = None

    @property
    def is_weight_like(self) -> bool:
        """Parameters and constants: values that exist off-chip before the program starts."""
        return self.kind in ("parameter", "constant")


@dataclasses.dataclass(frozen=True)
class Op:
    """One operator (one schedule step).

    Attributes:
      id: dense id, ``graph.ops[id].id == id``.
      name: HLO instruction name (or any unique name).
      opcode: HLO opcode (``fusion``, ``convolution``, ``while``, ...).
      inputs: value ids read (unique, operand order).
      outputs: value ids written (unique), including temporaries.
      flops: floating point operations (estimate or XLA's cost analysis).
      transcendentals: transcendental operations.
      bytes_accessed: bytes read and written by the op.
      called: names of called computations (fusion bodies, loop bodies, ...).
      op_name: framework-level name from HLO metadata, when present (for messages).
      inplace: ``(output, input)`` value-id pairs: the output may be written into the input's
        buffer at this op's step (module docstring; docs/semantics.md).
    """

    id: int
    name: str
    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    flops: float = 0.0
    transcendentals: float = 0.0
    bytes_accessed: float = 0.0
    called: tuple[str, ...] = ()
    op_name: str = ""
    inplace: tuple[tuple[int, int], ...] = ()


def check_inplace(op: Op, values: Sequence[Value] | Sequence[dict]) -> str | None:
    """None when ``op.inplace`` follows the rules of the module docstring, else a one-line
    reason naming the operator. ``values`` are :class:`Value` objects or builder dicts."""

    def get(v: int, key: str):
        x = values[v]
        return x[key] if isinstance(x, dict) else getattr(x, key)

    seen_out: set[int] = set()
    seen_in: set[int] = set()
    for pair in op.inplace:
        if len(pair) != 2:
            return f"operator {op.name!r}: in-place pair {pair!r} is not (output, input)"
        out, inp = pair
        if out not in op.outputs:
            return f"operator {op.name!r}: in-place output value id {out} is not one of its outputs"
        if inp not in op.inputs:
            return f"operator {op.name!r}: in-place input value id {inp} is not one of its inputs"
        if get(out, "kind") == "temporary":
            return f"operator {op.name!r}: temporary {get(out, 'name')!r} cannot be written in place"
        if get(out, "size_bytes") != get(inp, "size_bytes"):
            return (f"operator {op.name!r}: in-place pair {get(out, 'name')!r} ({get(out, 'size_bytes')} B) "
                    f"and {get(inp, 'name')!r} ({get(inp, 'size_bytes')} B) differ in size")
        if out in seen_out or inp in seen_in:
            return f"operator {op.name!r}: a value is in two in-place pairs"
        seen_out.add(out)
        seen_in.add(inp)
    return None


@dataclasses.dataclass(frozen=True)
class Graph:
    """An imported program: ops, values, and a default schedule.

    Attributes:
      name: module name.
      ops: ``[num_ops]`` operators, ``ops[i].id == i``.
      values: ``[num_values]`` values, ``values[i].id == i``.
      default_schedule: op ids in XLA's order when the module is scheduled, else a topological
        order (ties broken by textual order).
      schedule_origin: ``"xla"`` or ``"topological"``.
      source: where the graph came from (file path, ``"<string>"``, ``"jax:fn"``).
      hlo_values: HLO instruction name -> value ids it denotes (after alias resolution).
      info: free-form facts from the importer (XLA's module-level cost analysis, stage, ...).
    """

    name: str
    ops: tuple[Op, ...]
    values: tuple[Value, ...]
    default_schedule: tuple[int, ...]
    schedule_origin: str = "topological"
    source: str = "<memory>"
    hlo_values: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict, compare=False)
    info: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    @property
    def num_values(self) -> int:
        return len(self.values)

    def op_by_name(self, name: str) -> Op:
        for op in self.ops:
            if op.name == name:
                return op
        raise KeyError(name)

    def predecessors(self, op_id: int) -> set[int]:
        """Ops whose outputs ``op_id`` reads."""
        return {self.values[v].producer for v in self.ops[op_id].inputs
                if self.values[v].producer is not None}

    def to_networkx(self) -> nx.DiGraph:
        """Op-level dependency DAG (edge u->v when v reads a value u writes)."""
        g = nx.DiGraph()
        g.add_nodes_from(range(len(self.ops)))
        for op in self.ops:
            for v in op.inputs:
                p = self.values[v].producer
                if p is not None:
                    g.add_edge(p, op.id)
        return g

    def check_schedule(self, schedule: Sequence[int]) -> str | None:
        """Return None when ``schedule`` is a permutation of all ops in dependency order, else
        a one-line reason naming the offending operator."""
        n = len(self.ops)
        if len(schedule) != n:
            return f"schedule has {len(schedule)} steps but the graph has {n} operators"
        pos = [-1] * n
        for t, o in enumerate(schedule):
            if not (0 <= o < n):
                return f"step {t}: unknown operator id {o}"
            if pos[o] != -1:
                return f"operator {self.ops[o].name!r} is scheduled twice (steps {pos[o]} and {t})"
            pos[o] = t
        for op in self.ops:
            for v in op.inputs:
                p = self.values[v].producer
                if p is not None and pos[p] > pos[op.id]:
                    return (f"operator {op.name!r} (step {pos[op.id]}) reads {self.values[v].name!r} "
                            f"before its producer {self.ops[p].name!r} runs (step {pos[p]})")
        return None


class GraphBuilder:
    """Builds a validated :class:`Graph`.

    Example::

        b = GraphBuilder("mlp")
        x = b.add_value("x", 1024, kind="parameter")
        w = b.add_value("w", 4096, kind="constant")
        (y,) = b.add_op("dot", "dot", inputs=[x, w], outputs=[("y", 1024)])
        b.mark_output(y)
        g = b.build()
    """

    def __init__(self, name: str, *, source: str = "<memory>"):
        self.name = name
        self.source = source
        self._values: list[dict] = []
        self._ops: list[dict] = []
        self._outputs: list[int] = []
        self.hlo_values: dict[str, tuple[int, ...]] = {}
        self.info: dict = {}

    def add_value(self, name: str, size_bytes: int, *, kind: ValueKind = "parameter",
                  dtype: str = "u8", shape: Sequence[int] | None = None) -> int:
        """Add a value without a producer (a parameter or constant). Returns its id."""
        if kind not in ("parameter", "constant"):
            raise GraphError(f"value {name!r}: only parameters and constants are added directly")
        return self._new_value(name, size_bytes, kind, dtype, shape, None)

    def _new_value(self, name, size_bytes, kind, dtype, shape, producer) -> int:
        if int(size_bytes) < 0:
            raise GraphError(f"value {name!r}: negative size {size_bytes}")
        if int(size_bytes) > MAX_SIZE_BYTES:
            raise GraphError(f"value {name!r}: {int(size_bytes)} bytes, more than the 2**62 bytes "
                             f"memmap can plan")
        vid = len(self._values)
        self._values.append(dict(id=vid, name=name, size_bytes=int(size_bytes), dtype=dtype,
                                 shape=tuple(shape) if shape is not None else (int(size_bytes),),
                                 kind=kind, producer=producer))
        return vid

    def add_op(self, name: str, opcode: str, *, inputs: Iterable[int],
               outputs: Iterable[tuple | dict], flops: float = 0.0, transcendentals: float = 0.0,
               bytes_accessed: float | None = None, called: Sequence[str] = (),
               op_name: str = "") -> tuple[int, ...]:
        """Add an op. ``outputs`` are ``(name, size_bytes)`` tuples or dicts with keys
        ``name, size_bytes`` and optionally ``dtype, shape, temporary``. Returns output ids."""
        oid = len(self._ops)
        ins: list[int] = []
        for v in inputs:
            if not (0 <= v < len(self._values)):
                raise GraphError(f"operator {name!r}: unknown input value id {v}")
            if v not in ins:
                ins.append(v)
        outs = []
        for spec in outputs:
            if isinstance(spec, dict):
                d = spec
            else:
                d = dict(name=spec[0], size_bytes=spec[1])
            kind = "temporary" if d.get("temporary") else "intermediate"
            outs.append(self._new_value(d["name"], d["size_bytes"], kind, d.get("dtype", "u8"),
                                        d.get("shape"), oid))
        if bytes_accessed is None:
            bytes_accessed = float(sum(self._values[v]["size_bytes"] for v in ins + outs))
        self._ops.append(dict(id=oid, name=name, opcode=opcode, inputs=tuple(ins),
                              outputs=tuple(outs), flops=float(flops),
                              transcendentals=float(transcendentals),
                              bytes_accessed=float(bytes_accessed), called=tuple(called),
                              op_name=op_name))
        return tuple(outs)

    def mark_output(self, value_id: int, *, donated_param: int | None = None) -> None:
        if not (0 <= value_id < len(self._values)):
            raise GraphError(f"unknown output value id {value_id}")
        if self._values[value_id]["kind"] == "temporary":
            raise GraphError(f"temporary value {self._values[value_id]['name']!r} cannot be an output")
        if value_id not in self._outputs:
            self._outputs.append(value_id)
        if donated_param is not None:
            self._values[value_id]["donated_param"] = donated_param

    def mark_inplace(self, output: int, input: int) -> None:  # noqa: A002 - the natural name
        """Declare that ``output`` may be written into ``input``'s buffer by its producer (an
        in-place pair, see the module docstring). ``input`` must be an input of that operator
        and have the same size; checked here and again by :meth:`build`."""
        if not (0 <= output < len(self._values)) or self._values[output]["producer"] is None:
            raise GraphError(f"in-place pair: value id {output} is not produced by an operator")
        d = self._ops[self._values[output]["producer"]]
        d["inplace"] = tuple(d.get("inplace", ())) + ((int(output), int(input)),)
        reason = check_inplace(Op(**d), self._values)
        if reason is not None:
            d["inplace"] = d["inplace"][:-1]
            raise GraphError(reason)

    def build(self, schedule: Sequence[int] | None = None, *,
              schedule_origin: str | None = None) -> Graph:
        consumers: list[list[int]] = [[] for _ in self._values]
        for op in self._ops:
            for v in op["inputs"]:
                consumers[v].append(op["id"])
        outs = set(self._outputs)
        values = []
        for d in self._values:
            kind = d["kind"]
            if d["id"] in outs and kind == "intermediate":
                kind = "output"
            values.append(Value(id=d["id"], name=d["name"], size_bytes=d["size_bytes"],
                                dtype=d["dtype"], shape=d["shape"], kind=kind,
                                producer=d["producer"], consumers=tuple(sorted(set(consumers[d["id"]]))),
                                is_output=d["id"] in outs, donated_param=d.get("donated_param")))
        total = sum(d["size_bytes"] for d in self._values)
        if total > MAX_SIZE_BYTES:
            big = max(self._values, key=lambda d: d["size_bytes"])
            raise GraphError(f"graph {self.name!r}: its values add up to {total} bytes, more than "
                             f"the 2**62 bytes memmap can plan (largest: {big['name']!r}, "
                             f"{big['size_bytes']} bytes)")
        ops = tuple(Op(**o) for o in self._ops)
        for op in ops:
            reason = check_inplace(op, values)
            if reason is not None:
                raise GraphError(f"graph {self.name!r}: {reason}")
        g = Graph(name=self.name, ops=ops, values=tuple(values), default_schedule=(),
                  source=self.source, hlo_values=dict(self.hlo_values), info=dict(self.info))
        dag = g.to_networkx()
        if not nx.is_directed_acyclic_graph(dag):
            cyc = nx.find_cycle(dag)
            raise GraphError(f"graph {self.name!r} has a cycle through operator "
                             f"{ops[cyc[0][0]].name!r}")
        if schedule is None:
            order = tuple(nx.lexicographical_topological_sort(dag))
            origin = schedule_origin or "topological"
        else:
            order = tuple(int(s) for s in schedule)
            origin = schedule_origin or "xla"
        g = dataclasses.replace(g, default_schedule=order, schedule_origin=origin)
        reason = g.check_schedule(order)
        if reason is not None:
            raise GraphError(f"graph {self.name!r}: default schedule is invalid: {reason}")
        return g
