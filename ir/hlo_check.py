"""Checks of HLO modules that XLA's parser does not make, run by the importer (ir/hlo.py).

XLA's HLO text parser checks syntax and names but not shapes: ``add(f32[4], f32[8])`` parses.
jaxlib 0.10.2 exposes neither XLA's ``HloVerifier`` nor its shape inference on a parsed module
(``jaxlib._hlo`` / ``jaxlib._jax`` have no such entry point; ``hlo_to_stablehlo`` converts a
shape-inconsistent module without complaint), so the importer checks shapes itself:

* :func:`check_text_hazards` runs on the text **before** XLA's parser, for the inputs on which
  that parser stops the whole process (a C++ ``CHECK`` failure or a segfault, not an error it
  returns) or materialises a huge literal: a gap in a computation's parameter numbers, a
  ``token``/``opaque`` type with dimensions, a constant over :data:`MAX_LITERAL_BYTES`, and
  shapes or operand counts of the opcodes in ``_FRAGILE_OPCODES`` (a ``reshape`` changing the
  element count, a ``tuple`` with an array shape, a ``dot`` with one operand, ...). They were
  found by fuzzing (tests/test_bad_input.py) and by parsing every opcode with 0-3 operands and
  array, tuple and token shapes, and substituted into real modules' lines.
* :func:`check_shapes` runs on the decoded ``HloModuleProto`` of every computation, before XLA's
  cost analysis (which also stops the process on some inconsistent shapes): the rules of XLA's
  shape inference for elementwise ops (same dimensions, scalar and size-1 broadcasting where
  XLA's inference allows it), ``select``, ``clamp``, ``dot``, ``reshape``, ``transpose``,
  ``broadcast``, ``concatenate``, ``slice``, ``dynamic-slice``, ``dynamic-update-slice``,
  ``pad``, ``iota``, ``reverse``, ``sort``, ``reduce``, ``reduce-window``,
  ``get-dimension-size``, ``convolution`` (dimension numbers in range), ``get-tuple-element``,
  ``tuple``, and the parameter lists of the computations that ``fusion``, ``call`` and
  ``while`` call. Element types are not compared
  (XLA allows mixed precision in places), dynamic dimensions are compared at their bound and
  unbounded (``?``) dimensions are skipped.

Each failure is an :class:`~memmap.ir.hlo.HloImportError` naming the file, the computation and
the instruction. docs/importers.md lists the rules.
"""

from __future__ import annotations

import bisect
import math
import re

from .hlo_proto import PRIMITIVE_TYPES, TUPLE_TYPE

__all__ = ["MAX_LITERAL_BYTES", "check_text_hazards", "check_shapes", "format_shape"]

#: Constants (elided ``{...}`` included) larger than this are refused before XLA's parser,
#: which would allocate and fill the literal in memory.
MAX_LITERAL_BYTES = 1 << 30

_TOKEN_DIMS = (re.compile(rb"token\[\s*[^\]\s]"), re.compile(rb"opaque(?:_type)?\[\s*[^\]\s]"))
_PARAMETER = re.compile(rb"parameter\(\s*(\d+)\s*\)")
_LINE_START = re.compile(rb"\n[^\s]")
_HEADER_NAME = re.compile(rb"(?:ENTRY\s+)?%?([\w.\-]+)")
_HEAD = re.compile(rb"[ \t]*(?:ROOT[ \t]+)?%?([\w.\-]+)[ \t]*=[ \t]*")
_ARRAY = re.compile(rb"([a-z][a-z0-9]*)\[([^\]]*)\](?:\{[^}]*\})?")
_BITS = {name: bits for name, bits in PRIMITIVE_TYPES.values()}
# Opcodes on which XLA's parser (jaxlib 0.10.2) stops the process -- a C++ CHECK failure or a
# segfault -- for some shapes or operand counts. Found by fuzzing and by parsing every opcode
# with 0-3 operands and array, tuple and token result shapes; each has a rule in _check_head.
_FRAGILE_OPCODES = (b"tuple", b"dot", b"conditional", b"constant", b"partition-id",
                    b"replica-id", b"recv", b"recv-done", b"reshape", b"dynamic-reshape",
                    b"after-all", b"outfeed", b"send", b"send-done", b"get-dimension-size",
                    b"set-dimension-size")
_ONE_DIMENSION = re.compile(rb"\bdimensions=\{\s*\d+\s*\}")
# One scan for all of them (an opcode follows its shape and a space); _check_head verifies
# that a match is an instruction's head.
_FRAGILE = re.compile(rb" (" + b"|".join(sorted(_FRAGILE_OPCODES, key=len, reverse=True)) + rb")\(")


def _in_string(text: bytes, pos: int) -> bool:
    """Is ``pos`` inside a double-quoted string of its line (HLO strings never span lines)?"""
    start = text.rfind(b"\n", 0, pos) + 1
    if text.find(b'"', start, pos) == -1:
        return False
    quotes = 0
    i = text.find(b'"', start, pos)
    while i != -1:
        if i == 0 or text[i - 1] != 0x5C:  # not an escaped quote
            quotes += 1
        i = text.find(b'"', i + 1, pos)
    return quotes % 2 == 1


def _line_no(text: bytes, pos: int) -> int:
    return text.count(b"\n", 0, pos) + 1


def _static_elements(dims_text: bytes) -> int | None:
    """Element count of a printed dimension list (``4,<=8``), None for unbounded ``?``."""
    n = 1
    for d in dims_text.split(b","):
        d = d.strip().lstrip(b"<=")
        if not d:
            continue
        if not d.isdigit():
            return None
        n *= int(d)
    return n


