"""Wall-clock limits, Ctrl-C and atomic output files (docs/cli.md, "Time limits, memory and
Ctrl-C").

Glossary
--------
* deadline: the ``time.perf_counter()`` value at which the current time limit ends (``inf``:
  none). :func:`time_limit` narrows it for a block (nested blocks keep the earliest), so a solver
  reads one number, :func:`remaining_s`, whoever set it (the CLI for the whole command, the
  pipeline for the solving stage, a caller of the API for one call).
* interrupt: SIGINT (Ctrl-C) while :func:`watch` is active (the CLI). The handler only sets a
  flag, so no ``KeyboardInterrupt`` is raised inside a garbage-collector callback or other
  place that swallows it; long loops call :func:`check` (or :func:`checkpoint`), which raises
  ``KeyboardInterrupt`` on the main thread.
* watchdog: the thread started by :func:`watch`. It learns of a SIGINT at once through
  :func:`signal.set_wakeup_fd` even while the main thread is inside C++ (CP-SAT) or a numba
  kernel, stops every registered CP-SAT search (``stop_search``), and if the process has not
  ended ``INTERRUPT_GRACE_S`` later (or at a second Ctrl-C) it removes the temporary files of
  :class:`OutputFiles`, prints ``memmap: interrupted`` and ends the process with 130. It also
  ends the process with exit 4 ("time limit without an answer") when the command is still
  running at its hard deadline without an answer (:func:`answered`; a safety net: the solvers
  stop by themselves at the deadline, which comes earlier).
* committing outputs: :class:`OutputFiles` writes every output to a temporary file in the
  output's own folder and renames them all into place (``os.replace``) at the end, holding a lock
  the watchdog respects: a run that fails or is interrupted leaves no partial file and keeps the
  previous run's outputs.

Everything here is process-wide state on purpose: a signal, a deadline and the set of running
searches belong to the process, not to one solver.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from memmap.errors import EXIT_INTERRUPTED, EXIT_TIMEOUT, BadInputError, SolverTimeoutError

__all__ = ["TimeLimitReached", "parse_seconds", "time_limit", "command_time_limit",
           "command", "command_start", "deadline", "remaining_s", "expired", "cap_s",
           "check", "checkpoint", "solve_cpsat", "watch", "process_age_s",
           "hard_margin_s", "answered", "OutputFiles", "write_text_atomic", "refuse_overwrite",
           "INTERRUPT_GRACE_S"]

# seconds between a Ctrl-C and the watchdog's hard exit when the main thread has not ended
INTERRUPT_GRACE_S = 1.5
# the watchdog ends a command still running HARD_MARGIN_S + HARD_MARGIN_SHARE x its time limit
# after its deadline (exit 4)
HARD_MARGIN_S = 2.0
HARD_MARGIN_SHARE = 0.05


class TimeLimitReached(SolverTimeoutError):
    """The deadline passed before the search had an answer (exit 4)."""


_deadline = math.inf
_interrupt = threading.Event()
_lock = threading.Lock()                 # guards _solvers and _temps
_solvers: set = set()                    # running CP-SAT solvers (stop_search on Ctrl-C / deadline)
_temps: set[str] = set()                 # temporary output files not yet renamed into place
_commit = threading.Lock()               # held while outputs are renamed into place
_watching = False
_answered = False                        # the command has its answer: no exit 4 any more
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_command_start: float | None = None
_hard_deadline = math.inf                # the watchdog's exit 4 (command_time_limit)
_hard_message = ""


# ------------------------------------------------------------------------------------------
# deadline

def parse_seconds(text: str) -> float:
    """A ``--time-limit`` value: a finite number of seconds > 0, else
    ``argparse.ArgumentTypeError`` (argparse turns it into a one-line usage error, exit 2)."""
    import argparse

    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number of seconds > 0")
    return value


@contextlib.contextmanager
def time_limit(seconds: float | None = None, *, at: float | None = None) -> Iterator[float]:
    """Narrow the deadline to ``seconds`` from now (or to ``at``, a ``perf_counter`` value) for
    the block; yields the deadline in force. ``None`` for both leaves it as it is."""
    global _deadline
    new = _deadline
    if seconds is not None:
        new = min(new, time.perf_counter() + float(seconds))
    if at is not None:
        new = min(new, float(at))
    old, _deadline = _deadline, new
    try:
        yield new
    finally:
        _deadline = old


def deadline() -> float:
    """The deadline in force (``perf_counter`` time; ``inf`` when there is none)."""
    return _deadline


def remaining_s() -> float:
    """Seconds left until the deadline (negative once past; ``inf`` without one)."""
    return _deadline - time.perf_counter()


def expired() -> bool:
    return time.perf_counter() >= _deadline


def cap_s(seconds: float, floor_s: float = 0.01) -> float:
    """``seconds`` cut to what is left before the deadline (at least ``floor_s``)."""
    return max(floor_s, min(float(seconds), remaining_s()))


@contextlib.contextmanager
def command(*, from_process_start: bool) -> Iterator[float]:
    """The block is one command; yields when it started (``perf_counter`` time): the process's
    start when it runs from a shell (its interpreter start and imports count in the time
    limit), now otherwise (a test calling ``main([...])``)."""
    global _command_start
    old = _command_start
    _command_start = time.perf_counter() - (process_age_s() if from_process_start else 0.0)
    try:
        yield _command_start
    finally:
        _command_start = old


def command_start() -> float:
    """When the current command started (:func:`command`), or now outside of one."""
    return _command_start if _command_start is not None else time.perf_counter()


def process_age_s() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 where unknown), so that a time
    limit can count the interpreter's start and imports too."""
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])          # field 22 of proc(5): starttime, in clock ticks
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def answered() -> None:
    """The command has its answer (a verified plan or placement): from now on the watchdog's
    time-limit net (exit 4, "without an answer") leaves it alone; writing the outputs is
    bounded work, kept for by the solvers' earlier deadline."""
    global _answered
    _answered = True


