"""Bad input before and after the hardening (issue 9): every row of tests/bad_input_cases.py's
``CASES`` (plus a few cases run only here) and the fuzz test's 1000 mutated HLO texts, each
run as a real ``memmap`` process by two interpreters; writes the ``badinput`` section of
benchmarks/RESULTS.md and the raw results to benchmarks/bad_input_results.json.

    git -C /work/main worktree add --detach /tmp/before40 40b5ca6
    python3.11 -m venv /tmp/before40/.venv && /tmp/before40/.venv/bin/pip install -e /tmp/before40
    nice -n 10 python -m benchmarks.bad_input_table --before-python /tmp/before40/.venv/bin/python
    python -m benchmarks.bad_input_table --from-json benchmarks/bad_input_results.json  # table only

Each command is ``PYTHON -m memmap ARGS`` in a fresh copy of the input folder (the working
directory), stdin from the case's bytes (else /dev/null), stdout and stderr to files, its own
process group, a virtual-memory limit (``ulimit -v``, ``--memory-limit``) and a wall-clock limit
(``--timeout``: the whole process group is killed and the run recorded as ``timeout``).
``--workers`` commands run at once; the before and after runs are interleaved. Per run: the exit
code or the signal that killed it, whether stderr holds a Python traceback, the first line of the
message (stderr, else stdout) and the exception line of a traceback, peak RSS, and the verdict of
``tests.bad_input_cases.mismatch`` (the test's own check: exit code; one stderr line naming the
problem; no traceback, no "internal error"). Both interpreters get the same input files; the
``verify`` case's plan of the LSTM example is made by the interpreter under test.

Fuzz: mutation ``i`` = ``tests.bad_input_cases.fuzz_case(i)`` (the seeds of
``test_fuzzed_hlo_never_internal_error``), ``memmap optimize case.hlo --scratchpad 64MiB --mode
strict|tiered --solver msa --no-plot -o out``; allowed: exit 0 or 2 (3 in strict mode), one
stderr line on failure, no traceback.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.bad_input_cases import (CASES, CNN, FILES, FUZZ_COUNT, PLAN_ARGV, Case, fill,  # noqa: E402
                                   fuzz_allowed, fuzz_argv, fuzz_case, mismatch, opt_argv,
                                   write_inputs)

RESULTS_JSON = ROOT / "benchmarks" / "bad_input_results.json"
TRACEBACK = "Traceback (most recent call last)"
# the telling line of a process killed by a signal (XLA's CHECK failures are absl FATAL lines)
CRASH_LINE = re.compile(r"Check failed|^F\d{4} |Segmentation fault|Fatal Python error|terminate called")
# stderr text of an allocation failure (the run may have met --memory-limit)
OUT_OF_MEMORY = re.compile(r"MemoryError|bad_alloc|RESOURCE_EXHAUSTED|Out of memory|Cannot allocate")


# ---------------------------------------------------------------------------------------------
# cases run only here (they need files made per case, a closed pipe or a check afterwards)

@dataclasses.dataclass(frozen=True)
class Extra(Case):
    """A case of issue 9 that ``CASES`` lacks. ``setup(folder)`` makes its files; ``intact``
    ({tmp}-relative) must be byte-identical afterwards (an input the command must not overwrite);
    ``close_stdout``: stdout is a pipe whose reader has gone (``memmap ... --json | head -c0``):
    expected exit 141 and nothing on stderr."""

    setup: Callable[[Path], None] | None = None
    intact: str | None = None
    close_stdout: bool = False


# what each ``intact`` file holds before the run
INTACT_BYTES = {"linked/model.hlo": CNN.read_bytes(), "tiny.csv": FILES["tiny.csv"].encode()}


def _hard_linked_plan(tmp: Path) -> None:
    (tmp / "linked" / "out").mkdir(parents=True)
    shutil.copyfile(CNN, tmp / "linked" / "model.hlo")
    os.link(tmp / "linked" / "model.hlo", tmp / "linked" / "out" / "plan.json")


def _symlinked_report(tmp: Path) -> None:
    (tmp / "linked" / "out").mkdir(parents=True)
    shutil.copyfile(CNN, tmp / "linked" / "model.hlo")
    os.symlink(tmp / "linked" / "model.hlo", tmp / "linked" / "out" / "report.md")


def _hard_linked_csv(tmp: Path) -> None:
    os.link(tmp / "tiny.csv", tmp / "tiny_link.csv")


EXTRA = [
    Extra("-o folder whose plan.json is a hard link to the input",
          opt_argv("{tmp}/linked/model.hlo", out="{tmp}/linked/out"), 2, "plan.json",
          setup=_hard_linked_plan, intact="linked/model.hlo"),
    Extra("-o folder whose report.md is a symbolic link to the input",
          opt_argv("{tmp}/linked/model.hlo", out="{tmp}/linked/out"), 2, "report.md",
          setup=_symlinked_report, intact="linked/model.hlo"),
    Extra("alloc -o hard-linked to the input CSV",
          ("alloc", "{tmp}/tiny.csv", "--capacity", "1MiB", "-o", "{tmp}/tiny_link.csv"), 2,
          "same file", setup=_hard_linked_csv, intact="tiny.csv"),
    Extra("-o /proc/memmap-out (nothing can be created)", opt_argv("{cnn}", out="/proc/memmap-out"),
          2, "cannot write in /proc"),
    Extra("--time-limit nan, baseline msa", opt_argv("{cnn}", "--time-limit", "nan"), 2,
          "--time-limit"),
    Extra("--time-limit -1, baseline belady", opt_argv("{cnn}", "--solver", "belady",
                                                      "--time-limit", "-1"), 2, "--time-limit"),
    Extra("alloc --time-limit nan", ("alloc", "{tmp}/tiny.csv", "--capacity", "1MiB",
                                     "--time-limit", "nan"), 2, "--time-limit"),
    Extra("optimize --json | head -c0", ("optimize", "{cnn}", "--scratchpad", "14MiB", "--solver",
                                         "minpeak", "--json", "--no-plot", "-o", "{tmp}/o"),
          141, "", close_stdout=True),
    Extra("budgets --json | head -c0", ("budgets", "{cnn}", "--json"), 141, "", close_stdout=True),
    Extra("cascade passes --json | head -c0", ("cascade", "passes", "--json"), 141, "",
          close_stdout=True),
    Extra("budgets stdin: newline only", ("budgets", "-"), 2, "<stdin>: empty input", stdin=b"\n"),
    Extra("optimize --help lists the defaults", ("optimize", "--help"), 0, "(default: best)"),
]


# ---------------------------------------------------------------------------------------------
# one run

def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def run_memmap(python: str, argv: list[str], cwd: Path, *, stdin: bytes | None = None,
               close_stdout: bool = False, timeout_s: float, memory_limit_kib: int) -> dict:
    """``python -m memmap *argv`` in ``cwd``: the outcome as a dict (see the module docstring)."""
    io_dir = Path(tempfile.mkdtemp(prefix="io-", dir=cwd.parent))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    cmd = ["sh", "-c", f'ulimit -v {memory_limit_kib}; exec "$@"', "sh", python, "-m", "memmap", *argv]
    (io_dir / "stdin").write_bytes(stdin or b"")
    with open(io_dir / "stdin", "rb") as fin, open(io_dir / "stderr", "wb") as ferr:
        if close_stdout:
            read_end, write_end = os.pipe()
            os.close(read_end)  # the reader is gone before memmap writes
            fout = write_end
        else:
            fout = open(io_dir / "stdout", "wb")  # noqa: SIM115
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=fin if stdin is not None else subprocess.DEVNULL,
                                stdout=fout, stderr=ferr, start_new_session=True)
        if close_stdout:
            os.close(write_end)
        else:
            fout.close()
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout_s:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        proc.returncode = -1  # reaped here; keeps Popen from waiting again
    # the run's folder is {tmp} in what is kept (the says-words of the cases name no folder)
    err = (io_dir / "stderr").read_bytes().decode(errors="replace").replace(str(cwd), "{tmp}")
    out = "" if close_stdout else (io_dir / "stdout").read_bytes().decode(errors="replace").replace(str(cwd), "{tmp}")
    shutil.rmtree(io_dir)
    code = os.waitstatus_to_exitcode(status)
    err_lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    out_lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    first = (err_lines or out_lines or [""])[0]
    if code < 0:
        first = next((ln for ln in err_lines if CRASH_LINE.search(ln)), first)
        first = re.sub(r"^F\d{4} [\d:.]+\s+\d+ ", "", first)  # absl's date and thread id
    res = {"code": None if timed_out or code < 0 else code,
           "signal": _signal_name(-code) if code < 0 and not timed_out else None,
           "timeout": timed_out, "elapsed_s": round(elapsed, 3), "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
           "traceback": TRACEBACK in err, "stderr_lines": len(err_lines),
           "first_line": first[:300],
           "exception": err_lines[-1][:300] if TRACEBACK in err and err_lines else "",
           "out_of_memory": bool(OUT_OF_MEMORY.search(err)),
           "stderr": err if len(err) <= 3000 else err[:1500] + "\n[...]\n" + err[-1500:],
           "stdout_head": out[:500]}
    res["_out"] = out  # full stdout for the verdict; dropped before saving
    return res


def outcome_key(r: dict) -> str:
    """``exit N``, ``SIGNAME`` or ``timeout``."""
    if r["timeout"]:
        return "timeout"
    return r["signal"] if r["signal"] else f"exit {r['code']}"


def case_verdict(case: Case, r: dict, tmp: Path) -> str | None:
    """What the run got wrong against ``case`` (None: as expected)."""
    if r["timeout"]:
        return f"timeout ({r['elapsed_s']:.0f} s)"
    if r["signal"]:
        return f"killed by {r['signal']}"
    extra = case if isinstance(case, Extra) else None
    if extra and extra.close_stdout:
        problem = (f"exit {r['code']}, expected 141" if r["code"] != 141
                   else "stderr not empty" if r["stderr_lines"] else None)
    else:
        problem = mismatch(case, r["code"], r["_out"], r["stderr"])
    problems = [problem] if problem else []
    if extra and extra.intact and (tmp / extra.intact).read_bytes() != INTACT_BYTES[extra.intact]:
        problems.append(f"{extra.intact} overwritten")
    if case.code != 0 and (tmp / "out").exists():
        problems.append("wrote {tmp}/out")  # the test's "nothing written by a refused run"
    return "; ".join(problems) or None


# ---------------------------------------------------------------------------------------------
# the runs

def interpreter_info(python: str, cwd: Path) -> dict:
    """Which memmap the interpreter imports from ``cwd`` (the runs' working folder)."""
    code = ("import memmap, jax, sys; print(memmap.__file__); print(jax.__version__); "
            "print(sys.version.split()[0])")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    lines = subprocess.run([python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    src = Path(lines[0]).resolve().parents[1]
    commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {"python": python, "memmap_file": lines[0], "source": str(src), "commit": commit,
            "modified_files": bool(dirty), "jax": lines[1], "python_version": lines[2]}


def _template(python: str, folder: Path, timeout_s: float, memory_limit_kib: int) -> Path:
    """The input folder of the cases for one interpreter (its own plan of the LSTM example)."""
    tmp = folder / "template"
    tmp.mkdir(parents=True)
    write_inputs(tmp)
    r = run_memmap(python, [fill(a, tmp) for a in PLAN_ARGV], tmp, timeout_s=timeout_s,
                   memory_limit_kib=memory_limit_kib)
    if r["code"] != 0:
        raise SystemExit(f"{python}: making the LSTM plan failed: {r['stderr']}")
    shutil.copyfile(tmp / "lstm_out" / "plan.json", tmp / "lstm_plan.json")
    shutil.rmtree(tmp / "lstm_out")
    return tmp


def run_case(python: str, template: Path, k: int, case: Case, timeout_s: float, memory_limit_kib: int) -> dict:
    tmp = template.parent / f"case{k:03d}"
    shutil.copytree(template, tmp, symlinks=True)
    extra = case if isinstance(case, Extra) else None
    if extra and extra.setup:
        extra.setup(tmp)
    r = run_memmap(python, [fill(a, tmp) for a in case.argv], tmp, stdin=case.stdin,
                   close_stdout=bool(extra and extra.close_stdout), timeout_s=timeout_s,
                   memory_limit_kib=memory_limit_kib)
    r["verdict"] = case_verdict(case, r, tmp)
    shutil.rmtree(tmp)
    del r["_out"]
    return r


def run_fuzz(python: str, folder: Path, i: int, timeout_s: float, memory_limit_kib: int) -> dict:
    tmp = folder / f"fuzz{i:04d}"
    tmp.mkdir()
    data, mode = fuzz_case(i)
    (tmp / "case.hlo").write_bytes(data)
    r = run_memmap(python, fuzz_argv("case.hlo", mode, "out"), tmp, timeout_s=timeout_s,
                   memory_limit_kib=memory_limit_kib)
    shutil.rmtree(tmp)
    del r["_out"]
    problem = None
    if r["timeout"] or r["signal"] or r["code"] not in fuzz_allowed(mode):
        problem = outcome_key(r)
    elif r["traceback"]:
        problem = "traceback"
    elif r["code"] and r["stderr_lines"] != 1:
        problem = f"{r['stderr_lines']} stderr lines"
    r["verdict"] = problem
    r["mode"] = mode
    del r["stdout_head"]
    return r


def run_all(pythons: dict[str, str], *, fuzz: int, workers: int, timeout_s: float,
            memory_limit_kib: int, log: Callable[[str], None]) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bad_input_table-"))
    try:
        info, templates = {}, {}
        for label, python in pythons.items():
            (work / label).mkdir()
            info[label] = interpreter_info(python, work / label)
            log(f"{label}: {python} imports {info[label]['memmap_file']} (commit {info[label]['commit']}"
                f"{', modified' if info[label]['modified_files'] else ''}; jax {info[label]['jax']})")
            templates[label] = _template(python, work / label, timeout_s, memory_limit_kib)
        sources = [v["source"] for v in info.values()]
        if len(set(sources)) != len(sources):
            raise SystemExit(f"the interpreters import the same memmap: {sources}")
        cases = [*CASES, *EXTRA]
        jobs = []  # (kind, index, label); before and after interleaved
        for k in range(len(cases)):
            jobs += [("case", k, label) for label in pythons]
        for i in range(fuzz):
            jobs += [("fuzz", i, label) for label in pythons]
        results: dict = {"cases": [{} for _ in cases], "fuzz": [{} for _ in range(fuzz)]}
        t0 = time.perf_counter()

        def one(job):
            kind, k, label = job
            if kind == "case":
                return job, run_case(pythons[label], templates[label], k, cases[k], timeout_s,
                                     memory_limit_kib)
            return job, run_fuzz(pythons[label], work / label, k, timeout_s, memory_limit_kib)

        done = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for (kind, k, label), r in pool.map(one, jobs):
                results["cases" if kind == "case" else "fuzz"][k][label] = r
                done += 1
                if kind == "case" and r["verdict"]:
                    log(f"  case {cases[k].name!r} {label}: {r['verdict']}: {r['first_line'][:100]}")
                if done % 100 == 0:
                    log(f"{done}/{len(jobs)} runs, {time.perf_counter() - t0:.0f} s")
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [{"name": c.name, "argv": list(c.argv), "code": c.code, "says": c.says,
             "stdin": None if c.stdin is None else c.stdin.decode(errors="replace")[:80],
             "only_here": isinstance(c, Extra), **results["cases"][k]} for k, c in enumerate(cases)]
    fuzz_rows = [{"i": i, "mode": results["fuzz"][i][next(iter(pythons))]["mode"],
                  **{label: {k: v for k, v in r.items() if k != "mode"} for label, r in results["fuzz"][i].items()}}
                 for i in range(fuzz)]
    return {"interpreters": info, "labels": list(pythons), "timeout_s": timeout_s,
            "memory_limit_kib": memory_limit_kib, "workers": workers, "wall_s": round(wall, 1),
            "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
            "niceness": os.nice(0), "cases": rows, "fuzz": fuzz_rows}


# ---------------------------------------------------------------------------------------------
# the section

def _short(text: str, n: int = 90) -> str:
    text = text.replace("memmap: error: ", "").replace("`", "'").replace("|", "\\|")
    return text if len(text) <= n else text[:n - 3] + "..."


def _cell(r: dict) -> str:
    key = outcome_key(r)
    if r["verdict"] is None:
        return f"ok ({key.removeprefix('exit ')})"
    rest = [p for p in r["verdict"].split("; ") if not p.startswith(("exit ", "killed", "timeout"))]
    head = ", ".join([key, *rest])
    notes = (["traceback"] if r["traceback"] and "traceback" not in head else []) + \
        (["out-of-memory text"] if r["out_of_memory"] else [])
    what = r["exception"] if r["traceback"] else r["first_line"]
    text = f"**{head}**" + (f" ({', '.join(notes)})" if notes else "")
    return text + (f": `{_short(what)}`" if what else "")


def _case_counts(rows: list[dict], label: str) -> dict[str, int | str]:
    rs = [r[label] for r in rows]
    sigs = Counter(r["signal"] for r in rs if r["signal"])
    wrong_exit = [r for r in rs if r["verdict"] and not r["signal"] and not r["timeout"]
                  and r["verdict"].startswith("exit ")]
    return {
        "as expected": sum(r["verdict"] is None for r in rs),
        "exit 1": sum(r["code"] == 1 for r in rs),
        "killed by a signal": (sum(sigs.values()), ", ".join(f"{n} {s}" for s, n in sigs.most_common())),
        "timeout": sum(r["timeout"] for r in rs),
        "other wrong exit code (not 1)": sum(r["code"] != 1 for r in wrong_exit),
        "right exit code, wrong message (not one stderr line / words missing / file left)":
            sum(bool(r["verdict"]) and not r["signal"] and not r["timeout"]
                and not r["verdict"].startswith("exit ") for r in rs),
        "traceback on stderr": sum(r["traceback"] for r in rs),
        "input overwritten": sum("overwritten" in (r["verdict"] or "") for r in rs),
    }


def _fuzz_counts(rows: list[dict], label: str) -> dict[str, int | str]:
    rs = [r[label] for r in rows]
    sigs = Counter(r["signal"] for r in rs if r["signal"])
    codes = Counter(r["code"] for r in rs if r["code"] is not None)
    return {
        "allowed (0/2, 3 strict; one line; no traceback)": sum(r["verdict"] is None for r in rs),
        "exit 0": codes[0], "exit 2": codes[2], "exit 3": codes[3], "exit 1": codes[1],
        "other exit": sum(n for c, n in codes.items() if c not in (0, 1, 2, 3)),
        "killed by a signal": (sum(sigs.values()), ", ".join(f"{n} {s}" for s, n in sigs.most_common())),
        "timeout": sum(r["timeout"] for r in rs),
        "traceback on stderr": sum(r["traceback"] for r in rs),
        "failure with more than one stderr line": sum(bool(r["code"]) and r["stderr_lines"] > 1 for r in rs),
        "out-of-memory text on stderr": sum(r["out_of_memory"] for r in rs),
    }


def _fmt_count(v) -> str:
    if isinstance(v, tuple):
        return f"{v[0]} ({v[1]})" if v[0] else "0"
    return str(v)


# The importer's text checks (run before XLA's parser sees the text): message -> kind
TEXT_CHECKS = ((r"parameter\(\d+\) but computation", "parameter(k) beyond the computation's parameters"),
               (r"token takes no dimensions", "token[...] with dimensions"),
               (r"must be a tuple", "array shape where a tuple is required"),
               (r"changes the element count", "reshape changing the element count"),
               (r"a dot takes two", "dot with one operand"))


def fuzz_class(r: dict) -> tuple[str, str]:
    """(class, detail) of one run's outcome, for grouping the mutations whose outcome changed:
    the class is coarse (``exit 2: shape check``), the detail finer (the instruction's opcode,
    the text check, the XLA source line of a CHECK failure)."""
    key = outcome_key(r)
    line = r["exception"] if r["traceback"] else r["first_line"]
    msg = line.replace("memmap: error: ", "")
    if r["signal"] or r["timeout"]:
        m = re.search(r"(\S+\.(?:cc|h):\d+)\] Check failed", line)
        return (f"{key}: XLA CHECK failure" if m else key), (m.group(1) if m else "")
    if key == "exit 0":
        return "exit 0: planned", ""
    if key == "exit 3":
        return "exit 3: infeasible", ""
    if "internal error" in msg:
        m = re.search(r"internal error: (\w+)", msg)
        return f"{key}: internal error", m.group(1) if m else ""
    if r["traceback"]:
        return f"{key}: traceback", msg.split(":")[0]
    m = re.search(r"instruction '[^']*' \(([\w-]+)\)", msg)
    if m:
        if "minor_to_major" in msg:
            return f"{key}: layout not a permutation", m.group(1)
        return f"{key}: shape check", m.group(1)
    for pat, kind in TEXT_CHECKS:
        if re.search(pat, msg):
            return f"{key}: text check before XLA's parser", kind
    if "HLO parser rejected" in msg:
        return f"{key}: XLA's parser rejects", ""
    return key, _short(re.sub(r"[0-9]+", "N", msg.split(":", 1)[-1].strip()), 40)


def _counts(values) -> str:
    return ", ".join(f"{v} {n}" for v, n in Counter(v for v in values if v).most_common())


def markdown(res: dict, cmd: str, note: str = "") -> str:
    before, after = res["labels"]
    bi, ai = res["interpreters"][before], res["interpreters"][after]
    rows, fuzz = res["cases"], res["fuzz"]
    n_tests = sum(not r["only_here"] for r in rows)
    out = ["## Bad input: before and after the hardening (issue 9)", "",
           f"Generated by `{cmd}`{note} on {res['date']} ({res['cpus']} CPU cores, shared machine"
           f"{', niceness ' + str(res['niceness']) if 'niceness' in res else ''}; "
           f"{res['wall_s']:.0f} s for {2 * len(rows) + 2 * len(fuzz)} runs, {res['workers']} at a time). "
           f"**Before**: commit {bi['commit']} (the commit issue 9 was filed against; `{bi['memmap_file']}`, "
           f"its own venv; Python {bi['python_version']}, jax {bi['jax']}). **After**: commit {ai['commit']}"
           f"{' with uncommitted changes' if ai['modified_files'] else ''} (`{ai['memmap_file']}`; Python "
           f"{ai['python_version']}, jax {ai['jax']}).", "",
           f"Each run is `PYTHON -m memmap ...` as its own process (benchmarks/bad_input_table.py): a fresh "
           f"copy of the input files as the working folder, stdin from the case (else /dev/null), a "
           f"{res['timeout_s']:.0f} s wall-clock limit and a {res['memory_limit_kib'] / 2**20:.0f} GiB "
           "virtual-memory limit. *As expected* is the test's own check (`tests/bad_input_cases.mismatch`): "
           "the documented exit code; on failure exactly one stderr line containing the expected words, "
           "no traceback, no \"internal error\"; nothing written to `-o` by a refused run. The first "
           f"{n_tests} rows are `CASES` (tests/test_bad_input.py), the last {len(rows) - n_tests} are "
           "issue 9 cases run only here (hard/symbolic links to the input as outputs, `--json | head -c0`, "
           "`--time-limit` for the baselines and alloc, ...): for `| head -c0`, expected = exit 141 and "
           "an empty stderr.", "",
           "### Summary", "",
           f"| {len(rows)} cases | before ({bi['commit']}) | after ({ai['commit']}) |", "|---|---:|---:|"]
    cb, ca = _case_counts(rows, before), _case_counts(rows, after)
    for k in cb:
        out.append(f"| {k} | {_fmt_count(cb[k])} | {_fmt_count(ca[k])} |")
    fb, fa = _fuzz_counts(fuzz, before), _fuzz_counts(fuzz, after)
    out += ["", f"| {len(fuzz)} fuzzed HLO texts (`optimize`, msa) | before | after |", "|---|---:|---:|"]
    for k in fb:
        out.append(f"| {k} | {_fmt_count(fb[k])} | {_fmt_count(fa[k])} |")
    rss = max(r[lab]["max_rss_mib"] for r in rows + fuzz for lab in (before, after))
    oom = [f"{r['name']} ({lab})" for r in rows for lab in (before, after) if r[lab]["out_of_memory"]]
    oom += [f"mutation {f['i']} ({lab})" for f in fuzz for lab in (before, after) if f[lab]["out_of_memory"]]
    out += ["", f"Largest peak RSS of any run: {rss:.0f} MiB. Runs whose stderr reports an allocation "
            f"failure (they may have met the {res['memory_limit_kib'] / 2**20:.0f} GiB limit; without it "
            f"the outcome may differ): {', '.join(oom) or 'none'}.", ""]
    changed = [f for f in fuzz if outcome_key(f[before]) != outcome_key(f[after])]
    groups: dict[tuple[str, str], list[dict]] = {}
    for f in changed:
        groups.setdefault((fuzz_class(f[before])[0], fuzz_class(f[after])[0]), []).append(f)
    out += ["### Fuzzed texts whose outcome changed", "",
            f"{len(changed)} of {len(fuzz)} mutations (tests/hlo_mutations.py; mutation *i* = seed *i*, "
            "even *i* the CNN example, odd the LSTM; strict mode when *i* // 2 is even), grouped by "
            "the class of the before and after outcome. Detail: the XLA source line of the CHECK "
            "failure (before), the opcode of the instruction or the text check named in the message "
            "(after).", "",
            "| before | after | mutations | detail before | detail after | which |",
            "|---|---|---:|---|---|---|"]
    for (cb_, ca_), fs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        ids = [f["i"] for f in fs]
        which = ", ".join(map(str, ids[:40])) + (f", ... ({len(ids) - 40} more)" if len(ids) > 40 else "")
        out.append(f"| {cb_} | {ca_} | {len(ids)} | {_counts(fuzz_class(f[before])[1] for f in fs)} | "
                   f"{_counts(fuzz_class(f[after])[1] for f in fs)} | {which} |")
    out += ["", "### Every case", "",
            "`ok (N)`: as expected with exit N. Otherwise the outcome in bold, what was wrong, and the "
            "first line of the message (for a traceback: its exception line).", "",
            "| case | expected | before | after |", "|---|---|---|---|"]
    for r in rows:
        exp = f"{r['code']}" + (f": `{_short(r['says'], 60)}`" if r["says"] else "")
        name = r["name"] + (" *(run only here)*" if r["only_here"] else "")
        out.append(f"| {_short(name, 120)} | {exp} | {_cell(r[before])} | {_cell(r[after])} |")
    return "\n".join(out) + "\n"


def summary_text(res: dict) -> str:
    before, after = res["labels"]
    cb, ca = _case_counts(res["cases"], before), _case_counts(res["cases"], after)
    fb, fa = _fuzz_counts(res["fuzz"], before), _fuzz_counts(res["fuzz"], after)
    lines = [f"cases ({len(res['cases'])}): " + "; ".join(f"{k} {_fmt_count(cb[k])} -> {_fmt_count(ca[k])}"
                                                         for k in cb),
             f"fuzz ({len(res['fuzz'])}): " + "; ".join(f"{k} {_fmt_count(fb[k])} -> {_fmt_count(fa[k])}"
                                                       for k in fb)]
    bad_after = [r["name"] for r in res["cases"] if r[after]["verdict"]]
    if bad_after:
        lines.append(f"AFTER NOT AS EXPECTED: {bad_after}")
    return "\n".join(lines)


FUZZ_FIELDS = ("code", "signal", "timeout", "elapsed_s", "max_rss_mib", "traceback", "stderr_lines",
               "first_line", "exception", "out_of_memory", "verdict")


def dump_results(res: dict) -> str:
    """The results as JSON text: one case per line; the fuzz runs as rows of ``fuzz_fields``
    (``[i, mode, before..., after...]``); the full stderr only where a run was not as expected
    (its first line is kept for every run)."""
    for row in res["cases"]:
        for label in res["labels"]:
            if row[label]["verdict"] is None:
                row[label].pop("stderr", None)
    fuzz = [[f["i"], f["mode"], *(f[label][k] for label in res["labels"] for k in FUZZ_FIELDS)]
            for f in res["fuzz"]]
    stderr = {f"{f['i']} {label}": f[label]["stderr"] for f in res["fuzz"] for label in res["labels"]
              if f[label]["verdict"] is not None}
    head = {k: v for k, v in res.items() if k not in ("cases", "fuzz")}
    head.update(fuzz_fields=["i", "mode", *(f"{label}.{k}" for label in res["labels"] for k in FUZZ_FIELDS)],
                fuzz_stderr=stderr)
    text = json.dumps(head, indent=1)[:-2]
    for key, rows in (("cases", res["cases"]), ("fuzz", fuzz)):
        text += f',\n "{key}": [\n' + ",\n".join("  " + json.dumps(r) for r in rows) + "\n ]"
    return text + "\n}\n"


def load_results(path: Path) -> dict:
    """Inverse of :func:`dump_results` (the stderr of as-expected runs stays absent)."""
    res = json.loads(path.read_text())
    n = len(FUZZ_FIELDS)
    fuzz = []
    for row in res["fuzz"]:
        f = {"i": row[0], "mode": row[1]}
        for j, label in enumerate(res["labels"]):
            f[label] = dict(zip(FUZZ_FIELDS, row[2 + j * n:2 + (j + 1) * n]))
            if f"{row[0]} {label}" in res["fuzz_stderr"]:
                f[label]["stderr"] = res["fuzz_stderr"][f"{row[0]} {label}"]
        fuzz.append(f)
    res["fuzz"] = fuzz
    del res["fuzz_fields"], res["fuzz_stderr"]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--before-python", help="interpreter of a venv with the 'before' memmap installed")
    ap.add_argument("--after-python", default=sys.executable, help="default: this interpreter")
    ap.add_argument("--fuzz", type=int, default=FUZZ_COUNT, help="mutations to run (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per command (default: %(default)s)")
    ap.add_argument("--memory-limit-gib", type=float, default=6.0, help="ulimit -v per command (default: %(default)s)")
    ap.add_argument("--json-out", default=str(RESULTS_JSON), help="raw results (default: %(default)s)")
    ap.add_argument("--from-json", help="assemble the section from saved results instead of running")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write RESULTS.md")
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.from_json:
        res = load_results(Path(args.from_json))
        cmd = res.get("command", "python -m benchmarks.bad_input_table")
        note = f" (this section assembled from its saved results with `--from-json {args.from_json}`)"
    else:
        if not args.before_python:
            ap.error("--before-python is required (or --from-json)")
        res = run_all({"before": args.before_python, "after": args.after_python}, fuzz=args.fuzz,
                      workers=args.workers, timeout_s=args.timeout,
                      memory_limit_kib=int(args.memory_limit_gib * 2**20), log=log)
        cmd = " ".join(["python -m benchmarks.bad_input_table"] + list(sys.argv[1:] if argv is None else argv))
        res["command"] = cmd
        note = ""
        if args.json_out:
            Path(args.json_out).write_text(dump_results(res))
            log(f"wrote {args.json_out}")
    md = markdown(res, cmd, note)
    print(md)
    print(summary_text(res))
    if not args.no_write:
        from benchmarks.run import write_results

        write_results(Path(args.output), {"badinput": md})
        log(f"wrote section 'badinput' of {args.output}")
    return 1 if any(r["after"]["verdict"] for r in res["cases"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
