"""Apply a plan through JAX: host offload and rematerialisation of the plan's spilled values.

A plan is made on XLA's HLO; JAX programs are written as jaxprs. To turn the plan's *spills*
(values written off-chip and reloaded later) into something JAX executes, every spilled HLO value
is mapped back to the jaxpr value that computes it, and the jaxpr is evaluated again with that
value either offloaded to host memory (``apply="offload"``) or recomputed before its late uses
(``apply="remat"``).

How values are mapped (docs/jit.md has the long version):

1. **Tagging.** The traced function (``jax.jit(f).trace(*args).jaxpr``) is re-evaluated
   equation by equation, each primitive under ``jax.named_scope("memmap_eqn<i>")`` where ``i``
   numbers the primitives in evaluation order (a *site*). Nested ``jit`` calls and
   ``custom_jvp``/``custom_vjp`` calls are inlined, so the primitives inside them are sites too;
   control flow (``scan``, ``while``, ``cond``) and ``checkpoint`` stay one site each. Name
   scopes only change HLO metadata (``op_name``): the tagged program compiles to the same
   instructions as ``jax.jit(f)`` and computes the same bits.
2. **Mapping.** The plan is made on the tagged program's HLO. A spilled value is produced by an
   entry instruction; the instruction that computes it (the fused computation's root, or its
   tuple operand for a multi-output fusion) carries ``op_name=".../memmap_eqn<i>/..."``, which
   names the site. Among that site's outputs the one with the same dtype and shape (or, after a
   bitcast, the same element count) is the value; it must be unique.
3. **Early and late uses.** The plan keeps the value on chip for its uses before the first
   reload and reloads it for the later ones. A jaxpr use at site ``k`` counts as *late* when
   ``k`` is after every site whose HLO instruction reads the value before that reload (the
   fusion roots; fused uses have smaller site numbers than their root). Late uses read the
   offloaded/recomputed copy; early uses and the function's outputs read the original.
4. **Derived values.** Cheap functions of the value that XLA recomputes inside the operators
   after the reload (bias add, ReLU mask) are sites with no HLO buffer and late uses: those late
   uses read them recomputed from the late copy (:func:`_derived`).

What cannot be mapped (left as is, with the reason in :class:`Decision`): values XLA created
without metadata, values inside a loop body (the plan sees a ``while`` as one operator), outputs
of a multi-output site that two outputs of equal shape make ambiguous, and spilled values with
no jaxpr use after the split, direct or derived.

Offload places ``jax.device_put(x, jax.memory.Space.Host)`` after the producing site and
``jax.device_put(host_copy, jax.memory.Space.Device)`` before the first late use: on GPU/TPU
this lowers to ``annotate_device_placement`` custom calls (``_xla_buffer_placement``) that XLA's
host offloader turns into copies; XLA:CPU drops them (no host memory space), so on CPU the
program is unchanged. Remat re-binds the site (and any input sites whose values are dead by the
late use, at most :data:`MAX_REMAT_SITES`) behind ``lax.optimization_barrier`` on its inputs,
which is how ``jax.checkpoint(prevent_cse=True)`` keeps XLA from merging a recomputation with
the original, plus an anchor (the latest value the late use depends on) so that XLA cannot
schedule the recomputation long before the use; XLA:CPU removes such barriers (``cse_barrier_expander``) unless that pass is
disabled, which :mod:`memmap.jit` does for ``apply="remat"``. A value is recomputed only when
the cost model (:func:`memmap.cost.step_times`, the target's off-chip bandwidth) says its
recomputation is faster than its spill and reloads.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from memmap.cost import step_times
from memmap.ir.hlo_proto import TUPLE_TYPE, parse_module_proto
from memmap.plan import Plan

__all__ = ["TAG", "MAX_REMAT_SITES", "Decision", "Site", "TaggedProgram", "decide",
           "applied_function", "map_values", "site_of_op_name", "tagged_function"]

TAG = "memmap_eqn"
REMAT_TAG = "memmap_remat"
MAX_REMAT_SITES = 16
_ANCHOR_SEARCH = 256   # sites visited when looking for a recomputation's anchor
# Never recomputed: XLA's algebraic simplifier rewrites divisions depending on the graph around
# them (x / c -> x * (1 / c), (a / b) / c -> a / (b * c)), so a recomputed division can differ
# from the original in the last bit.
_INEXACT = frozenset({"div"})
_TAG_RE = re.compile(rf"(?:^|/){TAG}(\d+)(?:/|$)")
# Primitives whose body is evaluated inline (param holding the ClosedJaxpr).
_INLINE = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr",
           "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr"}


def site_of_op_name(op_name: str) -> int | None:
    """The site number in an HLO ``op_name`` (``jit(f)/memmap_eqn12/tanh`` -> 12), or None."""
    m = _TAG_RE.search(op_name or "")
    return int(m.group(1)) if m else None


@dataclasses.dataclass(frozen=True)
class Site:
    """One primitive application of the traced function, numbered in evaluation order.

    Attributes:
      index: the site number (``memmap_eqn<index>`` in HLO metadata).
      primitive: the primitive's name (``dot_general``, ``scan``, ...).
      out_avals: ``[num_outputs]`` abstract values (``ShapedArray``) of its results.
      inputs: ``[num_inputs]`` where each input comes from: ``(site, output)``, or None for a
        function argument, a captured constant or a literal.
      recomputable: no effects and no sub-program (control flow such as ``scan``/``while``/
        ``cond``, or a ``checkpoint``): only such sites are ever re-bound.
    """

    index: int
    primitive: str
    out_avals: tuple
    inputs: tuple[tuple[int, int] | None, ...]
    recomputable: bool


@dataclasses.dataclass(frozen=True)
class TaggedProgram:
    """The sites of one traced function and who reads what.

    Attributes:
      sites: ``[num_sites]``, ``sites[i].index == i``.
      consumers: ``(site, output) -> sorted sites that read it``.
      outputs: the ``(site, output)`` pairs returned by the function.
    """

    sites: tuple[Site, ...]
    consumers: dict[tuple[int, int], tuple[int, ...]]
    outputs: frozenset[tuple[int, int]]

    @classmethod
    def from_sites(cls, sites: Sequence[Site], outputs) -> "TaggedProgram":
        cons: dict[tuple[int, int], set[int]] = defaultdict(set)
        for s in sites:
            for o in s.inputs:
                if o is not None:
                    cons[o].add(s.index)
        return cls(tuple(sites), {k: tuple(sorted(v)) for k, v in cons.items()},
                   frozenset(o for o in outputs if o is not None))


# --------------------------------------------------------------------------------------------
# The evaluator: re-evaluates a jaxpr primitive by primitive (tags, offload, remat)


@dataclasses.dataclass
class _Slot:
    """A value in the evaluator's environment and where it comes from."""

    value: object
    origin: tuple[int, int] | None


