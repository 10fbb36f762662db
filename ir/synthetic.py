"""Random DAGs for property tests and quick experiments (deterministic for a seed)."""

from __future__ import annotations

import numpy as np

from memmap.ir.graph import Graph, GraphBuilder


def random_graph(seed: int, *, num_ops: int = 12, max_inputs: int = 3, max_outputs: int = 2,
                 num_params: int = 3, num_consts: int = 2, max_size_bytes: int = 4096,
                 temp_prob: float = 0.1, output_prob: float = 0.15,
                 shuffle_schedule: bool = False, inplace_prob: float = 0.0) -> Graph:
    """A random program: parameters/constants, ops reading 1..max_inputs earlier values and
    writing 1..max_outputs values (some temporaries), some outputs, sizes in
    ``[1, max_size_bytes]``. Every value except temporaries is read by a later op or is an output.
    With ``inplace_prob > 0``, each non-temporary output becomes, with that probability, an
    in-place pair with one of the op's inputs not yet paired (it then takes that input's size).
    The default (0) draws no extra random numbers, so graphs of a seed are unchanged.
    """
    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"random{seed}", source=f"random_graph(seed={seed})")
    avail: list[int] = []
    for i in range(num_params):
        avail.append(b.add_value(f"p{i}", int(rng.integers(1, max_size_bytes + 1)), kind="parameter"))
    for i in range(num_consts):
        avail.append(b.add_value(f"c{i}", int(rng.integers(1, max_size_bytes + 1)), kind="constant"))
    if not avail:
        avail.append(b.add_value("p0", int(rng.integers(1, max_size_bytes + 1)), kind="parameter"))
    unread = set(avail)
    outputs: list[int] = []
    for k in range(num_ops):
        n_in = int(rng.integers(1, max_inputs + 1))
        # prefer recent values (locality) but sometimes reach far back
        picks = set()
        for _ in range(n_in):
            if unread and rng.random() < 0.5:
                picks.add(min(unread))
            else:
                lo = max(0, len(avail) - 6) if rng.random() < 0.7 else 0
                picks.add(avail[int(rng.integers(lo, len(avail)))])
        n_out = int(rng.integers(1, max_outputs + 1))
        outs = []
        for j in range(n_out):
            outs.append({"name": f"op{k}.{j}", "size_bytes": int(rng.integers(1, max_size_bytes + 1)),
                         "temporary": bool(j > 0 and rng.random() < temp_prob)})
        pairs: list[tuple[int, int]] = []      # (output position, input value)
        if inplace_prob > 0:
            free = sorted(picks)
            for j, spec in enumerate(outs):
                if free and not spec["temporary"] and rng.random() < inplace_prob:
                    vi = free.pop(int(rng.integers(len(free))))
                    spec["size_bytes"] = b._values[vi]["size_bytes"]
                    pairs.append((j, vi))
        flops = float(rng.integers(0, 4 * max_size_bytes + 1))
        ids = b.add_op(f"op{k}", "custom", inputs=sorted(picks), outputs=outs, flops=flops)
        for j, vi in pairs:
            b.mark_inplace(ids[j], vi)
        unread -= picks
        for vid, spec in zip(ids, outs):
            if spec["temporary"]:
                continue
            avail.append(vid)
            unread.add(vid)
    produced_unread = sorted(v for v in unread if b._values[v]["producer"] is not None)
    for v in produced_unread:
        b.mark_output(v)
    for v in avail:
        if b._values[v]["producer"] is not None and rng.random() < output_prob:
            b.mark_output(v)
    g = b.build()
    if shuffle_schedule:
        import networkx as nx

        dag = g.to_networkx()
        order = list(nx.lexicographical_topological_sort(dag, key=lambda _: rng.random()))
        import dataclasses

        g = dataclasses.replace(g, default_schedule=tuple(order))
    return g
