"""Generate the mallocGame instance graphs shipped in the package (memmap/rl/data/instances/).

    python benchmarks/make_rl_instances.py

For every workload family (rl/instances.py: train = mlp, small_cnn, lstm, mobilenet_v1,
gpt2_small; held-out = resnet50, bert_base, ssd_mobilenet_tf, graphsage_tf) it imports the
post-optimisation HLO (the zoo's ``<net>.fwd`` / ``<net>.train``, generated on demand in
benchmarks/cache; the two OpenXLA dumps from tests/data/external) and writes the whole program
when it has at most WHOLE_MAX_OPS operators, plus WINDOWS windows of WINDOW_OPS operators at
evenly spaced positions of the default schedule (``memmap.rl.instances.window_graph``). Graphs are
serialized with ``memmap.ir.serialize.graph_to_dict`` and gzip; ``manifest.json`` lists them.
Deterministic: the same zoo gives the same files (no gzip timestamp, sources relative to the
repository).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from memmap.ir.hlo import import_hlo  # noqa: E402
from memmap.ir.serialize import graph_to_dict  # noqa: E402
from memmap.rl.instances import split_of, window_graph  # noqa: E402

OUT = ROOT / "rl" / "data" / "instances"
WHOLE_MAX_OPS = 160
WINDOW_OPS = 48
WINDOWS = 3
ZOO = {"mlp": ("mlp.fwd", "mlp.train"), "small_cnn": ("small_cnn.fwd", "small_cnn.train"),
       "lstm": ("lstm.fwd", "lstm.train"), "mobilenet_v1": ("mobilenet_v1.fwd",),
       "gpt2_small": ("gpt2_small.fwd",), "resnet50": ("resnet50.fwd",), "bert_base": ("bert_base.fwd",)}
EXTERNAL = {"ssd_mobilenet_tf": ROOT / "tests/data/external/ssd_mobilenet_tf.hlo",
            "graphsage_tf": ROOT / "tests/data/external/graphsage_tf.hlo"}


def _import(path: Path):
    """The graph, its ``source`` relative to the repository (files do not depend on the checkout)."""
    return dataclasses.replace(import_hlo(path), source=Path(path).resolve().relative_to(ROOT).as_posix())


def _graphs():
    from benchmarks.zoo import cached_hlo_path

    for family, names in ZOO.items():
        for name in names:
            yield family, name, _import(cached_hlo_path(name, "after"))
    for family, path in EXTERNAL.items():
        yield family, family, _import(path)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json.gz"):
        old.unlink()
    manifest = []
    for family, name, g in _graphs():
        n = g.num_ops
        pieces = []
        if n <= WHOLE_MAX_OPS:
            pieces.append((name, g))
        if n > WINDOW_OPS:
            for k in range(WINDOWS):
                first = (n - WINDOW_OPS) * k // max(1, WINDOWS - 1)
                pieces.append((f"{name}@{first}+{WINDOW_OPS}", window_graph(g, first, WINDOW_OPS)))
        for inst_name, graph in pieces:
            fname = inst_name.replace("@", "_at_").replace("+", "_n") + ".json.gz"
            d = graph_to_dict(graph)
            d["name"] = inst_name
            text = json.dumps(d, separators=(",", ":")).encode()
            with gzip.GzipFile(OUT / fname, "wb", compresslevel=9, mtime=0) as f:   # no timestamp
                f.write(text)
            manifest.append({"name": inst_name, "family": family, "split": split_of(family),
                             "num_ops": graph.num_ops, "file": fname})
            print(f"{inst_name:40s} {family:18s} {split_of(family):8s} {graph.num_ops:4d} ops")
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