def hard_margin_s(seconds: float) -> float:
    """How long after its deadline the watchdog lets a command run before ending it with exit 4
    (a safety net; the solvers stop by themselves at the deadline)."""
    return HARD_MARGIN_S + HARD_MARGIN_SHARE * seconds


@contextlib.contextmanager
def command_time_limit(seconds: float) -> Iterator[float]:
    """The deadline of a whole command: ``seconds`` after :func:`command_start`; arms the
    watchdog's safety net at :func:`hard_margin_s` after it. Yields the deadline."""
    global _hard_deadline, _hard_message, _answered
    at = command_start() + seconds
    _answered = False
    _hard_deadline = at + hard_margin_s(seconds)
    _hard_message = f"memmap: error: time limit of {seconds:g} s reached without an answer"
    try:
        with time_limit(at=at) as d:
            yield d
    finally:
        _hard_deadline = math.inf


# ------------------------------------------------------------------------------------------
# Ctrl-C

def check() -> None:
    """Raise ``KeyboardInterrupt`` when Ctrl-C was pressed (call it in long loops)."""
    if _interrupt.is_set():
        raise KeyboardInterrupt


def checkpoint(what: str = "the search") -> None:
    """:func:`check`, then raise :class:`TimeLimitReached` once the deadline has passed (for
    solvers that have nothing to return before they finish, such as the baselines)."""
    check()
    if time.perf_counter() >= _deadline:
        raise TimeLimitReached(f"time limit reached during {what}")


# ------------------------------------------------------------------------------------------
# CP-SAT

def solve_cpsat(solver, model, callback=None):
    """``solver.solve(model, callback)`` cut by the deadline and by Ctrl-C.

    ``max_time_in_seconds`` is lowered to what is left before the deadline; a timer calls
    ``stop_search`` half a second after it (interleaved search can overrun its time limit); while
    it runs the solver is registered so that Ctrl-C stops it at once. Under :func:`watch`, CP-SAT
    is told not to catch SIGINT itself (it would swallow it and go on with the next solve).
    Raises ``KeyboardInterrupt`` when Ctrl-C stopped it. Returns the status code."""
    check()
    prm = solver.parameters
    prm.max_time_in_seconds = cap_s(prm.max_time_in_seconds)
    if _watching:
        prm.catch_sigint_signal = False
    timer = threading.Timer(prm.max_time_in_seconds + 0.5, solver.stop_search)
    timer.daemon = True
    with _lock:
        _solvers.add(solver)
    timer.start()
    try:
        status = solver.solve(model, callback) if callback is not None else solver.solve(model)
    finally:
        timer.cancel()
        with _lock:
            _solvers.discard(solver)
    check()
    return status


def _stop_solvers() -> None:
    with _lock:
        running = list(_solvers)
    for s in running:
        s.stop_search()


# ------------------------------------------------------------------------------------------
# output files

def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def refuse_overwrite(outputs: Sequence[str | os.PathLike], inputs: Sequence[str | os.PathLike],
                     flag: str = "-o") -> None:
    """Raise :class:`BadInputError` when an output file would replace an input: the same file
    (same device and inode, which also catches hard links and symbolic links), or a file inside
    an input folder that the input is read from."""
    files: list[Path] = []
    for src in inputs:
        src = Path(src)
        if src.is_dir():
            files += [p for p in src.iterdir() if p.is_file()]
        else:
            files.append(src)
    for out in outputs:
        for src in files:
            if _same_file(Path(out), src):
                raise BadInputError(f"{flag} {out}: is the input {src} (same file); refusing to "
                                    f"overwrite it, choose another {flag}")