@dataclasses.dataclass(frozen=True)
class _Action:
    kind: str                      # "offload" | "remat" | "derive" (recomputed from a late copy)
    split: int                     # uses at sites <= split read the original
    chain: tuple[int, ...] = ()    # remat: sites to re-bind, in order (the last produces it)


class _Held:
    """A spilled value: the original, plus the host copy (offload) or the recomputation."""

    def __init__(self, dev, action: _Action, output: int):
        self.dev = dev
        self.action = action
        self.output = output
        self.host = None
        self.late = None


class _Evaluator:
    def __init__(self, actions: dict[tuple[int, int], _Action] | None = None):
        self.actions = dict(actions or {})
        self.keep = {s for a in self.actions.values() for s in a.chain}
        self.sites: list[Site] = []
        self.saved: dict[int, tuple] = {}   # site -> (eqn, input slots), for remat chains
        self.values: dict[tuple[int, int], object] = {}   # (site, output) -> value, for anchors
        self.outputs: tuple = ()

    # ---- environment -------------------------------------------------------------------
    def resolve(self, slot: _Slot, site: int | None):
        """The value a use at ``site`` reads (None: a function output reads the original)."""
        v = slot.value
        if not isinstance(v, _Held):
            return v
        if site is None or site <= v.action.split:
            return v.dev
        if v.late is None:
            if v.action.kind == "offload":
                import jax

                v.late = jax.device_put(v.host, jax.memory.Space.Device)
            else:
                v.late = self._recompute(v.action, site)[v.output]
        return v.late

    def run(self, closed, flat_args: Sequence) -> list:
        """Evaluate ``closed`` on ``flat_args`` (called once per trace of the function: every
        trace numbers the sites from 0 again)."""
        self.sites, self.saved, self.values = [], {}, {}
        outs = self._eval(closed.jaxpr, [_Slot(c, None) for c in closed.consts],
                          [_Slot(a, None) for a in flat_args])
        self.outputs = tuple(s.origin for s in outs)
        return [self.resolve(s, None) for s in outs]

    def _eval(self, jaxpr, consts: list[_Slot], args: list[_Slot]) -> list[_Slot]:
        from jax._src import core

        env: dict = {}
        for var, s in zip(jaxpr.constvars, consts, strict=True):
            env[var] = s
        for var, s in zip(jaxpr.invars, args, strict=True):
            env[var] = s

        def read(atom) -> _Slot:
            return _Slot(atom.val, None) if isinstance(atom, core.Literal) else env[atom]

        for eqn in jaxpr.eqns:
            ins = [read(a) for a in eqn.invars]
            inner = _INLINE.get(eqn.primitive.name)
            if inner is not None and inner in eqn.params:
                body = eqn.params[inner]
                outs = self._eval(body.jaxpr, [_Slot(c, None) for c in body.consts], ins)
            else:
                outs = self._bind(eqn, ins)
            for var, s in zip(eqn.outvars, outs, strict=True):
                if not isinstance(var, core.DropVar):
                    env[var] = s
        return [read(a) for a in jaxpr.outvars]

    def _bind(self, eqn, ins: list[_Slot]) -> list[_Slot]:
        from jax._src import core

        i = len(self.sites)
        recomputable = (not eqn.effects and eqn.primitive.name not in _INEXACT
                        and not any(True for _ in core.jaxprs_in_params(eqn.params)))
        self.sites.append(Site(i, eqn.primitive.name, tuple(v.aval for v in eqn.outvars),
                               tuple(s.origin for s in ins), recomputable))
        if i in self.keep:
            self.saved[i] = (eqn, ins)
        ans = _bind_tagged(eqn, [self.resolve(s, i) for s in ins], f"{TAG}{i}")
        out = []
        for j, val in enumerate(ans):
            if self.actions:
                self.values[(i, j)] = val
            action = self.actions.get((i, j))
            if action is not None:
                held = _Held(val, action, j)
                if action.kind == "offload":
                    import jax

                    held.host = jax.device_put(val, jax.memory.Space.Host)
                val = held
            out.append(_Slot(val, (i, j)))
        return out

    def _anchor(self, site: int, split: int) -> list:
        """The value computed latest (highest site after ``split``) among the inputs of ``site``
        and their producers: a recomputation for ``site`` waits for it, so XLA cannot schedule
        the recomputation long before its use. Empty when ``site`` depends on nothing later
        than ``split``."""
        best, seen, stack = None, set(), [site]
        while stack and len(seen) < _ANCHOR_SEARCH:
            for o in self.sites[stack.pop()].inputs:
                if o is None or o[0] <= split or o in seen:
                    continue
                seen.add(o)
                best = o if best is None or o > best else best
                stack.append(o[0])
        value = self.values.get(best)
        return [value] if _is_tracer(value) else []

    def _recompute(self, action: _Action, site: int) -> list:
        """Re-bind ``action.chain`` for a use at ``site``; returns the last chain site's
        outputs. A ``"remat"`` chain reads its inputs through one optimization barrier (with an
        anchor, :meth:`_anchor`) so XLA neither merges it with the original nor hoists it; a
        ``"derive"`` chain reads the late copy of its base, which already keeps it apart, and
        needs no barrier (where the late copy is the original, as after an offload on XLA:CPU,
        XLA merges it back and the program is unchanged)."""
        from jax import lax

        chain = set(action.chain)
        outside: dict[int, _Slot] = {}   # id(slot) -> slot, inputs read from outside the chain
        for s in action.chain:
            for slot in self.saved[s][1]:
                if slot.origin is None or slot.origin[0] not in chain:
                    outside.setdefault(id(slot), slot)
        vals = [self.resolve(slot, site) for slot in outside.values()]
        if action.kind == "remat":
            traced = [k for k, v in enumerate(vals) if _is_tracer(v)]
            barrier = lax.optimization_barrier((tuple(vals[k] for k in traced),
                                                tuple(self._anchor(site, action.split))))[0]
            for k, v in zip(traced, barrier, strict=True):
                vals[k] = v
        got = dict(zip(outside, vals, strict=True))
        local: dict[tuple[int, int], object] = {}
        ans: list = []
        for s in action.chain:
            eqn, ins = self.saved[s]
            args = [local[x.origin] if x.origin is not None and x.origin[0] in chain else got[id(x)]
                    for x in ins]
            ans = _bind_tagged(eqn, args, f"{REMAT_TAG}{s}")
            for j, v in enumerate(ans):
                local[(s, j)] = v
        return ans


