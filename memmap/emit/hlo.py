"""Annotated HLO: a verified plan written back into its HLO module (format in docs/emit.md).

The module says what the plan says the way XLA's memory space assignment writes its decisions:

* every buffer resident in the scratchpad has memory space ``S(1)`` in its layout
  (``f32[8,128]{1,0:S(1)}``): an operator's result leaf created in the scratchpad, every copy
  into it, and the state of a ``while`` loop whose result lives there (the loop's body and
  condition parameters, body root and the buffers that flow into it);
* every load, reload, spill and writeback is a ``copy-start`` / ``copy-done`` pair. A load or
  reload's ``copy-start`` is issued just before the operator of its planned step and its
  ``copy-done`` sits just before the first operator that reads the copy (a prefetch's pair spans
  the operators in between); a spill or writeback's ``copy-start`` follows the operator of its
  planned step and its ``copy-done`` follows the last step of the residency it copies from;
* every consumer reads the copy the plan says (the scratchpad copy while the value is resident,
  the off-chip one otherwise); the program result reads the off-chip copies;
* the ENTRY is ``is_scheduled=true`` in the planned order (every other non-fusion computation
  keeps XLA's sequence, or gets its instruction order when the input was not scheduled);
* what XLA has no syntax for is in frontend attributes (``memmap_*`` keys): scratchpad offsets
  and residency ends, the problem (target, mode), and what is needed to rebuild the input graph
  with identical ids. Instructions memmap inserts carry ``memmap_inserted``.

:func:`emit_hlo` refuses a plan that does not verify. :mod:`memmap.emit.hlo_plan` reads the plan
back (``import_plan``); :func:`executable_variant` lowers the async pairs to synchronous
``copy`` so that XLA:CPU compiles the module (:func:`run_hlo_on_cpu`).
"""

from __future__ import annotations

import bisect
import json
import re
from collections import defaultdict
from collections.abc import Sequence

from memmap.cost import residency_lookup
from memmap.errors import BadInputError, MemmapError, PlanError
from memmap.ir.graph import Graph
from memmap.ir.hlo import ALIAS_OPCODES, HLO_TEXT_INFO_KEY, HloImportError, parse_hlo_text, shape_leaves
from memmap.ir.hlo_proto import TUPLE_TYPE, parse_module_proto
from memmap.ir.serialize import same_structure
from memmap.plan import Plan
from memmap.verify import verify_plan

__all__ = [
    "ANNOTATED_FORMAT", "ANNOTATED_FORMAT_VERSION", "EmitError", "SCRATCHPAD_MEMORY_SPACE",
    "emit_hlo", "executable_variant", "has_hlo_module", "run_hlo_on_cpu",
]

ANNOTATED_FORMAT = "memmap-annotated-hlo"
ANNOTATED_FORMAT_VERSION = 1
SCRATCHPAD_MEMORY_SPACE = 1   # XLA's alternate memory space: the scratchpad
_U32 = 8                      # PrimitiveType U32: the copy-start context

# Frontend attribute keys (docs/emit.md).
ATTR_PLAN = "memmap_plan"              # module: format, solver, status, mode, target (JSON)
ATTR_GRAPH = "memmap_graph"            # module: what rebuilds the input graph (JSON)
ATTR_SCRATCHPAD = "memmap_scratchpad"  # "{index}:offset:end;...": residencies starting here
ATTR_TEMPORARY = "memmap_temporary"    # "offset:end": the operator's temporary (body peak)
ATTR_INSERTED = "memmap_inserted"      # load | reload | spill | writeback | alias
ATTR_VALUE = "memmap_value"            # on a copy-start: the value it copies
ATTR_OPERANDS = "memmap_operands"      # "j=name;...": operands memmap re-pointed to a copy
MEMMAP_ATTRS = (ATTR_PLAN, ATTR_GRAPH, ATTR_SCRATCHPAD, ATTR_TEMPORARY, ATTR_INSERTED,
                ATTR_VALUE, ATTR_OPERANDS)
INSERTED_KINDS = ("load", "reload", "spill", "writeback", "alias")


class EmitError(BadInputError):
    """The plan cannot be written into this graph's HLO (no HLO module, a different graph, a
    schedule that breaks a control dependency). One line."""


def has_hlo_module(graph: Graph) -> bool:
    """Was ``graph`` imported from HLO (so that :func:`emit_hlo` can annotate its module)? Graphs
    from plan.json, torch programs or GraphBuilder have none."""
    return bool(graph.info.get(HLO_TEXT_INFO_KEY))


