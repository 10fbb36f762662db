"""ExecuTorch's own memory planning on saved torch.export programs (benchmark helper).

Runs in a benchmark-only virtual environment with ``executorch`` beside ``torch==2.13.0`` (not a
dependency of memmap; ``benchmarks/torch_bench.py`` says how to make it)::

    /tmp/etvenv/bin/python benchmarks/executorch_plan.py OUT.json A.pt2 B.pt2 ...

For every program: ``to_edge(program).to_executorch()`` with ExecuTorch's ``MemoryPlanningPass``
running its ``greedy`` algorithm (the default suite), and again with ``naive`` (the bump
allocator). Writes, per file: the planned arena bytes of each algorithm
(``sum(non_const_buffer_sizes)``), the number of nodes of the planned graph, and the planned
buffers as ``[first, last, allocated bytes]`` (inclusive node-index lifetimes, sizes aligned to
ExecuTorch's 16 bytes; one entry per buffer: ``memory.view`` nodes and specs with a storage base
alias another buffer and are left out).
"""

from __future__ import annotations

import json
import sys
import time
import traceback


def plan(path: str) -> dict:
    import torch
    from executorch.exir import ExecutorchBackendConfig, memory, to_edge
    from executorch.exir.memory_planning import MemoryPlanningAlgorithmSuite, greedy, naive
    from executorch.exir.passes import MemoryPlanningPass

    out: dict = {}
    for algo_name, algo in (("greedy", greedy), ("naive", naive)):
        ep = torch.export.load(path)
        t0 = time.perf_counter()
        et = to_edge(ep).to_executorch(ExecutorchBackendConfig(
            memory_planning_pass=MemoryPlanningPass(MemoryPlanningAlgorithmSuite([algo]))))
        out[f"{algo_name}_s"] = time.perf_counter() - t0
        out[f"{algo_name}_bytes"] = int(sum(et.executorch_program.execution_plan[0].non_const_buffer_sizes))
        if algo_name == "greedy":
            gm = et.exported_program().graph_module
            seen, buffers = set(), set()
            for node in gm.graph.nodes:
                if node.target is memory.view:  # a view: its spec aliases its base's memory
                    continue
                specs = node.meta.get("spec")
                for spec in specs if isinstance(specs, (list, tuple)) else [specs]:
                    if (spec is None or not hasattr(spec, "mem_id") or spec.mem_id != 1
                            or id(spec) in seen or getattr(spec, "storage_base", None) is not None
                            or spec.lifetime[0] is None):
                        continue
                    seen.add(id(spec))
                    # one buffer per (offset, lifetime, size): ExecuTorch's verifier forbids two
                    # distinct buffers there, so a repeat is another alias of the same memory
                    buffers.add((int(spec.mem_offset), int(spec.lifetime[0]), int(spec.lifetime[1]),
                                 int(spec.allocated_memory)))
            out["nodes"] = len(gm.graph.nodes)
            out["buffers"] = sorted([first, last, size] for _, first, last, size in buffers)
    return out


def main(argv: list[str]) -> int:
    import torch
    from executorch.version import __version__ as et_version

    result = {"executorch_version": et_version,
              "torch_version": torch.__version__, "programs": {}}
    for path in argv[1:]:
        try:
            result["programs"][path] = plan(path)
        except Exception as e:  # noqa: BLE001 - recorded per program, the others still run
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
            result["programs"][path] = {"error": f"{type(e).__name__}: {first}",
                                        "traceback": traceback.format_exc(limit=3)}
        print(path, {k: v for k, v in result["programs"][path].items() if k != "buffers"},
              file=sys.stderr)
    with open(argv[0], "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
