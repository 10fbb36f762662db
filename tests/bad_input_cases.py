"""The table of user mistakes shared by tests/test_bad_input.py and benchmarks/bad_input_table.py.

``CASES``: each row is a ``memmap`` command line (``{tmp}``, ``{cnn}``, ``{lstm}`` are filled in
by :func:`fill`), the documented exit code, and a substring of the one stderr line (of stdout
for exit 0); :func:`mismatch` says what an outcome got wrong (``None``: as expected).
:func:`write_inputs` writes the input files into a folder; ``PLAN_ARGV`` makes the LSTM plan
that ``verify`` is given with the CNN program. :func:`fuzz_case` is the fuzz test's i-th mutated
HLO text and mode (tests/hlo_mutations.py, seed ``i``), :func:`fuzz_argv` its command line and
:func:`fuzz_allowed` its allowed exit codes.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from tests.hlo_mutations import mutate

__all__ = ["CASES", "CNN", "FILES", "FUZZ_COUNT", "LSTM", "PLAN_ARGV", "ROOT", "Case", "fill",
           "fuzz_allowed", "fuzz_argv", "fuzz_case", "mismatch", "opt_argv", "write_inputs"]

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "examples" / "small_cnn_train.after.hlo"
LSTM = ROOT / "examples" / "lstm.before.hlo"


def _module(body: str, computations: str = "") -> str:
    return f"HloModule m\n{computations}\nENTRY e {{\n{body}\n}}\n"


ADD = "add {\n x = f32[] parameter(0)\n y = f32[] parameter(1)\n ROOT s = f32[] add(x, y)\n}\n"
# Input files: name -> text (bytes for binary). Placed in the test's folder as {tmp}/NAME.
FILES: dict[str, str | bytes] = {
    "empty.hlo": "",
    "plain.txt": "hello world\n",
    "binary.hlo": bytes(range(256)) * 40,
    "layout_oob.hlo": _module(" a = f32[8,256]{1099511627776,0} parameter(0)\n ROOT c = f32[8,256] negate(a)"),
    "add_mismatch.hlo": _module(" a = f32[4] parameter(0)\n b = f32[8] parameter(1)\n"
                                " ROOT c = f32[4] add(a, b)"),
    "dot_mismatch.hlo": _module(" a = f32[4,3] parameter(0)\n b = f32[5,2] parameter(1)\n ROOT c = "
                                "f32[4,2] dot(a, b), lhs_contracting_dims={1}, rhs_contracting_dims={0}"),
    "dot_baddim.hlo": _module(" a = f32[4,3] parameter(0)\n b = f32[3,2] parameter(1)\n ROOT c = "
                              "f32[4,2] dot(a, b), lhs_contracting_dims={7}, rhs_contracting_dims={0}"),
    "dot_result.hlo": _module(" a = f32[4,3] parameter(0)\n b = f32[3,2] parameter(1)\n ROOT c = "
                              "f32[4,5] dot(a, b), lhs_contracting_dims={1}, rhs_contracting_dims={0}"),
    "transpose_perm.hlo": _module(" a = f32[4,3] parameter(0)\n ROOT c = f32[3,4] transpose(a), "
                                  "dimensions={0,0}"),
    "transpose_rank.hlo": _module(" a = f32[4,3] parameter(0)\n ROOT c = f32[3,4] transpose(a), "
                                  "dimensions={1,0,2}"),
    "broadcast_bad.hlo": _module(" a = f32[4] parameter(0)\n ROOT c = f32[3,4] broadcast(a), "
                                 "dimensions={5}"),
    "concat_bad.hlo": _module(" a = f32[4] parameter(0)\n ROOT c = f32[9] concatenate(a, a), "
                              "dimensions={0}"),
    "slice_oob.hlo": _module(" a = f32[4] parameter(0)\n ROOT c = f32[9] slice(a), slice={[0:9]}"),
    "reduce_dims.hlo": _module(" a = f32[4,3] parameter(0)\n z = f32[] constant(0)\n ROOT c = f32[4] "
                               "reduce(a, z), dimensions={9}, to_apply=add", ADD),
    "select_bad.hlo": _module(" p = pred[4] parameter(0)\n a = f32[4] parameter(1)\n b = f32[5] "
                              "parameter(2)\n ROOT c = f32[4] select(p, a, b)"),
    "convert_bad.hlo": _module(" a = s32[4] parameter(0)\n ROOT c = f32[6] convert(a)"),
    "gte_oob.hlo": _module(" a = (f32[4], f32[2]) parameter(0)\n ROOT c = f32[4] "
                           "get-tuple-element(a), index=5"),
    "call_args.hlo": _module(" a = f32[4] parameter(0)\n ROOT c = f32[4] call(a), to_apply=f",
                             "f {\n x = f32[4] parameter(0)\n y = f32[4] parameter(1)\n"
                             " ROOT s = f32[4] add(x, y)\n}\n"),
    "while_body.hlo": _module(" a = f32[4] parameter(0)\n ROOT c = f32[4] while(a), condition=cond, "
                              "body=body", "cond {\n x = f32[4] parameter(0)\n ROOT s = pred[] "
                              "constant(true)\n}\nbody {\n x = f32[8] parameter(0)\n ROOT s = f32[8] "
                              "negate(x)\n}\n"),
    # XLA's parser stops the process on these (CHECK failure or segfault) without the text guards.
    "reshape_count.hlo": _module(" a = f32[4] parameter(0)\n ROOT c = f32[5] reshape(a)"),
    "param_gap.hlo": _module(" a = f32[4] parameter(0)\n b = f32[4] parameter(2)\n"
                             " ROOT c = f32[4] add(a, b)"),
    "token_dims.hlo": _module(" a = token[4] parameter(0)\n ROOT c = f32[4] constant({1,2,3,4})"),
    "tuple_array.hlo": _module(" a = f32[4] parameter(0)\n ROOT c = f32[4] tuple(a)"),
    "dot_one_operand.hlo": _module(" a = f32[4,4] parameter(0)\n ROOT c = f32[4,4] dot(a), "
                                   "lhs_contracting_dims={1}, rhs_contracting_dims={0}"),
    "conditional_empty.hlo": _module(" a = f32[4] parameter(0)\n ROOT c = f32[4] conditional()"),
    "constant_token.hlo": _module(" ROOT c = token[] constant(0)"),
    "replica_id.hlo": _module(" ROOT c = f32[4] replica-id()"),
    "big_constant.hlo": _module(" ROOT c = f32[1000000000] constant({...})"),
    "after_all_array.hlo": _module(" a = f32[4] parameter(0)\n b = f32[4] after-all(a)\n"
                                   " ROOT c = f32[2,2] reshape(b)"),
    "send_array.hlo": _module(" a = f32[4] parameter(0)\n b = token[] after-all()\n"
                              " ROOT c = f32[4] send(a, b), channel_id=1"),
    "dimension_size.hlo": _module(" a = s32[8,1] parameter(0)\n"
                                  " ROOT c = s32[] get-dimension-size(a), dimensions={}"),
    "bitcast_tuple.hlo": _module(" a = f32[4] parameter(0)\n b = (f32[4]) bitcast(a)\n"
                                 " ROOT c = f32[4] get-tuple-element(b), index=0"),
    "barrier_shape.hlo": _module(" a = f32[4] parameter(0)\n b = (f32[4]) opt-barrier(a)\n"
                                 " ROOT c = f32[4] get-tuple-element(b), index=0"),
    "add_tuple.hlo": _module(" a = f32[4] parameter(0)\n ROOT c = (f32[4], f32[4]) add(a, a)"),
    "dus_scalar.hlo": _module(" a = f32[] parameter(0)\n b = f32[] parameter(1)\n"
                              " ROOT c = f32[] dynamic-update-slice(a, b)"),
    # Sizes beyond 64-bit integers.
    "absurd.hlo": _module(" a = f32[100000000000,100000000000] parameter(0)\n"
                          " b = f32[100000000000,100000000000] negate(a)\n"
                          " ROOT c = f32[100000000000,100000000000] negate(b)"),
    "absurd_total.hlo": _module(" a = u8[4611686018427387904] parameter(0)\n"
                                " ROOT c = u8[4611686018427387904] negate(a)"),
    # CSV for memmap alloc.
    "tiny.csv": "id,lower,upper,size\n0,0,2,4\n1,1,3,4\n",
    "inverted.csv": "id,lower,upper,size\n0,5,2,4\n",
    "garbage.csv": "hello\nworld\n",
    "huge.csv": f"id,lower,upper,size\n0,0,2,{10 ** 30}\n",
    "binary.csv": bytes(range(256)) * 4,
    "notjson.json": "{not json",
}


@dataclasses.dataclass(frozen=True)
class Case:
    """One row: ``argv`` ({tmp}, {cnn}, {lstm} are filled in), the exit code, a substring of
    the one stderr line (or of stdout for exit 0), optional stdin bytes."""

    name: str
    argv: tuple[str, ...]
    code: int
    says: str
    stdin: bytes | None = None


def opt_argv(inp: str, *extra: str, out: str = "{tmp}/out") -> tuple[str, ...]:
    return ("optimize", inp, "--scratchpad", "64MiB", "--solver", "msa", "--no-plot", "-o", out,
            *extra)


CASES = [
    # files and folders
    Case("missing file", opt_argv("{tmp}/nope.hlo"), 2, "nope.hlo: no such file"),
    Case("folder without dumps", opt_argv("{tmp}/emptydir"), 2, "no HLO module file matching"),
    Case("--stage before, only after dumps", opt_argv("{tmp}/dumps", "--stage", "before"), 2,
         "before_optimizations.txt"),
    Case("binary file", opt_argv("{tmp}/binary.hlo"), 2, "not an HLO text file (byte 0x80"),
    Case("empty file", opt_argv("{tmp}/empty.hlo"), 2, "empty input"),
    Case("text that is not HLO", opt_argv("{tmp}/plain.txt"), 2, "XLA's HLO parser rejected"),
    # flags
    Case("--stage middle", opt_argv("{cnn}", "--stage", "middle"), 2, "invalid choice: 'middle'"),
    Case("--scratchpad 4XB", ("optimize", "{cnn}", "--scratchpad", "4XB", "-o", "{tmp}/o"), 2,
         "unknown unit 'XB'"),
    Case("--scratchpad 0", ("optimize", "{cnn}", "--scratchpad", "0", "-o", "{tmp}/o"), 2,
         "must be positive"),
    Case("--scratchpad nan", ("optimize", "{cnn}", "--scratchpad", "nan", "-o", "{tmp}/o"), 2,
         "invalid size 'nan'"),
    Case("--scratchpad 1e400", ("optimize", "{cnn}", "--scratchpad", "1e400", "-o", "{tmp}/o"), 2,
         "invalid size '1e400'"),
    Case("--scratchpad over 2**62 (regression: accepted)",
         ("optimize", "{cnn}", "--scratchpad", "100000000TiB", "-o", "{tmp}/o"), 2, "2**62"),
    Case("--scratchpad 1.1B", ("optimize", "{cnn}", "--scratchpad", "1.1B", "-o", "{tmp}/o"), 2,
         "not a whole number"),
    Case("unknown target", ("optimize", "{cnn}", "--target", "gpu9000", "-o", "{tmp}/o"), 2,
         "unknown target 'gpu9000'"),
    Case("unknown solver", opt_argv("{cnn}", "--solver", "magic"), 2, "invalid choice: 'magic'"),
    Case("unknown mode", opt_argv("{cnn}", "--mode", "fast"), 2, "invalid choice: 'fast'"),
    Case("neither --target nor --scratchpad", ("optimize", "{cnn}", "-o", "{tmp}/o"), 2, "--target"),
    Case("--workers 0", opt_argv("{cnn}", "--workers", "0"), 2, "workers"),
    Case("--seed abc", opt_argv("{cnn}", "--seed", "abc"), 2, "invalid int value: 'abc'"),
    Case("unknown subcommand", ("frobnicate",), 2, "invalid choice: 'frobnicate'"),
    # target numbers
    Case("--offchip-bandwidth 0", opt_argv("{cnn}", "--offchip-bandwidth", "0"), 2, "positive"),
    Case("--offchip-bandwidth 25Gb/s (bits)", opt_argv("{cnn}", "--offchip-bandwidth", "25Gb/s"), 2,
         "unknown unit 'Gb/s'"),
    Case("--onchip-bandwidth inf", opt_argv("{cnn}", "--onchip-bandwidth", "inf"), 2,
         "invalid bandwidth 'inf'"),
    Case("--compute fast", opt_argv("{cnn}", "--compute", "fast"), 2, "invalid compute rate 'fast'"),
    Case("--compute 4TB/s (wrong unit)", opt_argv("{cnn}", "--compute", "4TB/s"), 2, "unknown unit"),
    Case("--alignment 3", opt_argv("{cnn}", "--alignment", "3"), 2, "not a power of two"),
    Case("--dma-engines 0", opt_argv("{cnn}", "--dma-engines", "0"), 2, "dma_engines 0"),
    Case("--dma-engines 10**9", opt_argv("{cnn}", "--dma-engines", "1000000000"), 2, "between 1 and 1024"),
    # -o (checked before importing and solving)
    Case("-o under a regular file (regression: exit 1 after solving)",
         opt_argv("{cnn}", out="{tmp}/afile/out"), 2, "not a directory"),
    Case("-o is a regular file", opt_argv("{cnn}", out="{tmp}/afile"), 2, "not a directory"),
    Case("-o under a missing folder under a file", opt_argv("{cnn}", out="{tmp}/afile/x/y"), 2,
         "not a directory"),
    # stdin
    Case("stdin: empty (regression: read as the path '.')", opt_argv("-"), 2, "<stdin>: empty input",
         stdin=b""),
    Case("stdin: newlines only (regression: blank error)", opt_argv("-"), 2, "<stdin>: empty input",
         stdin=b"\n\n  \n"),
    Case("stdin: not HLO", opt_argv("-"), 2, "<stdin>: XLA's HLO parser rejected", stdin=b"garbage\n"),
    Case("stdin: binary", opt_argv("-"), 2, "<stdin>: not HLO text (byte 0x80", stdin=bytes(range(256))),
    Case("stdin: shape error", opt_argv("-"), 2, "<stdin>: instruction 'c' (add)",
         stdin=FILES["add_mismatch.hlo"].encode()),
    # shapes (regression: all planned with exit 0 or were internal errors)
    # found by the fuzz test once optimize wrote annotated.hlo: XLA parses it, its printer refuses
    Case("layout minor_to_major out of range", opt_argv("{tmp}/layout_oob.hlo"), 2,
         "layout minor_to_major {1099511627776,0} of f32[8,256] is not a permutation"),
    Case("add f32[4] + f32[8]", opt_argv("{tmp}/add_mismatch.hlo"), 2,
         "instruction 'c' (add) in computation 'e': operand shapes [4] and [8] do not agree"),
    Case("dot contracting 3 vs 5", opt_argv("{tmp}/dot_mismatch.hlo"), 2, "contracting dimension sizes differ"),
    Case("dot contracting dim out of range (regression: exit 1)", opt_argv("{tmp}/dot_baddim.hlo"), 2,
         "(dot)"),
    Case("dot result shape", opt_argv("{tmp}/dot_result.hlo"), 2, "gives [4,2], not the result's [4,5]"),
    Case("transpose not a permutation", opt_argv("{tmp}/transpose_perm.hlo"), 2, "not a permutation"),
    Case("transpose rank (regression: XLA CHECK abort)", opt_argv("{tmp}/transpose_rank.hlo"), 2,
         "not a permutation"),
    Case("broadcast dimensions", opt_argv("{tmp}/broadcast_bad.hlo"), 2, "(broadcast)"),
    Case("concatenate sizes", opt_argv("{tmp}/concat_bad.hlo"), 2, "add up to 8"),
    Case("slice out of range", opt_argv("{tmp}/slice_oob.hlo"), 2, "does not fit size 4"),
    Case("reduce dimension", opt_argv("{tmp}/reduce_dims.hlo"), 2, "(reduce)"),
    Case("select operands", opt_argv("{tmp}/select_bad.hlo"), 2, "(select)"),
    Case("convert changes dimensions", opt_argv("{tmp}/convert_bad.hlo"), 2, "(convert)"),
    Case("get-tuple-element index (regression: exit 1)", opt_argv("{tmp}/gte_oob.hlo"), 2,
         "index=5 but the tuple has 2 elements"),
    Case("call with too few operands", opt_argv("{tmp}/call_args.hlo"), 2, "1 operand(s)"),
    Case("while body shape", opt_argv("{tmp}/while_body.hlo"), 2, "(while)"),
    # XLA's parser would abort or segfault (regression: the process died, exit -6 / -11)
    Case("reshape f32[4] -> f32[5]", opt_argv("{tmp}/reshape_count.hlo"), 2, "changes the element count"),
    Case("parameter(2) without parameter(1)", opt_argv("{tmp}/param_gap.hlo"), 2,
         "parameter(2) but computation 'e' has 2 parameter(s)"),
    Case("token[4]", opt_argv("{tmp}/token_dims.hlo"), 2, "token takes no dimensions"),
    Case("tuple with an array shape", opt_argv("{tmp}/tuple_array.hlo"), 2, "must be a tuple"),
    Case("dot with one operand", opt_argv("{tmp}/dot_one_operand.hlo"), 2, "a dot takes two"),
    Case("conditional without operands", opt_argv("{tmp}/conditional_empty.hlo"), 2, "no operands"),
    Case("token constant", opt_argv("{tmp}/constant_token.hlo"), 2, "cannot have the shape token[]"),
    Case("replica-id not u32[]", opt_argv("{tmp}/replica_id.hlo"), 2, "must be u32[]"),
    Case("4 GB elided constant (XLA would fill 8 GB)", opt_argv("{tmp}/big_constant.hlo"), 2,
         "4000000000 bytes"),
    Case("after-all with an array shape, read by a reshape", opt_argv("{tmp}/after_all_array.hlo"), 2,
         "must be token[]"),
    Case("send with an array shape", opt_argv("{tmp}/send_array.hlo"), 2, "must be a tuple"),
    Case("get-dimension-size without dimensions (segfault)", opt_argv("{tmp}/dimension_size.hlo"), 2,
         "exactly one dimension"),
    Case("bitcast to a tuple (regression: exit 1, TypeError)", opt_argv("{tmp}/bitcast_tuple.hlo"), 2,
         "(bitcast) in computation 'e': the result must be an array"),
    Case("opt-barrier changing the shape (regression: exit 1)", opt_argv("{tmp}/barrier_shape.hlo"), 2,
         "(opt-barrier) in computation 'e': operand f32[4] differs"),
    Case("add with a tuple shape (abort in XLA's cost analysis)", opt_argv("{tmp}/add_tuple.hlo"), 2,
         "(add) in computation 'e': the result must be an array"),
    Case("dynamic-update-slice of a scalar (segfault in XLA's cost analysis)",
         opt_argv("{tmp}/dus_scalar.hlo"), 2, "rank-0 operand"),
    # absurd sizes (regression: OverflowError, exit 1)
    Case("f32[1e11,1e11], strict", opt_argv("{tmp}/absurd.hlo"), 2, "2**62"),
    Case("f32[1e11,1e11], tiered", opt_argv("{tmp}/absurd.hlo", "--mode", "tiered"), 2, "2**62"),
    Case("f32[1e11,1e11], budgets", ("budgets", "{tmp}/absurd.hlo"), 2, "2**62"),
    Case("2 x 2**62 bytes in total", ("budgets", "{tmp}/absurd_total.hlo"), 2, "add up to"),
    # verify and budgets
    Case("verify: plan missing", ("verify", "{cnn}", "{tmp}/nope.json"), 2, "nope.json"),
    Case("verify: plan not JSON", ("verify", "{cnn}", "{tmp}/notjson.json"), 2, "invalid JSON"),
    Case("verify: plan of another program", ("verify", "{cnn}", "{tmp}/lstm_plan.json"), 2,
         "different graph"),
    Case("budgets --alignment 3", ("budgets", "{cnn}", "--alignment", "3"), 2, "not a power of two"),
    Case("budgets --target nope", ("budgets", "{cnn}", "--target", "nope"), 2, "unknown target"),
    # alloc
    Case("alloc -h (regression: unrecognized arguments)", ("alloc", "-h"), 0, "usage: memmap alloc"),
    Case("alloc options before the file (regression)", ("alloc", "--capacity", "1MiB",
                                                          "{tmp}/tiny.csv", "-o", "{tmp}/o.csv"), 0, ""),
    Case("alloc without arguments", ("alloc",), 2, "required: input"),
    Case("alloc missing file", ("alloc", "{tmp}/missing.csv", "--capacity", "1MiB"), 2, "no such file"),
    Case("alloc --capacity lots", ("alloc", "{tmp}/tiny.csv", "--capacity", "lots"), 2, "invalid size"),
    Case("alloc lower > upper", ("alloc", "{tmp}/inverted.csv", "--capacity", "1MiB"), 2,
         "inverted.csv:2: column 'upper'"),
    Case("alloc not a CSV table", ("alloc", "{tmp}/garbage.csv", "--capacity", "1MiB"), 2,
         "missing column 'id'"),
    Case("alloc binary file (regression: exit 1)", ("alloc", "{tmp}/binary.csv", "--capacity", "1MiB"),
         2, "not a CSV text file"),
    Case("alloc size 10**30 (regression: overflow)", ("alloc", "{tmp}/huge.csv", "--capacity", "1MiB"),
         2, "beyond 2**62"),
    # cascade
    Case("cascade -h (regression: unrecognized arguments)", ("cascade", "-h"), 0,
         "usage: memmap cascade"),
    Case("cascade fusemax -h", ("cascade", "fusemax", "-h"), 0, "--seq-lens"),
    Case("cascade bogus (regression: multi-line usage)", ("cascade", "bogus"), 2,
         "invalid choice: 'bogus'"),
    Case("cascade fusemax --models nope (regression: on stdout)", ("cascade", "fusemax", "--models",
                                                                   "nope"), 2, "unknown model 'nope'"),
    Case("cascade fusemax --batch 0 (regression: ZeroDivisionError)", ("cascade", "fusemax",
                                                                       "--batch", "0"), 2, "at least 1"),
    Case("cascade fusemax --seq-lens -5", ("cascade", "fusemax", "--seq-lens", "-5"), 2, "at least 1"),
    Case("cascade detect missing file", ("cascade", "detect", "{tmp}/nope.hlo"), 2, "nope.hlo"),
    Case("cascade detect binary file", ("cascade", "detect", "{tmp}/binary.hlo"), 2,
         "not an HLO text file"),
    Case("cascade detect shape error (regression: exit 0)", ("cascade", "detect",
                                                             "{tmp}/add_mismatch.hlo"), 2, "(add)"),
    Case("cascade detect parser abort (regression: crash)", ("cascade", "detect",
                                                             "{tmp}/reshape_count.hlo"), 2,
         "changes the element count"),
    Case("cascade detect empty stdin", ("cascade", "detect", "-"), 2, "<stdin>: empty input",
         stdin=b""),
]


# ``verify``'s plan of another program: {tmp}/lstm_out/plan.json, copied to {tmp}/lstm_plan.json.
PLAN_ARGV = ("optimize", "{lstm}", "--scratchpad", "64MiB", "--solver", "msa", "--no-plot", "-o",
             "{tmp}/lstm_out")


def fill(arg: str, tmp: Path) -> str:
    return arg.format(tmp=tmp, cnn=CNN, lstm=LSTM)


def write_inputs(tmp: Path) -> None:
    """The input files of ``CASES`` in ``tmp`` (all but lstm_plan.json: see ``PLAN_ARGV``)."""
    for name, text in FILES.items():
        (tmp / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    (tmp / "emptydir").mkdir()
    (tmp / "dumps").mkdir()
    (tmp / "dumps" / "module_0001.jit_f.cpu_after_optimizations.txt").write_text(CNN.read_text())
    (tmp / "afile").write_text("x")


def mismatch(case: Case, code: int, out: str, err: str) -> str | None:
    """What the outcome (exit code, stdout, stderr) got wrong against ``case``; None if nothing.
    Exit 0: ``case.says`` on stdout and no traceback; otherwise exactly one non-empty stderr
    line containing ``case.says``, no traceback and no "internal error"."""
    if code != case.code:
        return f"exit {code}, expected {case.code}"
    if "Traceback" in err:
        return "traceback on stderr"
    if case.code == 0:
        return None if case.says in out else f"stdout lacks {case.says!r}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if len(lines) != 1:
        return f"{len(lines)} stderr lines, expected 1"
    if case.says not in lines[0]:
        return f"stderr lacks {case.says!r}"
    if "internal error" in err:
        return "internal error"
    return None


FUZZ_COUNT = 1000


def fuzz_case(i: int) -> tuple[bytes, str]:
    """Mutation ``i`` of the fuzz test: HLO text (bytes) and the mode to plan it in."""
    rng = random.Random(i)
    src = (CNN if i % 2 == 0 else LSTM).read_bytes()
    return mutate(src, rng), ("strict", "tiered")[i // 2 % 2]


def fuzz_argv(path, mode: str, out) -> list[str]:
    return ["optimize", str(path), "--scratchpad", "64MiB", "--mode", mode, "--solver", "msa",
            "--no-plot", "-o", str(out)]


def fuzz_allowed(mode: str) -> tuple[int, ...]:
    """Exit codes a fuzzed text may give: 0 or 2, and 3 in strict mode (a mutated size can make
    the budget infeasible)."""
    return (0, 2, 3) if mode == "strict" else (0, 2)