def _is_tracer(v) -> bool:
    import jax

    return isinstance(v, jax.core.Tracer)


def _bind_tagged(eqn, args: list, tag: str) -> list:
    """``eqn.primitive.bind(*args)`` as ``jax.core.eval_jaxpr`` does it, under the name scope
    ``tag`` (HLO metadata only). Returns the outputs as a list."""
    import jax
    from jax._src import source_info_util

    with jax.named_scope(tag):
        name_stack = source_info_util.current_name_stack() + eqn.source_info.name_stack
        with (source_info_util.user_context(eqn.source_info.traceback, name_stack=name_stack),
              eqn.ctx.manager):
            ans = eqn.primitive.bind(*args, **eqn.primitive.get_bind_params(eqn.params))
    return list(ans) if eqn.primitive.multiple_results else [ans]


def _flat_function(like: Callable, closed, in_tree, out_tree, static_argnums: Sequence[int],
                   static_argnames: Sequence[str], evaluator: _Evaluator) -> Callable:
    """A function with the signature (and argument names, for HLO parameter names) of ``like``
    that evaluates ``closed`` with ``evaluator`` (static arguments are folded into ``closed``)."""
    import jax

    statics = set(static_argnums)

    @functools.wraps(like)
    def fn(*args, **kwargs):
        dyn_args = tuple(a for k, a in enumerate(args) if k not in statics)
        dyn_kwargs = {k: v for k, v in kwargs.items() if k not in static_argnames}
        flat, tree = jax.tree_util.tree_flatten((dyn_args, dyn_kwargs))
        if tree != in_tree:
            raise ValueError(f"memmap.jit: arguments {tree} do not match the traced {in_tree}")
        return jax.tree_util.tree_unflatten(out_tree, evaluator.run(closed, flat))

    return fn


