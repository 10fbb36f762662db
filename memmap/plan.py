"""The Plan: the contract every solver returns. Format documented in docs/plan-format.md.

A plan says, for one :class:`~memmap.problem.Problem`:

* ``schedule``: op ids, one per step;
* ``residencies``: intervals ``[start, end]`` (inclusive steps) during which a value occupies
  ``[offset, offset + allocated size)`` of the scratchpad;
* ``transfers``: ``load`` (compulsory first load of a parameter/constant), ``reload`` (a later
  copy back from off-chip: non-compulsory), ``spill`` (first write of an intermediate to
  off-chip: non-compulsory), ``writeback`` (first write of an output: compulsory), ``evict``
  (drop from the scratchpad, 0 bytes). A load/reload at step ``s`` starts the residency that
  begins at ``s``; when the value's first use in that residency is later than ``s`` the copy is a
  *prefetch* and overlaps with the operators in between.

The JSON is self-contained: it embeds the graph (ops, values, sizes), the target and the mode,
so ``memmap verify`` can re-check it with nothing else.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from memmap.errors import BadInputError
from memmap.ir.graph import GraphError
from memmap.ir.serialize import graph_from_dict, graph_to_dict
from memmap.problem import Problem, Target

PLAN_FORMAT = "memmap-plan"
PLAN_FORMAT_VERSION = 1
TRANSFER_KINDS: tuple[str, ...] = ("load", "reload", "spill", "writeback", "evict")


@dataclasses.dataclass(frozen=True, order=True)
class Residency:
    """Value ``value`` occupies ``[offset, offset + alloc_size)`` during steps ``start..end``."""

    value: int
    start: int
    end: int
    offset: int


@dataclasses.dataclass(frozen=True, order=True)
class Transfer:
    """A copy between off-chip memory and the scratchpad (or an eviction) at ``step``."""

    step: int
    kind: str
    value: int
    size_bytes: int


@dataclasses.dataclass
class Plan:
    """A solution. Build with :meth:`assemble`; score with ``memmap.cost.simulate``; check with
    ``memmap.verify.verify_plan``."""

    problem: Problem
    schedule: tuple[int, ...]
    residencies: tuple[Residency, ...]
    transfers: tuple[Transfer, ...]
    solver: str = "unknown"
    status: str = "FEASIBLE"
    solve_time_s: float = 0.0
    metrics: dict = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def assemble(cls, problem: Problem, schedule: Sequence[int], residencies: Iterable[Residency],
                 transfers: Iterable[Transfer], *, solver: str, status: str = "FEASIBLE",
                 solve_time_s: float = 0.0, info: dict | None = None) -> "Plan":
        """Normalise a solver's output: sort, and add an ``evict`` at the end of every residency
        that ends before the last step (evictions given by the solver are replaced)."""
        res = tuple(sorted(residencies, key=lambda r: (r.start, r.value, r.end, r.offset)))
        last = len(schedule) - 1
        moves = [t for t in transfers if t.kind != "evict"]
        moves += [Transfer(r.end, "evict", r.value, 0) for r in res if r.end < last]
        order = {k: i for i, k in enumerate(TRANSFER_KINDS)}
        moves.sort(key=lambda t: (t.step, order.get(t.kind, 99), t.value))
        return cls(problem=problem, schedule=tuple(int(s) for s in schedule), residencies=res,
                   transfers=tuple(moves), solver=solver, status=status,
                   solve_time_s=float(solve_time_s), info=dict(info or {}))

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        p = self.problem
        return {
            "format": PLAN_FORMAT,
            "version": PLAN_FORMAT_VERSION,
            "solver": self.solver,
            "status": self.status,
            "solve_time_s": self.solve_time_s,
            "mode": p.mode,
            "activations_only": p.activations_only,
            "target": p.target.to_dict(),
            "graph": graph_to_dict(p.graph),
            "schedule": list(self.schedule),
            "residencies": [[r.value, r.start, r.end, r.offset] for r in self.residencies],
            "transfers": [[t.step, t.kind, t.value, t.size_bytes] for t in self.transfers],
            "metrics": self.metrics,
            "info": self.info,
        }

    def to_json(self, path: str | Path | None = None, *, indent: int | None = None) -> str:
        """The plan as JSON; with ``path``, also written there (atomically: a temporary file in
        the same folder renamed into place, :func:`memmap.limits.write_text_atomic`)."""
        text = json.dumps(self.to_dict(), indent=indent, sort_keys=False)
        if path is not None:
            from memmap.limits import write_text_atomic

            write_text_atomic(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: dict, *, origin: str = "plan") -> "Plan":
        if not isinstance(d, dict) or d.get("format") != PLAN_FORMAT:
            raise BadInputError(f"{origin}: not a memmap plan (missing \"format\": \"{PLAN_FORMAT}\")")
        if d.get("version") != PLAN_FORMAT_VERSION:
            raise BadInputError(f"{origin}: plan format version {d.get('version')!r} is not supported "
                                f"(this memmap reads version {PLAN_FORMAT_VERSION})")
        try:
            graph = graph_from_dict(d["graph"])
            target = Target.from_dict(d["target"])
            problem = Problem(graph, target, d["mode"], bool(d.get("activations_only", False)))
            res = tuple(Residency(int(v), int(s), int(e), int(o)) for v, s, e, o in d["residencies"])
            tr = tuple(Transfer(int(s), str(k), int(v), int(b)) for s, k, v, b in d["transfers"])
            schedule = tuple(int(s) for s in d["schedule"])
        except GraphError as e:
            raise BadInputError(f"{origin}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise BadInputError(f"{origin}: malformed plan ({type(e).__name__}: {e})") from None
        return cls(problem=problem, schedule=schedule, residencies=res, transfers=tr,
                   solver=str(d.get("solver", "unknown")), status=str(d.get("status", "FEASIBLE")),
                   solve_time_s=float(d.get("solve_time_s", 0.0)), metrics=dict(d.get("metrics") or {}),
                   info=dict(d.get("info") or {}))

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "Plan":
        """Load a plan from a JSON string or a file path."""
        origin = "plan"
        text = str(text_or_path)
        if isinstance(text_or_path, Path) or not text.lstrip().startswith("{"):
            path = Path(text_or_path)
            origin = str(path)
            try:
                text = path.read_text()
            except OSError as e:
                raise BadInputError(f"{origin}: cannot read plan ({e.strerror or e})") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadInputError(f"{origin}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        return cls.from_dict(d, origin=origin)
