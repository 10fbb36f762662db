"""Seeded random mutations of HLO text, for the fuzz test of tests/test_bad_input.py.

``mutate(data, rng)`` applies one to three edits to the bytes of an HLO module: a flipped byte,
a deleted / duplicated / swapped line, a changed number, a changed dimension or element type, a
changed opcode, or an operand renamed to another instruction. The same ``random.Random`` seed
gives the same mutations.
"""

from __future__ import annotations

import random
import re

__all__ = ["mutate", "MUTATIONS"]

_NUMBER = re.compile(rb"\d+")
_SHAPE = re.compile(rb"\b(pred|s8|s16|s32|s64|u8|u32|bf16|f16|f32|f64)\[([0-9,]*)\]")
_OPCODE = re.compile(rb"= (\S+) ([a-z][a-z0-9-]*)\(")
_NAME = re.compile(rb"^\s*(?:ROOT )?([A-Za-z_][\w.-]*) = ", re.MULTILINE)
_DTYPES = [b"pred", b"s8", b"s32", b"s64", b"u8", b"f16", b"bf16", b"f32", b"f64", b"s4", b"token"]
_OPCODES = [b"add", b"multiply", b"dot", b"reshape", b"transpose", b"broadcast", b"concatenate",
            b"slice", b"convert", b"reduce", b"select", b"compare", b"tuple", b"get-tuple-element",
            b"bitcast", b"copy", b"while", b"call", b"fusion", b"parameter", b"constant", b"negate",
            b"clamp", b"iota", b"pad", b"reverse", b"gather", b"scatter", b"dynamic-slice",
            b"convolution", b"sort", b"map", b"reduce-window", b"custom-call", b"exponential",
            b"copy-start", b"copy-done", b"after-all", b"rng", b"conditional", b"bitcast-convert"]
_NUMBERS = [0, 1, 2, 3, 7, 64, 255, 4096, 65536, 2**31, 2**40, 10**11, 2**63, 10**30]


def _flip_byte(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data))
    new = rng.choice([rng.randrange(256), ord(rng.choice("{}()[],=%:;\n #-0123456789abcxyz"))])
    return data[:i] + bytes([new]) + data[i + 1:]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _delete_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    del lines[rng.randrange(len(lines))]
    return b"\n".join(lines)


def _duplicate_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return b"\n".join(lines)


def _swap_lines(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def _pick(pattern: re.Pattern, data: bytes, rng: random.Random):
    found = list(pattern.finditer(data))
    return rng.choice(found) if found else None


def _change_number(data: bytes, rng: random.Random) -> bytes:
    m = _pick(_NUMBER, data, rng)
    if m is None:
        return data
    old = int(m.group())
    new = rng.choice(_NUMBERS + [old + 1, max(old - 1, 0), old * 2])
    return data[:m.start()] + str(new).encode() + data[m.end():]


def _change_shape(data: bytes, rng: random.Random) -> bytes:
    m = _pick(_SHAPE, data, rng)
    if m is None:
        return data
    dtype, dims = m.group(1), [d for d in m.group(2).split(b",") if d]
    kind = rng.randrange(4)
    if kind == 0:
        dtype = rng.choice(_DTYPES)
    elif kind == 1 and dims:
        k = rng.randrange(len(dims))
        dims[k] = str(rng.choice(_NUMBERS + [int(dims[k]) + 1, int(dims[k]) * 2])).encode()
    elif kind == 2:
        dims.insert(rng.randrange(len(dims) + 1), str(rng.choice([1, 2, 8])).encode())
    elif dims:
        del dims[rng.randrange(len(dims))]
    return data[:m.start()] + dtype + b"[" + b",".join(dims) + b"]" + data[m.end():]


def _change_opcode(data: bytes, rng: random.Random) -> bytes:
    m = _pick(_OPCODE, data, rng)
    if m is None:
        return data
    return data[:m.start(2)] + rng.choice(_OPCODES) + data[m.end(2):]


def _rename_operand(data: bytes, rng: random.Random) -> bytes:
    names = [m.group(1) for m in _NAME.finditer(data)]
    if len(names) < 2:
        return data
    old, new = rng.sample(names, 2)
    uses = [m for m in re.finditer(rb"[(, ]%?" + re.escape(old) + rb"(?=[,)])", data)]
    if not uses:
        return data
    m = rng.choice(uses)
    return data[:m.start() + 1] + new + data[m.end():]


MUTATIONS = (_flip_byte, _delete_line, _duplicate_line, _swap_lines, _change_number,
             _change_shape, _change_shape, _change_opcode, _change_opcode, _rename_operand,
             _rename_operand)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits of ``data`` (HLO text as bytes); deterministic given ``rng``."""
    for _ in range(rng.choice((1, 1, 2, 3))):
        data = rng.choice(MUTATIONS)(data, rng)
    return data
