"""Read a plan back from annotated HLO (the inverse of :func:`memmap.emit.hlo.emit_hlo`).

:func:`import_plan` uses the module alone: the input graph is rebuilt from the module without
memmap's instructions (operands and ROOT restored from ``memmap_operands`` and the
``memmap_graph`` attribute, the input's ENTRY order restored so that value ids match), the
schedule is the ENTRY's sequence, residencies and transfers come from the copy pairs' places in
that sequence plus the ``memmap_scratchpad`` / ``memmap_temporary`` offsets and ends. The
module's dataflow is checked against the result: every copy-start copies the value it names,
out of and into the memory spaces its kind says, and every operator (and the ROOT) reads the copy
of each input that the plan says. The plan itself is not verified here: call
``memmap.verify_plan`` (``memmap verify annotated.hlo`` does).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from pathlib import Path

from memmap.emit.hlo import (ANNOTATED_FORMAT, ANNOTATED_FORMAT_VERSION, ATTR_GRAPH, ATTR_INSERTED,
                             ATTR_OPERANDS, ATTR_PLAN, ATTR_SCRATCHPAD, ATTR_TEMPORARY, ATTR_VALUE,
                             INSERTED_KINDS, MEMMAP_ATTRS, SCRATCHPAD_MEMORY_SPACE, decode_runs,
                             elides_constants, format_index, memory_space, place_after_dependencies,
                             print_module, subshape)
from memmap.cost import residency_lookup
from memmap.errors import BadInputError
from memmap.ir.graph import Graph, GraphError
from memmap.ir.hlo import (ALIAS_OPCODES, HLO_TEXT_INFO_KEY, HloImportError,
                           graph_from_module_proto, parse_hlo_text, shape_leaves)
from memmap.ir.hlo_proto import TUPLE_TYPE, parse_module_proto
from memmap.plan import Plan, Residency, Transfer
from memmap.problem import Problem, Target

__all__ = ["AnnotatedHloError", "import_plan"]


class AnnotatedHloError(BadInputError):
    """An annotated HLO module is malformed or says something inconsistent. One line that names
    the file and the instruction."""


def _read(source: str | os.PathLike) -> tuple[str, str]:
    if isinstance(source, str) and "HloModule" in source and ("\n" in source or "{" in source):
        return source, "<string>"
    path = Path(source)
    try:
        return path.read_text(), str(path)
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotatedHloError(f"{path}: cannot read annotated HLO: "
                                f"{getattr(e, 'strerror', None) or e}") from None


def _parse(text: str, where: str):
    try:
        module = parse_hlo_text(text, where)
    except HloImportError as e:
        raise AnnotatedHloError(str(e)) from None
    return parse_module_proto(module.as_serialized_hlo_module_proto())


def import_plan(annotated_hlo: str | os.PathLike) -> Plan:
    """Recover the plan (and its problem: graph, target, mode) from annotated HLO.

    Args:
      annotated_hlo: annotated HLO text (a string containing ``HloModule``) or a file path.

    Returns:
      The plan, unverified, without metrics (``memmap.verify_plan`` then ``memmap.simulate``).
      For a module written by ``emit_hlo(graph, plan)`` its graph equals ``graph`` (same ids) and
      its schedule, residencies and transfers equal ``plan``'s.

    Raises:
      AnnotatedHloError: unreadable, not annotated by memmap, or inconsistent (a copy that copies
        another value than it names, an operator reading a copy the plan does not have there, ...).
    """
    text, where = _read(annotated_hlo)
    proto = _parse(text, where)
    return _Reader(proto, where, text).read()


class _Reader:
    def __init__(self, proto, where: str, text: str):
        self.proto = proto
        self.where = where
        self.text = text
        attrs = proto.frontend_attributes.map
        if ATTR_PLAN not in attrs or ATTR_GRAPH not in attrs:
            self.fail("not annotated by memmap (no memmap_plan / memmap_graph module attributes); "
                      "to verify a plan.json give it as a second argument")
        try:
            self.meta = json.loads(attrs[ATTR_PLAN])
            self.graph_meta = json.loads(attrs[ATTR_GRAPH])
        except json.JSONDecodeError as e:
            self.fail(f"module attribute is not valid JSON: {e.msg} at column {e.colno}")
        if not isinstance(self.meta, dict) or not isinstance(self.graph_meta, dict):
            self.fail(f"{ATTR_PLAN} and {ATTR_GRAPH} must be JSON objects")
        if self.meta.get("format") != ANNOTATED_FORMAT or \
                self.meta.get("version") != ANNOTATED_FORMAT_VERSION:
            self.fail(f"annotated HLO format {self.meta.get('format')!r} version "
                      f"{self.meta.get('version')!r} is not supported (this memmap reads "
                      f"{ANNOTATED_FORMAT!r} version {ANNOTATED_FORMAT_VERSION})")
        comps = {c.id: c for c in proto.computations}
        self.entry = comps[proto.entry_computation_id]
        if self.entry.id not in proto.schedule.sequences:
            self.fail("the module is not scheduled (is_scheduled=true is required)")
        self.sequence = list(proto.schedule.sequences[self.entry.id].instruction_ids)
        self.insts = {i.id: i for i in self.entry.instructions}
        self.by_name = {i.name: i.id for i in self.entry.instructions}
        self.inserted = {i.id: i.frontend_attributes.map[ATTR_INSERTED]
                         for i in self.entry.instructions if ATTR_INSERTED in i.frontend_attributes.map}
        for iid, kind in self.inserted.items():
            if kind not in INSERTED_KINDS:
                self.fail(f"instruction {self.insts[iid].name!r}: unknown {ATTR_INSERTED} {kind!r}")

    def fail(self, message: str):
        raise AnnotatedHloError(f"{self.where}: {message}")

    def attr(self, iid: int, key: str) -> str | None:
        return self.insts[iid].frontend_attributes.map.get(key)

    # ---- 1. the input graph ---------------------------------------------------------------

    def original_module(self):
        """A copy of the module without memmap's instructions: operands, ROOT and the input's
        ENTRY order restored, memmap attributes and scratchpad memory spaces removed."""
        proto = type(self.proto)()
        proto.CopyFrom(self.proto)
        entry = next(c for c in proto.computations if c.id == self.entry.id)
        insts = {i.id: i for i in entry.instructions}
        for inst in entry.instructions:
            if inst.id in self.inserted:
                continue
            spec = inst.frontend_attributes.map.get(ATTR_OPERANDS)
            for item in spec.split(";") if spec else ():
                j, _, name = item.partition("=")
                if not j.isdigit() or int(j) >= len(inst.operand_ids) or name not in self.by_name \
                        or self.by_name[name] in self.inserted:
                    self.fail(f"instruction {inst.name!r}: bad {ATTR_OPERANDS} entry {item!r}")
                inst.operand_ids[int(j)] = self.by_name[name]
            for x in list(inst.operand_ids) + list(inst.control_predecessor_ids):
                if x in self.inserted:
                    self.fail(f"instruction {inst.name!r} reads memmap's {insts[x].name!r} but "
                              f"{ATTR_OPERANDS} does not say what it read before")
        root_name = self.graph_meta.get("root")
        if root_name is not None:
            if root_name not in self.by_name or self.by_name[root_name] in self.inserted:
                self.fail(f"memmap_graph names an unknown original ROOT {root_name!r}")
            entry.root_id = self.by_name[root_name]
        elif entry.root_id in self.inserted:
            self.fail("the ROOT is an instruction memmap inserted but memmap_graph names no "
                      "original ROOT")
        # The input's order: parameters, constants and operators by their recorded rank; each
        # rename (gte, tuple, bitcast) right before its first user.
        originals = [i for i in self.sequence if i not in self.inserted]
        creators = [i for i in originals if insts[i].opcode not in ALIAS_OPCODES]
        try:
            ranks = decode_runs(self.graph_meta.get("entry_order"))
        except ValueError:
            ranks = None
        if ranks is None or sorted(ranks) != list(range(len(creators))):
            self.fail(f"memmap_graph entry_order is not a permutation of the "
                      f"{len(creators)} parameters, constants and operators")
        by_rank = [iid for _, iid in sorted(zip(ranks, creators))]
        order: list[int] = []
        placed: set[int] = set()

        def renames(x: int) -> list[int]:
            return [y for y in insts[x].operand_ids if insts[y].opcode in ALIAS_OPCODES]

        for iid in by_rank + [i for i in originals if insts[i].opcode in ALIAS_OPCODES]:
            place_after_dependencies(iid, renames, placed, order)
        kept = []
        for iid in order:
            inst = type(insts[iid])()
            inst.CopyFrom(insts[iid])
            for key in MEMMAP_ATTRS:
                if key in inst.frontend_attributes.map:
                    del inst.frontend_attributes.map[key]
            kept.append(inst)
        del entry.instructions[:]
        entry.instructions.extend(kept)
        for key in (ATTR_PLAN, ATTR_GRAPH):
            del proto.frontend_attributes.map[key]
        proto.schedule.sequences[entry.id].Clear()
        proto.schedule.sequences[entry.id].instruction_ids.extend(order)
        for comp in proto.computations:
            for inst in comp.instructions:
                for _, leaf in shape_leaves(inst.shape):
                    if memory_space(leaf) == SCRATCHPAD_MEMORY_SPACE:
                        leaf.layout.memory_space = 0
        return proto

    def graph(self) -> Graph:
        proto = self.original_module()
        gm = self.graph_meta
        # The rebuilt module's text, so that the recovered graph can be annotated again.
        info = {HLO_TEXT_INFO_KEY: print_module(proto, elide_large_constants=elides_constants(self.text),
                                                check=False),
                "annotated_hlo": self.where}
        try:
            g = graph_from_module_proto(proto, where=self.where, source=str(gm.get("source", self.where)),
                                        name=gm.get("name"), info=info)
            default = tuple(int(o) for o in gm.get("default_schedule") or g.default_schedule)
        except HloImportError as e:
            self.fail(f"the module without memmap's instructions does not import: {e}")
        except (TypeError, ValueError) as e:
            self.fail(f"memmap_graph default_schedule is malformed ({e})")
        reason = g.check_schedule(default)
        if reason:
            self.fail(f"memmap_graph default_schedule is invalid: {reason}")
        return dataclasses.replace(g, default_schedule=default,
                                   schedule_origin=str(gm.get("schedule_origin", g.schedule_origin)))

    # ---- 2. the plan ----------------------------------------------------------------------

    def read(self) -> Plan:
        g = self.graph()
        self.g = g
        try:
            target = Target.from_dict(self.meta["target"])
            problem = Problem(g, target, self.meta["mode"], bool(self.meta.get("activations_only", False)))
        except (KeyError, TypeError) as e:
            self.fail(f"memmap_plan attribute misses the problem ({e})")
        except BadInputError as e:
            self.fail(f"memmap_plan attribute: {e}")
        value_id = {v.name: v.id for v in g.values}
        op_id = {op.name: op.id for op in g.ops}
        self.leaf_pos = {iid: {idx: k for k, (idx, _) in enumerate(shape_leaves(i.shape))}
                         for iid, i in self.insts.items()}

        # Walk the sequence: operators give steps, copies their issue steps.
        schedule: list[int] = []
        step_of: dict[int, int] = {}
        pending: list[int] = []   # load/reload copy-starts waiting for the next operator
        copies: list[tuple[int, int]] = []   # (copy-start id, step)
        for iid in self.sequence:
            inst = self.insts[iid]
            kind = self.inserted.get(iid)
            if kind is None:
                o = op_id.get(inst.name)
                if o is not None:
                    step_of[iid] = len(schedule)
                    schedule.append(o)
                    copies += [(cs, len(schedule) - 1) for cs in pending]
                    pending = []
            elif inst.opcode == "copy-start":
                if kind in ("load", "reload"):
                    pending.append(iid)
                elif kind in ("spill", "writeback"):
                    if not schedule:
                        self.fail(f"{kind} {inst.name!r} comes before the first operator")
                    copies.append((iid, len(schedule) - 1))
                else:
                    self.fail(f"copy-start {inst.name!r} is marked {ATTR_INSERTED}={kind!r}")
        if pending:
            self.fail(f"{self.inserted[pending[0]]} {self.insts[pending[0]].name!r} comes after "
                      f"the last operator")

        residencies: list[Residency] = []
        transfers: list[Transfer] = []
        self.load_copy: dict[tuple[int, int], int] = {}   # (value, start) -> copy-done id
        self.spill_copy: dict[int, int] = {}              # value -> copy-done id
        self.cs_of_cd: dict[int, int] = {}
        done_of: dict[int, list[int]] = defaultdict(list)
        for inst in self.entry.instructions:
            if inst.opcode == "copy-done" and inst.id in self.inserted:
                cs = inst.operand_ids[0] if inst.operand_ids else None
                if cs not in self.inserted or self.insts[cs].opcode != "copy-start":
                    self.fail(f"copy-done {inst.name!r} does not read a memmap copy-start")
                self.cs_of_cd[inst.id] = cs
                done_of[cs].append(inst.id)
        for cs, step in copies:
            inst = self.insts[cs]
            kind = self.inserted[cs]
            if len(done_of[cs]) != 1:
                self.fail(f"copy-start {inst.name!r} has {len(done_of[cs])} copy-done instructions")
            if len(inst.operand_ids) != 1 or inst.shape.element_type != TUPLE_TYPE \
                    or len(inst.shape.tuple_shapes) != 3:
                self.fail(f"copy-start {inst.name!r} is not a copy-start of one array")
            name = inst.frontend_attributes.map.get(ATTR_VALUE)
            if name not in value_id:
                self.fail(f"copy-start {inst.name!r}: {ATTR_VALUE} {name!r} is not a value of the program")
            v = value_id[name]
            got = self.value_of(inst.operand_ids[0], ())
            if got != v:
                self.fail(f"copy-start {inst.name!r} says it copies {name!r} but copies "
                          f"{g.values[got].name if got is not None else 'no value'!r}")
            into = kind in ("load", "reload")
            dst, src = memory_space(subshape(inst.shape, (0,))), memory_space(subshape(inst.shape, (1,)))
            if (dst == SCRATCHPAD_MEMORY_SPACE) != into or (src == SCRATCHPAD_MEMORY_SPACE) == into:
                self.fail(f"copy-start {inst.name!r}: a {kind} copies "
                          f"{'into' if into else 'out of'} the scratchpad, but its shape says "
                          f"S({src}) -> S({dst})")
            transfers.append(Transfer(step, kind, v, g.values[v].size_bytes))
            if into:
                entries = self.scratchpad_entries(cs)
                if len(entries) != 1 or entries[0][0] != (0,):
                    self.fail(f"copy-start {inst.name!r}: needs one {ATTR_SCRATCHPAD} entry for {{0}}")
                (_, offset, end), = entries
                residencies.append(Residency(v, step, end, offset))
                self.load_copy[(v, step)] = done_of[cs][0]
            else:
                if v in self.spill_copy:
                    self.fail(f"value {name!r} is written off-chip twice")
                self.spill_copy[v] = done_of[cs][0]

        # Residencies created by operators (and their temporaries).
        for iid, step in step_of.items():
            inst = self.insts[iid]
            o = op_id[inst.name]
            entries = self.scratchpad_entries(iid)
            marked = {index for index, _, _ in entries}
            for index, leaf in shape_leaves(inst.shape):
                v = self.value_of(iid, index)
                in_scratchpad = memory_space(leaf) == SCRATCHPAD_MEMORY_SPACE
                if v is not None and g.values[v].producer == o and in_scratchpad != (index in marked):
                    self.fail(f"instruction {inst.name!r}: result leaf {format_index(index)} "
                              + ("is in S(1) without" if in_scratchpad else "is not in S(1) but has")
                              + f" a {ATTR_SCRATCHPAD} entry")
            for index, offset, end in entries:
                v = self.value_of(iid, index)
                if v is None or g.values[v].producer != o:
                    self.fail(f"instruction {inst.name!r}: {ATTR_SCRATCHPAD} names leaf "
                              f"{format_index(index)}, which is not a result it creates")
                if memory_space(subshape(inst.shape, index)) != SCRATCHPAD_MEMORY_SPACE:
                    self.fail(f"instruction {inst.name!r}: leaf {format_index(index)} has a "
                              f"scratchpad offset but no S(1) layout")
                residencies.append(Residency(v, step, end, offset))
            temp = self.attr(iid, ATTR_TEMPORARY)
            if temp is not None:
                tv = [v for v in g.ops[o].outputs if g.values[v].kind == "temporary"]
                offset, end = self.numbers(iid, temp, 2)
                if not tv:
                    self.fail(f"instruction {inst.name!r}: {ATTR_TEMPORARY} but the operator has "
                              f"no temporary")
                residencies.append(Residency(tv[0], step, end, offset))
        for iid in self.insts:
            if iid not in step_of and iid not in self.inserted and self.attr(iid, ATTR_SCRATCHPAD):
                self.fail(f"instruction {self.insts[iid].name!r} has {ATTR_SCRATCHPAD} but is not "
                          f"an operator")

        plan = Plan.assemble(problem, schedule, residencies, transfers,
                             solver=str(self.meta.get("solver", "unknown")),
                             status=str(self.meta.get("status", "FEASIBLE")),
                             solve_time_s=float(self.meta.get("solve_time_s", 0.0)),
                             info={"annotated_hlo": self.where})
        self.check_reads(plan, step_of)
        return plan

    # ---- helpers --------------------------------------------------------------------------

    def numbers(self, iid: int, text: str, count: int) -> list[int]:
        parts = text.split(":")
        try:
            nums = [int(x) for x in parts]
        except ValueError:
            nums = []
        if len(nums) != count:
            self.fail(f"instruction {self.insts[iid].name!r}: malformed memmap attribute {text!r}")
        return nums

    def scratchpad_entries(self, iid: int) -> list[tuple[tuple[int, ...], int, int]]:
        """``memmap_scratchpad`` as ``[(shape index, offset, end step)]``."""
        spec = self.attr(iid, ATTR_SCRATCHPAD)
        out = []
        for item in spec.split(";") if spec else ():
            index_text, sep, rest = item.partition("}:")
            if not index_text.startswith("{") or not sep:
                self.fail(f"instruction {self.insts[iid].name!r}: malformed {ATTR_SCRATCHPAD} "
                          f"entry {item!r}")
            inner = index_text[1:]
            try:
                index = tuple(int(x) for x in inner.split(",")) if inner else ()
            except ValueError:
                self.fail(f"instruction {self.insts[iid].name!r}: malformed shape index in {item!r}")
            offset, end = self.numbers(iid, rest, 2)
            if index not in self.leaf_pos[iid]:
                self.fail(f"instruction {self.insts[iid].name!r}: {ATTR_SCRATCHPAD} names leaf "
                          f"{format_index(index)}, which its shape does not have")
            out.append((index, offset, end))
        return out

    def resolve(self, iid: int, index: tuple[int, ...]):
        """What leaf ``index`` of instruction ``iid`` is: ``("copy", copy-done id)`` or
        ``("home", value id)``, following memmap's renames."""
        while True:
            inst = self.insts[iid]
            kind = self.inserted.get(iid)
            if kind is None:
                k = self.leaf_pos[iid].get(index)
                vals = self.g.hlo_values.get(inst.name, ())
                if k is None or k >= len(vals):
                    return None
                return ("home", vals[k])
            if inst.opcode == "copy-done" and not index:
                return ("copy", iid)
            if inst.opcode == "get-tuple-element":
                iid, index = inst.operand_ids[0], (inst.tuple_index,) + index
            elif inst.opcode == "tuple" and index:
                iid, index = inst.operand_ids[index[0]], index[1:]
            elif inst.opcode in ("bitcast", "opt-barrier"):
                iid = inst.operand_ids[0]
            else:
                self.fail(f"instruction {inst.name!r} ({inst.opcode}) marked "
                          f"{ATTR_INSERTED}={kind!r} is not a copy or a rename")

    def value_of(self, iid: int, index: tuple[int, ...]) -> int | None:
        got = self.resolve(iid, index)
        while got is not None and got[0] == "copy":
            cs = self.cs_of_cd.get(got[1])
            if cs is None:
                return None
            got = self.resolve(self.insts[cs].operand_ids[0], ())
        return got[1] if got is not None else None

    def check_reads(self, plan: Plan, step_of: dict[int, int]) -> None:
        """Every operator reads the copy of each input that the plan has at its step (the
        scratchpad copy while resident, the off-chip one otherwise), and the ROOT the off-chip
        copies."""
        g = self.g
        pos = {o: t for t, o in enumerate(plan.schedule)}
        by_value = defaultdict(list)
        for r in plan.residencies:
            by_value[r.value].append(r)
        for rs in by_value.values():
            rs.sort(key=lambda r: r.start)
        residency_at = residency_lookup(by_value)

        def expected(v: int, t: int):
            r = residency_at(v, t) if t < len(plan.schedule) else None
            if r is not None:
                p = g.values[v].producer
                if r is by_value[v][0] and p is not None and r.start == pos[p]:
                    return ("home", v)   # created there by its producer
                return ("copy", self.load_copy.get((v, r.start)))
            return ("copy", self.spill_copy[v]) if v in self.spill_copy else ("home", v)

        def check(x: int, t: int, what: str) -> None:
            for index, _ in shape_leaves(self.insts[x].shape):
                got = self.resolve(x, index)
                v = None if got is None else got[1] if got[0] == "home" else self.value_of(x, index)
                if v is None:
                    continue
                want = expected(v, t)
                if got != want:
                    self.fail(f"{what} reads {self.describe(got)} of {g.values[v].name!r} but the "
                              f"plan has {self.describe(want)} there")

        for iid, t in step_of.items():
            for x in self.insts[iid].operand_ids:
                check(x, t, f"operator {self.insts[iid].name!r} (step {t})")
        check(self.entry.root_id, len(plan.schedule), "the ROOT")

    def describe(self, ref) -> str:
        if ref[0] == "home":
            return "its original buffer"
        return f"copy {self.insts[ref[1]].name!r}" if ref[1] is not None else "no copy"
