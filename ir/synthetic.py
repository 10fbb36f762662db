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


_HLO_SIZES = (4, 16, 64, 256)   # f32 elements: 16 B .. 1 KiB


def random_hlo(seed: int, *, num_ops: int = 12, num_params: int = 3, num_consts: int = 1,
               loop_prob: float = 0.15, pair_prob: float = 0.15, output_prob: float = 0.15) -> str:
    """A random, valid, executable HLO module (text), deterministic for a seed: for tests of what
    needs real HLO (annotated HLO, XLA:CPU numerics).

    The ENTRY has ``num_params`` parameters and ``num_consts`` constants (``f32[n]``, n in 4, 16,
    64, 256) and ``num_ops`` steps, each one of: an elementwise op on 1-3 same-sized values
    (negate, add, multiply, maximum, clamp), a resize (slice, or concatenate of copies), a ``call``
    returning a 2-tuple (read through ``get-tuple-element``; probability ``pair_prob``), or a
    ``while`` loop of 1-3 trips over a ``(s32[], f32[a], f32[b])`` state (``loop_prob``). Every
    value is read later or returned; the ROOT is a tuple (with some extra outputs).
    """
    rng = np.random.default_rng(seed)
    comps: list[str] = []
    entry: list[str] = []
    sizes: dict[str, int] = {}   # f32 value name -> elements
    unread: list[str] = []
    produced: list[str] = []

    def add_value(name: str, n: int, *, by_op: bool = True) -> None:
        sizes[name] = n
        unread.append(name)
        if by_op:
            produced.append(name)

    def pick(n: int | None = None) -> str:
        pool = [v for v in (unread if unread and rng.random() < 0.6 else list(sizes))
                if n is None or sizes[v] == n]
        if not pool:
            pool = [v for v in sizes if n is None or sizes[v] == n]
        v = pool[int(rng.integers(len(pool)))] if rng.random() < 0.3 else pool[-1]
        if v in unread:
            unread.remove(v)
        return v

    def f32(n: int) -> str:
        return f"f32[{n}]{{0}}"

    for i in range(num_params):
        n = int(rng.choice(_HLO_SIZES))
        entry.append(f"p{i} = {f32(n)} parameter({i})")
        add_value(f"p{i}", n, by_op=False)
    for i in range(num_consts):
        n = int(rng.choice(_HLO_SIZES))
        # + 0.0: no -0.0, which XLA's printer writes as "-0" and its parser reads back as +0.
        literal = ", ".join(str(float(x) + 0.0) for x in np.round(rng.uniform(-2, 2, n), 2))
        entry.append(f"c{i} = {f32(n)} constant({{{literal}}})")
        add_value(f"c{i}", n, by_op=False)
    for k in range(num_ops):
        r = rng.random()
        if r < loop_prob:
            a = pick()
            b = pick()
            na, nb = sizes[a], sizes[b]
            state = f"(s32[], {f32(na)}, {f32(nb)})"
            trips = int(rng.integers(1, 4))
            second = (f"add(x, {'y' if na == nb else 'x'})" if rng.random() < 0.5
                      else "negate(x)")
            comps.append(
                f"body{k} {{\n  s = {state} parameter(0)\n"
                f"  i = s32[] get-tuple-element(s), index=0\n  one = s32[] constant(1)\n"
                f"  i2 = s32[] add(i, one)\n  x = {f32(na)} get-tuple-element(s), index=1\n"
                f"  y = {f32(nb)} get-tuple-element(s), index=2\n"
                f"  x2 = {f32(na)} {second}\n  y2 = {f32(nb)} multiply(y, y)\n"
                f"  ROOT t = {state} tuple(i2, x2, y2)\n}}\n")
            comps.append(
                f"cond{k} {{\n  s = {state} parameter(0)\n"
                f"  i = s32[] get-tuple-element(s), index=0\n  n = s32[] constant({trips})\n"
                f"  ROOT lt = pred[] compare(i, n), direction=LT\n}}\n")
            entry.append(f"zero{k} = s32[] constant(0)")
            entry.append(f"init{k} = {state} tuple(zero{k}, {a}, {b})")
            entry.append(f"loop{k} = {state} while(init{k}), condition=cond{k}, body=body{k}")
            entry.append(f"loop{k}.x = {f32(na)} get-tuple-element(loop{k}), index=1")
            entry.append(f"loop{k}.y = {f32(nb)} get-tuple-element(loop{k}), index=2")
            add_value(f"loop{k}.x", na)
            add_value(f"loop{k}.y", nb)
        elif r < loop_prob + pair_prob:
            a = pick()
            b = pick()
            na, nb = sizes[a], sizes[b]
            pair = f"({f32(na)}, {f32(nb)})"
            comps.append(
                f"pair{k} {{\n  x = {f32(na)} parameter(0)\n  y = {f32(nb)} parameter(1)\n"
                f"  nx = {f32(na)} negate(x)\n  yy = {f32(nb)} add(y, y)\n"
                f"  ROOT t = {pair} tuple(nx, yy)\n}}\n")
            entry.append(f"call{k} = {pair} call({a}, {b}), to_apply=pair{k}")
            entry.append(f"call{k}.0 = {f32(na)} get-tuple-element(call{k}), index=0")
            entry.append(f"call{k}.1 = {f32(nb)} get-tuple-element(call{k}), index=1")
            add_value(f"call{k}.0", na)
            add_value(f"call{k}.1", nb)
        elif r < 0.8:
            a = pick()
            n = sizes[a]
            arity = int(rng.integers(1, 4))
            ins = [a] + [pick(n) for _ in range(arity - 1)]
            opcode = {1: "negate", 2: str(rng.choice(["add", "multiply", "maximum"])),
                      3: "clamp"}[len(ins)]
            entry.append(f"v{k} = {f32(n)} {opcode}({', '.join(ins)})")
            add_value(f"v{k}", n)
        else:
            a = pick()
            n = sizes[a]
            if n > _HLO_SIZES[0] and rng.random() < 0.5:
                m = n // 4
                entry.append(f"v{k} = {f32(m)} slice({a}), slice={{[0:{m}]}}")
            elif n < _HLO_SIZES[-1]:
                m = n * 4
                entry.append(f"v{k} = {f32(m)} concatenate({a}, {a}, {a}, {a}), dimensions={{0}}")
            else:
                m = n
                entry.append(f"v{k} = {f32(m)} negate({a})")
            add_value(f"v{k}", m)
    outs = [v for v in produced if v in unread]
    outs += [v for v in produced if v not in outs and rng.random() < output_prob]
    if not outs:
        outs = [produced[-1]] if produced else [next(iter(sizes))]
    root_shape = ", ".join(f32(sizes[v]) for v in outs)
    entry.append(f"ROOT out = ({root_shape}) tuple({', '.join(outs)})")
    return (f"HloModule random_hlo_{seed}\n\n" + "\n".join(comps) + "\nENTRY main {\n  "
            + "\n  ".join(entry) + "\n}\n")