def emit_hlo(graph: Graph, plan: Plan) -> str:
    """Annotated HLO text of ``graph``'s module carrying ``plan`` (see the module docstring).

    Args:
      graph: an imported HLO graph (``memmap.import_hlo`` / ``from_jax`` keep the module's
        text in ``graph.info["hlo_text"]``).
      plan: a plan for ``graph`` (``plan.problem.graph`` has the same structure).

    Raises:
      PlanError: the plan does not verify (nothing is emitted).
      EmitError: the graph has no HLO module, or the plan is for another graph.

    Example::

        g = memmap.import_hlo("model.hlo")
        plan = memmap.optimize(g, scratchpad="4MiB")
        text = memmap.emit_hlo(g, plan)
        assert memmap.import_plan(text).transfers == plan.transfers
    """
    if not has_hlo_module(graph):
        raise EmitError(f"graph {graph.name!r} ({graph.source}) has no HLO module to annotate; "
                        f"import it with memmap.import_hlo or memmap.from_jax")
    text = graph.info[HLO_TEXT_INFO_KEY]
    diff = same_structure(graph, plan.problem.graph)
    if diff:
        raise EmitError(f"the plan was made for a different graph than {graph.name!r}: {diff}")
    result = verify_plan(plan, graph=graph)
    if not result.ok:
        raise PlanError(f"the plan does not verify, no annotated HLO emitted: {result.reason}")
    try:
        proto = parse_module_proto(parse_hlo_text(text, graph.source).as_serialized_hlo_module_proto())
    except HloImportError as e:
        raise EmitError(str(e)) from None
    if ATTR_PLAN in proto.frontend_attributes.map:
        raise EmitError(f"{graph.source}: the module is already annotated by memmap; plan its "
                        f"original module (or read this plan back with memmap.import_plan)")
    _Annotator(graph, plan, proto).run()
    return print_module(proto, elide_large_constants=elides_constants(text))


def elides_constants(text: str) -> bool:
    """Did XLA print this module with large constants elided (``constant({...})``, as dump files
    do)? The parser then made up placeholder values, which emission must not print."""
    return "constant({...})" in text


def print_module(proto, *, elide_large_constants: bool = False, check: bool = True) -> str:
    """HLO text of a (subset-decoded) module proto, printed by XLA; with ``check``, re-parsed by
    XLA's parser and its schedule verified (``HloSchedule.verify()``): an internal error if
    either refuses."""
    from jaxlib import _hlo

    try:
        module = _hlo.HloModule.from_serialized_hlo_module_proto(proto.SerializeToString())
        opts = _hlo.HloPrintOptions()
        opts.print_large_constants = not elide_large_constants
        text = module.to_string(opts)
        if check:
            reparsed = _hlo.hlo_module_from_text(text)
            if proto.schedule.sequences:
                reparsed.schedule().verify()
    except Exception as e:  # noqa: BLE001 - XLA's errors are RuntimeErrors with long texts
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MemmapError(f"XLA rejected the annotated module (a memmap bug): {first}") from None
    return text


# --------------------------------------------------------------------------------------------
# Shapes


def subshape(shape, index: Sequence[int]):
    """The ``ShapeProto`` at shape ``index`` of a (tuple) shape."""
    for i in index:
        shape = shape.tuple_shapes[i]
    return shape


def set_memory_space(shape, space: int) -> None:
    """Set an array shape's layout memory space (0 = default memory, 1 = scratchpad), adding the
    default layout when the shape has none."""
    if shape.element_type == TUPLE_TYPE:
        raise ValueError("a tuple shape has no memory space of its own")
    if space == 0 and not shape.HasField("layout"):
        return
    if not shape.HasField("layout"):
        shape.layout.minor_to_major.extend(reversed(range(len(shape.dimensions))))
    shape.layout.memory_space = space


def memory_space(shape) -> int:
    return shape.layout.memory_space if shape.HasField("layout") else 0


def format_index(index: Sequence[int]) -> str:
    return "{" + ",".join(str(i) for i in index) + "}"


