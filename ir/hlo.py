"""Import XLA HLO (text, a file, or an ``--xla_dump_to`` folder) into a :class:`Graph`.

The text is validated by XLA's own parser (``jaxlib._hlo.hlo_module_from_text``); the structure
(shapes, ids, operands, called computations, metadata, schedule, input/output aliasing) is read
from the parsed module's serialized ``HloModuleProto`` (see :mod:`memmap.ir.hlo_proto`), never by
regular expressions over the text.

What becomes what (docs/importers.md has the full rules):

* ``parameter`` / ``constant``: one value per tuple leaf, no operator.
* ``bitcast``, ``get-tuple-element``, ``tuple``, ``opt-barrier``: no buffer and no operator;
  they rename the values of their operands.
* every other ENTRY instruction is one operator with one output value per leaf of its shape
  (``inst`` or ``inst{i}`` / ``inst{i,j}`` for tuple leaves). ``copy-start`` leaf ``{1}`` and the
  operand part of async ``*-start`` tuples alias the operand instead of making a new buffer.
* ``while``, ``conditional``, ``call`` and ``async-start`` are one operator each; the peak live
  bytes inside the called computation(s) (excluding their parameters, which are the operator's
  inputs, and their results, which are the operator's outputs) become a temporary output
  ``inst.body_peak``. A ``while``'s result leaf ``i`` and operand leaf ``i`` form an in-place
  pair (``Op.inplace``): the new loop state may be written into the old one's buffer. A leaf the
  body returns unchanged (a loop invariant) is the operand's value itself, as in XLA.

Sizes are ``ceil(prod(dims) * bits / 8)`` (sub-byte types packed, ``pred`` one byte, token and
opaque zero bytes).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

from .graph import MAX_SIZE_BYTES, Graph, GraphBuilder, GraphError
from .hlo_check import check_shapes, check_text_hazards
from .hlo_proto import PRIMITIVE_TYPES, TUPLE_TYPE, parse_module_proto

__all__ = ["HloImportError", "import_hlo", "import_hlo_text", "parse_hlo_text",
           "graph_from_module_proto", "benchmark_import", "shape_leaves", "ALIAS_OPCODES",
           "CONTROL_FLOW_OPCODES", "HLO_TEXT_INFO_KEY"]

# Instructions that create no buffer and no operator (their values are their operands').
ALIAS_OPCODES = frozenset({"bitcast", "get-tuple-element", "tuple", "opt-barrier"})
# One operator whose working set includes the peak of the computation(s) it calls.
CONTROL_FLOW_OPCODES = frozenset({"while", "conditional", "call", "async-start"})
# Async starts whose result tuple holds the operand buffer(s) at this tuple index.
_START_OPERAND_INDEX = {"copy-start": 1, "async-start": 0, "all-gather-start": 0,
                        "collective-permute-start": 0}

_ELEMENTWISE = frozenset({
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "remainder", "and", "or",
    "xor", "not", "negate", "abs", "sign", "compare", "select", "clamp", "floor", "ceil",
    "round-nearest-afz", "round-nearest-even", "convert", "shift-left", "shift-right-arithmetic",
    "shift-right-logical", "popcnt", "count-leading-zeros", "is-finite", "real", "imag",
    "complex", "stochastic-convert", "reduce-precision"})
# Counted as transcendentals only (as XLA's HloCostAnalysis does), not as flops.
_TRANSCENDENTAL = frozenset({
    "exponential", "exponential-minus-one", "log", "log-plus-one", "tanh", "logistic", "sqrt",
    "rsqrt", "cbrt", "power", "sine", "cosine", "tan", "atan2", "erf"})

# Ops that apply their (scalar) called computation once per element.
_PER_ELEMENT_CALLERS = frozenset({
    "reduce", "reduce-window", "scatter", "select-and-scatter", "sort", "map", "all-reduce",
    "all-reduce-start", "reduce-scatter"})

# graph.info key of the imported module's HLO text (what memmap.emit_hlo annotates;
# graph.info is not part of plan.json).
HLO_TEXT_INFO_KEY = "hlo_text"

_STAGE_SUFFIX = {"after": "after_optimizations.txt", "before": "before_optimizations.txt"}


class HloImportError(ValueError):
    """An HLO module could not be imported. The one-line message starts with the file name.

    Attributes:
      path: the file or folder that failed, or None for HLO given as a string.
    """

    def __init__(self, where: str, reason: str, *, path: str | None = None):
        self.path = path
        super().__init__(f"{where}: {reason}")


# --------------------------------------------------------------------------------------------
# Shapes and sizes


def shape_leaves(shape, prefix: tuple[int, ...] = ()) -> list[tuple[tuple[int, ...], object]]:
    """Leaf shapes of a (possibly nested) tuple ``ShapeProto``, pre-order, with their shape
    index: ``[(index, leaf_shape)]``; an array shape is ``[((), shape)]``."""
    if shape.element_type != TUPLE_TYPE:
        return [(prefix, shape)]
    out = []
    for i, sub in enumerate(shape.tuple_shapes):
        out.extend(shape_leaves(sub, prefix + (i,)))
    return out


def _dtype_bits(element_type: int, where: str) -> tuple[str, int]:
    try:
        return PRIMITIVE_TYPES[element_type]
    except KeyError:
        raise HloImportError(where, f"unknown XLA element type number {element_type}") from None


def _size_bytes(shape, where: str) -> int:
    """Bytes of an array leaf shape: ``ceil(prod(dims) * bits / 8)``, at most MAX_SIZE_BYTES."""
    dtype, bits = _dtype_bits(shape.element_type, where)
    if bits == 0:
        return 0
    dims = ",".join(map(str, shape.dimensions))
    if any(d < 0 for d in shape.dimensions):
        raise HloImportError(where, f"{dtype}[{dims}] has an unbounded dynamic dimension; memmap "
                                    f"needs a size bound for every buffer")
    size = (math.prod(shape.dimensions) * bits + 7) // 8
    if size > MAX_SIZE_BYTES:
        raise HloImportError(where, f"{dtype}[{dims}] is {size} bytes, more than the 2**62 bytes "
                                    f"memmap can plan (sizes are 64-bit integers in its solvers)")
    return size


def _leaf_name(inst_name: str, index: tuple[int, ...]) -> str:
    return inst_name if not index else f"{inst_name}{{{','.join(map(str, index))}}}"


def _flatten(tree) -> list:
    """Leaves of a value tree (an int/None leaf, or a tuple of subtrees), pre-order."""
    if not isinstance(tree, tuple):
        return [tree]
    out: list = []
    for t in tree:
        if isinstance(t, tuple):
            out.extend(_flatten(t))
        else:
            out.append(t)
    return out


def _subtree(tree, index: Sequence[int]):
    for i in index:
        tree = tree[i]
    return tree


def _trip_count(backend_config: bytes) -> int | None:
    """``known_trip_count.n`` from a while's backend_config JSON, or None."""
    if not backend_config or b"known_trip_count" not in backend_config:
        return None
    try:
        return int(json.loads(backend_config)["known_trip_count"]["n"])
    except (ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------------------------
# The importer


class _Module:
    """The decoded module plus memoised per-computation analyses (costs, body peaks)."""

    def __init__(self, proto, where: str, checked: tuple[dict, dict] | None = None):
        self.proto = proto
        # every instruction by id (ids are unique in a module) and its dimensions, from
        # check_shapes; None: computed here per computation
        self._all, self._dims = checked if checked is not None else (None, {})
        self.where = where
        self.comps = {c.id: c for c in proto.computations}
        self.sequences = {k: v.instruction_ids for k, v in proto.schedule.sequences.items()}
        self._by_id: dict[int, dict[int, object]] = {}
        self._cost: dict[int, tuple[float, float]] = {}
        self._peak: dict[int, int] = {}
        self.trip_counts: dict[str, int | None] = {}
        self._invariants: dict[int, frozenset] = {}
        self.async_alias_mismatch: list[str] = []

    def instructions_by_id(self, comp) -> dict[int, object]:
        if self._all is not None:
            return self._all
        d = self._by_id.get(comp.id)
        if d is None:
            d = self._by_id[comp.id] = {i.id: i for i in comp.instructions}
        return d

    def comp(self, comp_id: int, user: str):
        try:
            return self.comps[comp_id]
        except KeyError:
            raise HloImportError(self.where, f"instruction {user!r} calls unknown computation "
                                             f"id {comp_id}") from None

    # ---- costs ---------------------------------------------------------------------------

    def computation_cost(self, comp) -> tuple[float, float]:
        """(flops, transcendentals) of one execution of ``comp`` (memoised)."""
        cached = self._cost.get(comp.id)
        if cached is not None:
            return cached
        self._cost[comp.id] = (0.0, 0.0)  # guards against (invalid) recursion
        by_id = self.instructions_by_id(comp)
        flops = trans = 0.0
        for inst in comp.instructions:
            f, t = self.instruction_cost(inst, by_id)
            flops += f
            trans += t
        self._cost[comp.id] = (flops, trans)
        return flops, trans

    def instruction_cost(self, inst, by_id) -> tuple[float, float]:
        """(flops, transcendentals) of one instruction; see docs/importers.md for the rules."""
        op = inst.opcode
        if op in _ELEMENTWISE or op in _TRANSCENDENTAL:
            dims = self._dims.get(inst.id)
            n = float(math.prod(dims if dims is not None else inst.shape.dimensions))
            return (n, 0.0) if op in _ELEMENTWISE else (0.0, n)
        if op == "dot":
            lhs = by_id[inst.operand_ids[0]].shape
            dn = inst.dot_dimension_numbers
            k = math.prod(lhs.dimensions[d] for d in dn.lhs_contracting_dimensions)
            return 2.0 * math.prod(inst.shape.dimensions) * k, 0.0
        if op == "convolution":
            lhs = by_id[inst.operand_ids[0]].shape
            rhs = by_id[inst.operand_ids[1]].shape
            dn = inst.convolution_dimension_numbers
            spatial = math.prod(rhs.dimensions[d] for d in dn.kernel_spatial_dimensions)
            feats = lhs.dimensions[dn.input_feature_dimension]
            groups = max(1, inst.feature_group_count)
            return 2.0 * math.prod(inst.shape.dimensions) * spatial * feats / groups, 0.0
        called = inst.called_computation_ids
        if op in ("fusion", "call", "async-start"):
            f = t = 0.0
            for cid in called:
                cf, ct = self.computation_cost(self.comp(cid, inst.name))
                f += cf
                t += ct
            return f, t
        if op == "while":
            trip = _trip_count(inst.backend_config)
            self.trip_counts[inst.name] = trip
            f = t = 0.0
            for cid in called:  # condition and body
                cf, ct = self.computation_cost(self.comp(cid, inst.name))
                f += cf
                t += ct
            n = trip if trip is not None else 1
            return f * n, t * n
        if op == "conditional":
            costs = [self.computation_cost(self.comp(cid, inst.name)) for cid in called]
            return (max((c[0] for c in costs), default=0.0),
                    max((c[1] for c in costs), default=0.0))
        if not called or op not in _PER_ELEMENT_CALLERS:
            # async-done/-update, custom-call, ...: the work is counted at the start op or unknown.
            return 0.0, 0.0
        # Ops applying a scalar computation per element (reduce, map, scatter, all-reduce, ...).
        per_f, per_t = self.computation_cost(self.comp(called[0], inst.name))
        if op == "reduce":
            n_in = max(1, len(inst.operand_ids) // 2)
            count = sum(math.prod(by_id[o].shape.dimensions) for o in inst.operand_ids[:n_in])
            count /= n_in  # a variadic reduce applies its reducer once per element position
        elif op == "reduce-window":
            win = math.prod(d.size for d in inst.window.dimensions)
            count = _leaf_elements(inst.shape) * win
        elif op == "scatter":
            count = math.prod(by_id[inst.operand_ids[-1]].shape.dimensions)
        elif op == "select-and-scatter":
            win = math.prod(d.size for d in inst.window.dimensions)
            count = math.prod(by_id[inst.operand_ids[1]].shape.dimensions) * win
        elif op == "sort":
            dims = shape_leaves(inst.shape)[0][1].dimensions
            axis = inst.dimensions[0] if inst.dimensions else 0
            n = dims[axis] if dims else 1
            count = math.prod(dims) * max(1.0, math.log2(max(n, 1)))
        else:  # map, all-reduce, reduce-scatter
            count = _leaf_elements(inst.shape)
        return per_f * count, per_t * count

    # ---- body peaks ----------------------------------------------------------------------

    def called_peak(self, inst) -> int:
        """Peak live bytes inside the computation(s) a control-flow instruction calls."""
        peaks = [self.computation_peak(self.comp(cid, inst.name))
                 for cid in inst.called_computation_ids]
        return max(peaks, default=0)

    def computation_peak(self, comp) -> int:
        """Peak live bytes of one computation's own buffers, simulated over its schedule (or
        instruction order), each buffer freed after its last use. Parameters and the buffers
        of the computation's result are excluded (the caller accounts for them)."""
        cached = self._peak.get(comp.id)
        if cached is not None:
            return cached
        self._peak[comp.id] = 0
        by_id = self.instructions_by_id(comp)
        seq = self.sequences.get(comp.id)
        order = [by_id[i] for i in seq] if seq else list(comp.instructions)
        trees: dict[int, object] = {}
        sizes: list[int] = []
        first: list[int] = []
        last: list[int] = []
        transient = [0] * len(order)
        for step, inst in enumerate(order):
            op = inst.opcode
            operand_trees = [trees[o] for o in inst.operand_ids]
            for b in _flatten(tuple(operand_trees)):
                if b is not None:
                    last[b] = step
            if op == "parameter":
                trees[inst.id] = _map_shape(inst.shape, lambda idx, s: None)
                continue
            alias = _alias_tree(inst, operand_trees)
            if alias is not _NO_ALIAS:
                trees[inst.id] = alias
                continue

            def new_buffer(idx, s, _inst=inst, _step=step):
                sizes.append(_size_bytes(s, f"{self.where}: {_inst.name}"))
                first.append(_step)
                last.append(_step)
                return len(sizes) - 1

            trees[inst.id] = _map_shape(inst.shape, new_buffer,
                                        self.start_aliases(inst, operand_trees))
            if op in CONTROL_FLOW_OPCODES:
                transient[step] = self.called_peak(inst)
        root = set(_flatten(trees.get(comp.root_id, ())))
        delta = [0] * (len(order) + 1)
        for b, size in enumerate(sizes):
            if b in root or size == 0:
                continue
            delta[first[b]] += size
            delta[last[b] + 1] -= size
        peak = live = 0
        for step in range(len(order)):
            live += delta[step]
            peak = max(peak, live + transient[step])
        self._peak[comp.id] = peak
        return peak

    def loop_invariants(self, inst) -> frozenset[tuple[int, ...]]:
        """Shape indices of a ``while``'s state that its body returns unchanged: the body's
        ROOT leaf at that index is its parameter's leaf at the same index (through
        get-tuple-element, tuple, bitcast). XLA keeps such a leaf in the operand's buffer; its
        result is the operand's value (a rename, like get-tuple-element)."""
        body = None
        for cid in inst.called_computation_ids:
            c = self.comp(cid, inst.name)
            root = self.instructions_by_id(c).get(c.root_id)
            if root is not None and root.shape == inst.shape:
                body = c
        if body is None:
            return frozenset()
        cached = self._invariants.get(body.id)
        if cached is not None:
            return cached
        trees: dict[int, object] = {}
        try:
            for i in body.instructions:
                if i.opcode == "parameter":
                    trees[i.id] = _map_shape(i.shape, lambda idx, s: _ParamLeaf(idx))
                    continue
                alias = _alias_tree(i, [trees[o] for o in i.operand_ids])
                trees[i.id] = alias if alias is not _NO_ALIAS else _map_shape(i.shape, lambda idx, s: None)
            leaves = _flatten(trees[body.root_id])
            out = frozenset(idx for (idx, _), leaf in zip(shape_leaves(inst.shape), leaves, strict=True)
                            if leaf == _ParamLeaf(idx))
        except (KeyError, IndexError, TypeError, ValueError):
            out = frozenset()     # a body this walk cannot follow: no invariants (pairs instead)
        self._invariants[body.id] = out
        return out

    def start_aliases(self, inst, operand_trees) -> dict[tuple[int, ...], object]:
        """Leaves of an async ``*-start`` result that are its operand buffers, by shape index."""
        pos = _START_OPERAND_INDEX.get(inst.opcode)
        if pos is None or inst.shape.element_type != TUPLE_TYPE or not operand_trees:
            return {}
        if pos >= len(inst.shape.tuple_shapes):
            return {}
        sub = inst.shape.tuple_shapes[pos]
        if inst.opcode == "async-start" or len(operand_trees) > 1:
            alias = tuple(operand_trees)
        else:
            alias = operand_trees[0]
        want = [s for _, s in shape_leaves(sub)]
        have = _flatten(alias) if isinstance(alias, tuple) else [alias]
        if len(want) != len(have):
            self.async_alias_mismatch.append(inst.name)
            return {}
        return {(pos,): alias}


_NO_ALIAS = object()


@dataclasses.dataclass(frozen=True)
class _ParamLeaf:
    """Leaf ``index`` of a computation's parameter (for :meth:`_Module.loop_invariants`)."""

    index: tuple[int, ...]


def _alias_tree(inst, operand_trees):
    """The value tree of an alias-only instruction, or ``_NO_ALIAS``."""
    op = inst.opcode
    if op == "get-tuple-element":
        return operand_trees[0][inst.tuple_index]
    if op == "tuple":
        return tuple(operand_trees)
    if op in ("bitcast", "opt-barrier"):
        return operand_trees[0]
    return _NO_ALIAS


def _map_shape(shape, fn, aliases: dict | None = None, prefix: tuple[int, ...] = ()):
    """Build a value tree for ``shape`` calling ``fn(index, leaf_shape)`` per leaf; a shape
    index found in ``aliases`` takes that (sub)tree instead (async-start operand buffers)."""
    if aliases and prefix in aliases:
        return aliases[prefix]
    if shape.element_type != TUPLE_TYPE:
        return fn(prefix, shape)
    return tuple(_map_shape(sub, fn, aliases, prefix + (i,))
                 for i, sub in enumerate(shape.tuple_shapes))


def _leaf_elements(shape) -> int:
    return sum(math.prod(s.dimensions) for _, s in shape_leaves(shape))


# --------------------------------------------------------------------------------------------
# ENTRY computation -> Graph


def _build_graph(module, proto, *, where: str, source: str, name: str | None,
                 info: dict, checked: tuple[dict, dict] | None = None) -> Graph:
    mod = _Module(proto, where, checked)
    entry = mod.comps.get(proto.entry_computation_id)
    if entry is None:
        raise HloImportError(where, "the module has no ENTRY computation")
    b = GraphBuilder(name or proto.name, source=source)
    by_id = mod.instructions_by_id(entry)
    trees: dict[int, object] = {}
    params: dict[int, object] = {}
    op_of_inst: dict[int, int] = {}
    op_insts: list = []
    value_size: dict[int, int] = {}  # value id -> size_bytes
    producer: dict[int, int] = {}  # value id -> op id
    op_inputs: list[list[int]] = []

    for inst in entry.instructions:
        op = inst.opcode
        iname = inst.name
        try:
            operand_trees = [trees[o] for o in inst.operand_ids]
        except KeyError as e:
            raise HloImportError(where, f"instruction {iname!r} reads unknown operand id "
                                        f"{e.args[0]}") from None
        if op in ("parameter", "constant"):
            kind = op

            def add(idx, s, _n=iname, _k=kind):
                dt, _ = _dtype_bits(s.element_type, f"{where}: {_n}")
                size = _size_bytes(s, f"{where}: {_n}")
                vid = b.add_value(_leaf_name(_n, idx), size, kind=_k, dtype=dt,
                                  shape=tuple(s.dimensions))
                value_size[vid] = size
                return vid

            tree = _map_shape(inst.shape, add)
            trees[inst.id] = tree
            if op == "parameter":
                params[inst.parameter_number] = tree
            b.hlo_values[iname] = tuple(_flatten(tree))
            continue
        alias = _alias_tree(inst, operand_trees)
        if alias is not _NO_ALIAS:
            trees[inst.id] = alias
            b.hlo_values[iname] = tuple(_flatten(alias))
            continue

        # A real operator.
        leaf_alias = mod.start_aliases(inst, operand_trees)
        if op == "while" and operand_trees:
            # loop-invariant state leaves: the result is the operand's value (no new buffer)
            leaf_alias = {idx: _subtree(operand_trees[0], idx) for idx in mod.loop_invariants(inst)}
        specs: list[dict] = []

        def plan(idx, s, _n=iname):
            dt, _ = _dtype_bits(s.element_type, f"{where}: {_n}")
            specs.append({"name": _leaf_name(_n, idx),
                          "size_bytes": _size_bytes(s, f"{where}: {_n}"),
                          "dtype": dt, "shape": tuple(s.dimensions)})
            return -1 - (len(specs) - 1)  # placeholder, replaced by the real value id below

        planned = _map_shape(inst.shape, plan, leaf_alias)
        if op in CONTROL_FLOW_OPCODES:
            peak = mod.called_peak(inst)
            if peak > 0:
                specs.append({"name": f"{iname}.body_peak", "size_bytes": peak,
                              "temporary": True})
        flops, trans = mod.instruction_cost(inst, by_id)
        inputs = _flatten(tuple(operand_trees))
        in_bytes = sum(value_size[v] for v in set(inputs))
        out_bytes = sum(s["size_bytes"] for s in specs if not s.get("temporary"))
        called_names = tuple(mod.comp(c, iname).name for c in inst.called_computation_ids)
        outs = b.add_op(iname, op, inputs=inputs, outputs=specs, flops=flops,
                        transcendentals=trans, bytes_accessed=float(in_bytes + out_bytes),
                        called=called_names, op_name=inst.metadata.op_name)
        tree = _resolve_placeholders(planned, outs)
        trees[inst.id] = tree
        for v, spec in zip(outs, specs, strict=True):
            value_size[v] = spec["size_bytes"]
            producer[v] = len(op_insts)
        if op == "while":
            _mark_loop_state(b, tree, operand_trees[0] if operand_trees else (), value_size)
        op_of_inst[inst.id] = len(op_insts)
        op_insts.append(inst)
        op_inputs.append(inputs)
        b.hlo_values[iname] = tuple(_flatten(tree))

    # Outputs and donation.
    root_tree = trees.get(entry.root_id, ())
    for v in _flatten(root_tree):
        b.mark_output(v)
    aliases = []
    for e in proto.input_output_alias.entries:
        try:
            out_v = _subtree(root_tree, e.output_shape_index)
            par_v = _subtree(params[e.parameter_number], e.parameter_shape_index)
            pairs = list(zip(_flatten(out_v), _flatten(par_v), strict=True))
        except (KeyError, IndexError, TypeError, ValueError):
            raise HloImportError(where, f"input_output_alias entry output "
                                        f"{list(e.output_shape_index)} -> parameter "
                                        f"{e.parameter_number} {list(e.parameter_shape_index)} "
                                        f"does not match the ENTRY shapes") from None
        for ov, pv in pairs:
            if ov != pv:  # a parameter returned unchanged needs no donation
                b.mark_output(ov, donated_param=pv)
        aliases.append({"output_index": list(e.output_shape_index),
                        "parameter_number": e.parameter_number,
                        "parameter_index": list(e.parameter_shape_index)})

    # Schedule.
    seq = mod.sequences.get(entry.id)
    info.update({
        "hlo_module_name": proto.name,
        "entry_computation": entry.name,
        "is_scheduled": bool(seq),
        "while_trip_counts": dict(mod.trip_counts),
        "input_output_alias": aliases,
        "control_predecessors_ignored": sum(len(i.control_predecessor_ids)
                                            for i in entry.instructions),
    })
    if mod.async_alias_mismatch:
        info["async_alias_mismatch"] = list(mod.async_alias_mismatch)
    b.info.update(info)
    if seq:
        schedule = [op_of_inst[i] for i in seq if i in op_of_inst]
        listed = set(seq)
        missing = [i.name for i in op_insts if i.id not in listed]
        if missing:
            raise HloImportError(where, f"the ENTRY schedule misses {len(missing)} "
                                        f"instruction(s), first {missing[0]!r}", path=None)
        if len(schedule) != len(op_insts):
            raise HloImportError(where, "the ENTRY schedule lists an instruction twice")
        origin = "xla"
    else:
        schedule = _textual_topological_order(module, entry, op_insts, op_inputs, producer)
        origin = "topological"
    try:
        return b.build(schedule=schedule, schedule_origin=origin)
    except GraphError as e:
        raise HloImportError(where, str(e)) from None


def _mark_loop_state(b: GraphBuilder, result_tree, operand_tree, value_size: dict[int, int]) -> None:
    """In-place pairs of a ``while``: result leaf ``i`` (the new loop state) may be written into
    operand leaf ``i`` (the old one), as XLA does (the while's result buffers are its operand
    buffers). Skipped for empty leaves, leaves whose sizes differ, and an operand value already
    paired (the same value in two leaves of the state tuple: XLA copies one of them)."""
    outs, ins = _flatten(result_tree), _flatten(operand_tree)
    if len(outs) != len(ins):
        return
    used: set[int] = set()
    for vo, vi in zip(outs, ins):
        if vi is None or vi in used or vo is None or vo == vi:   # vo == vi: a loop invariant
            continue
        size = value_size[vo]
        if size == 0 or size != value_size[vi]:
            continue
        used.add(vi)
        b.mark_inplace(vo, vi)


def _resolve_placeholders(tree, outs: tuple[int, ...]):
    if isinstance(tree, tuple):
        return tuple(_resolve_placeholders(t, outs) for t in tree)
    if tree is not None and tree < 0:
        return outs[-1 - tree]
    return tree


def _textual_topological_order(module, entry, op_insts, op_inputs: list[list[int]],
                               producer: dict[int, int]) -> list[int]:
    """Topological order of the ops, ties broken by the instruction's position in the text."""
    pos: dict[str, int] = {}
    for c in module.computations() if module is not None else ():
        if c.name == entry.name:
            pos = {n: k for k, n in enumerate(i.name for i in c.instructions())}
            break
    n = len(op_insts)
    key = [pos.get(inst.name, k) for k, inst in enumerate(op_insts)]
    succ: list[set[int]] = [set() for _ in range(n)]
    indeg = [0] * n
    for o, inputs in enumerate(op_inputs):
        for v in inputs:
            p = producer.get(v)
            if p is not None and o not in succ[p]:
                succ[p].add(o)
                indeg[o] += 1
    heap = [(key[i], i) for i in range(n) if indeg[i] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(heap, (key[j], j))
    return order  # a cycle leaves ops out; build() then reports it


# --------------------------------------------------------------------------------------------
# Public entry points


def parse_hlo_text(text: str, where: str, path: str | None = None):
    """XLA's parser (``jaxlib._hlo.hlo_module_from_text``) on ``text``, after
    :func:`~memmap.ir.hlo_check.check_text_hazards` has refused the inputs on which that parser
    would stop the process; a rejected module is an :class:`HloImportError` whose one line
    starts with ``where``."""
    from jaxlib import _hlo

    check_text_hazards(text, where, lambda reason: HloImportError(where, reason, path=path))
    try:
        return _hlo.hlo_module_from_text(text)
    except Exception as e:  # XLA raises RuntimeError/XlaRuntimeError with a multi-line message
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        msg = lines[0] if lines else type(e).__name__
        detail = next((ln for ln in lines[1:] if ln.startswith("was parsing")), None)
        if detail:
            msg = f"{msg} ({detail})"
        raise HloImportError(where, f"XLA's HLO parser rejected the module: {msg}",
                             path=path) from None


def _xla_cost(module) -> tuple[dict | None, str | None]:
    """XLA's module-level cost analysis on the CPU client, or (None, reason)."""
    try:
        import jax
        from jaxlib import _jax

        client = jax.devices("cpu")[0].client
        cost = _jax.hlo_module_cost_analysis(client, module)
        return {k: float(v) for k, v in cost.items()
                if k in ("flops", "transcendentals", "bytes accessed")}, None
    except Exception as e:  # noqa: BLE001 - recorded in graph.info, never fatal
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def import_hlo_text(text: str, *, where: str = "<string>", source: str = "<string>",
                    path: str | None = None, name: str | None = None, xla_cost: bool = True,
                    info: dict | None = None) -> Graph:
    """Import HLO module text. ``where`` prefixes error messages (the file name).

    Raises:
      HloImportError: text XLA's parser rejects (or would abort on, see
        :func:`~memmap.ir.hlo_check.check_text_hazards`), inconsistent shapes
        (:func:`~memmap.ir.hlo_check.check_shapes`), a value over ``MAX_SIZE_BYTES``.
    """
    def error(reason: str) -> HloImportError:
        return HloImportError(where, reason, path=path)

    if not text.strip():
        raise error("empty input: expected HLO module text (starting with 'HloModule')")
    module = parse_hlo_text(text, where, path)
    proto = parse_module_proto(module.as_serialized_hlo_module_proto())
    checked = check_shapes(proto, error)
    info = dict(info or {})
    info[HLO_TEXT_INFO_KEY] = text   # for memmap.emit_hlo (annotated HLO)
    if xla_cost:
        info["xla_cost"], err = _xla_cost(module)
        if err:
            info["xla_cost_error"] = err
    try:
        return _build_graph(module, proto, where=where, source=source, name=name, info=info,
                            checked=checked)
    except HloImportError as e:
        if e.path is None:
            e.path = path
        raise


def graph_from_module_proto(proto, *, where: str, source: str, name: str | None = None,
                            info: dict | None = None) -> Graph:
    """Build the graph of an already decoded ``HloModuleProto`` (see :func:`parse_module_proto`)
    without XLA's parser or cost analysis; an unscheduled ENTRY gets the topological order with
    ties broken by proto order. Used to re-import a module rebuilt from annotated HLO."""
    return _build_graph(None, proto, where=where, source=source, name=name, info=dict(info or {}))


def _pick_dump_file(folder: Path, stage: str) -> tuple[Path, dict]:
    suffix = _STAGE_SUFFIX[stage]
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix))
    if not files:
        raise HloImportError(str(folder), f"no HLO module file matching '*{suffix}' in this "
                                          f"XLA dump folder (stage={stage!r})", path=str(folder))
    sized = sorted(((p.stat().st_size, p.name, p) for p in files), key=lambda t: (-t[0], t[1]))
    chosen = sized[0][2]
    return chosen, {"dump_folder": str(folder), "dump_file": chosen.name,
                    "dump_candidates": [p.name for p in files], "stage": stage}


def import_hlo(path_or_text: str | os.PathLike, *, stage: str = "after",
               name: str | None = None, xla_cost: bool = True) -> Graph:
    """Import an HLO module into a :class:`Graph`.

    Args:
      path_or_text: HLO text (a string containing ``HloModule``), an HLO text file, or an XLA
        dump folder (``--xla_dump_to``).
      stage: for dump folders, ``"after"`` picks ``*after_optimizations.txt``, ``"before"``
        picks ``*before_optimizations.txt``; the largest such file when there are several
        (recorded in ``graph.info["dump_file"]``).
      name: graph name (default: the HLO module name).
      xla_cost: also run XLA's module cost analysis into ``graph.info["xla_cost"]``.

    Raises:
      HloImportError: unreadable file, empty folder, or a module XLA's parser rejects.

    Example::

        g = import_hlo("model.hlo")
        g.check_schedule(g.default_schedule)  # None
    """
    if stage not in _STAGE_SUFFIX:
        raise ValueError(f"stage must be 'after' or 'before', got {stage!r}")
    if isinstance(path_or_text, str) and "HloModule" in path_or_text and (
            "\n" in path_or_text or "{" in path_or_text or not os.path.exists(path_or_text)):
        return import_hlo_text(path_or_text, name=name, xla_cost=xla_cost)
    if not isinstance(path_or_text, (str, os.PathLike)):
        raise TypeError(f"import_hlo expects HLO text or a path, got {type(path_or_text).__name__}")
    path = Path(path_or_text)
    info: dict = {}
    if path.is_dir():
        path, info = _pick_dump_file(path, stage)
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise HloImportError(str(path), f"not an HLO text file (byte 0x{e.object[e.start]:02x} at "
                                        f"offset {e.start} is not UTF-8)", path=str(path)) from None
    except OSError as e:
        raise HloImportError(str(path), f"cannot read HLO file: {type(e).__name__}: "
                                        f"{e.strerror or e}", path=str(path)) from None
    info["path"] = str(path)
    return import_hlo_text(text, where=str(path), source=str(path), path=str(path), name=name,
                           xla_cost=xla_cost, info=info)


def benchmark_import(text: str, *, repeats: int = 3) -> dict:
    """Time XLA's parser alone against the full import (best of ``repeats``).

    Returns ``{"xla_parse_s", "import_s", "ratio"}``; ``import_s`` includes parsing, proto
    decoding, graph building and XLA's cost analysis.
    """
    from jaxlib import _hlo

    parse_s = import_s = math.inf
    import_hlo_text(text)  # warm-up (jax client creation, descriptor build)
    for _ in range(repeats):
        t0 = time.perf_counter()
        _hlo.hlo_module_from_text(text)
        t1 = time.perf_counter()
        import_hlo_text(text)
        t2 = time.perf_counter()
        parse_s = min(parse_s, t1 - t0)
        import_s = min(import_s, t2 - t1)
    return {"xla_parse_s": parse_s, "import_s": import_s, "ratio": import_s / parse_s}