def _shape_kind(shape: bytes) -> tuple[str, bytes, int | None]:
    """``("tuple" | "array" | "token" | "other", element type, elements)`` of a printed shape."""
    if shape.startswith(b"("):
        return "tuple", b"", None
    m = _ARRAY.fullmatch(shape)
    if m is None:
        return "other", b"", None
    if m.group(1) in (b"token", b"opaque", b"opaque_type"):
        return "token", m.group(1), None
    return "array", m.group(1), _static_elements(m.group(2))


def _split_args(data: bytes, start: int) -> list[bytes] | None:
    """The operands of ``op(...)`` whose ``(`` ends at ``start``: top-level comma-separated
    parts; None when the parenthesis does not close on the same line."""
    depth, parts, begin = 0, [], start
    i, n = start, len(data)
    while i < n:
        c = data[i]
        if c in b"([{":
            depth += 1
        elif c in b")]}":
            if depth == 0:
                last = data[begin:i].strip()
                return parts + [last] if (last or parts) else parts
            depth -= 1
        elif c == 0x2C and depth == 0:  # ","
            parts.append(data[begin:i].strip())
            begin = i + 1
        elif c == 0x0A:  # newline
            return None
        i += 1
    return None


def _operand_shape(data: bytes, arg: bytes, line_start: int) -> bytes | None:
    """The printed shape of an operand: inline (``f32[4]{0} %a``) or its definition earlier in
    the same computation; None when unknown."""
    m = _ARRAY.match(arg)
    if m or arg.startswith(b"("):
        return arg.rsplit(b" ", 1)[0] if b" " in arg else None
    name = arg.split()[-1].lstrip(b"%") if arg.split() else b""
    for pat in (b" " + name + b" = ", b"%" + name + b" = "):
        at = data.rfind(pat, 0, line_start)
        if at != -1 and data.find(b"\n}", at, line_start) == -1:
            end = data.find(b"\n", at)
            rest = data[at + len(pat):end if end != -1 else len(data)]
            if rest.startswith(b"("):  # a tuple shape: up to the matching parenthesis
                depth = 0
                for k, c in enumerate(rest):
                    depth += c == 0x28
                    depth -= c == 0x29
                    if depth == 0:
                        return rest[:k + 1]
                return None
            m = _ARRAY.match(rest)
            return m.group(0) if m else None
    return None


def check_text_hazards(text: str, where: str, error) -> None:
    """Refuse, before XLA's parser runs, the inputs on which that parser stops the process.

    ``error(reason)`` builds the exception to raise (the importer's HloImportError). Only certain
    cases are refused: a module that passes here may still be rejected by XLA's parser."""
    data = text.encode("utf-8", "surrogatepass")
    for pattern in _TOKEN_DIMS:
        for m in pattern.finditer(data):
            before = data[m.start() - 1:m.start()]
            if before.isalnum() or before == b"_" or _in_string(data, m.start()):
                continue  # part of a longer name, or inside a string
            kind = m.group().split(b"[")[0].decode()
            raise error(f"line {_line_no(data, m.start())}: element type {kind} takes no "
                        f"dimensions (write {kind}[])")
    for m in _FRAGILE.finditer(data):
        _check_head(data, m.group(1), m.start(1), m.end() - m.start(1), error)
    if b"parameter(" in data:
        _check_parameter_numbers(data, error)


def _check_head(data: bytes, opcode: bytes, at: int, width: int, error) -> None:
    """The rule for one instruction ``NAME = SHAPE opcode(ARGS)`` whose opcode starts at ``at``
    (``width``: the length of ``opcode(``)."""
    line_start = data.rfind(b"\n", 0, at) + 1
    head = _HEAD.match(data, line_start, at)
    if head is None or head.end() > at:
        return
    shape = data[head.end():at].strip()
    kind, dtype, elements = _shape_kind(shape)
    if kind == "other":
        return  # not an instruction head (e.g. inside a string); XLA's parser decides
    name, op = head.group(1).decode(errors="replace"), opcode.decode()

    def fail(reason: str):
        raise error(f"line {_line_no(data, at)}: {op} {name!r}: {reason}")

    if opcode == b"constant":
        if kind == "token":
            fail(f"a constant cannot have the shape {shape.decode()}")
        if kind == "array" and elements is not None and dtype.decode() in _BITS:
            size = (elements * _BITS[dtype.decode()] + 7) // 8
            if size > MAX_LITERAL_BYTES:
                fail(f"{shape.decode()} is {size} bytes, more than the {MAX_LITERAL_BYTES} bytes "
                     f"memmap lets XLA's parser materialise for a literal")
        return
    if opcode in (b"partition-id", b"replica-id"):
        if not (kind == "array" and dtype == b"u32" and elements == 1 and b"[]" in shape):
            fail(f"the shape must be u32[], not {shape.decode()}")
        return
    if opcode in (b"tuple", b"recv", b"send") and kind != "tuple":
        fail(f"the shape must be a tuple, not {shape.decode()}")
    if opcode in (b"after-all", b"outfeed", b"send-done"):
        # XLA gives these a token whatever the text says; a user reading it as an array crashes.
        if not (kind == "token" and dtype == b"token"):
            fail(f"the shape must be token[], not {shape.decode()}")
        return
    if opcode in (b"get-dimension-size", b"set-dimension-size"):
        line_end = data.find(b"\n", at)
        if not _ONE_DIMENSION.search(data, at, line_end if line_end != -1 else len(data)):
            fail("needs dimensions={d}: exactly one dimension")
        return
    args = _split_args(data, at + width)
    if args is None:
        return
    if opcode == b"dot" and len(args) < 2:
        fail(f"{len(args)} operand(s); a dot takes two")
    if opcode == b"conditional" and not args:
        fail("no operands; a conditional takes a branch index or predicate first")
    if opcode == b"recv-done" and args:
        operand = _operand_shape(data, args[0], line_start)
        if operand is not None and not operand.startswith(b"("):
            fail(f"the operand is {operand.decode()}, not the tuple a recv produces")
    if opcode in (b"reshape", b"dynamic-reshape"):
        if kind != "array":
            fail(f"the shape must be an array, not {shape.decode()}")
        rank = len([d for d in _ARRAY.fullmatch(shape).group(2).split(b",") if d.strip()])
        if opcode == b"dynamic-reshape" and len(args) != 1 + rank:
            fail(f"{len(args)} operand(s) for a rank-{rank} result; expected 1 + {rank}")
        if opcode == b"reshape" and len(args) != 1:
            return  # XLA's parser reports the operand count
        operand = _operand_shape(data, args[0], line_start)
        if operand is not None:
            okind, _, n_in = _shape_kind(operand)
            if okind != "array":
                fail(f"the operand is {operand.decode()}, not an array")
            if n_in is not None and elements is not None and n_in != elements:
                fail(f"changes the element count ({operand.decode()}: {n_in} elements, "
                     f"{shape.decode()}: {elements})")