def _name_part(text: str) -> str:
    """An HLO-identifier-safe version of a value name (``fusion.3{1,0}`` -> ``fusion.3.1.0``)."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", ".", text).strip(".") or "value"


# --------------------------------------------------------------------------------------------
# The annotator


class _Annotator:
    """Rewrites the decoded module proto in place. Refs are ``(instruction id, shape index)``;
    a copy's ref has the empty index."""

    def __init__(self, graph: Graph, plan: Plan, proto):
        self.g = graph
        self.plan = plan
        self.problem = plan.problem
        self.proto = proto
        self.comps = {c.id: c for c in proto.computations}
        self.entry = self.comps[proto.entry_computation_id]
        self.insts = {i.id: i for i in self.entry.instructions}
        self.original_order = [i.id for i in self.entry.instructions]
        self.names = {i.name for c in proto.computations for i in c.instructions}
        self.next_id = max(self.insts) + 1
        by_name = {i.name: i.id for i in self.entry.instructions}
        self.n = len(plan.schedule)
        self.pos = [0] * len(graph.ops)
        for t, o in enumerate(plan.schedule):
            self.pos[o] = t
        try:
            self.op_inst = [by_name[op.name] for op in graph.ops]
        except KeyError as e:
            raise EmitError(f"operator {e.args[0]!r} of graph {graph.name!r} is not an instruction "
                            f"of its HLO module's ENTRY") from None
        self.inst_op = {iid: o for o, iid in enumerate(self.op_inst)}
        # Value of every leaf of every ENTRY instruction, and each value's home leaf.
        self.leaf_index: dict[int, list[tuple[int, ...]]] = {}
        self.leaf_values: dict[int, tuple[int, ...]] = {}
        self.home: dict[int, tuple[int, tuple[int, ...]]] = {}
        for iid in self.original_order:
            inst = self.insts[iid]
            idx = [i for i, _ in shape_leaves(inst.shape)]
            vals = tuple(graph.hlo_values.get(inst.name, ()))
            if len(idx) != len(vals):
                raise EmitError(f"instruction {inst.name!r}: {len(idx)} shape leaves but the graph "
                                f"maps it to {len(vals)} values")
            self.leaf_index[iid] = idx
            self.leaf_values[iid] = vals
            if inst.opcode not in ALIAS_OPCODES:
                for i, v in zip(idx, vals):
                    self.home.setdefault(v, (iid, i))
        # The buffer each leaf of each instruction reads: (defining instruction, index), through
        # renames. It is the value's home except after an operator that passes an input through
        # (a while loop's loop-invariant state).
        self.leaf_source: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
        for iid in self.original_order:
            inst = self.insts[iid]
            if inst.opcode == "get-tuple-element":
                src = inst.operand_ids[0]
                self.leaf_source[iid] = [s for i, s in zip(self.leaf_index[src], self.leaf_source[src])
                                         if i[0] == inst.tuple_index]
            elif inst.opcode == "tuple":
                self.leaf_source[iid] = [s for x in inst.operand_ids for s in self.leaf_source[x]]
            elif inst.opcode in ("bitcast", "opt-barrier"):
                self.leaf_source[iid] = list(self.leaf_source[inst.operand_ids[0]])
            else:
                self.leaf_source[iid] = [(iid, i) for i in self.leaf_index[iid]]
        # The plan, per value.
        self.res: dict[int, list] = defaultdict(list)
        for r in plan.residencies:
            self.res[r.value].append(r)
        for rs in self.res.values():
            rs.sort(key=lambda r: r.start)
        self.residency_at = residency_lookup(self.res)
        self.created = {v for v, rs in self.res.items()
                        if graph.values[v].producer is not None
                        and rs[0].start == self.pos[graph.values[v].producer]}
        self.write = {t.value: t for t in plan.transfers if t.kind in ("spill", "writeback")}
        self.loads = {(t.value, t.step): t for t in plan.transfers if t.kind in ("load", "reload")}
        # Filled while annotating.
        self.res_ref: dict[tuple[int, int], tuple[int, tuple[int, ...]]] = {}
        self.spill_ref: dict[int, tuple[int, tuple[int, ...]]] = {}
        # (instruction, shape index) -> an instruction denoting that (sub)buffer: the module's own
        # get-tuple-element chains first, then memmap's.
        self.leaf_refs: dict[tuple[int, tuple[int, ...]], int] = {}
        path: dict[int, tuple[int, tuple[int, ...]]] = {}
        for iid in self.original_order:
            inst = self.insts[iid]
            if inst.opcode == "get-tuple-element":
                src = inst.operand_ids[0]
                base, index = path.get(src, (src, ()))
                path[iid] = (base, index + (inst.tuple_index,))
                if self.insts[base].opcode not in ALIAS_OPCODES:
                    self.leaf_refs.setdefault(path[iid], iid)
        self.mat_cache: dict[tuple, int] = {}
        self.new_ids: list[int] = []
        self.before: dict[int, list[int]] = defaultdict(list)       # step -> copy-starts
        self.before_done: dict[int, list[int]] = defaultdict(list)  # step -> copy-dones
        self.after: dict[int, list[int]] = defaultdict(list)
        self.after_done: dict[int, list[int]] = defaultdict(list)
        self.scratchpad: dict[int, list[str]] = defaultdict(list)

    # ---- small helpers ----------------------------------------------------------------------

    def value_name(self, v: int) -> str:
        return self.g.values[v].name

    def fresh_name(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}.{k}"
        self.names.add(name)
        return name

    def new_inst(self, name: str, opcode: str, shape, operands: Sequence[int], *,
                 attrs: dict[str, str], tuple_index: int | None = None) -> int:
        inst = self.entry.instructions.add()
        inst.name = self.fresh_name(name)
        inst.opcode = opcode
        inst.shape.CopyFrom(shape)
        inst.id = self.next_id
        self.next_id += 1
        inst.operand_ids.extend(operands)
        if tuple_index is not None:
            inst.tuple_index = tuple_index
        for k, val in attrs.items():
            inst.frontend_attributes.map[k] = val
        self.insts[inst.id] = inst
        self.new_ids.append(inst.id)
        return inst.id

    def shape_of(self, ref: tuple[int, tuple[int, ...]]):
        return subshape(self.insts[ref[0]].shape, ref[1])

    def leaf_ref(self, ref: tuple[int, tuple[int, ...]]) -> int:
        """An instruction denoting the (sub)buffer ``ref``: the instruction itself for the empty
        index, else a chain of get-tuple-element helpers (memmap_inserted="alias")."""
        iid, index = ref
        if not index:
            return iid
        got = self.leaf_refs.get(ref)
        if got is None:
            parent = self.leaf_ref((iid, index[:-1]))
            got = self.new_inst(f"memmap.gte.{self.insts[iid].name}", "get-tuple-element",
                                self.shape_of(ref), [parent], tuple_index=index[-1],
                                attrs={ATTR_INSERTED: "alias"})
            self.leaf_refs[ref] = got
        return got

    def offchip_ref(self, v: int):
        return self.spill_ref.get(v, self.home[v])

    def current(self, v: int, t: int):
        """The copy of ``v`` an operator at step ``t`` reads (``t == n``: the program result)."""
        r = self.residency_at(v, t) if t < self.n else None
        if r is not None:
            return self.res_ref[(v, r.start)]
        return self.offchip_ref(v)

    # ---- the steps ----------------------------------------------------------------------

    def run(self) -> None:
        self.set_home_spaces()
        self.add_copies()
        self.rewire_operands()
        root = self.entry.root_id
        self.entry.root_id = self.materialize(root, self.n)
        self.annotate_loops()
        for iid, entries in self.scratchpad.items():
            self.insts[iid].frontend_attributes.map[ATTR_SCRATCHPAD] = ";".join(entries)
        self.set_schedule(self.entry_sequence())
        self.set_module_attributes(self.insts[root].name if self.entry.root_id != root else None)

    def set_home_spaces(self) -> None:
        """Memory spaces of the module's own results: S(1) on an operator's result leaf created in
        the scratchpad, or passed through from an input that is resident at the operator's step
        (a while loop's loop-invariant state); default memory elsewhere. Renames (tuple,
        get-tuple-element, bitcast) take the space of the buffer they rename. Residency
        attributes."""
        for o, iid in enumerate(self.op_inst):
            inst = self.insts[iid]
            for index, v in zip(self.leaf_index[iid], self.leaf_values[iid]):
                if self.home.get(v) == (iid, index):
                    resident = v in self.created
                else:
                    resident = self.residency_at(v, self.pos[o]) is not None
                set_memory_space(subshape(inst.shape, index),
                                 SCRATCHPAD_MEMORY_SPACE if resident else 0)
        for iid in self.original_order:
            inst = self.insts[iid]
            if inst.opcode in ALIAS_OPCODES:
                for index, source in zip(self.leaf_index[iid], self.leaf_source[iid]):
                    set_memory_space(subshape(inst.shape, index), memory_space(self.shape_of(source)))
        for v in sorted(self.created):
            if self.g.values[v].kind == "temporary":
                continue
            r = self.res[v][0]
            iid, index = self.home[v]
            self.scratchpad[iid].append(f"{format_index(index)}:{r.offset}:{r.end}")
        for op in self.g.ops:
            for v in op.outputs:
                if self.g.values[v].kind == "temporary" and self.res.get(v):
                    (r,) = self.res[v]
                    self.insts[self.op_inst[op.id]].frontend_attributes.map[ATTR_TEMPORARY] = \
                        f"{r.offset}:{r.end}"

    def copy_pair(self, v: int, kind: str, src_ref, to_space: int) -> tuple[int, int]:
        """A copy-start / copy-done pair copying ``v`` from ``src_ref`` into ``to_space``."""
        home = self.home[v]
        leaf = self.shape_of(home)
        src = self.leaf_ref(src_ref)
        shape = type(leaf)()
        shape.element_type = TUPLE_TYPE
        dst = shape.tuple_shapes.add()
        dst.CopyFrom(leaf)
        set_memory_space(dst, to_space)
        from_ = shape.tuple_shapes.add()
        from_.CopyFrom(leaf)
        set_memory_space(from_, memory_space(self.insts[src].shape))
        ctx = shape.tuple_shapes.add()
        ctx.element_type = _U32
        base = f"memmap.{kind}.{_name_part(self.value_name(v))}"
        cs = self.new_inst(base, "copy-start", shape, [src],
                           attrs={ATTR_INSERTED: kind, ATTR_VALUE: self.value_name(v)})
        cd = self.new_inst(f"{base}.done", "copy-done", dst, [cs], attrs={ATTR_INSERTED: kind})
        return cs, cd

    def add_copies(self) -> None:
        """One copy pair per load/reload (into the scratchpad) and spill/writeback (out of it),
        in step order per value so that a reload copies from its spill's copy."""
        g = self.g
        for v in sorted(self.res):
            val = g.values[v]
            if val.kind == "temporary":
                continue
            if v not in self.home:
                raise EmitError(f"value {val.name!r} has a residency but no HLO buffer")
            read_steps = sorted(self.pos[c] for c in val.consumers)
            for r in self.res[v]:
                if v in self.created and r is self.res[v][0]:
                    ref = self.home[v]
                else:
                    tr = self.loads[(v, r.start)]
                    cs, cd = self.copy_pair(v, tr.kind, self.offchip_ref(v), SCRATCHPAD_MEMORY_SPACE)
                    self.scratchpad[cs].append(f"{format_index((0,))}:{r.offset}:{r.end}")
                    self.before[r.start].append(cs)
                    k = bisect.bisect_left(read_steps, r.start)
                    first_read = read_steps[k] if k < len(read_steps) and read_steps[k] <= r.end else None
                    if first_read is None:
                        self.before_done[r.start].append(cd)
                    else:
                        self.before_done[first_read].append(cd)
                    ref = (cd, ())
                self.res_ref[(v, r.start)] = ref
                w = self.write.get(v)
                if w is not None and r.start <= w.step <= r.end:
                    cs, cd = self.copy_pair(v, w.kind, ref, 0)
                    self.after[w.step].append(cs)
                    self.after_done[r.end].append(cd)
                    self.spill_ref[v] = (cd, ())

    def rewire_operands(self) -> None:
        """Each operator reads the copy of each input that the plan says."""
        for t, o in enumerate(self.plan.schedule):
            inst = self.insts[self.op_inst[o]]
            changed = []
            for j, x in enumerate(inst.operand_ids):
                y = self.materialize(x, t)
                if y != x:
                    changed.append(f"{j}={self.insts[x].name}")
                    inst.operand_ids[j] = y
            if changed:
                inst.frontend_attributes.map[ATTR_OPERANDS] = ";".join(changed)

    def materialize(self, iid: int, t: int) -> int:
        """An instruction with ``iid``'s value tree whose leaves are the copies current at step
        ``t``: ``iid`` itself when nothing changed, else a copy or new alias instructions."""
        vals = self.leaf_values[iid]
        cur = tuple(self.current(v, t) for v in vals)
        if cur == tuple(self.leaf_source[iid]):
            return iid
        key = (iid, cur)
        got = self.mat_cache.get(key)
        if got is not None:
            return got
        inst = self.insts[iid]
        if inst.shape.element_type != TUPLE_TYPE:
            if inst.opcode in ("bitcast", "opt-barrier"):
                src = self.materialize(inst.operand_ids[0], t)
                shape = type(inst.shape)()
                shape.CopyFrom(inst.shape)
                set_memory_space(shape, memory_space(self.insts[src].shape))
                got = self.new_inst(f"memmap.{inst.opcode}.{inst.name}", inst.opcode, shape, [src],
                                    attrs={ATTR_INSERTED: "alias"})
            else:
                got = self.leaf_ref(cur[0])
        elif inst.opcode in ("tuple", "opt-barrier"):
            ops = [self.materialize(x, t) for x in inst.operand_ids]
            got = self.new_alias_tuple(inst, ops)
        else:
            got = self.rebuild(iid, (), dict(zip(self.leaf_index[iid], cur)))
        self.mat_cache[key] = got
        return got

    def rebuild(self, iid: int, index: tuple[int, ...], cur: dict) -> int:
        """A tuple of the current copies under ``index`` of a tuple-shaped instruction."""
        shape = subshape(self.insts[iid].shape, index)
        if shape.element_type != TUPLE_TYPE:
            return self.leaf_ref(cur[index])
        source = dict(zip(self.leaf_index[iid], self.leaf_source[iid]))
        if all(c == source[i] for i, c in cur.items() if i[:len(index)] == index):
            return self.leaf_ref((iid, index))
        parts = [self.rebuild(iid, index + (k,), cur) for k in range(len(shape.tuple_shapes))]
        return self.new_alias_tuple(self.insts[iid], parts, opcode="tuple")

    def new_alias_tuple(self, like, operands: list[int], *, opcode: str | None = None) -> int:
        opcode = opcode or like.opcode
        shape = type(like.shape)()
        shape.element_type = TUPLE_TYPE
        if opcode == "opt-barrier":
            shape.CopyFrom(self.insts[operands[0]].shape)
        else:
            for x in operands:
                shape.tuple_shapes.add().CopyFrom(self.insts[x].shape)
        return self.new_inst(f"memmap.{opcode}.{like.name}", opcode, shape, operands,
                             attrs={ATTR_INSERTED: "alias"})

    # ---- while loops ------------------------------------------------------------------------

    def annotate_loops(self) -> None:
        """A while loop's state lives where its result does: the body and condition parameters,
        the body root, and every buffer of the body that becomes a state leaf get the result's
        memory spaces."""
        for iid in self.op_inst:
            inst = self.insts[iid]
            if inst.opcode != "while":
                continue
            spaces = [memory_space(s) for _, s in shape_leaves(inst.shape)]
            if not any(spaces):
                continue
            # XLA's while: called computations [body, condition] (HloWhileInstruction).
            body, condition = inst.called_computation_ids
            self.annotate_loop_computation(self.comps[body], spaces, is_body=True)
            self.annotate_loop_computation(self.comps[condition], spaces, is_body=False)

    def annotate_loop_computation(self, comp, spaces: list[int], *, is_body: bool) -> None:
        insts = {i.id: i for i in comp.instructions}
        trees: dict[int, object] = {}
        state_space: dict[object, int] = {}

        # Value trees: a list per tuple, a ("state", k) or ("buffer", id, index) tuple per leaf.
        def leaves(tree):
            return [tree] if not isinstance(tree, list) else [x for t in tree for x in leaves(t)]

        def build(shape, make, prefix=()):
            if shape.element_type != TUPLE_TYPE:
                return make(prefix)
            return [build(s, make, prefix + (k,)) for k, s in enumerate(shape.tuple_shapes)]

        order = self.sequence_or_order(comp)
        for i in order:
            inst = insts[i]
            if inst.opcode == "parameter":
                counter = iter(range(len(spaces)))
                trees[i] = build(inst.shape, lambda idx: ("state", next(counter)))
            elif inst.opcode == "get-tuple-element":
                trees[i] = trees[inst.operand_ids[0]][inst.tuple_index]
            elif inst.opcode == "tuple":
                trees[i] = [trees[x] for x in inst.operand_ids]
            elif inst.opcode in ("bitcast", "opt-barrier"):
                trees[i] = trees[inst.operand_ids[0]]
            else:
                trees[i] = build(inst.shape, lambda idx, _i=i: ("buffer", _i, idx))
        for k, space in enumerate(spaces):
            state_space[("state", k)] = space
        if is_body:
            for k, b in enumerate(leaves(trees[comp.root_id])):
                if b[0] == "buffer":
                    state_space[b] = spaces[k]
        for i in order:
            inst = insts[i]
            for (index, leaf), b in zip(shape_leaves(inst.shape), leaves(trees[i])):
                if b in state_space:
                    set_memory_space(leaf, state_space[b])

    # ---- schedule ---------------------------------------------------------------------------

    def sequence_or_order(self, comp) -> list[int]:
        """The computation's sequence in the input's schedule, else its instruction order (a
        dependency order, and the order the importer simulated body peaks in)."""
        if comp.id in self.proto.schedule.sequences:
            return list(self.proto.schedule.sequences[comp.id].instruction_ids)
        return [i.id for i in comp.instructions]

    def entry_sequence(self) -> list[int]:
        """Planned order: per step the copy-starts issued there, the copy-dones its operator
        waits for, the operator (after any instruction it depends on that is not an operator:
        parameters, constants, renames), then the spills issued after it and the copy-dones of
        residencies ending there. Then the rest (unused instructions) and the ROOT."""
        placed: set[int] = set()
        seq: list[int] = []
        ops = set(self.op_inst)

        def deps(iid: int) -> list[int]:
            inst = self.insts[iid]
            return list(inst.operand_ids) + list(inst.control_predecessor_ids)

        def place(root: int, *, op_allowed: int | None = None) -> None:
            def check(iid: int) -> None:
                if iid in ops and iid != op_allowed:
                    raise EmitError(f"instruction {self.insts[root].name!r} needs operator "
                                    f"{self.insts[iid].name!r} before the planned step of that "
                                    f"operator (a control dependency the schedule breaks?)")

            place_after_dependencies(root, deps, placed, seq, check=check)

        for t, o in enumerate(self.plan.schedule):
            for x in self.before[t] + self.before_done[t]:
                place(x)
            place(self.op_inst[o], op_allowed=self.op_inst[o])
            for x in self.after[t] + self.after_done[t]:
                place(x)
        for iid in self.original_order + self.new_ids:
            if iid != self.entry.root_id and iid not in placed:
                place(iid)
        place(self.entry.root_id)
        return seq

    def set_schedule(self, entry_sequence: list[int]) -> None:
        """The ENTRY's instructions in the planned order; every other non-fusion computation
        keeps its sequence (or gets its instruction order, a dependency order)."""
        sequences = {c.id: entry_sequence if c.id == self.entry.id else self.sequence_or_order(c)
                     for c in self.proto.computations if not c.is_fusion_computation}
        self.proto.schedule.Clear()
        for cid, ids in sequences.items():
            self.proto.schedule.sequences[cid].instruction_ids.extend(ids)
        # Instructions must be listed operands first: use the schedule.
        by_id = {i.id: i for i in self.entry.instructions}
        ordered = []
        for iid in entry_sequence:
            copy = type(by_id[iid])()
            copy.CopyFrom(by_id[iid])
            ordered.append(copy)
        del self.entry.instructions[:]
        self.entry.instructions.extend(ordered)
        self.insts = {i.id: i for i in self.entry.instructions}

    def set_module_attributes(self, original_root: str | None) -> None:
        p = self.problem
        g = self.g
        self.proto.frontend_attributes.map[ATTR_PLAN] = json.dumps({
            "format": ANNOTATED_FORMAT, "version": ANNOTATED_FORMAT_VERSION,
            "solver": self.plan.solver, "status": self.plan.status,
            "solve_time_s": self.plan.solve_time_s, "mode": p.mode,
            "activations_only": p.activations_only, "target": p.target.to_dict(),
        }, separators=(",", ":"))
        # Ids of the rebuilt graph follow the input's ENTRY order; the printed ENTRY is in the
        # planned order, so record, for each parameter / constant / operator in printed order,
        # its index in the input's order (alias instructions create no value).
        creators = [iid for iid in self.original_order
                    if self.insts[iid].opcode not in ALIAS_OPCODES]
        rank = {iid: k for k, iid in enumerate(creators)}
        printed = [rank[i.id] for i in self.entry.instructions if i.id in rank]
        # The default schedule is recorded only when it is not the input's operator order.
        in_order = tuple(self.inst_op[iid] for iid in creators if iid in self.inst_op)
        self.proto.frontend_attributes.map[ATTR_GRAPH] = json.dumps({
            "name": g.name, "source": g.source, "schedule_origin": g.schedule_origin,
            "default_schedule": None if g.default_schedule == in_order else list(g.default_schedule),
            "entry_order": encode_runs(printed),
            "root": original_root,
        }, separators=(",", ":"))