class OutputFiles:
    """Write several output files all or nothing.

    ``path(name)`` gives a temporary file next to its final place (``folder/name``);
    :meth:`commit` renames them all into place; leaving the ``with`` block without committing
    (an error, Ctrl-C) removes them, so a failed run leaves nothing and keeps the previous
    run's files. The temporary names are registered so that the watchdog removes them too."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._pending: dict[Path, str] = {}

    def __enter__(self) -> OutputFiles:
        return self

    def path(self, name: str) -> str:
        """A fresh temporary file for ``name`` (same suffix, so writers that look at it work)."""
        final = self.folder / name
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}")
        os.fchmod(fd, 0o666 & ~_UMASK)    # mkstemp makes it private; outputs get the usual mode
        os.close(fd)
        with _lock:
            _temps.add(tmp)
        self._pending[final] = tmp
        return tmp

    def write_text(self, name: str, text: str) -> None:
        with open(self.path(name), "w") as fh:
            fh.write(text)

    def commit(self) -> None:
        """Rename every written file into place (a Ctrl-C arriving meanwhile waits for it)."""
        with _commit:
            check()
            for final, tmp in self._pending.items():
                os.replace(tmp, final)
                with _lock:
                    _temps.discard(tmp)
            self._pending.clear()

    def discard(self) -> None:
        for tmp in self._pending.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            with _lock:
                _temps.discard(tmp)
        self._pending.clear()

    def __exit__(self, *exc) -> None:
        self.discard()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write one file through a temporary file and a rename (never a partial file)."""
    path = Path(path)
    with OutputFiles(path.parent) as out:
        out.write_text(path.name, text)
        out.commit()


# ------------------------------------------------------------------------------------------
# the watchdog (CLI)

def started_as_the_command() -> bool:
    """Whether this process is the ``memmap`` command (its console script, or ``python -m
    memmap``), judged from the interpreter's own arguments, not from a library's caller."""
    argv = getattr(sys, "orig_argv", [])
    cmd = argv[2] if len(argv) > 2 and argv[1] == "-m" else (argv[1] if len(argv) > 1 else "")
    return cmd == "memmap" or (Path(cmd).name == "memmap" and not cmd.endswith(".py"))


def exit_on_early_sigint() -> None:
    """For the command only: until :func:`watch` takes over, Ctrl-C ends the process at once
    with ``memmap: interrupted`` and exit 130 (it can only come while Python imports the
    package, before anything is written). Runs when this module is imported, which
    ``memmap/__init__.py`` does first."""
    if not started_as_the_command() or threading.current_thread() is not threading.main_thread():
        return

    def on_sigint(signum, frame):
        os.write(2, b"memmap: interrupted\n")
        os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, on_sigint)


def _remove_temps() -> None:
    with _lock:
        temps = list(_temps)
    for tmp in temps:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _hard_exit(code: int, message: str) -> None:
    """End the process now: temporary outputs removed, one line on stderr. Waits (briefly) for
    a commit in progress so that outputs are all in place or none."""
    got = _commit.acquire(timeout=2.0)
    if code != EXIT_INTERRUPTED and _answered:   # it got its answer meanwhile: let it finish
        if got:
            _commit.release()
        return
    _remove_temps()
    with contextlib.suppress(OSError):
        erase = _erase_status_line()
        err = os.dup(2)                  # the status line's thread may still draw: silence it
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        os.write(err, (erase + message + "\n").encode())
    os._exit(code)


def _erase_status_line() -> str:
    """The escape sequence that erases rich's status line where one is drawn (a terminal, or
    a console rich treats as one), else nothing: the main thread, which would have stopped
    it, is not reachable."""
    try:
        from rich.console import Console

        return "\r\x1b[2K" if Console(stderr=True).is_terminal else ""
    except Exception:  # noqa: BLE001 - best effort only
        return ""


@contextlib.contextmanager
def watch() -> Iterator[None]:
    """Install the SIGINT flag handler and the watchdog thread for the block (main thread only).
    Inside :func:`command_time_limit`, the watchdog also ends the process with exit 4 when it
    is still running at its safety-net deadline without an answer (:func:`answered`)."""
    global _watching
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    stop = threading.Event()

    def on_sigint(signum, frame):          # runs on the main thread: only set the flag
        _interrupt.set()

    def loop():
        hard_at = math.inf                 # hard exit after a Ctrl-C
        while not stop.is_set():
            now = time.perf_counter()
            wake = min(hard_at, math.inf if _answered else _hard_deadline)
            ready, _, _ = select.select([r], [], [], min(max(0.0, wake - now), 0.5))
            if stop.is_set():
                return
            if ready and signal.SIGINT in os.read(r, 64):
                if hard_at < math.inf:     # a second Ctrl-C: stop now
                    _hard_exit(EXIT_INTERRUPTED, "memmap: interrupted")
                _interrupt.set()
                _stop_solvers()
                hard_at = time.perf_counter() + INTERRUPT_GRACE_S
            now = time.perf_counter()
            if now >= hard_at:
                _hard_exit(EXIT_INTERRUPTED, "memmap: interrupted")
            if now >= _hard_deadline and not _answered:
                _hard_exit(EXIT_TIMEOUT, _hard_message)

    old_handler = signal.signal(signal.SIGINT, on_sigint)
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    thread = threading.Thread(target=loop, name="memmap-watchdog", daemon=True)
    _watching = True
    thread.start()
    try:
        yield
    finally:
        stop.set()
        _watching = False
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGINT, old_handler)
        os.close(w)
        thread.join(timeout=1.0)
        os.close(r)


exit_on_early_sigint()