def tagged_function(like: Callable, traced, static_argnums: Sequence[int], static_argnames: Sequence[str]
                    ) -> tuple[Callable, Callable[[], TaggedProgram]]:
    """``(fn, program)``: ``fn`` has the signature of the function behind ``traced`` (a
    ``jax.stages.Traced``) and computes it site by site under ``memmap_eqn<i>`` name scopes;
    ``program()`` describes the sites once ``fn`` has been traced (by lowering it)."""
    ev = _Evaluator()
    fn = _flat_function(like, traced.jaxpr, traced.in_tree, traced.out_tree, static_argnums,
                        static_argnames, ev)
    return fn, lambda: TaggedProgram.from_sites(ev.sites, ev.outputs)


def applied_function(like: Callable, traced, static_argnums: Sequence[int], static_argnames: Sequence[str],
                     decisions: Sequence["Decision"]) -> Callable:
    """The function behind ``traced`` with the decisions' offloads and recomputations."""
    actions = {}
    for d in decisions:
        if d.action in ("offload", "remat"):
            actions[(d.site, d.output)] = _Action(d.action, d.split, d.chain)
            for site, out, chain in d.derived:
                actions.setdefault((site, out), _Action("derive", d.split, chain))
    return _flat_function(like, traced.jaxpr, traced.in_tree, traced.out_tree, static_argnums,
                          static_argnames, _Evaluator(actions))