def place_after_dependencies(start: int, dependencies, placed: set[int], out: list[int], *,
                             check=None) -> None:
    """Append ``start`` to ``out`` after its transitive ``dependencies(x)`` that are not in
    ``placed`` yet (post-order, iterative); ``check(x)`` may refuse an instruction about to be
    placed by raising."""
    stack = [(start, False)]
    while stack:
        x, expanded = stack.pop()
        if x in placed:
            continue
        if expanded:
            placed.add(x)
            out.append(x)
            continue
        if check is not None:
            check(x)
        stack.append((x, True))
        stack.extend((y, False) for y in reversed(dependencies(x)) if y not in placed)


def encode_runs(numbers: Sequence[int]) -> list[list[int]]:
    """``[3, 4, 5, 0, 1]`` -> ``[[3, 3], [0, 2]]``: runs of consecutive integers as
    ``[first, length]``."""
    runs: list[list[int]] = []
    for x in numbers:
        if runs and runs[-1][0] + runs[-1][1] == x:
            runs[-1][1] += 1
        else:
            runs.append([x, 1])
    return runs


def decode_runs(runs) -> list[int]:
    """Inverse of :func:`encode_runs`; ``ValueError`` when malformed."""
    try:
        return [first + k for first, length in runs for k in range(int(length))]
    except (TypeError, ValueError) as e:
        raise ValueError(f"malformed runs: {e}") from None


