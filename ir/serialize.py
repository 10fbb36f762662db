"""Graph <-> plain dict (JSON-ready), used by the plan format so a plan is self-contained."""

from __future__ import annotations

from memmap.ir.graph import VALUE_KINDS, Graph, GraphError, Op, Value, check_inplace


def _op_dict(o: Op) -> dict:
    d = {"id": o.id, "name": o.name, "opcode": o.opcode, "inputs": list(o.inputs),
         "outputs": list(o.outputs), "flops": o.flops, "transcendentals": o.transcendentals,
         "bytes_accessed": o.bytes_accessed}
    if o.inplace:   # optional: absent means no in-place pair
        d["inplace"] = [list(p) for p in o.inplace]
    return d


def graph_to_dict(g: Graph) -> dict:
    return {
        "name": g.name,
        "source": g.source,
        "schedule_origin": g.schedule_origin,
        "default_schedule": list(g.default_schedule),
        "ops": [_op_dict(o) for o in g.ops],
        "values": [
            {"id": v.id, "name": v.name, "size_bytes": v.size_bytes, "dtype": v.dtype,
             "shape": list(v.shape), "kind": v.kind, "is_output": v.is_output}
            for v in g.values
        ],
    }


def graph_from_dict(d: dict) -> Graph:
    """Rebuild a graph; producers and consumers are recomputed from the ops, and everything is
    checked (ids dense, kinds known, each value produced at most once, schedule valid)."""
    try:
        raw_values = d["values"]
        raw_ops = d["ops"]
    except (KeyError, TypeError) as e:
        raise GraphError(f"graph: missing field {e}") from None
    n_v = len(raw_values)
    producer: list[int | None] = [None] * n_v
    consumers: list[set[int]] = [set() for _ in range(n_v)]
    ops = []
    for i, o in enumerate(raw_ops):
        if o.get("id") != i:
            raise GraphError(f"graph: op #{i} has id {o.get('id')!r}; ids must be dense")
        for v in list(o["inputs"]) + list(o["outputs"]):
            if not (isinstance(v, int) and 0 <= v < n_v):
                raise GraphError(f"graph: op {o['name']!r} refers to unknown value id {v!r}")
        for v in o["outputs"]:
            if producer[v] is not None:
                raise GraphError(f"graph: value {v} is produced by two ops")
            producer[v] = i
        for v in o["inputs"]:
            consumers[v].add(i)
        pairs = o.get("inplace") or []
        if not isinstance(pairs, list) or not all(isinstance(x, list) and len(x) == 2 and all(
                isinstance(v, int) and 0 <= v < n_v for v in x) for x in pairs):
            raise GraphError(f"graph: op {o['name']!r}: \"inplace\" must be a list of "
                             f"[output, input] value ids")
        ops.append(Op(id=i, name=str(o["name"]), opcode=str(o["opcode"]), inputs=tuple(o["inputs"]),
                      outputs=tuple(o["outputs"]), flops=float(o.get("flops", 0.0)),
                      transcendentals=float(o.get("transcendentals", 0.0)),
                      bytes_accessed=float(o.get("bytes_accessed", 0.0)),
                      inplace=tuple((int(a), int(b)) for a, b in pairs)))
    values = []
    for i, v in enumerate(raw_values):
        if v.get("id") != i:
            raise GraphError(f"graph: value #{i} has id {v.get('id')!r}; ids must be dense")
        kind = v["kind"]
        if kind not in VALUE_KINDS:
            raise GraphError(f"graph: value {v['name']!r} has unknown kind {kind!r}")
        if (producer[i] is None) != (kind in ("parameter", "constant")):
            raise GraphError(f"graph: value {v['name']!r} of kind {kind} "
                             f"{'has no producer' if producer[i] is None else 'has a producer'}")
        if int(v["size_bytes"]) < 0:
            raise GraphError(f"graph: value {v['name']!r} has a negative size")
        values.append(Value(id=i, name=str(v["name"]), size_bytes=int(v["size_bytes"]),
                            dtype=str(v.get("dtype", "u8")), shape=tuple(v.get("shape", ())),
                            kind=kind, producer=producer[i], consumers=tuple(sorted(consumers[i])),
                            is_output=bool(v.get("is_output", kind == "output"))))
    for op in ops:
        reason = check_inplace(op, values)
        if reason is not None:
            raise GraphError(f"graph: {reason}")
    g = Graph(name=str(d.get("name", "graph")), ops=tuple(ops), values=tuple(values),
              default_schedule=tuple(d.get("default_schedule") or ()),
              schedule_origin=str(d.get("schedule_origin", "topological")),
              source=str(d.get("source", "<plan>")))
    if g.default_schedule:
        reason = g.check_schedule(g.default_schedule)
        if reason:
            raise GraphError(f"graph: default schedule invalid: {reason}")
    return g


def same_structure(a: Graph, b: Graph) -> str | None:
    """None when the two graphs have the same ops and values (names, sizes, edges), else the
    first difference as one line."""
    if len(a.ops) != len(b.ops):
        return f"{len(a.ops)} operators vs {len(b.ops)}"
    if len(a.values) != len(b.values):
        return f"{len(a.values)} values vs {len(b.values)}"
    for x, y in zip(a.ops, b.ops):
        if (x.name, x.opcode, x.inputs, x.outputs) != (y.name, y.opcode, y.inputs, y.outputs):
            return f"operator {x.id}: {x.name!r} ({x.opcode}) differs from {y.name!r} ({y.opcode})"
        if x.inplace != y.inplace:
            return f"operator {x.id}: {x.name!r} has in-place pairs {list(x.inplace)} vs {list(y.inplace)}"
    for x, y in zip(a.values, b.values):
        if (x.name, x.size_bytes, x.kind, x.is_output) != (y.name, y.size_bytes, y.kind, y.is_output):
            return f"value {x.id}: {x.name!r} ({x.size_bytes} B, {x.kind}) differs from {y.name!r} ({y.size_bytes} B, {y.kind})"
    return None