# --------------------------------------------------------------------------------------------
# HLO values -> sites


def _xla_dtype(dtype) -> str:
    """XLA's name of a numpy/JAX dtype (``float32`` -> ``f32``, ``bfloat16`` -> ``bf16``)."""
    name = np.dtype(dtype).name
    if name == "bool":
        return "pred"
    if name == "bfloat16":
        return "bf16"
    m = re.fullmatch(r"(float|int|uint|complex)(\d+)(?:_(\w+))?", name)
    if not m:
        return name
    kind, bits, suffix = m.groups()
    return {"float": "f", "int": "s", "uint": "u", "complex": "c"}[kind] + bits + (suffix or "")


def _computing_op_names(hlo_text: str) -> dict[str, dict[tuple[int, ...], str]]:
    """Entry instruction name -> {leaf index: op_name of the instruction computing that leaf}:
    a fusion's root (its tuple operand for multi-output fusions), else the instruction."""
    from jaxlib import _hlo

    proto = parse_module_proto(_hlo.hlo_module_from_text(hlo_text).as_serialized_hlo_module_proto())
    comps = {c.id: c for c in proto.computations}
    entry = comps[proto.entry_computation_id]
    out: dict[str, dict[tuple[int, ...], str]] = {}
    for inst in entry.instructions:
        names: dict[tuple[int, ...], str] = {(): inst.metadata.op_name}
        if inst.opcode == "fusion" and inst.called_computation_ids:
            body = comps[inst.called_computation_ids[0]]
            by_id = {i.id: i for i in body.instructions}
            root = by_id[body.root_id]
            if root.shape.element_type == TUPLE_TYPE and root.opcode == "tuple":
                for k, oid in enumerate(root.operand_ids):
                    names[(k,)] = by_id[oid].metadata.op_name or inst.metadata.op_name
            else:
                names[()] = root.metadata.op_name or inst.metadata.op_name
        out[inst.name] = names
    return out


def _leaf_index(value_name: str, inst_name: str) -> tuple[int, ...]:
    rest = value_name[len(inst_name):]
    if not rest.startswith("{"):
        return ()
    return tuple(int(x) for x in rest[1:-1].split(","))


def map_values(plan: Plan, hlo_text: str, program: TaggedProgram,
               values: Sequence[int]) -> dict[int, tuple[int, int] | str]:
    """Graph value id -> the ``(site, output)`` that computes it, or a one-line reason it
    cannot be mapped (``values`` must have producers). ``hlo_text``: the module of the plan."""
    g = plan.problem.graph
    op_names = _computing_op_names(hlo_text)
    out: dict[int, tuple[int, int] | str] = {}
    for v in values:
        val = g.values[v]
        inst = g.ops[val.producer].name
        idx = _leaf_index(val.name, inst)
        names = op_names.get(inst, {})
        op_name = names.get(idx[:1], names.get((), ""))
        site = site_of_op_name(op_name)
        if site is None or site >= len(program.sites):
            out[v] = f"{inst}: no {TAG} tag in its HLO metadata (op_name {op_name!r})"
            continue
        avals = program.sites[site].out_avals
        elements = int(np.prod(val.shape, dtype=np.int64))
        exact = [j for j, a in enumerate(avals)
                 if _xla_dtype(a.dtype) == val.dtype and tuple(a.shape) == tuple(val.shape)]
        loose = [j for j, a in enumerate(avals)
                 if _xla_dtype(a.dtype) == val.dtype and int(np.prod(a.shape, dtype=np.int64)) == elements]
        pick = exact or loose
        if len(pick) == 1:
            out[v] = (site, pick[0])
        else:
            why = "no output" if not pick else f"{len(pick)} outputs"
            out[v] = (f"{inst}: {why} of site {site} ({program.sites[site].primitive}) "
                      f"has its dtype {val.dtype} and shape {list(val.shape)}")
    return out