# --------------------------------------------------------------------------------------------
# Executing annotated HLO on XLA:CPU


def _drop_instructions(proto, comp, ids: set) -> None:
    """Remove the instructions ``ids`` from computation ``comp`` and from its schedule."""
    kept = []
    for inst in comp.instructions:
        if inst.id not in ids:
            c = type(inst)()
            c.CopyFrom(inst)
            kept.append(c)
    del comp.instructions[:]
    comp.instructions.extend(kept)
    if comp.id in proto.schedule.sequences:
        seq = proto.schedule.sequences[comp.id].instruction_ids
        left = [x for x in seq if x not in ids]
        del seq[:]
        seq.extend(left)


def executable_variant(text: str) -> str:
    """The same module with every ``copy-start``/``copy-done`` pair lowered to one synchronous
    ``copy`` (named like the ``copy-done``, at its place in the schedule); ``S(1)`` layouts and
    attributes are kept. XLA:CPU compiles this (it rejects async copies and strips memory
    spaces); only pre-optimization modules recompile (post-optimization fusions lack the backend
    config XLA:CPU wants)."""
    from jaxlib import _hlo

    module = _hlo.hlo_module_from_text(text)
    proto = parse_module_proto(module.as_serialized_hlo_module_proto())
    for comp in proto.computations:
        by_id = {i.id: i for i in comp.instructions}
        starts = set()
        for inst in comp.instructions:
            if inst.opcode == "copy-done":
                cs = by_id[inst.operand_ids[0]]
                if cs.opcode != "copy-start":
                    raise BadInputError(f"copy-done {inst.name!r} does not read a copy-start")
                inst.opcode = "copy"
                del inst.operand_ids[:]
                inst.operand_ids.extend(cs.operand_ids)
                starts.add(cs.id)
        if not starts:
            continue
        users = [i.name for i in comp.instructions if i.id not in starts
                 and any(x in starts for x in i.operand_ids) and i.opcode != "copy"]
        if users:
            raise BadInputError(f"instruction {users[0]!r} reads a copy-start directly")
        _drop_instructions(proto, comp, starts)
    return print_module(proto, elide_large_constants=elides_constants(text))


