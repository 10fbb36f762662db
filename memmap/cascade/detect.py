"""Attention detection: find ``softmax(Q K^T) V`` in XLA HLO, name its cascade, plan it 1-pass.

Pipeline (docs/fusemax.md, "Attention detection"):

1. **Flatten.** The module is parsed by XLA's parser (``jaxlib._hlo.hlo_module_from_text``) and
   decoded from its serialized ``HloModuleProto`` (the field subset of
   :mod:`memmap.ir.hlo_proto`, extended here with ``literal`` = 8 and ``comparison_direction`` =
   63, both checked against a parsed module). Every ``fusion`` and ``call`` body is instantiated
   in place (a fusion parameter *is* the caller's operand, the fusion's value *is* its root), so
   a softmax split over several fusions, or hidden in a ``call``, is one dataflow graph. Every
   node remembers the ENTRY instruction it belongs to (``entry``): that is the operator of
   :class:`memmap.ir.graph.Graph` a planner maps. ``while``/``conditional`` bodies stay opaque.
   Pure nodes are hash-consed, so two fusions that recompute the same logits (XLA duplicates
   cheap producers into several fusions) compare equal.
2. **Match**, backwards from every ``dot`` (the candidate ``A x V``). Layout-only ops (bitcast,
   reshape without merging dims, transpose, copy, convert, broadcast) are looked through, and
   every dimension is labelled with the dimension of the score tensor ``S = Q K^T`` it carries,
   so batch/head dims, unit dims and transposes are handled by checking labels, not positions:

   * ``A = SN / SD`` or ``SN * (1 / SD)`` (3-pass), or ``A = SN`` with the result of the dot
     divided by ``SD`` afterwards (3-pass with deferred division);
   * ``SN = exp(L - GM)``, ``GM = reduce-max(L)`` over the key dim (``maximum(GM, -inf)``
     allowed), ``SD = reduce-add(SN)`` over the same dim;
   * ``L`` goes back to ``S = dot(Q, K)`` through a scaling multiply/divide by a constant,
     ``select(mask, x, fill)`` and ``add(x, bias)``; a mask is *causal* when one of its
     conjuncts is ``compare(iota_query, iota_key)`` keeping ``key <= query``.
   * the dot ``A x V`` must contract ``A``'s key dim, batch over ``S``'s batch dims and keep its
     query dims.

3. **Classify.** 3-pass or 3-pass deferred division (the two cascades of
   :mod:`memmap.cascade.library` an unblocked softmax can be); ``passes`` comes from
   :func:`memmap.cascade.passes.analyze_passes` on that cascade.
4. **Plan** (:func:`plan_attention`): the 1-pass (FuseMax) mapping with tiles chosen so one K/V
   tile plus the query block's Q, running state and output fit the scratchpad.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import struct
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2

# The importer's proto subset (extended here with literals) and its private stage -> dump-file
# rule and parser wrapper, reused rather than written twice.
from memmap.ir import hlo_proto as _hlo_proto
from memmap.ir.graph import Graph
from memmap.ir.hlo import ALIAS_OPCODES, HloImportError
from memmap.ir.hlo_check import check_shapes
from memmap.ir.hlo import _STAGE_SUFFIX, _pick_dump_file, parse_hlo_text  # noqa: PLC2701 - see above

from memmap.cascade.library import ATTENTION_CASCADES, attention_1pass
from memmap.cascade.passes import analyze_passes, extent_of
from memmap.errors import (
    EXIT_BAD_INPUT,
    EXIT_INFEASIBLE,
    EXIT_OK,
    BadInputError,
    Culprit,
    InfeasibleError,
    MemmapError,
)
from memmap.problem import Target, align_up, format_bytes, get_target, parse_size

__all__ = [
    "AttentionMatch",
    "AttentionPlan",
    "detect_attention",
    "plan_attention",
    "report_attention",
    "add_detect_arguments",
    "run_detect",
    "main",
]

#: Cascade names (keys of ATTENTION_CASCADES) this detector can report.
CLASS_3PASS = "3-pass"
CLASS_3PASS_DEFERRED = "3-pass deferred division"

# --------------------------------------------------------------------------------------------
# Proto subset with constants' literals and compare directions


def _build_proto():
    F = descriptor_pb2.FieldDescriptorProto
    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    literal = ("LiteralProto", [
        ("shape", 1, F.TYPE_MESSAGE, opt, ".xla.ShapeProto"),
        ("preds", 2, F.TYPE_BOOL, rep, None),
        ("s32s", 4, F.TYPE_INT32, rep, None),
        ("s64s", 5, F.TYPE_INT64, rep, None),
        ("u32s", 6, F.TYPE_UINT32, rep, None),
        ("u64s", 7, F.TYPE_UINT64, rep, None),
        ("f32s", 8, F.TYPE_FLOAT, rep, None),
        ("f64s", 9, F.TYPE_DOUBLE, rep, None),
        ("f16s", 11, F.TYPE_BYTES, opt, None),
        ("bf16s", 13, F.TYPE_BYTES, opt, None),
    ])
    extra = {"HloInstructionProto": [("literal", 8, F.TYPE_MESSAGE, opt, ".xla.LiteralProto"),
                                     ("comparison_direction", 63, F.TYPE_STRING, opt, None)]}
    classes = _hlo_proto.build_message_classes([literal, *_hlo_proto._MESSAGES],
                                               file_name="memmap_attention_detect.proto",
                                               extra_fields=extra)
    return classes["HloModuleProto"]


_ModuleProto = _build_proto()
_BITS = {name: bits for name, bits in _hlo_proto.PRIMITIVE_TYPES.values()}
_DTYPE = {num: name for num, (name, _) in _hlo_proto.PRIMITIVE_TYPES.items()}


def _literal_value(lit) -> float | None:
    """The value of a constant whose elements are all equal (a scalar), else None."""
    vals: list[float] = []
    for field in ("f32s", "f64s", "s32s", "s64s", "u32s", "u64s"):
        vals.extend(float(v) for v in getattr(lit, field))
    vals.extend(1.0 if v else 0.0 for v in lit.preds)
    if lit.bf16s:
        vals.extend(struct.unpack("<f", b"\x00\x00" + lit.bf16s[i:i + 2])[0]
                    for i in range(0, len(lit.bf16s), 2))
    if lit.f16s:
        vals.extend(struct.unpack("<e", lit.f16s[i:i + 2])[0] for i in range(0, len(lit.f16s), 2))
    if not vals or any(v != vals[0] and not (math.isnan(v) and math.isnan(vals[0])) for v in vals):
        return None
    return vals[0]


# --------------------------------------------------------------------------------------------
# The flattened dataflow graph


@dataclasses.dataclass
class _Node:
    id: int
    name: str  # HLO instruction name
    opcode: str
    dims: tuple[int, ...]
    layout: tuple[int, ...]  # minor_to_major
    dtype: str
    operands: tuple[int, ...]
    entry: str  # ENTRY instruction this node belongs to
    attrs: dict


# Ops whose value depends only on their operands and the attributes kept in _Node.attrs.
_PURE = frozenset({
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "negate", "abs", "exponential",
    "log", "sqrt", "rsqrt", "tanh", "and", "or", "not", "xor", "select", "compare", "convert",
    "broadcast", "reshape", "bitcast", "transpose", "copy", "reduce", "dot", "iota", "constant",
    "power", "reduce-precision", "clamp", "sign", "floor", "ceil", "is-finite",
})
# Ops that only move or retype elements: traced through, dimension labels follow them.
_LAYOUT_OPS = frozenset({"bitcast", "reshape", "copy", "convert", "transpose", "broadcast",
                         "reduce-precision"})


class _Flat:
    """All nodes of the ENTRY computation with fusion/call bodies inlined (see module doc)."""

    def __init__(self, proto, where: str):
        self.where = where
        self.comps = {c.id: c for c in proto.computations}
        self.nodes: list[_Node] = []
        self.entry_insts: dict[str, object] = {}
        self.entry_pos: dict[str, int] = {}
        entry = self.comps.get(proto.entry_computation_id)
        if entry is None:
            raise BadInputError(f"{where}: the module has no ENTRY computation")
        self.entry_name = entry.name
        self._instantiate(entry, None, None)
        self.users: list[list[int]] = [[] for _ in self.nodes]
        for n in self.nodes:
            for o in dict.fromkeys(n.operands):
                self.users[o].append(n.id)
        self.canon = self._hash_cons()

    def _reducer(self, inst) -> str | None:
        if len(inst.operand_ids) != 2 or not inst.called_computation_ids:
            return None
        comp = self.comps.get(inst.called_computation_ids[0])
        if comp is None:
            return None
        by_id = {i.id: i for i in comp.instructions}
        root = by_id.get(comp.root_id)
        while root is not None and root.opcode == "convert":  # bf16 reducers round the result
            root = by_id.get(root.operand_ids[0])
        if root is None or len(root.operand_ids) != 2:
            return None
        if {by_id[o].opcode for o in root.operand_ids} != {"parameter"}:
            return None
        return {"add": "+", "maximum": "max"}.get(root.opcode)

    def _instantiate(self, comp, args, entry_name) -> int:
        local: dict[int, int] = {}
        for inst in comp.instructions:
            ename = entry_name or inst.name
            if entry_name is None:
                self.entry_insts[inst.name] = inst
                self.entry_pos[inst.name] = len(self.entry_pos)
            op = inst.opcode
            try:
                operands = tuple(local[o] for o in inst.operand_ids)
            except KeyError as e:
                raise BadInputError(f"{self.where}: instruction {inst.name!r} reads unknown "
                                    f"operand id {e.args[0]}") from None
            if op == "parameter" and args is not None:
                local[inst.id] = args[inst.parameter_number]
                continue
            if op in ("fusion", "call") and len(inst.called_computation_ids) == 1:
                callee = self.comps.get(inst.called_computation_ids[0])
                if callee is None:
                    raise BadInputError(f"{self.where}: instruction {inst.name!r} calls unknown "
                                        f"computation id {inst.called_computation_ids[0]}")
                local[inst.id] = self._instantiate(callee, operands, ename)
                continue
            if op == "get-tuple-element" and self.nodes[operands[0]].opcode == "tuple":
                local[inst.id] = self.nodes[operands[0]].operands[inst.tuple_index]
                continue
            shape = inst.shape
            attrs: dict = {}
            if op in ("broadcast", "transpose", "reduce", "iota"):
                attrs["dimensions"] = tuple(inst.dimensions)
            if op == "dot":
                d = inst.dot_dimension_numbers
                attrs["dot"] = (tuple(d.lhs_batch_dimensions), tuple(d.lhs_contracting_dimensions),
                                tuple(d.rhs_batch_dimensions), tuple(d.rhs_contracting_dimensions))
            if op == "compare":
                attrs["direction"] = inst.comparison_direction
            if op == "constant":
                attrs["value"] = _literal_value(inst.literal)
            if op == "reduce":
                attrs["reducer"] = self._reducer(inst)
            node = _Node(len(self.nodes), inst.name, op, tuple(shape.dimensions),
                         tuple(shape.layout.minor_to_major), _DTYPE.get(shape.element_type, "?"),
                         operands, ename, attrs)
            self.nodes.append(node)
            local[inst.id] = node.id
        if comp.root_id not in local:
            raise BadInputError(f"{self.where}: computation {comp.name!r} has no root")
        return local[comp.root_id]

    def _hash_cons(self) -> list[int]:
        """Canonical id per node: equal for pure nodes computing the same value."""
        table: dict[tuple, int] = {}
        canon: list[int] = []
        for n in self.nodes:
            pure = n.opcode in _PURE and not (n.opcode == "constant" and n.attrs.get("value") is None)
            if pure:
                attrs = tuple(sorted((k, v) for k, v in n.attrs.items()))
                layout = n.layout if n.opcode == "bitcast" else ()
                key = (n.opcode, n.dims, layout, n.dtype, attrs, tuple(canon[o] for o in n.operands))
            else:
                key = ("node", n.id)
            canon.append(table.setdefault(key, len(table)))
        return canon

    def same(self, a: int, b: int) -> bool:
        return self.canon[a] == self.canon[b]

    # ---- tracing through layout ops -----------------------------------------------------

    def step(self, n: _Node) -> tuple[int | None, ...] | None:
        """For a layout op ``n``: dim of ``n`` -> dim of its operand (None: broadcast or unit);
        None when the op merges or splits non-unit dims."""
        src = self.nodes[n.operands[0]]
        if n.opcode in ("copy", "convert", "reduce-precision"):
            return tuple(range(len(n.dims)))
        if n.opcode == "transpose":
            return tuple(n.attrs["dimensions"])
        if n.opcode == "broadcast":
            inv = {d: i for i, d in enumerate(n.attrs["dimensions"])}
            return tuple(inv.get(j) for j in range(len(n.dims)))
        if n.opcode == "reshape":
            return _unit_reshape_map(n.dims, src.dims)
        if n.opcode == "bitcast":  # physical element order is preserved: map in major-to-minor
            out_order = _major_to_minor(n)
            in_order = _major_to_minor(src)
            m = _unit_reshape_map(tuple(n.dims[d] for d in out_order),
                                  tuple(src.dims[d] for d in in_order))
            if m is None:
                return None
            res: list[int | None] = [None] * len(n.dims)
            for k, d in enumerate(out_order):
                res[d] = None if m[k] is None else in_order[m[k]]
            return tuple(res)
        return None

    def trace(self, nid: int, path: set[int] | None = None,
              through_max_const: bool = False) -> tuple[int, tuple[int | None, ...]]:
        """Follow layout ops back from ``nid``: (base node, dim of ``nid`` -> dim of base).

        With ``through_max_const`` also ``maximum(x, constant)`` (jax's ``max(..., initial=-inf)``).
        Visited nodes are added to ``path``.
        """
        n = self.nodes[nid]
        dmap: tuple[int | None, ...] = tuple(range(len(n.dims)))
        while True:
            if path is not None:
                path.add(n.id)
            nxt = None
            if n.opcode in _LAYOUT_OPS and n.operands:
                st = self.step(n)
                if st is not None:
                    nxt, st_map = n.operands[0], st
            elif through_max_const and n.opcode == "maximum":
                for i in (0, 1):
                    if self.scalar_const(n.operands[1 - i]) is not None:
                        nxt, st_map = n.operands[i], tuple(range(len(n.dims)))
                        break
            if nxt is None:
                return n.id, dmap
            dmap = tuple(None if d is None else st_map[d] for d in dmap)
            n = self.nodes[nxt]

    def scalar_const(self, nid: int) -> float | None:
        """Value of a constant broadcast to ``nid``'s shape, or None."""
        base, _ = self.trace(nid)
        b = self.nodes[base]
        return b.attrs.get("value") if b.opcode == "constant" else None

    def labels(self, nid: int, base_labels: Sequence, path: set[int] | None = None,
               **kw) -> tuple[int, tuple]:
        """(base, labels of ``nid``'s dims) given the labels of the base's dims."""
        base, m = self.trace(nid, path, **kw)
        n = self.nodes[nid]
        return base, tuple(None if (d is None or n.dims[j] == 1) else base_labels[d]
                           for j, d in enumerate(m))


def _major_to_minor(n: _Node) -> tuple[int, ...]:
    if len(n.layout) == len(n.dims):
        return tuple(reversed(n.layout))
    return tuple(range(len(n.dims)))


def _unit_reshape_map(out_dims: Sequence[int], in_dims: Sequence[int]):
    """out dim -> in dim for a reshape that only inserts or removes unit dims, else None."""
    out_nu = [j for j, d in enumerate(out_dims) if d != 1]
    in_nu = [i for i, d in enumerate(in_dims) if d != 1]
    if [out_dims[j] for j in out_nu] != [in_dims[i] for i in in_nu]:
        return None
    res: list[int | None] = [None] * len(out_dims)
    for j, i in zip(out_nu, in_nu):
        res[j] = i
    return tuple(res)


# --------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass(frozen=True)
class AttentionMatch:
    """One ``softmax(Q K^T) V`` subgraph.

    Attributes:
      index: position among the module's matches (program order of the ``A x V`` dot).
      op_names: ENTRY operators (``Graph`` op names) computing the subgraph, program order.
      roles: role -> ENTRY operator holding it: ``qk``, ``max``, ``exp``, ``sum``, ``divide``,
        ``av`` (``scale``, ``mask`` when present).
      instructions: role -> HLO instruction name (possibly inside a fusion body).
      q_name, k_name, v_name: ENTRY instructions whose values feed Q, K and V
        (``graph.hlo_values[name]`` gives the value ids).
      output_name: ENTRY instruction holding the attention output ``AV``.
      batch_dims: extents of the score tensor's batch dims (``[B, H]`` for ``[B, H, P, M]``).
      query_len, key_len: P and M; qk_head_dim, v_head_dim: E and F.
      causal: a ``key <= query`` iota mask is applied; masked: any mask or bias is applied.
      scale: constant multiplying the scores (``1/sqrt(E)``), 1.0 when none is seen.
      dtype: element type of Q (the program's dtype); score_dtype: of ``Q K^T``.
      cascade_class: key of ``ATTENTION_CASCADES`` the computation corresponds to.
      passes: passes over the key rank of that cascade (``analyze_passes``).
      reciprocal: the division is a multiply by ``1 / SD`` (XLA's rewrite).
      program_dram_bytes: bytes read and written by ``op_names`` when each operator reads its
        inputs from and writes its outputs to memory (unique inputs + outputs per operator).
    """

    index: int
    op_names: tuple[str, ...]
    roles: Mapping[str, str]
    instructions: Mapping[str, str]
    q_name: str
    k_name: str
    v_name: str
    output_name: str
    batch_dims: tuple[int, ...]
    query_len: int
    key_len: int
    qk_head_dim: int
    v_head_dim: int
    causal: bool
    masked: bool
    scale: float
    dtype: str
    score_dtype: str
    cascade_class: str
    passes: int
    reciprocal: bool
    program_dram_bytes: int

    @property
    def batch(self) -> int:
        """B: the first batch dim (1 when there is none)."""
        return self.batch_dims[0] if self.batch_dims else 1

    @property
    def heads(self) -> int:
        """H: the product of the remaining batch dims."""
        return math.prod(self.batch_dims[1:])

    @property
    def instances(self) -> int:
        """Independent (batch, head) attention problems: prod(batch_dims)."""
        return math.prod(self.batch_dims)

    @property
    def dtype_bytes(self) -> int:
        return max(1, _BITS.get(self.dtype, 32) // 8)

    @property
    def score_bytes(self) -> int:
        """Bytes of one ``[B, H, P, M]`` score tensor in the score dtype."""
        return self.instances * self.query_len * self.key_len * max(1, _BITS.get(self.score_dtype, 32) // 8)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["roles"], d["instructions"] = dict(self.roles), dict(self.instructions)
        d["op_names"], d["batch_dims"] = list(self.op_names), list(self.batch_dims)
        d.update(batch=self.batch, heads=self.heads, score_bytes=self.score_bytes)
        return d


# --------------------------------------------------------------------------------------------
# Matching


class _NoMatch(Exception):
    pass


def _need(cond: bool) -> None:
    if not cond:
        raise _NoMatch


class _Matcher:
    def __init__(self, flat: _Flat):
        self.f = flat
        self.N = flat.nodes

    # -- prelude: logits L back to S = dot(Q, K) --------------------------------------------

    def prelude(self, lid: int, depth: int = 0):
        """Walk from the logits ``lid`` back to the score dot.

        Returns (dot id, L dim -> dot dim, scale, masks, path, roles) where masks are
        ``(mask or bias node, its dim -> dot dim, keep)``; raises _NoMatch.
        """
        _need(depth < 12)
        n = self.N[lid]
        ident = tuple(range(len(n.dims)))
        if n.opcode == "dot":
            return lid, ident, 1.0, [], set(), {}
        f = self.f
        if n.opcode in ("multiply", "divide") and len(n.operands) == 2:
            for i in ((0, 1) if n.opcode == "multiply" else (0,)):
                c = f.scalar_const(n.operands[1 - i])
                if c is not None and c != 0:
                    path = {lid}
                    f.trace(n.operands[1 - i], path)
                    res = self._continue(n, n.operands[i], depth, path)
                    scale = c if n.opcode == "multiply" else 1.0 / c
                    return res[0], res[1], res[2] * scale, res[3], res[4], {"scale": lid, **res[5]}
            raise _NoMatch
        if n.opcode == "select" and len(n.operands) == 3:
            for i in (1, 2):
                if f.scalar_const(n.operands[3 - i]) is not None:
                    path = {lid}
                    f.trace(n.operands[3 - i], path)
                    res = self._continue(n, n.operands[i], depth, path)
                    masks = [(n.operands[0], res[1], i == 1), *res[3]]
                    return res[0], res[1], res[2], masks, res[4], {"mask": lid, **res[5]}
            raise _NoMatch
        if n.opcode == "add" and len(n.operands) == 2:
            for i in (0, 1):
                try:
                    path = {lid}
                    res = self._continue(n, n.operands[i], depth, path)
                except _NoMatch:
                    continue
                bias = n.operands[1 - i]
                masks = [(bias, res[1], None), *res[3]]
                return res[0], res[1], res[2], masks, res[4], {"mask": lid, **res[5]}
            raise _NoMatch
        raise _NoMatch

    def _continue(self, n: _Node, operand: int, depth: int, path: set[int]):
        base, m = self.f.trace(operand, path)
        for j, d in enumerate(m):
            _need(d is not None or n.dims[j] == 1)
        dot, dmap, scale, masks, p2, roles = self.prelude(base, depth + 1)
        # n dim j -> base dim m[j] -> dot dim dmap[m[j]]
        comp = tuple(None if m[j] is None else dmap[m[j]] for j in range(len(n.dims)))
        return dot, comp, scale, masks, path | p2, roles

    # -- the whole pattern from a candidate A x V dot ---------------------------------------

    def match(self, d2: int) -> dict:
        """The attention whose ``A x V`` is dot ``d2`` (a dict of nodes and facts); _NoMatch."""
        dot2 = self.N[d2]
        lb, lc, rb, rc = dot2.attrs["dot"]
        for side in (1, 0):  # the probabilities are usually the rhs in jax's einsums
            try:
                return self._match_side(dot2, side, (lb, lc) if side == 0 else (rb, rc),
                                        (rb, rc) if side == 0 else (lb, lc))
            except _NoMatch:
                continue
        raise _NoMatch

    def _softmax_core(self, eid: int, path: set[int]):
        """From an exp node: L, key dim, labels; raises _NoMatch."""
        f, N = self.f, self.N
        e = N[eid]
        _need(e.opcode == "exponential")
        sub, smap = f.trace(e.operands[0], path)
        _need(N[sub].opcode == "subtract")
        sn = N[sub]
        lbase, xmap = f.trace(sn.operands[0], path)
        ybase, ymap = f.trace(sn.operands[1], path, through_max_const=True)
        rmax = N[ybase]
        _need(rmax.opcode == "reduce" and rmax.attrs.get("reducer") == "max")
        _need(len(rmax.attrs["dimensions"]) == 1)
        path.add(ybase)
        l0base, l0map = f.trace(rmax.operands[0], path)
        _need(f.same(l0base, lbase))
        red = rmax.attrs["dimensions"][0]
        key_l = l0map[red]
        _need(key_l is not None)
        dot1, l2s, scale, masks, ppath, roles = self.prelude(lbase)
        path |= ppath
        s = N[dot1]
        key = l2s[key_l]
        _need(key is not None and s.dims[key] > 1)
        s_lab = tuple(None if d == 1 else j for j, d in enumerate(s.dims))
        l_lab = tuple(None if (x is None or N[lbase].dims[i] == 1) else s_lab[x]
                      for i, x in enumerate(l2s))
        sub_lab = tuple(None if (x is None or sn.dims[j] == 1) else l_lab[x] for j, x in enumerate(xmap))
        # GM carries every non-key dim of L, and is broadcast along the key.
        kept = [d for d in range(len(N[rmax.operands[0]].dims)) if d != red]
        l0_lab = tuple(None if x is None else l_lab[x] for x in l0map)
        gm_lab = tuple(l0_lab[d] for d in kept)
        y_lab = tuple(None if (x is None or sn.dims[j] == 1) else gm_lab[x] for j, x in enumerate(ymap))
        for a, b in zip(sub_lab, y_lab):
            _need((b is None) if a == key else a == b)
        e_lab = tuple(None if (x is None or e.dims[j] == 1) else sub_lab[x] for j, x in enumerate(smap))
        _need(key in e_lab)
        roles = {"max": ybase, "exp": eid, **roles}
        return {"dot1": dot1, "key": key, "e_lab": e_lab, "scale": scale, "masks": masks,
                "roles": roles, "l_lab": l_lab, "lbase": lbase}

    def _sum_of(self, nid: int, eid: int, e_lab, key, path: set[int]):
        """``nid`` (through layout ops) is reduce-add over the key of exp ``eid``: its labels."""
        f, N = self.f, self.N
        rid, rmap = f.trace(nid, path)
        r = N[rid]
        _need(r.opcode == "reduce" and r.attrs.get("reducer") == "+" and len(r.attrs["dimensions"]) == 1)
        ebase, emap = f.trace(r.operands[0], path)
        _need(f.same(ebase, eid))
        op_lab = tuple(None if x is None else e_lab[x] for x in emap)
        red = r.attrs["dimensions"][0]
        _need(op_lab[red] == key)
        sd_lab = tuple(op_lab[d] for d in range(len(op_lab)) if d != red)
        nd = N[nid]
        return rid, tuple(None if (x is None or nd.dims[j] == 1) else sd_lab[x] for j, x in enumerate(rmap))

    def _normalizer(self, nid: int, eid: int, e_lab, key, path: set[int]):
        """``nid`` is SD or 1/SD broadcast: (sum node, labels, reciprocal?)."""
        f, N = self.f, self.N
        base, m = f.trace(nid)
        b = N[base]
        if b.opcode == "divide" and f.scalar_const(b.operands[0]) == 1.0:
            f.trace(nid, path)
            f.trace(b.operands[0], path)
            rid, lab = self._sum_of(b.operands[1], eid, e_lab, key, path)
            nd = N[nid]
            return rid, tuple(None if (x is None or nd.dims[j] == 1) else lab[x] for j, x in enumerate(m)), True
        rid, lab = self._sum_of(nid, eid, e_lab, key, path)
        return rid, lab, False

    @staticmethod
    def _division(n: _Node):
        """For ``divide(x, d)`` or ``multiply(x, 1/d)``: yields (x operand, d operand, reciprocal)."""
        if n.opcode == "divide":
            yield n.operands[0], n.operands[1], False
        elif n.opcode == "multiply":
            yield n.operands[0], n.operands[1], True
            yield n.operands[1], n.operands[0], True

    def _match_side(self, dot2: _Node, side: int, a_dims, v_dims) -> dict:
        f, N = self.f, self.N
        a_batch, a_contr = a_dims
        v_batch, v_contr = v_dims
        _need(len(a_contr) == 1 and len(v_contr) == 1)
        path: set[int] = {dot2.id}
        a0 = dot2.operands[side]
        abase, amap = f.trace(a0, path)
        a = N[abase]
        reciprocal = False
        sd_id = None
        deferred = False
        if a.opcode == "exponential":
            eid, emap_from_a = abase, None
            deferred = True
        else:
            _need(a.opcode in ("divide", "multiply"))
            found = None
            for x, d, recip in self._division(a):
                xb, xm = f.trace(x)
                if N[xb].opcode == "exponential":
                    found = (x, d, recip, xb, xm)
                    break
            _need(found is not None)
            x, d, recip, eid, xm = found
            f.trace(x, path)
            emap_from_a = xm
        core = self._softmax_core(eid, path)
        key, e_lab = core["key"], core["e_lab"]
        ad = a.dims
        if deferred:
            a_lab = e_lab
        else:
            a_lab = tuple(None if (xx is None or ad[j] == 1) else e_lab[xx] for j, xx in enumerate(emap_from_a))
            sd_id, d_lab, is_recip = self._normalizer(d, eid, e_lab, key, path)
            _need(is_recip == recip)  # multiply needs 1/SD, divide needs SD
            reciprocal = recip
            for la, ld in zip(a_lab, d_lab):
                _need((ld is None) if la == key else la == ld)
            _need(all(l in d_lab for l in a_lab if l not in (None, key)))
        a0_lab = tuple(None if (xx is None or N[a0].dims[j] == 1) else a_lab[xx] for j, xx in enumerate(amap))
        s = N[core["dot1"]]
        s_batch = len(s.attrs["dot"][0])
        batch_axes = {j for j in range(s_batch) if s.dims[j] > 1}
        (key_side,) = [sd for sd in (0, 1) if key in self._free_dims(s, sd)]
        q_axes = {j for j in self._free_dims(s, 1 - key_side) if s.dims[j] > 1}
        _need(len([j for j in self._free_dims(s, key_side) if s.dims[j] > 1]) == 1)
        # A x V: contract the key, batch over S's batch dims, keep the query dims.
        _need(a0_lab[a_contr[0]] == key)
        _need({a0_lab[d] for d in a_batch} - {None} == batch_axes)
        a_free = [d for d in range(len(a0_lab)) if d not in a_batch and d not in a_contr]
        _need({a0_lab[d] for d in a_free} - {None} == q_axes)
        v = N[dot2.operands[1 - side]]
        _need(v.dims[v_contr[0]] == s.dims[key])
        v_free = [d for d in range(len(v.dims)) if d not in v_batch and d not in v_contr]
        out_id = dot2.id
        roles = {"qk": core["dot1"], **core["roles"], "av": dot2.id}
        if deferred:
            out_id, sd_id, reciprocal = self._deferred_division(dot2, side, a0_lab, a_batch, a_free,
                                                                eid, e_lab, key, path)
        roles["sum"] = sd_id
        roles["divide"] = out_id if deferred else abase
        s_lab = tuple(None if dd == 1 else j for j, dd in enumerate(s.dims))
        causal = any(self._causal(pid, tuple(None if x is None else s_lab[x] for x in pm), keep, key, q_axes)
                     for pid, pm, keep in core["masks"])
        _, lhs_c, _, rhs_c = s.attrs["dot"]
        q_op, k_op = s.operands[1 - key_side], s.operands[key_side]
        q_contr = (lhs_c if key_side == 1 else rhs_c)
        return {
            "path": path, "roles": roles, "out": out_id, "deferred": deferred,
            "reciprocal": reciprocal, "q": q_op, "k": k_op, "v": v.id,
            "batch_dims": tuple(s.dims[j] for j in range(s_batch)),
            "P": math.prod(s.dims[j] for j in self._free_dims(s, 1 - key_side)),
            "M": s.dims[key], "E": math.prod(N[q_op].dims[d] for d in q_contr),
            "F": math.prod(v.dims[d] for d in v_free),
            "causal": causal, "masked": bool(core["masks"]), "scale": core["scale"],
            "dtype": N[f.trace(q_op)[0]].dtype, "score_dtype": s.dtype,
        }

    def _free_dims(self, s: _Node, side: int) -> list[int]:
        """Dims of the dot output ``s`` that come from operand ``side``'s free dims.

        XLA orders a dot's output as batch dims, lhs free dims, rhs free dims.
        """
        lb, lc, _, _ = s.attrs["dot"]
        nb = len(lb)
        n_lhs_free = len(self.N[s.operands[0]].dims) - nb - len(lc)
        if side == 0:
            return list(range(nb, nb + n_lhs_free))
        return list(range(nb + n_lhs_free, len(s.dims)))

    def _causal(self, pid: int, labels, keep, key: int, q_axes: set[int], depth: int = 0) -> bool:
        """Does mask ``pid`` (labels per dim) contain a ``key <= query`` iota conjunct?

        ``keep`` True: the select keeps scores where the predicate holds; False: where it does not
        (then the predicate must be the ``key > query`` complement); None: an additive bias.
        """
        if depth > 8:
            return False
        f, N = self.f, self.N
        base, lab = self._base_labels(pid, labels)
        b = N[base]
        if keep is None:  # bias = select(p, 0, -big) / select(p, -big, 0)
            if b.opcode != "select":
                return False
            c1, c2 = f.scalar_const(b.operands[1]), f.scalar_const(b.operands[2])
            if c1 == 0 and c2 is not None and c2 < 0:
                return self._causal(b.operands[0], lab, True, key, q_axes, depth + 1)
            if c2 == 0 and c1 is not None and c1 < 0:
                return self._causal(b.operands[0], lab, False, key, q_axes, depth + 1)
            return False
        if keep and b.opcode == "and":
            return any(self._causal(o, lab, True, key, q_axes, depth + 1) for o in b.operands)
        if keep and b.opcode == "select" and f.scalar_const(b.operands[2]) == 0.0:
            return any(self._causal(o, lab, True, key, q_axes, depth + 1) for o in b.operands[:2])
        if b.opcode == "not":
            return self._causal(b.operands[0], lab, not keep, key, q_axes, depth + 1)
        if b.opcode != "compare":
            return False
        ax = [self._iota_axis(o, lab) for o in b.operands]
        d = b.attrs.get("direction")
        if keep is False:
            d = {"GE": "LT", "GT": "LE", "LE": "GT", "LT": "GE"}.get(d)
        if ax[0] in q_axes and ax[1] == key:
            return d in ("GE", "GT")
        if ax[0] == key and ax[1] in q_axes:
            return d in ("LE", "LT")
        return False

    def _base_labels(self, nid: int, labels) -> tuple[int, tuple]:
        base, m = self.f.trace(nid)
        lab: list = [None] * len(self.N[base].dims)
        for j, x in enumerate(m):
            if x is not None and labels[j] is not None:
                lab[x] = labels[j]
        return base, tuple(lab)

    def _iota_axis(self, nid: int, labels):
        base, lab = self._base_labels(nid, labels)
        b = self.N[base]
        if b.opcode != "iota":
            return None
        return lab[b.attrs["dimensions"][0]]

    def _deferred_division(self, dot2: _Node, side, a0_lab, a_batch, a_free, eid, e_lab, key, path):
        """Find ``AV = SNV / SD`` after the dot: (divide node, sum node, reciprocal)."""
        f, N = self.f, self.N
        lb, _, rb, _ = dot2.attrs["dot"]
        v = N[dot2.operands[1 - side]]
        nb = len(lb)
        # Labels of SNV: batch dims, lhs free, rhs free; V's free dims get the label "f".
        out_lab: list = []
        a_b = lb if side == 0 else rb
        out_lab += [a0_lab[d] for d in a_b]
        v_free_lab = ["f"] * (len(v.dims) - nb - 1)
        a_free_lab = [a0_lab[d] for d in a_free]
        out_lab += (a_free_lab + v_free_lab) if side == 0 else (v_free_lab + a_free_lab)
        _need(len(out_lab) == len(dot2.dims))
        out_lab = [None if dot2.dims[j] == 1 else x for j, x in enumerate(out_lab)]
        frontier = [dot2.id]
        seen = {dot2.id}
        for _ in range(12):
            nxt = []
            for nid in frontier:
                for u in f.users[nid]:
                    if u in seen:
                        continue
                    seen.add(u)
                    un = N[u]
                    if un.opcode in _LAYOUT_OPS:
                        nxt.append(u)
                    elif un.opcode in ("divide", "multiply"):
                        for x, d, recip in self._division(un):
                            xb, xlab = f.labels(x, out_lab)
                            if xb != dot2.id:
                                continue
                            try:
                                p = set(path)
                                sd, d_lab, is_recip = self._normalizer(d, eid, e_lab, key, p)
                            except _NoMatch:
                                continue
                            if is_recip != recip:
                                continue
                            ok = all((ld is None) if lx == "f" else lx == ld for lx, ld in zip(xlab, d_lab))
                            if ok and all(l in d_lab for l in xlab if l not in (None, "f")):
                                f.trace(x, p)
                                path |= p | {u}
                                return u, sd, recip
            frontier = nxt
        raise _NoMatch


# --------------------------------------------------------------------------------------------
# Public API: detection


def _read_hlo(graph_or_hlo, stage: str) -> tuple[str, str, Graph | None]:
    """(HLO text, where, graph) from a Graph, HLO text, a file or an XLA dump folder."""
    if isinstance(graph_or_hlo, Graph):
        g = graph_or_hlo
        path = g.info.get("path") or (g.source if os.path.isfile(str(g.source)) else None)
        if not path:
            raise BadInputError(f"detect_attention: graph {g.name!r} has no HLO source file "
                                f"(source {g.source!r}); pass the HLO text or its path instead")
        return Path(path).read_text(), str(path), g
    if isinstance(graph_or_hlo, str) and "HloModule" in graph_or_hlo and (
            "\n" in graph_or_hlo or "{" in graph_or_hlo or not os.path.exists(graph_or_hlo)):
        return graph_or_hlo, "<string>", None
    if not isinstance(graph_or_hlo, (str, os.PathLike)):
        raise BadInputError(f"detect_attention expects a Graph, HLO text or a path, got "
                            f"{type(graph_or_hlo).__name__}")
    if stage not in _STAGE_SUFFIX:
        raise BadInputError(f"stage must be 'after' or 'before', got {stage!r}")
    path = Path(graph_or_hlo)
    try:
        if path.is_dir():
            path, _ = _pick_dump_file(path, stage)
        return path.read_text(), str(path), None
    except HloImportError as e:
        raise BadInputError(str(e)) from None
    except UnicodeDecodeError as e:
        raise BadInputError(f"{path}: not an HLO text file (byte 0x{e.object[e.start]:02x} at "
                            f"offset {e.start} is not UTF-8)") from None
    except OSError as e:
        raise BadInputError(f"{path}: cannot read HLO file: {type(e).__name__}: "
                            f"{e.strerror or e}") from None


def _inst_bytes(shape) -> int:
    if shape.element_type == _hlo_proto.TUPLE_TYPE:
        return sum(_inst_bytes(s) for s in shape.tuple_shapes)
    bits = _hlo_proto.PRIMITIVE_TYPES.get(shape.element_type, ("?", 0))[1]
    return (math.prod(shape.dimensions) * bits + 7) // 8


def _program_bytes(flat: _Flat, ops: Sequence[str]) -> int:
    """Unique input bytes + output bytes of each ENTRY operator in ``ops``."""
    by_id = {i.id: i for i in flat.entry_insts.values()}
    total = 0
    for name in ops:
        inst = flat.entry_insts[name]
        seen: set[int] = set()
        for o in inst.operand_ids:
            src = by_id[o]
            while src.opcode == "bitcast":  # a bitcast is its operand's buffer
                src = by_id[src.operand_ids[0]]
            if src.id not in seen:
                seen.add(src.id)
                total += _inst_bytes(by_id[o].shape)
        total += _inst_bytes(inst.shape)
    return total


def _outside(flat: _Flat, nid: int, inside: set[str]) -> str:
    """The ENTRY instruction whose value enters the subgraph on the way back from ``nid``."""
    N = flat.nodes
    n = N[nid]
    for _ in range(10_000):
        if n.entry not in inside:
            return n.entry
        ops = [o for o in n.operands if N[o].opcode != "constant"]
        if not ops:
            return n.entry
        n = N[max(ops, key=lambda o: (math.prod(N[o].dims), -o))]
    return n.entry


def detect_attention(graph_or_hlo, *, stage: str = "after") -> list[AttentionMatch]:
    """Find every ``softmax(Q K^T) V`` subgraph of an HLO module.

    Args:
      graph_or_hlo: a :class:`Graph` imported from a file (its ``info["path"]`` is re-read),
        HLO text, an HLO file or an XLA dump folder (``stage`` picks the file, as
        :func:`memmap.ir.import_hlo`).

    Returns:
      Matches in program order (``[]`` when there is none). With a Graph, ``op_names`` are
      checked to be operators of that graph.

    Raises:
      BadInputError: unreadable input or a module XLA's parser rejects.
    """
    text, where, graph = _read_hlo(graph_or_hlo, stage)
    try:
        module = parse_hlo_text(text, where, None if where == "<string>" else where)
    except HloImportError as e:
        raise BadInputError(str(e)) from None
    proto = _ModuleProto()
    proto.ParseFromString(module.as_serialized_hlo_module_proto())
    check_shapes(proto, lambda reason: BadInputError(f"{where}: {reason}"))
    flat = _Flat(proto, where)
    matcher = _Matcher(flat)
    found = []
    for n in flat.nodes:
        if n.opcode != "dot":
            continue
        try:
            found.append(matcher.match(n.id))
        except _NoMatch:
            continue
    op_set = set(graph.ops[i].name for i in range(graph.num_ops)) if graph is not None else None
    matches = []
    passes_of: dict[str, int] = {}
    for m in sorted(found, key=lambda m: (flat.entry_pos[flat.nodes[m["out"]].entry], m["out"])):
        N = flat.nodes
        entries = {N[i].entry for i in m["path"]}
        ops = sorted((e for e in entries
                      if flat.entry_insts[e].opcode not in ALIAS_OPCODES | {"parameter", "constant"}),
                     key=flat.entry_pos.__getitem__)
        if op_set is not None:
            missing = [o for o in ops if o not in op_set]
            if missing:
                raise BadInputError(f"{where}: attention operator {missing[0]!r} is not an operator "
                                    f"of graph {graph.name!r}; was the graph imported from this file?")
        cls = CLASS_3PASS_DEFERRED if m["deferred"] else CLASS_3PASS
        if cls not in passes_of:
            passes_of[cls] = analyze_passes(ATTENTION_CASCADES[cls]()).num_passes
        roles = {r: N[i].entry for r, i in m["roles"].items()}
        matches.append(AttentionMatch(
            index=len(matches),
            op_names=tuple(ops),
            roles=roles,
            instructions={r: N[i].name for r, i in m["roles"].items()},
            q_name=_outside(flat, m["q"], entries),
            k_name=_outside(flat, m["k"], entries),
            v_name=_outside(flat, m["v"], entries),
            output_name=N[m["out"]].entry,
            batch_dims=m["batch_dims"],
            query_len=m["P"], key_len=m["M"], qk_head_dim=m["E"], v_head_dim=m["F"],
            causal=m["causal"], masked=m["masked"], scale=float(m["scale"]),
            dtype=m["dtype"], score_dtype=m["score_dtype"],
            cascade_class=cls, passes=passes_of[cls], reciprocal=m["reciprocal"],
            program_dram_bytes=_program_bytes(flat, ops),
        ))
    return matches


# --------------------------------------------------------------------------------------------
# 1-pass plan


@dataclasses.dataclass(frozen=True)
class AttentionPlan:
    """The 1-pass (FuseMax / FlashAttention-2) mapping of one match on one target.

    Loop nest per (batch, head): ``p2 -> m1 -> (p1, p0, m0)``: a block of ``P1 x P0`` queries
    stays in the scratchpad with its Q rows, running state (RM, RD, RNV from the 1-pass cascade)
    and output rows while K/V stream through in tiles of ``M0`` keys. The ``P0 x M0`` score tile
    stays in the compute array (FuseMax's PE registers), as in the paper.

    Attributes:
      match_index: :attr:`AttentionMatch.index`.
      m0: keys per K/V tile; m1: K/V tiles per query block (ceil(M / M0)).
      p0, p1: query tile and tiles per block; p2: query blocks (ceil(P / (P1 P0))).
      working_set_bytes: aligned bytes of the buffers below; capacity_bytes: the target's.
      buffers: name -> aligned bytes (``k_tile``, ``v_tile``, ``q_block``, ``state_RM``,
        ``state_RD``, ``state_RNV``, ``out_block``).
      dram_bytes: DRAM traffic of the 1-pass mapping for the whole match (all batch x heads):
        Q read once, K and V once per query block (causal: only tiles at or below the diagonal),
        AV written once.
      program_dram_bytes: the program's own traffic (``AttentionMatch.program_dram_bytes``).
      score_bytes: one ``[B, H, P, M]`` score tensor, the size of each softmax intermediate the
        program moves through memory.
      model_cycles, model_time_s, model_detail: ``memmap.cascade.model.model_fusemax`` for this
        shape with the target's buffer and bandwidth (FuseMax arrays and clock), or None with the
        reason in ``model_detail``.
    """

    match_index: int
    m0: int
    m1: int
    p0: int
    p1: int
    p2: int
    working_set_bytes: int
    capacity_bytes: int
    buffers: Mapping[str, int]
    dram_bytes: int
    program_dram_bytes: int
    score_bytes: int
    model_cycles: float | None
    model_time_s: float | None
    model_detail: str

    @property
    def queries_per_block(self) -> int:
        return self.p0 * self.p1

    @property
    def traffic_ratio(self) -> float:
        """program_dram_bytes / dram_bytes (> 1: the 1-pass mapping moves less)."""
        return self.program_dram_bytes / self.dram_bytes if self.dram_bytes else math.inf

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["buffers"] = dict(self.buffers)
        d.update(queries_per_block=self.queries_per_block, traffic_ratio=self.traffic_ratio)
        return d


def _tile_candidates(extent: int, max_tile: int) -> list[int]:
    top = min(extent, max_tile)
    c = {top}
    k = 1
    while k < top:
        c.add(k)
        k *= 2
    return sorted(c, reverse=True)


def _working_set(match: AttentionMatch, m0: int, q: int, align: int,
                 state_words: Mapping[str, int]) -> dict[str, int]:
    b = match.dtype_bytes
    E, F = match.qk_head_dim, match.v_head_dim
    bufs = {"k_tile": align_up(m0 * E * b, align), "v_tile": align_up(m0 * F * b, align),
            "q_block": align_up(q * E * b, align)}
    for t, w in state_words.items():
        bufs[f"state_{t}"] = align_up(q * w * b, align)
    bufs["out_block"] = align_up(q * F * b, align)
    return bufs


def _state_words(match: AttentionMatch) -> dict[str, int]:
    """Words per query of each running state of the 1-pass cascade (RM: 1, RD: 1, RNV: F)."""
    one_pass = attention_1pass()
    fiber = one_pass.fiber("m")
    ext = {"E": match.qk_head_dim, "F": match.v_head_dim, "P": match.query_len, "M": match.key_len}
    return {t: math.prod(extent_of(r, ext) for r in one_pass.tensor_ranks(t)
                         if r != "p" and r not in fiber)
            for t in sorted(one_pass.state_tensors)}


def _kv_keys_read(match: AttentionMatch, m0: int, q: int) -> int:
    """Keys of K/V read per (batch, head) over all query blocks (whole tiles)."""
    P, M = match.query_len, match.key_len
    p2 = -(-P // q)
    if not match.causal:
        return p2 * M
    total = 0
    for j in range(p2):
        last_query = min(P, (j + 1) * q) - 1
        visible = min(M, last_query + 1)  # the detected mask: query i sees keys 0 .. i
        total += min(M, -(-visible // m0) * m0)
    return total


def plan_attention(match: AttentionMatch, target: Target | str, *, max_tile: int = 256) -> AttentionPlan:
    """Tile ``match`` for the 1-pass cascade so its working set fits ``target``'s scratchpad.

    Searched: M0 and P0 in {min(extent, max_tile)} and the powers of two below it (256 is
    FuseMax's array width), P1 the largest that fits (at most ceil(P / P0)). Chosen: least DRAM
    traffic, then the largest M0, then the largest P0. Buffers are aligned separately to
    ``target.alignment_bytes``, in the program's dtype.

    Raises:
      InfeasibleError: even M0 = P0 = P1 = 1 does not fit.
    """
    if isinstance(target, str):
        target = get_target(target)
    one_pass = attention_1pass()
    if analyze_passes(one_pass).num_passes != 1:
        raise ValueError(f"plan_attention: cascade {one_pass.name!r} is not 1-pass")
    state_words = _state_words(match)
    cap, align = target.capacity_bytes, target.alignment_bytes
    P, M, E, F = match.query_len, match.key_len, match.qk_head_dim, match.v_head_dim
    best = None
    for m0 in _tile_candidates(M, max_tile):
        for p0 in _tile_candidates(P, max_tile):
            if sum(_working_set(match, m0, p0, align, state_words).values()) > cap:
                continue
            lo, hi = 1, -(-P // p0)
            while lo < hi:  # largest p1 that fits (the working set grows with p1)
                mid = (lo + hi + 1) // 2
                if sum(_working_set(match, m0, mid * p0, align, state_words).values()) <= cap:
                    lo = mid
                else:
                    hi = mid - 1
            q = lo * p0
            words = P * E + P * F + _kv_keys_read(match, m0, q) * (E + F)
            key = (words, -m0, -p0)
            if best is None or key < best[0]:
                best = (key, m0, p0, lo)
    if best is None:
        need = sum(_working_set(match, 1, 1, align, state_words).values())
        raise InfeasibleError(
            f"infeasible: attention {match.index} (output {match.output_name!r}) needs at least "
            f"{need} bytes ({format_bytes(need)}) for one key and one query of the 1-pass mapping "
            f"but the scratchpad of {target.name!r} has {cap} bytes",
            (Culprit(match.output_name, "attention", need),), cap)
    (words, _, _), m0, p0, p1 = best
    bufs = _working_set(match, m0, p0 * p1, align, state_words)
    cycles, time_s, detail = _model(match, target)
    return AttentionPlan(
        match_index=match.index, m0=m0, m1=-(-M // m0), p0=p0, p1=p1, p2=-(-P // (p0 * p1)),
        working_set_bytes=sum(bufs.values()), capacity_bytes=cap, buffers=bufs,
        dram_bytes=words * match.instances * match.dtype_bytes,
        program_dram_bytes=match.program_dram_bytes, score_bytes=match.score_bytes,
        model_cycles=cycles, model_time_s=time_s, model_detail=detail)


def _model(match: AttentionMatch, target: Target) -> tuple[float | None, float | None, str]:
    """FuseMax spatial-array model for this shape, when it applies (P = M, E = F)."""
    from memmap.cascade.model import SpatialArch, TransformerModel, model_fusemax

    if match.query_len != match.key_len or match.qk_head_dim != match.v_head_dim:
        return None, None, "not modelled: model_fusemax needs P = M and E = F"
    heads = match.heads
    tm = TransformerModel(f"detected-{match.index}", match.qk_head_dim * heads, heads,
                          4 * match.qk_head_dim * heads)
    arch = SpatialArch(target.name, buffer_bytes=target.capacity_bytes,
                       dram_bandwidth_bytes_per_s=target.offchip_bandwidth_bytes_per_s,
                       word_bytes=match.dtype_bytes)
    try:
        r = model_fusemax(tm, match.key_len, batch=match.batch, arch=arch)
    except ValueError as e:
        return None, None, f"not modelled: {e}"
    return r.cycles, r.cycles / arch.clock_hz, r.detail


# --------------------------------------------------------------------------------------------
# Report and CLI


def _make_target(target: Target | str | None, scratchpad: str | int | None) -> Target:
    if isinstance(target, Target):
        tgt = target
    else:
        tgt = get_target(target or "fusemax")
    if scratchpad is not None:
        tgt = tgt.with_capacity(parse_size(scratchpad))
    return tgt


def report_attention(graph_path_or_text, target: Target | str = "fusemax", *,
                     stage: str = "after", scratchpad: str | int | None = None) -> dict:
    """Detect and plan every attention of a module; a JSON-ready dict.

    Keys: ``source``, ``target`` (name, capacity_bytes, alignment_bytes), ``num_matches``,
    ``cascade_classes`` (class -> passes), ``matches`` (each :meth:`AttentionMatch.to_dict` plus
    ``plan`` (:meth:`AttentionPlan.to_dict`, or None) and ``infeasible`` (the message, or None)),
    ``totals`` (``program_dram_bytes``, ``one_pass_dram_bytes`` over the feasible matches).
    """
    tgt = _make_target(target, scratchpad)
    matches = detect_attention(graph_path_or_text, stage=stage)
    rows = []
    prog = one = 0
    for m in matches:
        row = m.to_dict()
        try:
            p = plan_attention(m, tgt)
            row["plan"], row["infeasible"] = p.to_dict(), None
            prog += p.program_dram_bytes
            one += p.dram_bytes
        except InfeasibleError as e:
            row["plan"], row["infeasible"] = None, str(e)
        rows.append(row)
    src = graph_path_or_text
    if isinstance(src, Graph):
        src = src.info.get("path") or src.source
    elif isinstance(src, str) and "HloModule" in src and not os.path.exists(src):
        src = "<string>"
    return {
        "source": str(src),
        "target": {"name": tgt.name, "capacity_bytes": tgt.capacity_bytes,
                   "alignment_bytes": tgt.alignment_bytes},
        "num_matches": len(matches),
        "cascade_classes": {m.cascade_class: m.passes for m in matches},
        "matches": rows,
        "totals": {"program_dram_bytes": prog, "one_pass_dram_bytes": one},
    }


def add_detect_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``memmap cascade detect``."""
    p.add_argument("input", help="HLO text file, XLA dump folder, or '-' for HLO text on stdin")
    p.add_argument("--stage", choices=["after", "before"], default="after",
                   help="for dump folders: *after_optimizations.txt (default) or *before_optimizations.txt")
    p.add_argument("--target", default=None, help="target preset (default fusemax)")
    p.add_argument("--scratchpad", default=None, help="scratchpad capacity, e.g. 64KiB (overrides the preset's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run_detect(args: argparse.Namespace) -> int:
    """Run ``memmap cascade detect`` on parsed arguments; returns the exit status."""
    try:
        source = args.input
        if source == "-":
            from memmap.pipeline import read_stdin_text

            source = read_stdin_text()
            if "HloModule" not in source:
                raise BadInputError("<stdin>: not HLO module text (no 'HloModule' header)")
        rep = report_attention(source, args.target, stage=args.stage, scratchpad=args.scratchpad)
    except MemmapError as e:
        print(f"memmap cascade detect: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return e.exit_code
    status = EXIT_INFEASIBLE if any(r["infeasible"] for r in rep["matches"]) else EXIT_OK
    if args.json:
        print(json.dumps(rep, indent=2))
        return status
    from rich.console import Console
    from rich.table import Table

    t = rep["target"]
    table = Table(title=f"Attention in {rep['source']} on {t['name']} ({format_bytes(t['capacity_bytes'])})")
    for col in ("#", "output", "B,H,P,M,E,F", "causal", "cascade", "M0; P1xP0", "working set",
                "DRAM 1-pass / program"):
        table.add_column(col)
    for r in rep["matches"]:
        p = r["plan"]
        shape = ",".join(str(r[k]) for k in ("batch", "heads", "query_len", "key_len", "qk_head_dim",
                                               "v_head_dim"))
        tiles = ("-", "infeasible") if p is None else (
            f"{p['m0']}; {p['p1']}x{p['p0']}", format_bytes(p["working_set_bytes"]))
        dram = format_bytes(r["program_dram_bytes"]) if p is None else (
            f"{format_bytes(p['dram_bytes'])} / {format_bytes(r['program_dram_bytes'])}")
        table.add_row(str(r["index"]), r["output_name"], shape, "yes" if r["causal"] else "no",
                      f"{r['cascade_class']} ({r['passes']} passes)", *tiles, dram)
    console = Console()
    if not console.is_terminal:  # pipes and files: do not squeeze the table into 80 columns
        console = Console(width=160)
    if not rep["matches"]:
        console.print(f"no softmax(Q K^T) V subgraph found in {rep['source']}")
        return status
    console.print(table)
    for r in rep["matches"]:
        if r["infeasible"]:
            console.print(r["infeasible"])
    return status


def main(argv: Sequence[str]) -> int:
    """``memmap cascade detect INPUT [--target NAME | --scratchpad SIZE] [--json]``."""
    parser = argparse.ArgumentParser(prog="memmap cascade detect",
                                     description="find softmax(Q K^T) V and plan it 1-pass")
    add_detect_arguments(parser)
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return int(e.code or 0) if e.code in (0, None) else EXIT_BAD_INPUT
    return run_detect(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