# --------------------------------------------------------------------------------------------
# Decisions


@dataclasses.dataclass(frozen=True)
class Decision:
    """What was done with one spilled value of the plan.

    Attributes:
      value: the graph value id; ``name`` its HLO name.
      action: ``"offload"``, ``"remat"`` or ``"keep"`` (left as is; ``reason`` says why).
      site, output: the jaxpr value it maps to (None when unmapped).
      split: uses at sites ``<= split`` read the original (see the module docstring).
      chain: remat: the sites recomputed, in order (the last one produces the value).
      derived: ``(site, output, chain)`` of values XLA recomputes from this one in the operators
        after its reload; their late uses read them recomputed from the late copy.
      spill_reload_bytes: the plan's spill + reload bytes of the value.
      reload_s: those bytes at the target's off-chip bandwidth (cost model).
      recompute_s: modelled time of the operators recomputed (remat only).
      reason: one line.
    """

    value: int
    name: str
    action: str
    site: int | None = None
    output: int | None = None
    split: int = -1
    chain: tuple[int, ...] = ()
    derived: tuple[tuple[int, int, tuple[int, ...]], ...] = ()
    spill_reload_bytes: int = 0
    reload_s: float = 0.0
    recompute_s: float | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Liveness:
    """Which jaxpr values exist as HLO buffers, and until which step of the plan."""

    def __init__(self, plan: Plan, hlo_text: str, program: TaggedProgram):
        g = plan.problem.graph
        pos = {o: t for t, o in enumerate(plan.schedule)}
        produced = [v.id for v in g.values if v.producer is not None and v.kind != "temporary"]
        self.buffer: dict[tuple[int, int], int] = {}   # (site, output) -> last step it is read
        for v, where in map_values(plan, hlo_text, program, produced).items():
            if isinstance(where, tuple):
                val = g.values[v]
                last = len(plan.schedule) if val.is_output else max(
                    (pos[c] for c in val.consumers), default=-1)
                self.buffer[where] = max(self.buffer.get(where, -1), last)

    def alive(self, origin, step: int) -> bool:
        """A function argument, or a value whose HLO buffer is read at or after ``step``."""
        return origin is None or self.buffer.get(origin, -1) >= step


def _remat_chain(program: TaggedProgram, live: _Liveness, site: int, step: int,
                 provided: tuple[int, int] | None = None) -> tuple[tuple[int, ...], str]:
    """Sites to re-bind so that ``site``'s outputs exist again at plan step ``step``: inputs
    whose HLO buffers are alive then (and ``provided``) are read, the others (dead, or never
    materialised by XLA) are recomputed too. Returns ``(chain, "")`` or ``((), reason)``."""
    chain: set[int] = set()
    stack = [site]
    while stack:
        s = stack.pop()
        if s in chain:
            continue
        st = program.sites[s]
        if not st.recomputable:
            return (), f"site {s} ({st.primitive}) cannot be recomputed"
        chain.add(s)
        if len(chain) > MAX_REMAT_SITES:
            return (), f"recomputing needs more than {MAX_REMAT_SITES} sites"
        stack.extend(o[0] for o in st.inputs if o != provided and not live.alive(o, step))
    return tuple(sorted(chain)), ""