def _is_plain_array(shape) -> bool:
    return shape.element_type != TUPLE_TYPE and not any(shape.is_dynamic_dimension)


def _restore_degenerate_broadcasts(proto) -> int:
    """Fold every ``broadcast -> reshape -> broadcast`` chain of the form the StableHLO -> HLO
    export writes for a *degenerate* ``broadcast_in_dim`` back into that one broadcast (edits
    ``proto``, an ``HloModuleProto`` of :mod:`memmap.ir.hlo_proto`; returns the number folded).

    Why. jax lowers ``x[4,128,1] - mean`` to StableHLO ``broadcast_in_dim`` of ``f32[4,128,1]``
    to ``f32[4,128,768]`` with ``dims=[0,1,2]``: the size-1 dimension is expanded (a degenerate
    broadcast, legal in StableHLO, not in HLO). The export to HLO (``as_text(dialect="hlo")``,
    and the same export inside ``compile_and_load``) writes it as three instructions::

        b1 = f32[4,128,1] broadcast(x), dimensions={0,1,2}     # x into the output's rank
        r  = f32[4,128]   reshape(b1)                           # drop the expanded 1-dims
        b2 = f32[4,128,768] broadcast(r), dimensions={0,1}      # the real broadcast

    jax.jit compiles exactly that. :func:`run_hlo_on_cpu` goes HLO -> ``hlo_to_stablehlo`` ->
    ``compile_and_load``: the import maps the three instructions one to one, and the export
    inside the compile then folds them (it drops the identity ``b1`` and merges or drops the
    reshapes around it: ``b2 = broadcast(reshape(x))``, or ``broadcast(y)`` when ``x`` is
    ``reshape(y)``). XLA's optimizer then starts from another module than jax.jit's and its
    algebraic simplifier takes other paths: in a softmax gradient, jax.jit's module gets
    ``a / broadcast(s)`` rewritten to ``a * broadcast(1 / s)`` and the folded one keeps the
    divide, so the BERT and GPT-2 training steps differ from jax.jit in the last bits. Folding
    the chain back into ``b2 = broadcast(x), dimensions={0,1,2}`` (the degenerate form, which
    ``hlo_to_stablehlo`` imports as that ``broadcast_in_dim``) makes the export inside the
    compile write the three instructions again, as for jax.jit.

    Only an exact chain is folded, so values never change: ``b1`` broadcasts ``x`` into ``b2``'s
    rank and every dimension where ``b1`` and ``b2`` differ is a size-1 dimension of ``x``;
    ``r`` drops exactly those dimensions (a reshape that only removes size-1 dimensions keeps the
    row-major order) and ``b2`` maps ``r``'s dimensions back to their positions in order; ``b1``
    and ``r`` have no other user, are not a ROOT and carry no control dependency. Then
    ``b2[i] = x[m]`` with ``m[a] = i[dims[a]]`` where ``x`` and ``b2`` agree and ``0`` on the
    expanded size-1 dimensions, which is ``broadcast_in_dim(x, dims)``. ``b1`` and ``r`` are
    removed (and from the schedule). HLO's own ``broadcast`` does not expand size-1 dimensions
    (that is why the export writes the chain), so the folded module is only ever handed to
    ``hlo_to_stablehlo``, never printed or returned.

    Tied to this jaxlib's exporter (jax/jaxlib 0.10.2): another export may fold other forms.
    """
    folded = 0
    for comp in proto.computations:
        by_id = {i.id: i for i in comp.instructions}
        users: dict[int, int] = defaultdict(int)
        for inst in comp.instructions:
            for o in inst.operand_ids:
                users[o] += 1
            for o in inst.control_predecessor_ids:
                users[o] += 2          # a control successor: never fold
        users[comp.root_id] += 2
        removed: set[int] = set()
        for b2 in comp.instructions:
            if b2.opcode != "broadcast" or len(b2.operand_ids) != 1:
                continue
            r = by_id.get(b2.operand_ids[0])
            if r is None or r.opcode != "reshape" or users[r.id] != 1 or r.control_predecessor_ids:
                continue
            b1 = by_id.get(r.operand_ids[0]) if len(r.operand_ids) == 1 else None
            if b1 is None or b1.opcode != "broadcast" or users[b1.id] != 1 \
                    or b1.control_predecessor_ids or len(b1.operand_ids) != 1:
                continue
            x = by_id.get(b1.operand_ids[0])
            if x is None or b1.id in removed or r.id in removed:
                continue
            shapes = (x.shape, b1.shape, r.shape, b2.shape)
            if not all(_is_plain_array(s) for s in shapes) \
                    or len({s.element_type for s in shapes}) != 1:
                continue
            xs, s1, s2, t = (list(s.dimensions) for s in shapes)
            d0, d2 = list(b1.dimensions), list(b2.dimensions)
            if len(s1) != len(t) or len(d0) != len(xs) or len(set(d0)) != len(d0) \
                    or any(not 0 <= d < len(s1) or s1[d] != n for d, n in zip(d0, xs)):
                continue      # b1 is not a broadcast of x into b2's rank
            keep = [j for j in range(len(t)) if s1[j] == t[j]]
            expanded = [j for j in range(len(t)) if s1[j] != t[j]]
            if not expanded or any(s1[j] != 1 or j not in d0 for j in expanded):
                continue      # not the degenerate form: a size-1 dimension of x is expanded
            if s2 != [s1[j] for j in keep] or d2 != keep:
                continue      # r does not just drop those dimensions, or b2 does not put back
            b2.operand_ids[0] = x.id
            del b2.dimensions[:]
            b2.dimensions.extend(d0)
            removed.update((b1.id, r.id))
            folded += 1
        if not removed:
            continue
        _drop_instructions(proto, comp, removed)
    return folded


