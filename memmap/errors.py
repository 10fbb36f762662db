"""Exceptions with one-line messages and the CLI exit code each maps to.

Exit codes (documented in docs/cli.md): 0 success, 1 internal error, 2 bad input (missing,
unreadable or malformed file, bad size or flag), 3 infeasible, 4 time limit reached without an
answer, 130 interrupted (Ctrl-C), 141 standard output closed early (a pipe into ``head``).
"""

from __future__ import annotations

import argparse
import dataclasses

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a Unix tool whose reader left


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse with the CLI's bad-input contract: a usage error is one line on stderr
    (``PROG: error: ...``) and exit code 2; ``-h`` prints the help and exits 0."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


class MemmapError(Exception):
    """Base class; ``exit_code`` is what the CLI returns for it."""

    exit_code = EXIT_INTERNAL


class BadInputError(MemmapError, ValueError):
    """The user gave us something we cannot use (file, size, flag)."""

    exit_code = EXIT_BAD_INPUT


class TraceError(BadInputError):
    """``jax.jit`` cannot trace the function given to ``memmap.jit`` (the message names the
    function and the first line of JAX's error; the JAX exception is the ``__cause__``)."""


@dataclasses.dataclass(frozen=True)
class Culprit:
    """An operator whose working set alone exceeds the scratchpad."""

    op_name: str
    opcode: str
    working_set_bytes: int


class InfeasibleError(MemmapError):
    """No plan exists under the given budget; ``culprits`` explain why."""

    exit_code = EXIT_INFEASIBLE

    def __init__(self, message: str, culprits: tuple[Culprit, ...] = (), budget_bytes: int = 0):
        super().__init__(message)
        self.culprits = tuple(culprits)
        self.budget_bytes = budget_bytes


class SolverTimeoutError(MemmapError):
    """The time limit ended the search before any answer was found."""

    exit_code = EXIT_TIMEOUT


class PlanError(MemmapError):
    """A plan broke a rule of the problem; the message names the rule, value, step."""

    exit_code = EXIT_BAD_INPUT