def _derived(program: TaggedProgram, live: _Liveness, base: tuple[int, int], split: int,
             step: int) -> tuple[tuple[int, int, tuple[int, ...]], ...]:
    """Values XLA recomputes from ``base`` inside the operators that read its reload.

    XLA often keeps one buffer (say a convolution's output) and recomputes cheap functions of it
    (bias add, ReLU mask) inside each fusion that needs them, early and late. In the jaxpr those
    functions are sites ``<= split`` whose outputs are read after ``split`` but have no HLO buffer.
    Each such output is returned as ``(site, output, chain)``: the chain of sites that
    recomputes it from the late copy of ``base`` and values alive at plan step ``step``
    (:func:`_remat_chain`). Outputs it cannot recompute are left out (read as they are)."""
    region: set[int] = set()
    frontier = [base]
    while frontier and len(region) <= MAX_REMAT_SITES:
        origin = frontier.pop()
        for t in program.consumers.get(origin, ()):
            st = program.sites[t]
            outs = [(t, k) for k in range(len(st.out_avals))]
            if (t > split or t in region or not st.recomputable
                    or any(o in live.buffer for o in outs)):
                continue
            region.add(t)
            frontier.extend(outs)
    found = []
    for t in sorted(region):
        for k in range(len(program.sites[t].out_avals)):
            if any(c > split for c in program.consumers.get((t, k), ())):
                chain, _ = _remat_chain(program, live, t, step, provided=base)
                if chain:
                    found.append((t, k, chain))
    return tuple(found)


def decide(plan: Plan, hlo_text: str, program: TaggedProgram, apply: str) -> list[Decision]:
    """One :class:`Decision` per spilled value of ``plan`` for ``apply`` (``"offload"`` or
    ``"remat"``); ``hlo_text`` is the module the plan was made on (the tagged program's)."""
    if apply not in ("offload", "remat"):
        raise ValueError(f"apply must be 'offload' or 'remat', got {apply!r}")
    g = plan.problem.graph
    tgt = plan.problem.target
    spilled = sorted({t.value for t in plan.transfers if t.kind == "spill"})
    mapping = map_values(plan, hlo_text, program, spilled)
    pos = {o: t for t, o in enumerate(plan.schedule)}
    op_site = [site_of_op_name(op.op_name) for op in g.ops]
    times = step_times(plan) if apply == "remat" else []
    live = _Liveness(plan, hlo_text, program)
    moved: dict[int, int] = defaultdict(int)
    first_reload: dict[int, int] = {}
    for tr in plan.transfers:
        if tr.kind in ("spill", "reload"):
            moved[tr.value] += tr.size_bytes
        if tr.kind == "reload":
            first_reload[tr.value] = min(first_reload.get(tr.value, tr.step), tr.step)
    out = []
    for v, where in mapping.items():
        nbytes = moved[v]
        base = dict(value=v, name=g.values[v].name, spill_reload_bytes=nbytes,
                    reload_s=nbytes / tgt.offchip_bandwidth_bytes_per_s)
        if isinstance(where, str):
            out.append(Decision(action="keep", reason=where, **base))
            continue
        site, j = where
        base.update(site=site, output=j)
        if v not in first_reload:
            out.append(Decision(action="keep", reason="spilled but never reloaded", **base))
            continue
        reload_step = first_reload[v]
        early = [op_site[c] for c in g.values[v].consumers
                 if pos[c] < reload_step and op_site[c] is not None]
        split = max(early + [site])
        derived = _derived(program, live, where, split, reload_step)
        base.update(split=split, derived=derived)
        if not derived and not any(k > split for k in program.consumers.get(where, ())):
            out.append(Decision(action="keep", reason="no JAX-level use after the reload point "
                                "(its uses are fused into operators that run before it)", **base))
            continue
        if apply == "offload":
            out.append(Decision(action="offload", reason="host offload", **base))
            continue
        chain, why = _remat_chain(program, live, site, reload_step)
        if not chain:
            out.append(Decision(action="keep", reason=why, **base))
            continue
        in_chain = set(chain)
        recompute_s = sum(times[pos[o]] for o in range(len(g.ops)) if op_site[o] in in_chain)
        base.update(chain=chain, recompute_s=recompute_s)
        cmp = "<" if recompute_s < base["reload_s"] else ">="
        out.append(Decision(action="remat" if cmp == "<" else "keep",
                            reason=f"recompute {recompute_s * 1e6:.3f} us {cmp} spill+reload "
                                   f"{base['reload_s'] * 1e6:.3f} us (cost model)", **base))
    return out