def _computation_spans(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(start, end, header)`` of the computations as XLA prints them: a header line at the
    start of a line ending in ``{``, up to a ``}`` at the start of a line. Stops at the first
    line that breaks this layout (XLA's parser builds the computations before it, and reports
    a syntax error at or after it)."""
    spans = []
    open_at: tuple[int, bytes] | None = None
    for m in _LINE_START.finditer(data):
        start = m.start() + 1
        end = data.find(b"\n", start)
        line = data[start:end if end != -1 else len(data)].rstrip()
        if line.startswith(b"}"):
            if open_at is None:
                break
            spans.append((open_at[0], start, open_at[1]))
            open_at = None
        elif line.endswith(b"{") and not line.startswith((b'"', b"/")):
            if open_at is not None:
                break
            open_at = (start, line)
    return spans


def _check_parameter_numbers(data: bytes, error) -> None:
    """Every computation's parameter numbers must be 0..k-1 (XLA's parser aborts otherwise).

    Each computation of :func:`_computation_spans` is checked; for the rest of the text, only a
    number at least the module's parameter count is refused (a gap somewhere for certain)."""
    params = [(int(m.group(1)), m.start()) for m in _PARAMETER.finditer(data)
              if not _in_string(data, m.start())]
    spans = _computation_spans(data)
    starts = [s for s, _, _ in spans]
    groups: dict[int, list[tuple[int, int]]] = {}
    for number, pos in params:
        k = bisect.bisect_right(starts, pos) - 1
        if k >= 0 and pos < spans[k][1]:
            groups.setdefault(k, []).append((number, pos))
    for k, group in sorted(groups.items()):
        for number, pos in group:
            if number >= len(group):
                name = _HEADER_NAME.match(spans[k][2])
                name = name.group(1).decode(errors="replace") if name else "?"
                raise error(f"line {_line_no(data, pos)}: parameter({number}) but computation "
                            f"{name!r} has {len(group)} parameter(s), numbered 0..{len(group) - 1}")
    for number, pos in params:
        if number >= len(params):
            raise error(f"line {_line_no(data, pos)}: parameter({number}) but the module has only "
                        f"{len(params)} parameter instructions; each computation numbers its "
                        f"parameters 0..k-1")


# --------------------------------------------------------------------------------------------
# Shape checks on the decoded module


def format_shape(shape) -> str:
    """``f32[4,8]`` / ``(f32[4], s32[])`` for a ShapeProto."""
    if shape.element_type == TUPLE_TYPE:
        return "(" + ", ".join(format_shape(s) for s in shape.tuple_shapes) + ")"
    name = PRIMITIVE_TYPES.get(shape.element_type, (f"type{shape.element_type}", 0))[0]
    return f"{name}[{','.join(str(d) for d in shape.dimensions)}]"


class _Bad(Exception):
    """One failed rule (message without the instruction's name)."""


_NOT_ARRAY = frozenset({TUPLE_TYPE, 14, 17, 34, 0})  # tuple, opaque, token, buffer, invalid


def _dims(shape) -> list[int] | None:
    """Array dimensions (dynamic ones at their bound), or None for non-arrays / unbounded dims.
    (A list: slicing the protobuf container is the fastest read.)"""
    if shape.element_type in _NOT_ARRAY:
        return None
    d = shape.dimensions[:]
    return None if d and min(d) < 0 else d


def _same_structure(a, b) -> bool:
    """Same tuple structure and array dimensions (element types not compared)."""
    if (a.element_type == TUPLE_TYPE) != (b.element_type == TUPLE_TYPE):
        return False
    if a.element_type == TUPLE_TYPE:
        return (len(a.tuple_shapes) == len(b.tuple_shapes)
                and all(_same_structure(x, y) for x, y in zip(a.tuple_shapes, b.tuple_shapes)))
    da, db = _dims(a), _dims(b)
    return da is None or db is None or da == db


def _fmt_dims(d) -> str:
    return f"[{','.join(map(str, d))}]"


