"""``memmap.jit``: ``jax.jit`` that also plans the program's memory (docs/jit.md).

    >>> @memmap.jit(target="npu-4mib", mode="tiered")          # doctest: +SKIP
    ... def step(params, batch): ...
    >>> loss = step(params, batch)                              # jax.jit's result, bit for bit
    >>> step.plan(params, batch).metrics["noncompulsory_bytes"] # the verified plan (cached)
    >>> print(step.report(params, batch))                       # markdown (memmap.report)

Calling the decorated function runs exactly what ``jax.jit`` runs (same values, same pytree,
same donation; dispatched through ``jax.jit``'s own compiled-call path). On the first call for
an *abstract signature* (JAX's own trace-cache key: pytree structure, static arguments, shapes,
dtypes, weak types, shardings) it traces once, compiles once, imports the HLO, plans it with a
memmap solver (every plan is verified by the pipeline) and caches the plan; later calls with the
same signature only look the entry up. ``stage="optimized"`` (default) plans the
post-optimization module of the compiled program (fusions and XLA's schedule: what XLA runs);
``stage="lowered"`` plans the pre-optimization module.

``apply="offload"`` / ``apply="remat"`` turn the plan's spills into host offload or
recomputation through JAX (memmap.jax_apply); the decorated function then runs that variant
(compiled once more), after its first call found it bit-identical to ``jax.jit``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from memmap.errors import BadInputError, MemmapError, TraceError
from memmap.plan import Plan
from memmap.problem import MODES, Target, format_bytes
from memmap.solvers import SOLVERS

__all__ = ["DEFAULT_TARGET", "JitOptions", "Jitted", "PlanningWarning", "jit"]

DEFAULT_TARGET = "tpu-cmem-32mib"
APPLY_MODES: tuple[str | None, ...] = (None, "offload", "remat")
ON_FAILURE: tuple[str, ...] = ("raise", "warn")
STAGES: tuple[str, ...] = ("optimized", "lowered")
# XLA:CPU expands optimization barriers before CSE, which merges recomputations back into the
# originals (docs/jit.md); apply="remat" keeps them by disabling that pass on CPU.
_KEEP_BARRIERS = ("xla_disable_hlo_passes", "cse_barrier_expander")


class PlanningWarning(UserWarning):
    """``on_failure="warn"``: planning failed and the function runs as plain ``jax.jit``."""


def _tuple_of(name: str, value, kind: type) -> tuple:
    """``value`` (None, one ``kind`` or a sequence of them) as a tuple, as jax.jit accepts it."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, kind) else value
    try:
        items = tuple(items)
    except TypeError:
        items = None
    if items is None or not all(isinstance(i, kind) and not isinstance(i, bool) for i in items):
        raise BadInputError(f"memmap.jit: {name} must be a {kind.__name__} or a sequence of "
                            f"{kind.__name__}, got {value!r}")
    return items


