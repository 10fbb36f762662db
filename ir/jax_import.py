"""Import a JAX function into a :class:`~memmap.ir.graph.Graph` through XLA's HLO.

``from_jax`` lowers ``jax.jit(fn, keep_unused=True)`` and imports either the pre-optimization
HLO (``stage="lowered"``: no fusion, no schedule) or the post-optimization HLO XLA compiled for
the CPU (``stage="optimized"``: fusions, XLA's schedule) with :func:`memmap.ir.hlo.import_hlo_text`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .graph import Graph
from .hlo import import_hlo_text

__all__ = ["from_jax", "lowered_hlo"]

_STAGES = ("optimized", "lowered")


def _fn_name(fn: Callable) -> str:
    inner = getattr(fn, "func", fn)  # functools.partial
    return getattr(inner, "__name__", type(inner).__name__)


def from_jax(fn: Callable, *args, stage: str = "optimized",
             static_argnums: int | Sequence[int] = (), donate_argnums: int | Sequence[int] = (),
             name: str | None = None) -> Graph:
    """Trace ``fn(*args)`` with ``jax.jit`` and import its HLO.

    Args:
      fn: the function; ``args`` may be arrays, pytrees of arrays, or ``jax.ShapeDtypeStruct``s.
      stage: ``"optimized"`` (post-optimization HLO of ``lowered.compile()``, scheduled by XLA)
        or ``"lowered"`` (``lowered.as_text(dialect="hlo")``, pre-optimization).
      static_argnums, donate_argnums: passed to ``jax.jit``. Donated arguments appear as
        ``input_output_alias`` in the module, so outputs get ``Value.donated_param``.
      name: graph name (default: the function's name).

    Returns:
      The graph; ``source`` is ``"jax:<fn name>"``. ``graph.info`` holds ``"stage"``, XLA's
      module cost analysis (``"xla_cost"``) and, for ``"optimized"``, the compiled executable's
      ``"xla_compiled_cost"`` and ``"xla_memory"`` (argument/output/alias/temp bytes).

    Example::

        g = from_jax(lambda x, w: jnp.tanh(x @ w), jnp.ones((8, 16)), jnp.ones((16, 4)))
    """
    import jax

    if stage not in _STAGES:
        raise ValueError(f"stage must be one of {_STAGES}, got {stage!r}")
    fname = _fn_name(fn)
    lowered = jax.jit(fn, keep_unused=True, static_argnums=static_argnums,
                      donate_argnums=donate_argnums).lower(*args)
    text, info = lowered_hlo(lowered, stage=stage)
    where = f"jax:{fname}"
    return import_hlo_text(text, where=where, source=where, name=name or fname, info=info)


def lowered_hlo(lowered, *, stage: str = "optimized", compiled=None) -> tuple[str, dict]:
    """The HLO text of a ``jax.stages.Lowered`` and the facts :func:`from_jax` records.

    ``stage="lowered"``: ``lowered.as_text(dialect="hlo", debug_info=True)`` (pre-optimization,
    with the metadata the post-optimization text also has: ``op_name``, source lines);
    ``stage="optimized"``: the post-optimization text of ``lowered.compile()`` (or of
    ``compiled`` when given), plus ``"xla_compiled_cost"`` and ``"xla_memory"`` in the info.
    """
    if stage not in _STAGES:
        raise ValueError(f"stage must be one of {_STAGES}, got {stage!r}")
    info: dict = {"stage": stage}
    if stage == "lowered":
        return lowered.as_text(dialect="hlo", debug_info=True), info
    compiled = lowered.compile() if compiled is None else compiled
    info["xla_compiled_cost"] = _compiled_cost(compiled)
    info["xla_memory"] = _memory(compiled)
    return compiled.as_text(), info


def _compiled_cost(compiled) -> dict | None:
    """flops / transcendentals / bytes accessed of XLA's compiled cost analysis, or None."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - optional information
        return None
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per device
        cost = cost[0] if cost else None
    if not cost:
        return None
    return {k: float(cost[k]) for k in ("flops", "transcendentals", "bytes accessed") if k in cost}


def _memory(compiled) -> dict | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - optional information
        return None
    if m is None:
        return None
    keys = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
            "temp_size_in_bytes", "generated_code_size_in_bytes")
    return {k: int(getattr(m, k)) for k in keys if hasattr(m, k)}