def run_hlo_on_cpu(text: str, args: Sequence) -> list:
    """Compile HLO text with XLA:CPU and run it on ``args`` (arrays in ENTRY parameter order);
    returns the flat list of output arrays (numpy). Pre-optimization modules only.

    The path is HLO text -> XLA's parser -> ``hlo_to_stablehlo`` -> ``compile_and_load`` (the
    CPU client compiles StableHLO only). Before the import, the chains the StableHLO -> HLO
    export writes for degenerate broadcasts are folded back
    (:func:`_restore_degenerate_broadcasts`, same values), so that a module jax exported compiles
    like ``jax.jit`` compiles it (bit for bit on the zoo, docs/emit.md)."""
    import jax
    import numpy as np
    from jax._src.lib import xla_client
    from jaxlib import _hlo, _jax

    dev = jax.devices("cpu")[0]
    module = _hlo.hlo_module_from_text(text)
    serialized = module.as_serialized_hlo_module_proto()
    proto = parse_module_proto(serialized)
    if _restore_degenerate_broadcasts(proto):
        serialized = proto.SerializeToString()
    stablehlo = _jax.mlir.hlo_to_stablehlo(serialized)
    exe = dev.client.compile_and_load(stablehlo, _jax.DeviceList((dev,)),
                                      xla_client.CompileOptions())
    bufs = [jax.device_put(np.asarray(a), dev) for a in args]
    outs = exe.execute(bufs)
    return [np.asarray(o) for o in outs]