@dataclasses.dataclass(frozen=True)
class JitOptions:
    """The options of one ``memmap.jit`` function, validated when it is decorated.

    ``jax.jit``'s own: ``static_argnums``, ``static_argnames``, ``donate_argnums``,
    ``donate_argnames``, ``keep_unused``, ``compiler_options`` (as for ``jax.jit``).

    memmap's:
      target: a preset name or a :class:`~memmap.problem.Target` (default
        ``"tpu-cmem-32mib"``); ``scratchpad`` overrides its capacity (``"4MiB"``, bytes).
        Resolved to a Target here.
      mode: ``"tiered"`` (default: XLA memory-space-assignment's setting, always feasible) or
        ``"strict"`` (every operand in the scratchpad; infeasible below M_R).
      solver: a registered solver or ``"best"`` (default ``"belady"``: XLA's schedule, a
        greedy that plans the program in the order XLA runs it, faster than XLA's compile).
      stage: ``"optimized"`` (post-optimization HLO, default) or ``"lowered"``.
      time_limit_s, seed: passed to the solver.
      on_failure: ``"raise"`` (a :class:`~memmap.errors.MemmapError`) or ``"warn"`` (a
        :class:`PlanningWarning`, then plain ``jax.jit``) when a signature cannot be planned.
      apply: None (plan only), ``"offload"`` or ``"remat"`` (docs/jit.md).
    """

    static_argnums: tuple[int, ...] = ()
    static_argnames: tuple[str, ...] = ()
    donate_argnums: tuple[int, ...] = ()
    donate_argnames: tuple[str, ...] = ()
    keep_unused: bool = False
    compiler_options: tuple[tuple[str, Any], ...] = ()
    target: Target | str = DEFAULT_TARGET
    scratchpad: str | int | None = None
    mode: str = "tiered"
    solver: str = "belady"
    stage: str = "optimized"
    time_limit_s: float = 60.0
    seed: int = 0
    on_failure: str = "raise"
    apply: str | None = None

    def __post_init__(self):
        from memmap.pipeline import make_target

        def put(name, value):
            object.__setattr__(self, name, value)

        for name in ("static_argnums", "donate_argnums", "static_argnames", "donate_argnames"):
            put(name, _tuple_of(name, getattr(self, name), int if name.endswith("nums") else str))
        opts = self.compiler_options
        if isinstance(opts, dict):
            opts = tuple(sorted(opts.items()))
        if not (isinstance(opts, tuple) and all(isinstance(k, str) and isinstance(v, (str, int, float, bool))
                                                for k, v in opts)):
            raise BadInputError(f"memmap.jit: compiler_options must map str to str/int/float/bool, got {opts!r}")
        put("compiler_options", opts)
        if not isinstance(self.keep_unused, bool):
            raise BadInputError(f"memmap.jit: keep_unused must be a bool, got {self.keep_unused!r}")
        if self.mode not in MODES:
            raise BadInputError(f"memmap.jit: invalid mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.solver != "best" and self.solver not in SOLVERS:
            raise BadInputError(f"memmap.jit: unknown solver {self.solver!r}; available: "
                                f"{', '.join(sorted(SOLVERS))}, best")
        if self.stage not in STAGES:
            raise BadInputError(f"memmap.jit: invalid stage {self.stage!r}; expected one of {', '.join(STAGES)}")
        if self.on_failure not in ON_FAILURE:
            raise BadInputError(f"memmap.jit: on_failure must be 'raise' or 'warn', got {self.on_failure!r}")
        if self.apply not in APPLY_MODES:
            raise BadInputError(f"memmap.jit: apply must be None, 'offload' or 'remat', got {self.apply!r}")
        if isinstance(self.time_limit_s, bool) or not isinstance(self.time_limit_s, (int, float)) \
                or not self.time_limit_s > 0:
            raise BadInputError(f"memmap.jit: time_limit_s must be a positive number, got {self.time_limit_s!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise BadInputError(f"memmap.jit: seed must be an int, got {self.seed!r}")
        try:
            put("target", make_target(self.target, self.scratchpad))
        except BadInputError as e:
            raise BadInputError(f"memmap.jit: {e}") from None

    def jax_jit_kwargs(self, *, keep_barriers: bool = False) -> dict:
        """Keyword arguments for ``jax.jit``; ``keep_barriers`` adds the XLA:CPU option that
        keeps optimization barriers (apply="remat")."""
        opts = dict(self.compiler_options)
        if keep_barriers:
            key, name = _KEEP_BARRIERS
            passes = [p for p in str(opts.get(key, "")).split(",") if p]
            opts[key] = ",".join(passes + ([name] if name not in passes else []))
        return dict(static_argnums=self.static_argnums or None,
                    static_argnames=self.static_argnames or None,
                    donate_argnums=self.donate_argnums or None,
                    donate_argnames=self.donate_argnames or None,
                    keep_unused=self.keep_unused, compiler_options=opts or None)


@dataclasses.dataclass
class _Entry:
    """What is cached per abstract signature."""

    runner: Callable                 # the jax.jit function that runs for this signature
    plan: Plan | None = None
    error: MemmapError | None = None  # planning failed (plan None) or, with apply, the check did
    reference: Callable | None = None  # with apply: jax.jit of the planned program, until checked


def _bitwise_equal(a, b) -> bool:
    """Same pytree, dtypes, shapes and bytes in every leaf."""
    import jax
    import numpy as np

    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            return False
    return True


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


class Jitted:
    """What :func:`jit` returns: call it like the ``jax.jit`` function; ``plan``, ``report``,
    ``annotated_hlo``, ``lower`` and ``trace`` take the same arguments as a call."""

    def __init__(self, fun: Callable, options: JitOptions):
        import jax

        if not callable(fun):
            raise BadInputError(f"memmap.jit: expected a function, got {type(fun).__name__}")
        functools.update_wrapper(self, fun)
        self._fun = fun
        self.options = options
        try:
            self._jitted = jax.jit(fun, **options.jax_jit_kwargs())
        except (TypeError, ValueError) as e:     # jax.jit's own checks against the signature
            raise BadInputError(f"memmap.jit({getattr(fun, '__name__', fun)!s}): {_first_line(e)}") from None
        info = self._jitted._jit_info          # jax's normalised static argnums/argnames
        self._static_argnums = tuple(info.static_argnums)
        self._static_argnames = tuple(info.static_argnames)
        self._entries: dict = {}
        self._lock = threading.Lock()

    @property
    def _name(self) -> str:
        inner = getattr(self._fun, "func", self._fun)
        return getattr(inner, "__name__", type(inner).__name__)

    def __repr__(self) -> str:
        return f"memmap.jit({self._name})"

    # ---- signatures ----------------------------------------------------------------------
    def _signature(self, args: tuple, kwargs: dict):
        """``(key, tracing)``: the key ``jax.jit`` itself caches traces under (argument
        signature with static values and pytree structure, plus the abstract value of every
        dynamic leaf); ``tracing`` is true when a leaf is a tracer (an outer transformation)."""
        from jax._src import core, tree_util
        from jax._src.lib import jax_jit

        try:
            sig, dyn = jax_jit.parse_arguments(args, tuple(kwargs.values()), tuple(kwargs),
                                               self._static_argnums, self._static_argnames,
                                               tree_util.tracing_registry)
            avals = tuple(core.shaped_abstractify(x) for x in dyn)
            hash(sig)
        except Exception:
            self._jitted.trace(*args, **kwargs)    # jax's own error for these arguments
            raise
        return (sig, avals), any(isinstance(x, core.Tracer) for x in dyn)

    def _entry(self, args: tuple, kwargs: dict, *, what: str) -> _Entry:
        key, tracing = self._signature(args, kwargs)
        if tracing:
            raise BadInputError(f"{self!r}.{what}: needs concrete arrays or jax.ShapeDtypeStruct "
                                "arguments, not tracers")
        entry = self._entries.get(key)
        return entry if entry is not None else self._plan_signature(key, args, kwargs)

    # ---- planning ------------------------------------------------------------------------
    def _plan_signature(self, key, args: tuple, kwargs: dict) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                try:
                    entry = self._make_entry(args, kwargs)
                except Exception as e:  # noqa: BLE001 - every failure is reported or falls back
                    err = e if isinstance(e, MemmapError) else MemmapError(
                        f"{self!r}: internal error while planning: {_first_line(e)}")
                    if self.options.on_failure == "raise":
                        if err is e:
                            raise
                        raise err from e
                    warnings.warn(f"{err}; running plain jax.jit", PlanningWarning, stacklevel=4)
                    entry = _Entry(runner=self._jitted, error=err)
                self._entries[key] = entry
            return entry

    def _make_entry(self, args: tuple, kwargs: dict) -> _Entry:
        import jax

        from memmap import jax_apply
        from memmap.ir.hlo import HloImportError, import_hlo_text
        from memmap.ir.jax_import import lowered_hlo
        from memmap.pipeline import optimize

        opt = self.options
        try:
            traced = self._jitted.trace(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any JAX tracing error becomes one line
            raise TraceError(f"{self!r}: jax.jit cannot trace it: {_first_line(e)}") from e
        keep_barriers = opt.apply == "remat" and jax.default_backend() == "cpu"
        jit_kwargs = opt.jax_jit_kwargs(keep_barriers=keep_barriers)
        statics = (self._static_argnums, self._static_argnames)
        program = reference = None
        try:
            if opt.apply is None:
                lowered = traced.lower()
            else:
                tagged, program = jax_apply.tagged_function(self._fun, traced, *statics)
                reference = jax.jit(tagged, **jit_kwargs)
                lowered = reference.lower(*args, **kwargs)
            t0 = time.perf_counter()
            compiled = lowered.compile() if opt.stage == "optimized" else None
        except Exception as e:  # noqa: BLE001
            raise MemmapError(f"{self!r}: lowering or compiling failed: {_first_line(e)}") from e
        t1 = time.perf_counter()
        text, info = lowered_hlo(lowered, stage=opt.stage, compiled=compiled)
        try:
            graph = import_hlo_text(text, where=f"{self!r}", source=f"jax:{self._name}",
                                    name=self._name, info=info)
        except HloImportError as e:
            raise BadInputError(str(e)) from None
        t2 = time.perf_counter()
        plan = optimize(graph, target=opt.target, mode=opt.mode, solver=opt.solver,
                        time_limit_s=opt.time_limit_s, seed=opt.seed)
        runner = self._jitted
        if program is not None:
            decisions = jax_apply.decide(plan, text, program(), opt.apply)
            plan.info["apply"] = {"mode": opt.apply, "decisions": [d.to_dict() for d in decisions]}
            runner = jax.jit(jax_apply.applied_function(self._fun, traced, *statics, decisions),
                             **jit_kwargs)
            if opt.apply == "remat" and any(d.action == "remat" for d in decisions):
                if not self._remat_pays(plan, runner, compiled or lowered.compile(), args, kwargs):
                    runner, reference = self._jitted, None
        plan.info["jit"] = {"stage": opt.stage, "xla_compile_s": t1 - t0 if compiled else None,
                            "import_s": t2 - t1, "planning_s": time.perf_counter() - t1,
                            "signature": [str(a) for a in jax.tree_util.tree_leaves(traced.in_avals)]}
        return _Entry(runner=runner, plan=plan, reference=reference)

    def _remat_pays(self, plan: Plan, runner, planned, args: tuple, kwargs: dict) -> bool:
        """Whether ``apply="remat"`` lowers the device's temp bytes (XLA's ``memory_analysis()``
        of the compiled programs, with and without the recomputations): XLA's own scheduler
        may place a recomputation where it lengthens other live ranges, and then temp memory
        grows. When it does not fall, the signature runs as plain ``jax.jit``, with a
        :class:`PlanningWarning`; ``plan.info["apply"]["temp_bytes"]`` records both numbers."""
        try:
            applied = runner.lower(*args, **kwargs).compile()
            before = planned.memory_analysis().temp_size_in_bytes
            after = applied.memory_analysis().temp_size_in_bytes
        except Exception as e:  # noqa: BLE001 - no analysis on this backend: cannot judge, keep it
            plan.info["apply"]["temp_bytes"] = {"error": _first_line(e)}
            return True
        info = plan.info["apply"]
        info["temp_bytes"] = {"without": int(before), "with": int(after)}
        with contextlib.suppress(Exception):   # FLOPs are reported, not judged
            info["flops"] = {"without": float(planned.cost_analysis()["flops"]),
                             "with": float(applied.cost_analysis()["flops"])}
        if after < before:
            return True
        info["numerics"] = "not applied: temp bytes did not fall"
        warnings.warn(f"{self!r}: apply='remat' does not lower XLA's temp bytes ({after} B with the "
                      f"recomputations, {before} B without); running plain jax.jit", PlanningWarning,
                      stacklevel=5)
        return False

    # ---- the jax.jit surface -------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        key, tracing = self._signature(args, kwargs)
        if tracing:          # inside jax.grad / vmap / an outer jit: plain jax.jit, no planning
            return self._jitted(*args, **kwargs)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._plan_signature(key, args, kwargs)
        if entry.reference is not None:
            return self._first_applied_call(entry, args, kwargs)
        if entry.error is not None and entry.plan is not None and self.options.on_failure == "raise":
            raise entry.error
        return entry.runner(*args, **kwargs)

    def _first_applied_call(self, entry: _Entry, args: tuple, kwargs: dict):
        """The first call of a signature with ``apply``: run the program with the plan applied
        and the planned program (instruction for instruction ``jax.jit``'s) on the same
        arguments (on copies when arguments are donated, so nothing is lost) and compare the
        results bit for bit. XLA's algebraic simplifier rewrites divisions and reassociates
        differently when a recomputation changes the graph, so an applied plan can change the
        last bits; then the signature runs as plain ``jax.jit`` (``on_failure="warn"``) or the
        call raises (``"raise"``)."""
        import jax

        with self._lock:
            reference, entry.reference = entry.reference, None
        if reference is None:                      # another thread checked meanwhile
            return self(*args, **kwargs)
        opt = self.options
        donating = bool(opt.donate_argnums or opt.donate_argnames)

        def fresh():
            if not donating:
                return args, kwargs
            return jax.tree_util.tree_map(lambda a: a.copy() if isinstance(a, jax.Array) else a,
                                          (args, kwargs))

        a, k = fresh()
        expected = reference(*a, **k)
        a, k = fresh()
        got = entry.runner(*a, **k)
        applied = entry.plan.info["apply"]
        if _bitwise_equal(got, expected):
            applied["numerics"] = "bitwise equal to jax.jit on the first call"
            return entry.runner(*args, **kwargs) if donating else got
        applied["numerics"] = "differs from jax.jit on the first call: runs as plain jax.jit"
        entry.runner = self._jitted
        entry.error = MemmapError(
            f"{self!r}: apply={opt.apply!r} changes the result's bits on the first call (XLA "
            "rewrites the recomputed operators differently); not applied")
        if opt.on_failure == "raise":
            raise entry.error
        warnings.warn(f"{entry.error}; running plain jax.jit", PlanningWarning, stacklevel=3)
        return self._jitted(*args, **kwargs) if donating else expected

    def lower(self, *args, **kwargs):
        """``jax.stages.Lowered`` of what runs for these arguments (plans them if needed)."""
        return self._entry(args, kwargs, what="lower()").runner.lower(*args, **kwargs)

    def trace(self, *args, **kwargs):
        """``jax.stages.Traced`` of what runs for these arguments (plans them if needed);
        ``.trace(*a).lower(lowering_platforms=("cuda",))`` lowers it for another platform."""
        return self._entry(args, kwargs, what="trace()").runner.trace(*args, **kwargs)

    def clear_cache(self) -> None:
        """Forget every plan and ``jax.jit``'s compiled executables."""
        with self._lock:
            self._entries.clear()
        self._jitted.clear_cache()

    # ---- memmap's surface ----------------------------------------------------------------
    def plan(self, *args, **kwargs) -> Plan:
        """The verified plan for these arguments' signature (cached; nothing runs). Arguments
        may be arrays or ``jax.ShapeDtypeStruct``s. Raises the planning error, if any. With
        ``apply``, ``plan.info["apply"]`` says what was applied and, after the first call,
        ``["numerics"]`` whether the results matched ``jax.jit``'s."""
        entry = self._entry(args, kwargs, what="plan()")
        if entry.plan is None:
            raise entry.error
        return entry.plan

    def report(self, *args, **kwargs) -> str:
        """The plan as markdown (:func:`memmap.report.plan_report`), with what ``apply`` did."""
        from memmap.report import plan_report

        plan = self.plan(*args, **kwargs)
        sig = plan.info["jit"]["signature"]
        shown = ", ".join(sig[:4]) + (f", ... ({len(sig)} arrays)" if len(sig) > 4 else "")
        return plan_report(plan, input_name=f"{self!r}: {shown}") + _apply_section(plan)

    def annotated_hlo(self, *args, **kwargs) -> str:
        """The planned module with the plan written into it (``memmap.emit_hlo``)."""
        import memmap

        plan = self.plan(*args, **kwargs)
        return memmap.emit_hlo(plan.problem.graph, plan)


def _apply_section(plan: Plan) -> str:
    applied = plan.info.get("apply")
    if not applied:
        return ""
    ds = applied["decisions"]
    done = [d for d in ds if d["action"] != "keep"]
    lines = [f"## Applied through JAX: `apply=\"{applied['mode']}\"`", "",
             f"{len(done)} of {len(ds)} spilled values "
             f"{ {'offload': 'offloaded to host', 'remat': 'recomputed'}[applied['mode']]}; the others "
             "are left as they are (reason given).", "",
             "| value | action | site | bytes moved by the plan | reason |", "|---|---|---:|---:|---|"]
    for d in ds:
        site = "" if d["site"] is None else f"{d['site']}:{d['output']}"
        lines.append(f"| `{d['name']}` | {d['action']} | {site} | {format_bytes(d['spill_reload_bytes'])} "
                     f"| {d['reason']} |")
    temp = applied.get("temp_bytes", {})
    if "with" in temp:
        lines += ["", f"XLA's temp bytes: {format_bytes(temp['without'])} without the recomputations, "
                  f"{format_bytes(temp['with'])} with them."]
    if "numerics" in applied:
        lines += ["", f"Outcome: {applied['numerics']}."]
    return "\n".join(lines + ["", ""])


def jit(fun: Callable | None = None, /, *, static_argnums: int | Sequence[int] | None = None,
        static_argnames: str | Sequence[str] | None = None,
        donate_argnums: int | Sequence[int] | None = None,
        donate_argnames: str | Sequence[str] | None = None, keep_unused: bool = False,
        compiler_options: dict | None = None, target: str | Target = DEFAULT_TARGET,
        scratchpad: str | int | None = None, mode: str = "tiered", solver: str = "belady",
        stage: str = "optimized", time_limit_s: float = 60.0, seed: int = 0,
        on_failure: str = "raise", apply: str | None = None):
    """``jax.jit`` that plans memory: ``@memmap.jit`` or ``@memmap.jit(...)``.

    The ``jax.jit`` keywords mean what they mean there; the others are :class:`JitOptions`
    (validated now: a bad option raises :class:`~memmap.errors.BadInputError` at decoration).

    Example::

        @memmap.jit(scratchpad="4MiB", mode="strict", solver="minpeak", apply="remat")
        def train_step(params, batch):
            ...
    """
    options = JitOptions(static_argnums=static_argnums, static_argnames=static_argnames,
                         donate_argnums=donate_argnums, donate_argnames=donate_argnames,
                         keep_unused=keep_unused, compiler_options=compiler_options or (),
                         target=target, scratchpad=scratchpad, mode=mode, solver=solver,
                         stage=stage, time_limit_s=time_limit_s, seed=seed,
                         on_failure=on_failure, apply=apply)
    if fun is None:
        return lambda f: Jitted(f, options)
    return Jitted(fun, options)