def _bad_layout(shape) -> str | None:
    """Why an array's (or a tuple leaf's) layout is invalid: ``minor_to_major`` must list each
    dimension once (XLA's parser accepts e.g. ``{1099511627776,0}`` and its printer then
    refuses the module). None when every layout is fine or absent."""
    if shape.element_type == TUPLE_TYPE:
        for leaf in shape.tuple_shapes:
            why = _bad_layout(leaf)
            if why:
                return why
        return None
    if not shape.HasField("layout"):
        return None
    m2m = shape.layout.minor_to_major[:]
    if m2m and sorted(m2m) != list(range(len(shape.dimensions))):
        return (f"layout minor_to_major {{{','.join(map(str, m2m))}}} of {format_shape(shape)} is not a "
                f"permutation of its {len(shape.dimensions)} dimensions")
    return None


def _need(cond: bool, msg) -> None:
    if not cond:
        raise _Bad(msg())


def _broadcast_dims(a, b):
    """XLA's elementwise shape inference without broadcast_dimensions: equal rank with size-1
    (degenerate) broadcasting, or one side a scalar."""
    if len(a) == len(b):
        out = []
        for x, y in zip(a, b):
            _need(x == y or x == 1 or y == 1,
                  lambda: f"operand shapes {_fmt_dims(a)} and {_fmt_dims(b)} do not agree")
            out.append(y if x == 1 else x)
        return out
    _need(not a or not b, lambda: f"operand shapes {_fmt_dims(a)} and {_fmt_dims(b)} have different ranks")
    return b if not a else a


_UNARY = frozenset({
    "abs", "negate", "not", "sign", "floor", "ceil", "round-nearest-afz", "round-nearest-even",
    "exponential", "exponential-minus-one", "log", "log-plus-one", "tanh", "logistic", "sqrt",
    "rsqrt", "cbrt", "sine", "cosine", "tan", "erf", "is-finite", "real", "imag", "popcnt",
    "count-leading-zeros", "convert", "reduce-precision", "copy", "acos", "acosh", "asin",
    "asinh", "atanh", "cosh", "sinh"})
_BINARY = frozenset({
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "remainder", "power", "atan2",
    "and", "or", "xor", "shift-left", "shift-right-arithmetic", "shift-right-logical", "complex",
    "compare", "stochastic-convert", "mulhi"})
# Instructions whose result is always an array: XLA's cost analysis aborts or segfaults when
# the text gives them a tuple or token shape.
_ARRAY_RESULT = (_UNARY - {"copy"}) | _BINARY | frozenset({
    "select", "clamp", "dot", "ragged-dot", "scaled-dot", "bitcast-convert", "reshape",
    "dynamic-reshape", "transpose", "broadcast", "concatenate", "slice", "dynamic-slice",
    "dynamic-update-slice", "pad", "iota", "reverse", "convolution", "gather", "map", "rng",
    "cholesky", "triangular-solve", "fft", "get-dimension-size", "set-dimension-size", "bitcast"})


_UNSEEN = object()


