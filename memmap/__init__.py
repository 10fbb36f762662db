"""memmap: a compiler pass for accelerator memory mapping.

Decides, for a program and a target accelerator, the operator schedule, which tensors live in
the scratchpad at which offset and when, and which are spilled, reloaded or prefetched.

Run from the repository root (the bundled CNN train step needs 12 MiB in strict mode, so the
4 MiB NPU preset is used in tiered mode, where operands may stay off-chip)::

    >>> import memmap
    >>> g = memmap.import_hlo("examples/small_cnn_train.after.hlo")
    >>> plan = memmap.optimize(g, target="npu-4mib", mode="tiered", solver="belady")
    >>> memmap.verify_plan(plan).ok
    True
    >>> plan.metrics["peak_scratchpad_bytes"] <= 4 * 2**20
    True
    >>> memmap.optimize(g, scratchpad="14MiB", solver="minpeak").metrics["noncompulsory_bytes"] >= 0
    True
    >>> step = memmap.jit(train_step, scratchpad="4MiB")                 # doctest: +SKIP
    >>> step(params, batch); step.plan(params, batch)                    # doctest: +SKIP
"""

# first: in the memmap command only, Ctrl-C while it imports itself ends it cleanly (exit 130)
from memmap import limits as _limits  # noqa: F401, I001
from memmap.budgets import Budgets, compute_budgets
from memmap.cost import simulate
from memmap.emit.hlo import emit_hlo
from memmap.emit.hlo_plan import import_plan
from memmap.errors import (BadInputError, InfeasibleError, MemmapError, PlanError, SolverTimeoutError,
                           TraceError)
from memmap.ir import Graph, GraphBuilder, from_jax, from_torch, import_hlo, import_pt2
from memmap.jit import JitOptions, Jitted, PlanningWarning, jit  # the name memmap.jit is the decorator
from memmap.pipeline import optimize
from memmap.plan import Plan, Residency, Transfer
from memmap.problem import PRESETS, Problem, Target, get_target, parse_size
from memmap.verify import VerifyResult, verify_plan

__version__ = "0.1.0"


def _register_envs() -> None:
    """Register ``memmap/MallocGame-v0`` with Gymnasium (by entry point: nothing of memmap.rl,
    jax or haiku is imported until the env is made)."""
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - gymnasium is a dependency
        return
    if "memmap/MallocGame-v0" not in gymnasium.registry:
        gymnasium.register(id="memmap/MallocGame-v0", entry_point="memmap.rl.env:MallocGameEnv")


_register_envs()

__all__ = [
    "BadInputError", "Budgets", "Graph", "GraphBuilder", "InfeasibleError", "JitOptions", "Jitted",
    "MemmapError", "PRESETS", "Plan", "PlanError", "PlanningWarning", "Problem", "Residency",
    "SolverTimeoutError", "Target", "TraceError", "Transfer", "VerifyResult", "compute_budgets", "emit_hlo",
    "from_jax", "from_torch", "get_target", "import_hlo", "import_plan", "import_pt2", "jit", "optimize",
    "parse_size", "simulate", "verify_plan",
]