class _Checker:
    """Visits every instruction once (operands before users, as XLA serializes a module);
    dimensions are read from the protos once per instruction and cached."""

    def __init__(self, proto):
        self.proto = proto
        self.comps = {c.id: c for c in proto.computations}
        self.insts: dict[int, object] = {}  # id -> HloInstructionProto (ids are module-wide)
        self._dims: dict[int, list[int] | None] = {}
        self.param_ids: dict[int, list[int]] = {}  # computation id -> parameter ids by number
        self._complete = False

    def shape(self, iid: int):
        i = self.insts.get(iid)
        if i is None and not self._complete:  # an operand serialized after its user
            self._complete = True
            self.insts.update((i.id, i) for c in self.proto.computations for i in c.instructions)
            i = self.insts.get(iid)
        if i is None:
            raise _Bad(f"reads unknown operand id {iid}")
        return i.shape

    def dims(self, iid: int) -> list[int] | None:
        d = self._dims.get(iid, _UNSEEN)
        if d is _UNSEEN:
            d = self._dims[iid] = _dims(self.shape(iid))
        return d

    def operand0_and_result(self, inst):
        """(operand ids, operand 0's dimensions (None without one), the result's dimensions)."""
        ids = inst.operand_ids
        return ids, (self.dims(ids[0]) if ids else None), self.dims(inst.id)

    def operand_shapes(self, inst) -> list:
        return [self.shape(o) for o in inst.operand_ids]

    @staticmethod
    def operand_dims(ops) -> list:
        """Dimensions of each operand (None where unknown); a tuple or token is an error."""
        out = []
        for k, s in enumerate(ops):
            _need(s.element_type not in (TUPLE_TYPE, 17),
                  lambda: f"operand {k} is {format_shape(s)}, expected an array")
            out.append(_dims(s))
        return out

    def called(self, inst, k: int):
        ids = inst.called_computation_ids
        _need(k < len(ids), lambda: f"calls {len(ids)} computation(s), expected at least {k + 1}")
        c = self.comps.get(ids[k])
        _need(c is not None, lambda: f"calls unknown computation id {ids[k]}")
        return c

    def params(self, comp) -> list[int]:
        """Ids of ``comp``'s parameters by number (recorded when the computation was visited)."""
        ps = self.param_ids.get(comp.id)
        if ps is None:  # called before it was visited
            ps = self.param_ids[comp.id] = [
                i.id for i in sorted((i for i in comp.instructions if i.opcode == "parameter"),
                                     key=lambda i: i.parameter_number)]
            self.insts.update((i.id, i) for i in comp.instructions)
        return ps

    def same(self, a: int, b: int) -> bool:
        """Do instructions ``a`` and ``b`` have the same shape structure and dimensions?"""
        da, db = self.dims(a), self.dims(b)
        if da is not None and db is not None:
            return da == db
        return _same_structure(self.shape(a), self.shape(b))

    def check_call_signature(self, inst, comp, what: str, result: bool = True) -> None:
        ps, ops = self.params(comp), inst.operand_ids
        _need(len(ps) == len(ops), lambda: f"passes {len(ops)} operand(s) to {what} {comp.name!r}, "
                                           f"which has {len(ps)} parameter(s)")
        for k, (p, o) in enumerate(zip(ps, ops)):
            _need(self.same(p, o), lambda: f"operand {k} has shape {format_shape(self.shape(o))} but "
                                           f"parameter {k} of {comp.name!r} is "
                                           f"{format_shape(self.shape(p))}")
        if result:
            _need(self.same(comp.root_id, inst.id),
                  lambda: f"{comp.name!r} returns {format_shape(self.shape(comp.root_id))}, not the "
                          f"instruction's shape {format_shape(inst.shape)}")

    # ---- the rules (one method per opcode family; RULES maps opcodes to them) --------------

    def unary(self, inst) -> None:
        ids = inst.operand_ids
        if len(ids) != 1:
            return
        d, out = self.dims(ids[0]), self.dims(inst.id)
        if d == out and d is not None:
            return
        if inst.opcode == "copy" or out is None:
            return  # copies of tuples; unbounded dimensions
        (d,) = self.operand_dims([self.shape(ids[0])])
        _need(d is None or d == out, lambda: f"operand shape {format_shape(self.shape(ids[0]))} "
                                             f"differs from the result's {format_shape(inst.shape)}")

    def binary(self, inst) -> None:
        ids = inst.operand_ids[:]
        if len(ids) != 2:
            return
        dims = self._dims
        out = dims[inst.id]
        if out is not None and dims.get(ids[0]) == out and dims.get(ids[1]) == out:
            return
        ops = self.operand_shapes(inst)
        a, b = self.operand_dims(ops)
        if a is None or b is None or out is None:
            return
        inferred = _broadcast_dims(a, b)
        _need(inferred == out, lambda: f"operands {format_shape(ops[0])} and {format_shape(ops[1])} "
                                       f"give {_fmt_dims(inferred)}, not the result's {_fmt_dims(out)}")

    def select(self, inst) -> None:
        ops = self.operand_shapes(inst)
        if len(ops) != 3:
            return
        pred, t, f = self.operand_dims(ops)
        out = self.dims(inst.id)
        if t is None or f is None or out is None:
            return
        _need(t == f, lambda: f"on_true {format_shape(ops[1])} and on_false {format_shape(ops[2])} differ")
        _need(t == out, lambda: f"the operands are {_fmt_dims(t)}, the result is {_fmt_dims(out)}")
        _need(pred is None or pred == t or pred == [],
              lambda: f"predicate {format_shape(ops[0])} does not match the operands {_fmt_dims(t)}")

    def clamp(self, inst) -> None:
        ops = self.operand_shapes(inst)
        if len(ops) != 3:
            return
        lo, x, hi = self.operand_dims(ops)
        out = self.dims(inst.id)
        if x is None or out is None:
            return
        _need(x == out, lambda: f"operand {format_shape(ops[1])} differs from the result {_fmt_dims(out)}")
        for name, d in (("min", lo), ("max", hi)):
            _need(d is None or d == [] or d == x,
                  lambda: f"{name} {_fmt_dims(d)} is neither a scalar nor {_fmt_dims(x)}")

    def reshape(self, inst) -> None:
        ids = inst.operand_ids
        if len(ids) != 1:
            return
        d, out = self.dims(ids[0]), self.dims(inst.id)
        if d is None or out is None:
            return
        n_in, n_out = math.prod(d), math.prod(out)
        _need(n_in == n_out, lambda: f"{format_shape(self.shape(ids[0]))} ({n_in} elements) cannot "
                                     f"become {format_shape(inst.shape)} ({n_out} elements)")

    def dynamic_slice(self, inst) -> None:
        ids, d, out = self.operand0_and_result(inst)
        if d is None:
            return
        _need(len(d) >= 1 and len(ids) == 1 + len(d),
              lambda: f"{len(ids) - 1} start indices for a rank-{len(d)} operand (XLA needs one per "
                      f"dimension, and an operand of rank >= 1)")
        if out is None:
            return
        sizes = inst.dynamic_slice_sizes[:]
        _need(len(sizes) == len(d) and all(0 <= s <= n for s, n in zip(sizes, d)),
              lambda: f"dynamic_slice_sizes {_fmt_dims(sizes)} do not fit operand "
                      f"{format_shape(self.shape(ids[0]))}")
        _need(sizes == out, lambda: f"dynamic_slice_sizes {_fmt_dims(sizes)} differ from the result "
                                    f"{_fmt_dims(out)}")

    def dynamic_update_slice(self, inst) -> None:
        ids = inst.operand_ids
        if len(ids) < 2:
            return
        d, u, out = self.dims(ids[0]), self.dims(ids[1]), self.dims(inst.id)
        if d is None:
            return
        _need(len(d) >= 1 and len(ids) == 2 + len(d),
              lambda: f"{len(ids) - 2} start indices for a rank-{len(d)} operand (XLA needs one per "
                      f"dimension, and an operand of rank >= 1)")
        if u is None or out is None:
            return
        _need(d == out, lambda: f"operand {_fmt_dims(d)} differs from the result {_fmt_dims(out)}")
        _need(len(u) == len(d) and all(x <= y for x, y in zip(u, d)),
              lambda: f"update {_fmt_dims(u)} does not fit operand {_fmt_dims(d)}")

    def dimension_size(self, inst) -> None:
        """get-dimension-size / set-dimension-size: one dimension of the first operand."""
        ids = inst.operand_ids
        d = self.dims(ids[0]) if ids else None
        if d is None:
            return
        _need(len(inst.dimensions) == 1 and 0 <= inst.dimensions[0] < len(d),
              lambda: f"dimensions={list(inst.dimensions)} is not one dimension of the operand "
                      f"{_fmt_dims(d)}")

    def iota(self, inst) -> None:
        out = self.dims(inst.id)
        if out is not None:
            _need(len(inst.dimensions) == 1 and 0 <= inst.dimensions[0] < len(out),
                  lambda: f"iota_dimension {list(inst.dimensions)} is not a dimension of "
                          f"{format_shape(inst.shape)}")

    def reverse(self, inst) -> None:
        ids = inst.operand_ids
        d = self.dims(ids[0]) if ids else None
        if d is None:
            return
        _need(all(0 <= k < len(d) for k in inst.dimensions),
              lambda: f"dimensions {list(inst.dimensions)} out of range for {_fmt_dims(d)}")
        _need(self.dims(inst.id) in (None, d), lambda: f"operand {_fmt_dims(d)} differs from the result")

    def sort(self, inst) -> None:
        for k, o in enumerate(inst.operand_ids):
            d = self.dims(o)
            if d is not None:
                _need(len(inst.dimensions) == 1 and 0 <= inst.dimensions[0] < len(d),
                      lambda: f"sort dimension {list(inst.dimensions)} is not a dimension of operand "
                              f"{k} {_fmt_dims(d)}")

    def reduce_window(self, inst) -> None:
        ids = inst.operand_ids
        for k, o in enumerate(ids[:len(ids) // 2]):
            d = self.dims(o)
            _need(d is None or len(inst.window.dimensions) == len(d),
                  lambda: f"the window has {len(inst.window.dimensions)} dimensions, operand {k} "
                          f"{_fmt_dims(d)} has {len(d)}")

    def get_tuple_element(self, inst) -> None:
        ops = self.operand_shapes(inst)
        _need(len(ops) == 1 and ops[0].element_type == TUPLE_TYPE,
              lambda: f"operand {format_shape(ops[0]) if ops else '()'} is not a tuple")
        n = len(ops[0].tuple_shapes)
        _need(0 <= inst.tuple_index < n, lambda: f"index={inst.tuple_index} but the tuple has {n} elements")
        elem = ops[0].tuple_shapes[inst.tuple_index]
        _need(_same_structure(elem, inst.shape),
              lambda: f"element {inst.tuple_index} is {format_shape(elem)}, not {format_shape(inst.shape)}")

    def tuple_(self, inst) -> None:
        ops = self.operand_shapes(inst)
        shape = inst.shape
        _need(shape.element_type == TUPLE_TYPE and len(shape.tuple_shapes) == len(ops),
              lambda: f"{len(ops)} operand(s) but the shape is {format_shape(shape)}")
        for k, (s, o) in enumerate(zip(shape.tuple_shapes, ops)):
            _need(_same_structure(s, o), lambda: f"operand {k} is {format_shape(o)} but element {k} "
                                                 f"of the result is {format_shape(s)}")

    def renaming(self, inst) -> None:
        """bitcast (array to array) and opt-barrier (same shape): the importer gives the result
        its operand's buffers, so the structures must agree."""
        ops = self.operand_shapes(inst)
        _need(len(ops) == 1, lambda: f"{len(ops)} operands, expected 1")
        if inst.opcode == "bitcast":
            self.operand_dims(ops)  # an array, not a tuple or token
        else:
            _need(_same_structure(ops[0], inst.shape),
                  lambda: f"operand {format_shape(ops[0])} differs from the result "
                          f"{format_shape(inst.shape)}")

    def fusion(self, inst) -> None:
        self.check_call_signature(inst, self.called(inst, 0), "the fused computation")

    def call(self, inst) -> None:
        self.check_call_signature(inst, self.called(inst, 0), "the called computation")

    def while_(self, inst) -> None:
        ops = self.operand_shapes(inst)
        _need(len(ops) == 1, lambda: f"has {len(ops)} operands, expected 1")
        body, cond = self.called(inst, 0), self.called(inst, 1)  # XLA's order
        _need(_same_structure(ops[0], inst.shape),
              lambda: f"operand {format_shape(ops[0])} differs from the result {format_shape(inst.shape)}")
        self.check_call_signature(inst, body, "the loop body")
        self.check_call_signature(inst, cond, "the loop condition", result=False)

    def check_dot(self, inst) -> None:
        ops = self.operand_shapes(inst)
        if len(ops) != 2:
            return  # sparse dots carry metadata operands
        lhs, rhs = _dims(ops[0]), _dims(ops[1])
        out = _dims(inst.shape)
        if lhs is None or rhs is None or out is None:
            return
        dn = inst.dot_dimension_numbers
        lc, rc = list(dn.lhs_contracting_dimensions), list(dn.rhs_contracting_dimensions)
        lb, rb = list(dn.lhs_batch_dimensions), list(dn.rhs_batch_dimensions)
        for side, dims, idx in (("lhs", lhs, lc + lb), ("rhs", rhs, rc + rb)):
            _need(all(0 <= d < len(dims) for d in idx) and len(set(idx)) == len(idx),
                  lambda: f"{side} contracting/batch dimensions {idx} are not distinct dimensions of "
                  f"{side} {_fmt_dims(dims)}")
        _need(len(lc) == len(rc) and len(lb) == len(rb),
              lambda: f"lhs and rhs have different numbers of contracting ({len(lc)} vs {len(rc)}) or "
              f"batch ({len(lb)} vs {len(rb)}) dimensions")
        for a, b in zip(lc, rc):
            _need(lhs[a] == rhs[b], lambda: f"contracting dimension sizes differ: lhs {format_shape(ops[0])} "
                                    f"dim {a} = {lhs[a]}, rhs {format_shape(ops[1])} dim {b} = {rhs[b]}")
        for a, b in zip(lb, rb):
            _need(lhs[a] == rhs[b], lambda: f"batch dimension sizes differ: lhs dim {a} = {lhs[a]}, "
                                    f"rhs dim {b} = {rhs[b]}")
        expect = ([lhs[d] for d in lb]
                  + [n for d, n in enumerate(lhs) if d not in lc and d not in lb]
                  + [n for d, n in enumerate(rhs) if d not in rc and d not in rb])
        _need(expect == out, lambda: f"{format_shape(ops[0])} x {format_shape(ops[1])} gives "
                             f"{_fmt_dims(expect)}, not the result's {_fmt_dims(out)}")

    def check_transpose(self, inst) -> None:
        ids, d, out = self.operand0_and_result(inst)
        if d is None:
            return
        perm = list(inst.dimensions)
        _need(sorted(perm) == list(range(len(d))),
              lambda: f"dimensions={perm} is not a permutation of the {len(d)} dimensions of the "
                      f"operand {_fmt_dims(d)}")
        if out is not None:
            expect = [d[p] for p in perm]
            _need(expect == out, lambda: f"transposing {_fmt_dims(d)} by {perm} gives "
                                         f"{_fmt_dims(expect)}, not {_fmt_dims(out)}")

    def check_broadcast(self, inst) -> None:
        ids, d, out = self.operand0_and_result(inst)
        if d is None or out is None:
            return
        if not d and not inst.dimensions:
            return  # a scalar broadcast, the common case
        dims = inst.dimensions[:]
        try:
            if [out[k] for k in dims] == d and min(dims, default=0) >= 0 and len(set(dims)) == len(dims):
                return
        except IndexError:
            pass
        _need(len(dims) == len(d), lambda: f"dimensions={dims} has {len(dims)} entries for the "
                                           f"{len(d)} dimensions of the operand {_fmt_dims(d)}")
        _need(all(0 <= k < len(out) for k in dims) and len(set(dims)) == len(dims),
              lambda: f"dimensions={dims} are not distinct dimensions of the result {format_shape(inst.shape)}")
        for i, k in enumerate(dims):
            _need(d[i] == out[k], lambda: f"operand dimension {i} ({d[i]}) differs from result dimension {k} "
                                  f"({out[k]})")

    def check_concatenate(self, inst) -> None:
        ops = self.operand_shapes(inst)
        out = _dims(inst.shape)
        ds = [_dims(s) for s in ops]
        if out is None or any(d is None for d in ds) or not ds:
            return
        _need(len(inst.dimensions) == 1 and 0 <= inst.dimensions[0] < len(out),
              lambda: f"dimensions={list(inst.dimensions)} is not a dimension of {format_shape(inst.shape)}")
        axis = inst.dimensions[0]
        for k, d in enumerate(ds):
            _need(len(d) == len(out) and all(a == b for j, (a, b) in enumerate(zip(d, out)) if j != axis),
                  lambda: f"operand {k} {format_shape(ops[k])} does not match the result "
                  f"{format_shape(inst.shape)} outside dimension {axis}")
        total = sum(d[axis] for d in ds)
        _need(total == out[axis], lambda: f"the operands add up to {total} along dimension {axis}, the result "
                                  f"has {out[axis]}")

    def check_slice(self, inst) -> None:
        ops = self.operand_shapes(inst)
        d, out = (_dims(ops[0]) if ops else None), _dims(inst.shape)
        if d is None or out is None:
            return
        sl = inst.slice_dimensions
        _need(len(sl) == len(d), lambda: f"slice has {len(sl)} ranges for the {len(d)} dimensions of "
                                 f"{format_shape(ops[0])}")
        expect = []
        for k, (s, n) in enumerate(zip(sl, d)):
            _need(0 <= s.start <= s.limit <= n and s.stride >= 1,
                  lambda: f"range [{s.start}:{s.limit}:{s.stride}] of dimension {k} does not fit size {n}")
            expect.append(-(-(s.limit - s.start) // s.stride))
        _need(expect == out, lambda: f"slicing {format_shape(ops[0])} gives {_fmt_dims(expect)}, not "
                                    f"{_fmt_dims(out)}")

    def check_pad(self, inst) -> None:
        ops = self.operand_shapes(inst)
        d, out = (_dims(ops[0]) if ops else None), _dims(inst.shape)
        if d is None or out is None:
            return
        pc = inst.padding_config.dimensions
        _need(len(pc) == len(d), lambda: f"padding has {len(pc)} entries for the {len(d)} dimensions of "
                                 f"{format_shape(ops[0])}")
        expect = [p.edge_padding_low + p.edge_padding_high + n + max(n - 1, 0) * p.interior_padding
                  for p, n in zip(pc, d)]
        _need(all(p.interior_padding >= 0 for p in pc), lambda: "negative interior padding")
        _need(expect == out, lambda: f"padding {format_shape(ops[0])} gives {_fmt_dims(expect)}, not "
                             f"{_fmt_dims(out)}")

    def check_reduce(self, inst) -> None:
        ops = self.operand_shapes(inst)
        _need(len(ops) % 2 == 0 and ops, lambda: f"has {len(ops)} operands; a reduce takes inputs and as many "
                                         f"init values")
        n = len(ops) // 2
        ins = [_dims(s) for s in ops[:n]]
        if any(d is None for d in ins):
            return
        for k, d in enumerate(ins[1:], 1):
            _need(d == ins[0], lambda: f"input {k} {format_shape(ops[k])} differs from input 0 "
                               f"{format_shape(ops[0])}")
        for k, s in enumerate(ops[n:]):
            _need(_dims(s) in (None, []), lambda: f"init value {format_shape(s)} is not a scalar")
        dims = list(inst.dimensions)
        d = ins[0]
        _need(all(0 <= k < len(d) for k in dims) and len(set(dims)) == len(dims),
              lambda: f"dimensions={dims} are not distinct dimensions of {format_shape(ops[0])}")
        kept = [x for k, x in enumerate(d) if k not in dims]
        outs = list(inst.shape.tuple_shapes) if inst.shape.element_type == TUPLE_TYPE else [inst.shape]
        _need(len(outs) == n, lambda: f"{n} input(s) but {len(outs)} result(s)")
        for s in outs:
            o = _dims(s)
            _need(o is None or o == kept, lambda: f"reducing {format_shape(ops[0])} over {dims} gives "
                                          f"{_fmt_dims(kept)}, not {format_shape(s)}")
        comp = self.called(inst, 0)
        _need(len(self.params(comp)) == 2 * n, lambda: f"the reducer {comp.name!r} takes "
                                               f"{len(self.params(comp))} parameters, expected {2 * n}")

    def check_convolution(self, inst) -> None:
        ops = self.operand_shapes(inst)
        if len(ops) != 2:
            return
        lhs, rhs, out = _dims(ops[0]), _dims(ops[1]), _dims(inst.shape)
        if lhs is None or rhs is None or out is None:
            return
        dn = inst.convolution_dimension_numbers
        for name, idx, rank in (
                ("input", [dn.input_batch_dimension, dn.input_feature_dimension,
                           *dn.input_spatial_dimensions], len(lhs)),
                ("kernel", [dn.kernel_input_feature_dimension, dn.kernel_output_feature_dimension,
                            *dn.kernel_spatial_dimensions], len(rhs)),
                ("output", [dn.output_batch_dimension, dn.output_feature_dimension,
                            *dn.output_spatial_dimensions], len(out))):
            _need(len(idx) == rank and sorted(idx) == list(range(rank)),
                  lambda: f"{name} dimension numbers {idx} are not the {rank} dimensions of the {name}")
        n = len(dn.input_spatial_dimensions)
        _need(len(inst.window.dimensions) == n, lambda: f"window has {len(inst.window.dimensions)} "
                                                f"dimensions for {n} spatial dimensions")
        groups = max(1, inst.feature_group_count)
        _need(lhs[dn.input_feature_dimension] == rhs[dn.kernel_input_feature_dimension] * groups,
              lambda: f"input features {lhs[dn.input_feature_dimension]} != kernel input features "
              f"{rhs[dn.kernel_input_feature_dimension]} x feature_group_count {groups}")


_RULES = {
    **{op: _Checker.unary for op in _UNARY}, **{op: _Checker.binary for op in _BINARY},
    "select": _Checker.select, "clamp": _Checker.clamp, "dot": _Checker.check_dot,
    "reshape": _Checker.reshape, "transpose": _Checker.check_transpose,
    "broadcast": _Checker.check_broadcast, "concatenate": _Checker.check_concatenate,
    "slice": _Checker.check_slice, "dynamic-slice": _Checker.dynamic_slice,
    "dynamic-update-slice": _Checker.dynamic_update_slice, "pad": _Checker.check_pad,
    "iota": _Checker.iota, "reverse": _Checker.reverse, "sort": _Checker.sort,
    "get-dimension-size": _Checker.dimension_size, "set-dimension-size": _Checker.dimension_size,
    "reduce": _Checker.check_reduce, "reduce-window": _Checker.reduce_window,
    "convolution": _Checker.check_convolution, "get-tuple-element": _Checker.get_tuple_element,
    "tuple": _Checker.tuple_, "bitcast": _Checker.renaming, "opt-barrier": _Checker.renaming,
    "fusion": _Checker.fusion, "call": _Checker.call,
    "while": _Checker.while_,
}


def check_shapes(proto, error) -> tuple[dict[int, object], dict[int, list[int] | None]]:
    """Check every instruction of every computation; raise ``error(reason)`` on the first
    inconsistency (the reason names the computation and the instruction). Returns the
    instructions by id (ids are unique in a module) and their dimensions (None for tuples,
    tokens and unbounded shapes), for the importer to reuse."""
    checker = _Checker(proto)
    insts, dims = checker.insts, checker._dims
    rules, not_array, array_result = _RULES, _NOT_ARRAY, _ARRAY_RESULT
    for comp in proto.computations:
        params: dict[int, int] = {}
        for inst in comp.instructions:
            iid = inst.id
            insts[iid] = inst
            shape = inst.shape
            op = inst.opcode
            if shape.element_type in not_array:
                dims[iid] = None
                if op in array_result and shape.element_type in (TUPLE_TYPE, 17):
                    raise error(f"instruction {inst.name!r} ({op}) in computation {comp.name!r}: "
                                f"the result must be an array, not {format_shape(shape)}")
            else:
                d = dims[iid] = shape.dimensions[:]
                if d and min(d) < 0:
                    dims[iid] = None
            why = _bad_layout(shape)
            if why:
                raise error(f"instruction {inst.name!r} ({op}) in computation {comp.name!r}: {why}")
            if op == "parameter":
                params[inst.parameter_number] = iid
                continue
            rule = rules.get(op)
            if rule is None:
                continue
            try:
                rule(checker, inst)
            except _Bad as e:
                raise error(f"instruction {inst.name!r} ({op}) in computation {comp.name!r}: {e}") from None
        checker.param_ids.setdefault(comp.id, [params[k] for k in sorted(params)])
    return insts, dims
