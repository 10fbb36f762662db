"""Import PyTorch programs into a :class:`~memmap.ir.graph.Graph`: ``torch.export`` programs
(ATen IR), joint forward+backward training graphs, ``.pt2`` files and plain ``torch.fx``
GraphModules.

torch is an optional dependency (``pip install 'memmap[torch]'``): it is imported only inside
these functions, and without it they raise :class:`TorchImportError` with the install hint.

What becomes what (docs/torch.md has the full rules):

* Placeholders: parameters, buffers, lifted constants and user inputs are values without a
  producer. Parameters, persistent buffers and user inputs have kind ``parameter`` (like the
  arguments of an HLO module), non-persistent buffers and lifted tensor constants ``constant``.
* Every other ATen call is one operator. A result that the op's schema marks as an alias of an
  argument (``Tensor(a)``: ``view``, ``permute``, ``expand``, ``slice``, ``alias``, ``split``...)
  is no new buffer: it is the argument's value, as HLO's ``bitcast``. An op that produces only
  aliases is no operator at all. ``operator.getitem`` picks a leaf of a tuple result.
* An argument the schema marks as written (``Tensor(a!)``: in-place and ``out=`` ops) gets a new
  *version*: a new value produced by that op, read by every later use of the buffer (the graphs
  ``torch.export`` gives after ``run_decompositions()`` are functional, so this happens only in
  plain FX graphs). Both versions are live at that op's step (one buffer counted twice for one
  step, as a functional IR would).
* Outputs: user outputs, the loss and gradients are marked outputs; a mutated buffer or input
  (``BUFFER_MUTATION`` ...) is an output written in place of the input (``donated_param``).
* Shapes must be static: ``from_torch`` exports without ``dynamic_shapes``, so every dimension is
  specialised to the example inputs; a program with symbolic dimensions (a ``.pt2`` exported
  with ``Dim``) is rejected with the node and the symbol.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import operator
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .graph import Graph, GraphBuilder, GraphError

__all__ = ["INSTALL_HINT", "TorchImportError", "from_torch", "import_pt2"]

INSTALL_HINT = "pip install 'memmap[torch]' (torch==2.13.0)"


class TorchImportError(ValueError):
    """A torch program could not be imported. The one-line message starts with the file or
    module name and names the node when one is at fault.

    Attributes:
      path: the ``.pt2`` file that failed, or None for an in-memory module.
    """

    def __init__(self, where: str, reason: str, *, path: str | None = None):
        self.path = path
        super().__init__(f"{where}: {reason}")


def _require_torch(where: str):
    try:
        import torch
    except ImportError:
        raise TorchImportError(where, f"torch is not installed; {INSTALL_HINT}") from None
    return torch


# --------------------------------------------------------------------------------------------
# dtypes (XLA's names, as the HLO importer uses)

_DTYPES = {  # torch dtype attribute -> (IR dtype name, bits)
    "float32": ("f32", 32), "float64": ("f64", 64), "float16": ("f16", 16),
    "bfloat16": ("bf16", 16), "int8": ("s8", 8), "int16": ("s16", 16), "int32": ("s32", 32),
    "int64": ("s64", 64), "uint8": ("u8", 8), "uint16": ("u16", 16), "uint32": ("u32", 32),
    "uint64": ("u64", 64), "bool": ("pred", 8), "complex64": ("c64", 64),
    "complex128": ("c128", 128), "float8_e4m3fn": ("f8e4m3fn", 8), "float8_e5m2": ("f8e5m2", 8),
    "float8_e4m3fnuz": ("f8e4m3fnuz", 8), "float8_e5m2fnuz": ("f8e5m2fnuz", 8),
    "float8_e8m0fnu": ("f8e8m0fnu", 8),
}


def _dtype_table(torch) -> dict:
    return {getattr(torch, k): v for k, v in _DTYPES.items() if hasattr(torch, k)}


@dataclasses.dataclass(frozen=True)
class _Meta:
    """Static facts of one tensor: IR dtype, shape, bytes (``numel x bits / 8``)."""

    dtype: str
    shape: tuple[int, ...]
    size_bytes: int


# --------------------------------------------------------------------------------------------
# Costs of ATen ops (flops follow the HLO importer's conventions: elementwise = output elements,
# transcendental functions counted as transcendentals only, matmul/conv = 2 x MACs)

_ELEMENTWISE = {  # op name -> flops per output element
    **dict.fromkeys((
        "add", "sub", "rsub", "mul", "div", "neg", "abs", "relu", "maximum", "minimum", "where",
        "clamp", "clamp_min", "clamp_max", "le", "lt", "ge", "gt", "eq", "ne", "logical_and",
        "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_not",
        "bitwise_xor", "threshold_backward", "leaky_relu", "hardtanh", "sign", "floor", "ceil",
        "round", "trunc", "remainder", "fmod", "reciprocal", "masked_fill", "isnan", "isinf",
        "_to_copy", "square", "hardtanh_backward", "leaky_relu_backward", "copysign",
        "heaviside"), 1),
    "addcmul": 2, "addcdiv": 2, "lerp": 2, "sigmoid_backward": 3, "tanh_backward": 3,
    "hardsigmoid": 3, "hardswish": 4, "hardswish_backward": 4, "mse_loss": 3,
    "mse_loss_backward": 3,
}
_TRANSCENDENTAL = {  # op name -> (flops, transcendentals) per output element
    **dict.fromkeys((
        "exp", "exp2", "expm1", "log", "log1p", "log2", "log10", "tanh", "sigmoid", "sqrt",
        "rsqrt", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "asinh",
        "acosh", "atanh", "erf", "erfc", "erfinv", "pow"), (0, 1)),
    "gelu": (4, 1), "gelu_backward": (8, 2), "silu": (2, 1), "silu_backward": (5, 1),
    "softplus": (2, 2), "elu": (3, 1), "logit": (2, 1),
}
_REDUCTIONS = {  # op name -> flops per INPUT element
    **dict.fromkeys(("sum", "mean", "amax", "amin", "max", "min", "prod", "argmax", "argmin",
                     "any", "all", "cumsum", "cumprod", "_adaptive_avg_pool2d",
                     "_adaptive_avg_pool2d_backward", "embedding_dense_backward",
                     "nll_loss_forward", "scatter_add", "index_add"), 1),
    **dict.fromkeys(("var", "std", "var_mean", "std_mean", "linalg_vector_norm"), 3),
}
_NORMS = {  # op name -> flops per element of the first input (+ one transcendental per row)
    "native_layer_norm": 7, "native_layer_norm_backward": 10, "native_group_norm": 7,
    "native_group_norm_backward": 10, "native_batch_norm": 7, "_native_batch_norm_legit": 7,
    "_native_batch_norm_legit_functional": 7, "_native_batch_norm_legit_no_training": 5,
    "native_batch_norm_backward": 10, "_softmax": 4, "_log_softmax": 4,
    "_softmax_backward_data": 3, "_log_softmax_backward_data": 3,
}
_WINDOWED = ("avg_pool2d", "max_pool2d_with_indices", "avg_pool2d_backward",
             "max_pool2d_with_indices_backward", "avg_pool3d", "max_pool3d_with_indices")
# Ops that only move or create data: 0 flops, no "unmodelled" note.
_DATA_MOVEMENT = frozenset((
    "clone", "copy", "cat", "stack", "constant_pad_nd", "index", "index_select", "gather",
    "embedding", "full", "full_like", "zeros", "zeros_like", "ones", "ones_like", "empty",
    "empty_like", "empty_strided", "scalar_tensor", "arange", "iota", "fill", "slice_scatter",
    "select_scatter", "diagonal_scatter", "as_strided_scatter", "repeat", "flip", "roll",
    "_unsafe_view", "new_zeros", "new_ones", "new_empty", "new_full", "new_empty_strided",
    "lift_fresh_copy", "detach", "masked_scatter", "scatter", "index_put", "tril", "triu",
    "rand", "randn", "randint", "rand_like", "randn_like", "bernoulli", "native_dropout",
    "native_dropout_backward", "upsample_nearest2d", "_unsafe_index", "nonzero", "sort", "topk"))


def _numel(x) -> int:
    return int(math.prod(x.shape)) if hasattr(x, "shape") else 0


def _first_tensor(torch, xs):
    for x in xs:
        if isinstance(x, torch.Tensor):
            return x
        if isinstance(x, (list, tuple)):
            t = _first_tensor(torch, x)
            if t is not None:
                return t
    return None


def _aten_cost(torch, op, args, kwargs, out) -> tuple[float, float, bool]:
    """``(flops, transcendentals, modelled)`` of one ATen call; ``args``/``out`` hold tensors
    (real or fake). ``modelled`` is False for ops this table does not know (counted as 0)."""
    from torch.utils.flop_counter import flop_registry

    packet = getattr(op, "overloadpacket", None)
    schema = getattr(op, "_schema", None)
    if schema is None:
        return 0.0, 0.0, False
    if schema.name in _UNMARKED_VIEWS or (schema.returns and all(
            r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)):
        return 0.0, 0.0, True  # a view
    name = schema.name.split("::", 1)[-1]
    if name.endswith("_") and not name.endswith("__"):
        name = name[:-1]  # in-place variant (add_) costs as its functional op
    if packet in flop_registry:
        try:
            return float(flop_registry[packet](*args, **kwargs, out_val=out)), 0.0, True
        except Exception:  # noqa: BLE001 - an odd argument pattern: fall through to 0 + note
            return 0.0, 0.0, False
    res = out[0] if isinstance(out, (tuple, list)) and out else out
    n_out = _numel(res) if isinstance(res, torch.Tensor) else 0
    if name in _ELEMENTWISE:
        return float(_ELEMENTWISE[name] * n_out), 0.0, True
    if name in _TRANSCENDENTAL:
        f, t = _TRANSCENDENTAL[name]
        return float(f * n_out), float(t * n_out), True
    first = _first_tensor(torch, args)
    n_in = _numel(first) if first is not None else 0
    if name in _REDUCTIONS:
        return float(_REDUCTIONS[name] * n_in), 0.0, True
    if name in _NORMS:
        rows = 0
        if isinstance(out, (tuple, list)) and len(out) > 1 and isinstance(out[1], torch.Tensor):
            rows = _numel(out[1])
        elif name in ("_softmax", "_log_softmax"):
            rows = n_in
        return float(_NORMS[name] * n_in), float(rows), True
    if name in _WINDOWED:
        k = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else [1]
        big = max(n_in, n_out)
        return float(big * math.prod(int(v) for v in k)) if "backward" not in name else float(big), 0.0, True
    if name in _DATA_MOVEMENT or n_out == 0:
        return 0.0, 0.0, True
    return 0.0, 0.0, False


# --------------------------------------------------------------------------------------------
# Values keyed by buffer (storage): views rename, writes make new versions


class _Values:
    """A :class:`GraphBuilder` whose values are named by *keys*: one key per buffer. A view
    shares its base's key; a write makes a new version (value) of the key, and every later read
    of the key gets the latest version."""

    def __init__(self, name: str, source: str):
        self.b = GraphBuilder(name, source=source)
        self.latest: dict = {}   # key -> value id of its current version
        self.root: dict = {}     # key -> value id of its first version
        self.meta: dict[int, _Meta] = {}
        self.names: dict[int, str] = {}
        self.inputs: set = set()  # keys of values without a producer
        self.num_ops = 0

    def add_input(self, key, name: str, meta: _Meta, kind: str) -> int:
        vid = self.b.add_value(name, meta.size_bytes, kind=kind, dtype=meta.dtype, shape=meta.shape)
        self.latest[key] = self.root[key] = vid
        self.inputs.add(key)
        self.meta[vid] = meta
        self.names[vid] = name
        return vid

    def current(self, key) -> int:
        return self.latest[key]

    def add_op(self, name: str, opcode: str, *, reads: Sequence, writes: Sequence,
               fresh: Sequence[tuple[object, str, _Meta]], flops: float, transcendentals: float,
               bytes_accessed: float, op_name: str) -> None:
        """One operator reading ``reads`` and ``writes`` (keys), producing a new value per
        ``fresh`` entry ``(key, name, meta)`` and a new version of every written key."""
        inputs = [self.latest[k] for k in list(reads) + list(writes)]
        specs = [{"name": n, "size_bytes": m.size_bytes, "dtype": m.dtype, "shape": m.shape}
                 for _, n, m in fresh]
        written = list(dict.fromkeys(writes))
        for k in written:
            old = self.meta[self.latest[k]]
            specs.append({"name": f"{self.names[self.root[k]]}@{name}", "size_bytes": old.size_bytes,
                          "dtype": old.dtype, "shape": old.shape})
        outs = self.b.add_op(name, opcode, inputs=inputs, outputs=specs, flops=flops,
                             transcendentals=transcendentals, bytes_accessed=bytes_accessed,
                             op_name=op_name)
        keys = [k for k, _, _ in fresh] + written
        for k, vid, spec in zip(keys, outs, specs, strict=True):
            if k not in self.root:
                self.root[k] = vid
            self.latest[k] = vid
            self.meta[vid] = _Meta(spec["dtype"], tuple(spec["shape"]), spec["size_bytes"])
            self.names[vid] = spec["name"]
        self.num_ops += 1

    def mutated_inputs(self) -> list:
        """Keys of inputs (parameters, buffers, user inputs) that an op wrote."""
        return [k for k in self.inputs if self.latest[k] != self.root[k]]

    def build(self, where: str, info: dict) -> Graph:
        self.b.info.update(info)
        try:
            # program order: the order torch traced the ops (a topological order)
            return self.b.build(schedule=range(self.num_ops), schedule_origin="torch")
        except GraphError as e:
            raise TorchImportError(where, str(e)) from None


# --------------------------------------------------------------------------------------------
# Node helpers


def _op_label(node, target: str) -> str:
    """``module.path/target @ file:line`` for messages and ``Op.op_name`` (the user's source line
    when torch recorded one; frames inside torch and generated code are skipped)."""
    stack = node.meta.get("nn_module_stack") or {}
    path = ""
    if isinstance(stack, dict) and stack:
        last = list(stack.values())[-1]
        path = last[0] if isinstance(last, tuple) and isinstance(last[0], str) else ""
    label = f"{path}/{target}" if path else target
    trace = node.meta.get("stack_trace") or ""
    torch_dir = os.path.dirname(getattr(sys.modules.get("torch"), "__file__", "") or "") or "\0"
    for ln in reversed(trace.splitlines()):
        ln = ln.strip()
        if not ln.startswith("File ") or "<eval_with_key>" in ln or torch_dir in ln:
            continue
        parts = ln.split(",")
        if len(parts) >= 2:
            file = parts[0].removeprefix("File ").strip().strip('"')
            label += f" @ {os.path.basename(file)}:{parts[1].strip().removeprefix('line ')}"
        break
    return label


class _Context:
    """Per-import state shared by the node translators: dtype table and error location."""

    def __init__(self, torch, where: str, range_constraints=None):
        self.torch = torch
        self.where = where
        self.dtypes = _dtype_table(torch)
        self.ranges = range_constraints or {}
        self.unmodelled: dict[str, int] = {}

    def fail(self, reason: str):
        raise TorchImportError(self.where, reason)

    def meta(self, t, node_name: str) -> _Meta:
        """Static dtype/shape/bytes of a tensor, or a one-line error naming the node."""
        shape = []
        for d in t.shape:
            if not isinstance(d, int):
                self.symbolic(node_name, t.shape, d)
            shape.append(int(d))
        try:
            dt, bits = self.dtypes[t.dtype]
        except KeyError:
            self.fail(f"node {node_name!r}: unsupported dtype {t.dtype} (supported: "
                      f"{', '.join(sorted(str(k).removeprefix('torch.') for k in self.dtypes))})")
        return _Meta(dt, tuple(shape), (math.prod(shape) * bits + 7) // 8)

    def symbolic(self, node_name: str, shape, sym):
        expr = str(getattr(getattr(sym, "node", None), "expr", sym))
        rng = ""
        for s, r in self.ranges.items():
            if str(s) == expr:
                rng = f" ({expr} in [{r.lower}, {r.upper}])"
        self.fail(f"node {node_name!r} has a symbolic shape {list(shape)}{rng}; memmap plans "
                  f"static shapes: export without dynamic_shapes so every dimension is "
                  f"specialised to the example inputs")

    def note_unmodelled(self, name: str):
        self.unmodelled[name] = self.unmodelled.get(name, 0) + 1


def _tensor_leaves(torch, val) -> list:
    """``[(index, tensor_or_None)]`` over a (nested) tuple/list result, pre-order."""
    if isinstance(val, (tuple, list)):
        out = []
        for i, v in enumerate(val):
            for idx, t in _tensor_leaves(torch, v):
                out.append(((i,) + idx, t))
        return out
    return [((), val if isinstance(val, torch.Tensor) else None)]


def _leaf_name(name: str, idx: tuple[int, ...]) -> str:
    return name if not idx else f"{name}{{{','.join(map(str, idx))}}}"


def _set_leaf(tree, idx, value):
    """A copy of nested-tuple ``tree`` with the leaf at ``idx`` replaced."""
    if not idx:
        return value
    items = list(tree)
    items[idx[0]] = _set_leaf(items[idx[0]], idx[1:], value)
    return tuple(items)


def _shape_tree(val):
    """Nested tuples mirroring ``val`` with None leaves."""
    if isinstance(val, (tuple, list)):
        return tuple(_shape_tree(v) for v in val)
    return None


def _keys_of(tree) -> list:
    if isinstance(tree, tuple):
        out = []
        for t in tree:
            out.extend(_keys_of(t))
        return out
    return [] if tree is None else [tree]


# --------------------------------------------------------------------------------------------
# ATen graphs with meta["val"] (torch.export programs, aot_autograd joint graphs)

# Inputs: role -> IR kind
_ROLE_KIND = {"parameter": "parameter", "buffer": "parameter", "user_input": "parameter",
              "constant": "constant", "non_persistent_buffer": "constant"}
_OUTPUT_ROLES = ("user_output", "loss", "gradient", "mutation")


@dataclasses.dataclass
class _Signature:
    """What the placeholders and outputs of an ATen graph are.

    ``inputs``: placeholder name -> ``(role, target FQN or None)``; ``outputs``: one
    ``(role, target)`` per leaf of the output node, where a ``mutation``'s target is the
    placeholder name of the input it overwrites and a ``gradient``'s the parameter's FQN.
    """

    inputs: dict[str, tuple[str, str | None]]
    outputs: list[tuple[str, str | None]]


def _signature_of_program(ep, torch) -> _Signature:
    from torch.export.graph_signature import InputKind, OutputKind

    inputs: dict[str, tuple[str, str | None]] = {}
    fqn_to_input: dict[str, str] = {}
    for spec in ep.graph_signature.input_specs:
        name = getattr(spec.arg, "name", None)
        if spec.kind == InputKind.PARAMETER:
            role = "parameter"
        elif spec.kind == InputKind.BUFFER:
            role = "buffer" if spec.persistent is not False else "non_persistent_buffer"
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            role = "constant"
        elif spec.kind == InputKind.USER_INPUT:
            role = "user_input"
        else:  # CUSTOM_OBJ (torchbind), TOKEN (effectful ops)
            raise TorchImportError("<program>", f"input {name!r} of kind {spec.kind.name} is "
                                                f"not supported (only tensors)")
        inputs[name] = (role, spec.target)
        if spec.target is not None:
            fqn_to_input[spec.target] = name
    outputs: list[tuple[str, str | None]] = []
    for spec in ep.graph_signature.output_specs:
        k = spec.kind
        if k == OutputKind.USER_OUTPUT:
            outputs.append(("user_output", None))
        elif k == OutputKind.LOSS_OUTPUT:
            outputs.append(("loss", None))
        elif k in (OutputKind.GRADIENT_TO_PARAMETER, OutputKind.GRADIENT_TO_USER_INPUT):
            outputs.append(("gradient", spec.target))
        elif k in (OutputKind.BUFFER_MUTATION, OutputKind.PARAMETER_MUTATION):
            outputs.append(("mutation", fqn_to_input.get(spec.target)))
        elif k == OutputKind.USER_INPUT_MUTATION:
            outputs.append(("mutation", spec.target))
        else:  # TOKEN
            outputs.append(("token", None))
    return _Signature(inputs, outputs)


def _import_aten_graph(ctx: _Context, graph, sig: _Signature, *, name: str, source: str,
                       constants: dict | None = None, info: dict) -> Graph:
    """Translate an ATen FX graph whose nodes carry ``meta["val"]``."""
    torch = ctx.torch
    vals = _Values(name, source)
    trees: dict[str, object] = {}   # node name -> key tree (key or None per leaf)
    skipped = 0
    out_node = None
    for node in graph.nodes:
        nname = node.name
        if node.op == "placeholder":
            role, target = sig.inputs.get(nname, ("user_input", None))
            val = node.meta.get("val")
            if not isinstance(val, torch.Tensor):
                if val is None or isinstance(val, (int, float, bool)):
                    trees[nname] = None
                    continue
                ctx.symbolic(nname, [val], val)
            key = f"n:{nname}"
            vals.add_input(key, target or nname, ctx.meta(val, nname), _ROLE_KIND[role])
            trees[nname] = key
            continue
        if node.op == "get_attr":
            val = node.meta.get("val")
            if val is None and constants is not None:
                val = constants.get(node.target)
            if not isinstance(val, torch.Tensor):
                trees[nname] = None  # a submodule (higher-order op body): rejected at its user
                continue
            key = f"n:{nname}"
            vals.add_input(key, str(node.target), ctx.meta(val, nname), "constant")
            trees[nname] = key
            continue
        if node.op == "output":
            out_node = node
            continue
        if node.op != "call_function":
            ctx.fail(f"node {nname!r}: unexpected FX op {node.op!r} in an ATen graph")
        target = node.target
        if target is operator.getitem:
            base, idx = node.args
            tree = trees.get(base.name)
            trees[nname] = tree[idx] if isinstance(tree, tuple) else None
            continue
        schema = getattr(target, "_schema", None)
        if schema is None:
            kind = ("higher-order operator" if "higher_order" in str(getattr(target, "__module__", ""))
                    or type(target).__name__.startswith("HigherOrder") else "operator")
            ctx.fail(f"node {nname!r}: {kind} {getattr(target, '__name__', target)} is not "
                     f"supported (control flow and symbolic-size arithmetic are not imported)")
        val = node.meta.get("val")
        if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            ctx.symbolic(nname, [val], val)  # sym_size and friends exist only with symbolic dims
        leaves = _tensor_leaves(torch, val)
        # Arguments by schema position: keys read, keys written, aliases.
        arg_keys: list[list] = []
        for i, a in enumerate(schema.arguments):
            if i < len(node.args):
                v = node.args[i]
            else:
                v = node.kwargs.get(a.name)
            arg_keys.append(_keys_of(_arg_tree(v, trees)))
        reads = list(dict.fromkeys(k for ks in arg_keys for k in ks))
        writes = []
        for a, ks in zip(schema.arguments, arg_keys):
            if a.alias_info is not None and a.alias_info.is_write:
                writes.extend(ks)
        reads = [k for k in reads if k not in writes]
        result = _shape_tree(val)
        fresh = []
        for idx, t in leaves:
            if t is None:
                continue
            alias = _return_alias(schema, idx, arg_keys)
            if alias is not None:
                result = _set_leaf(result, idx, alias)
                continue
            key = f"n:{_leaf_name(nname, idx)}"
            fresh.append((key, _leaf_name(nname, idx), ctx.meta(t, nname)))
            result = _set_leaf(result, idx, key)
        trees[nname] = result
        if not fresh and not writes:
            if not leaves or all(t is None for _, t in leaves):
                skipped += 1  # asserts, sym constraints: no buffer, no dependency
            continue  # a pure view: a rename of its argument's value
        args = torch.fx.node.map_arg(node.args, lambda n: n.meta.get("val"))
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: n.meta.get("val"))
        flops, trans, modelled = _aten_cost(torch, target, args, kwargs, val)
        if not modelled:
            ctx.note_unmodelled(str(target))
        in_bytes = _arg_bytes(ctx, node)
        out_bytes = sum(m.size_bytes for _, _, m in fresh) + sum(
            vals.meta[vals.current(k)].size_bytes for k in dict.fromkeys(writes))
        vals.add_op(nname, str(target), reads=reads, writes=writes, fresh=fresh, flops=flops,
                    transcendentals=trans, bytes_accessed=float(in_bytes + out_bytes),
                    op_name=_op_label(node, str(target)))
    if out_node is None:
        ctx.fail("the graph has no output node")
    out_leaves = _flat_args(out_node.args[0])
    if len(sig.outputs) not in (0, len(out_leaves)):
        ctx.fail(f"the signature lists {len(sig.outputs)} outputs but the graph returns "
                 f"{len(out_leaves)}")
    roles = sig.outputs or [("user_output", None)] * len(out_leaves)
    counts = dict.fromkeys(_OUTPUT_ROLES, 0)
    for leaf, (role, target) in zip(out_leaves, roles):
        if role == "token" or leaf is None or not hasattr(leaf, "name"):
            continue
        tree = trees.get(leaf.name)
        for key in _keys_of(tree):
            vid = vals.current(key)
            donated = None
            if role == "mutation" and target is not None:
                src = vals.root[f"n:{target}"]
                donated = src if src != vid else None
            vals.b.mark_output(vid, donated_param=donated)
            counts[role] += 1
    info = dict(info)
    info.update({"outputs_by_role": counts, "skipped_nodes": skipped,
                 "ops_without_flop_model": dict(sorted(ctx.unmodelled.items())),
                 "torch_inputs": {vals.names[vals.root[f"n:{n}"]]: role
                                  for n, (role, _) in sig.inputs.items()
                                  if f"n:{n}" in vals.root}})
    return vals.build(ctx.where, info)


def _flat_args(a) -> list:
    if isinstance(a, (list, tuple)):
        out = []
        for x in a:
            out.extend(_flat_args(x))
        return out
    return [a]


def _arg_tree(v, trees):
    """Key tree of an argument (a Node, a list of Nodes, or a constant)."""
    if hasattr(v, "op") and hasattr(v, "name"):
        return trees.get(v.name)
    if isinstance(v, (list, tuple)):
        return tuple(_arg_tree(x, trees) for x in v)
    return None


# Views whose schema carries no alias annotation: the result shares its first argument's storage.
_UNMARKED_VIEWS = frozenset({"aten::_unsafe_view"})


def _return_alias(schema, idx: tuple[int, ...], arg_keys: list[list]):
    """The key a result leaf aliases per the schema (``Tensor(a)`` views, ``Tensor(a!)``
    in-place/out= results), or None for a new buffer."""
    if schema.name in _UNMARKED_VIEWS:
        return arg_keys[0][0] if arg_keys and arg_keys[0] else None
    r_pos = idx[0] if idx and len(schema.returns) > 1 else 0  # one list return: its elements
    if r_pos >= len(schema.returns):
        return None
    ret = schema.returns[r_pos]
    info = ret.alias_info
    if info is None:
        return None
    sets = set(info.before_set) | set(info.after_set)
    fallback = None
    for a, ks in zip(schema.arguments, arg_keys):
        if a.alias_info is None or not ks:
            continue
        if sets & (set(a.alias_info.before_set) | set(a.alias_info.after_set)):
            return ks[0]
        if fallback is None:
            fallback = ks[0]
    return fallback  # a list of views (``Tensor(a)[]``) of the one aliased argument


def _arg_bytes(ctx: _Context, node) -> int:
    """Bytes of the tensors an op reads, at their (view) sizes, each argument node once."""
    total = 0
    seen = set()
    torch = ctx.torch
    for a in node.all_input_nodes:
        if a.name in seen:
            continue
        seen.add(a.name)
        for _, t in _tensor_leaves(torch, a.meta.get("val")):
            if t is not None:
                total += ctx.meta(t, a.name).size_bytes
    return total


# --------------------------------------------------------------------------------------------
# torch.export programs and training graphs


class _LogTail(logging.Handler):
    """Keeps the last line torch logged (``torch.export.load`` logs the real reason of a failure
    and raises "check the warnings above")."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.last = ""

    def emit(self, record):
        lines = [ln.strip() for ln in record.getMessage().splitlines() if ln.strip()]
        if record.exc_info and record.exc_info[1] is not None:
            lines.append(f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
        if lines:
            self.last = lines[-1]


_TORCH_LOGGERS = ("torch.export", "torch._export", "torch._dynamo", "torch._functorch",
                  "torch.fx.experimental.symbolic_shapes", "torch._subclasses.fake_tensor")


@contextlib.contextmanager
def _quiet_torch_logs():
    """Keep torch's loggers (which have their own stderr handlers) and deprecation warnings off
    stderr for one call: errors are reported as one line by the caller. Yields a handler that
    holds the last line logged."""
    import warnings

    tail = _LogTail()
    saved = []
    for n in _TORCH_LOGGERS:
        lg = logging.getLogger(n)
        saved.append((lg, lg.level, lg.propagate, list(lg.handlers)))
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.propagate = False
        lg.setLevel(logging.WARNING if n == "torch.export" else logging.CRITICAL)
        if n == "torch.export":
            lg.addHandler(tail)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield tail
    finally:
        for lg, lvl, prop, handlers in saved:
            lg.removeHandler(tail)
            for h in handlers:
                lg.addHandler(h)
            lg.setLevel(lvl)
            lg.propagate = prop


def _first_line(e: BaseException) -> str:
    """The first line of a torch error, plus the user's source line torch names further down
    (``File "model.py", line 4, in forward`` + the code), if any."""
    text = str(e).strip()
    lines = text.splitlines()
    first = lines[0].strip() if lines else type(e).__name__
    torch_dir = os.path.dirname(getattr(sys.modules.get("torch"), "__file__", "") or "") or "\0"
    for i, ln in enumerate(lines):
        ln = ln.strip()
        if ln.startswith("File ") and torch_dir not in ln and i + 1 < len(lines):
            return f"{first} (at {ln.removeprefix('File ')}: {lines[i + 1].strip()})"
    return first


def _program_info(torch, kind: str) -> dict:
    return {"frontend": kind, "torch_version": str(torch.__version__)}


def _import_program(torch, ep, *, where: str, source: str, name: str, info: dict) -> Graph:
    """An ExportedProgram (forward, or a joint program with LOSS/GRADIENT outputs) -> Graph.
    Forward programs are decomposed to core ATen first (functional: no in-place ops)."""
    from torch.export.graph_signature import OutputKind

    joint = any(s.kind in (OutputKind.LOSS_OUTPUT, OutputKind.GRADIENT_TO_PARAMETER)
                for s in ep.graph_signature.output_specs)
    ctx = _Context(torch, where, getattr(ep, "range_constraints", None))
    for node in ep.graph.nodes:  # shapes and dtypes before decomposition: name the user's node
        for _, v in _tensor_leaves(torch, node.meta.get("val")):
            if v is not None:
                ctx.meta(v, node.name)
    if not joint:
        try:
            with _quiet_torch_logs():
                ep = ep.run_decompositions()
        except Exception as e:  # noqa: BLE001 - any torch failure is the program's problem
            raise TorchImportError(where, f"run_decompositions failed: {_first_line(e)}") from None
    try:
        sig = _signature_of_program(ep, torch)
    except TorchImportError as e:
        raise TorchImportError(where, str(e).split(": ", 1)[1]) from None
    info = dict(info, ir="core ATen (functional)" if not joint else "joint (torch.export)")
    return _import_aten_graph(ctx, ep.graph, sig, name=name, source=source,
                              constants=dict(getattr(ep, "constants", {}) or {}), info=info)


def _export(torch, module, args: tuple, where: str):
    try:
        with _quiet_torch_logs():
            return torch.export.export(module, args)
    except Exception as e:  # noqa: BLE001 - untraceable modules raise many different types
        raise TorchImportError(where, f"torch.export cannot trace the module: "
                                      f"{_first_line(e)}") from None


def _loss_module(torch, module):
    """Wrap ``module`` so it returns ``(loss,)``: its first output (the first value of a dict)
    if that is a scalar, else the sum of the first output (the backward is then seeded with
    ones)."""

    class _Loss(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model
            self.summed = None

        def forward(self, *args):
            out = self.model(*args)
            if isinstance(out, dict):
                out = list(out.values())
            first = out[0] if isinstance(out, (tuple, list)) else out
            if not isinstance(first, torch.Tensor):
                raise TypeError(f"the first output is a {type(first).__name__}, not a tensor")
            self.summed = first.dim() != 0
            return (first.sum() if self.summed else first,)

    return _Loss(module)


def _input_names(module, n: int) -> list[str]:
    """Names of the first ``n`` positional parameters of ``module.forward`` (``input{i}`` where
    the signature does not say)."""
    import inspect

    try:
        params = [p.name for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"input{i}" for i in range(n)]


def _persistent_buffers(module) -> set[str]:
    names = set()
    for mname, mod in module.named_modules(remove_duplicate=False):
        skip = getattr(mod, "_non_persistent_buffers_set", set())
        for bname, _ in mod.named_buffers(recurse=False):
            if bname not in skip:
                names.add(f"{mname}.{bname}" if mname else bname)
    return names


def _joint(torch, module, args: tuple, *, where: str, source: str, name: str, info: dict) -> Graph:
    """Forward + backward of ``module`` (its loss) traced by ``aot_export_module``."""
    from torch._functorch.aot_autograd import aot_export_module

    wrapped = _loss_module(torch, module)
    try:
        with _quiet_torch_logs():
            gm, gsig = aot_export_module(wrapped, args, trace_joint=True, output_loss_index=0)
    except Exception as e:  # noqa: BLE001
        msg = _first_line(e)
        if "did not receive a gradient" in msg:
            msg += (" (a parameter outside the loss: set requires_grad=False on it; tied "
                    "weights of an unflattened .pt2 program are not supported)")
        raise TorchImportError(where, f"cannot trace the training graph: {msg}") from None

    def fqn(t: str) -> str:
        return t.removeprefix("model.")

    persistent = {fqn(n) for n in _persistent_buffers(wrapped)}
    inputs: dict[str, tuple[str, str | None]] = {}
    for n, t in gsig.inputs_to_parameters.items():
        inputs[n] = ("parameter", fqn(t))
    buf_input = {}
    for n, t in gsig.inputs_to_buffers.items():
        inputs[n] = ("buffer" if fqn(t) in persistent else "non_persistent_buffer", fqn(t))
        buf_input[t] = n
    for n, label in zip(gsig.user_inputs, _input_names(module, len(gsig.user_inputs))):
        inputs[n] = ("user_input", label)
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    roles = []
    grads = gsig.backward_signature.gradients_to_parameters
    grads_in = gsig.backward_signature.gradients_to_user_inputs
    for leaf in _flat_args(out_node.args[0]):
        lname = getattr(leaf, "name", None)
        if lname in gsig.buffers_to_mutate:
            roles.append(("mutation", buf_input.get(gsig.buffers_to_mutate[lname])))
        elif lname in grads:
            roles.append(("gradient", fqn(grads[lname])))
        elif lname in grads_in:
            roles.append(("gradient", grads_in[lname]))
        else:  # the wrapper's only user output is the loss (torch's loss_output name is
            # off by the number of mutated buffers in 2.13, so it is not used)
            roles.append(("loss", None))
    ctx = _Context(torch, where)
    info = dict(info, ir="core ATen joint forward+backward (aot_export_module)",
                loss="sum of output 0" if wrapped.summed else "output 0")
    consts = {n: getattr(gm, n) for n in (x.target for x in gm.graph.nodes if x.op == "get_attr")
              if isinstance(getattr(gm, n, None), torch.Tensor)}
    return _import_aten_graph(ctx, gm.graph, _Signature(inputs, roles), name=name, source=source,
                              constants=consts, info=info)


# --------------------------------------------------------------------------------------------
# Plain torch.fx GraphModules: ShapeProp over fake tensors


def _import_fx(torch, gm, args: tuple, *, where: str, source: str, name: str, info: dict) -> Graph:
    """Run ``ShapeProp`` (on fake tensors: no real compute) and translate node by node.

    Aliasing is observed, not declared: a node result sharing storage with a live value is a
    view (a rename); a storage that an ATen op dispatched inside the node writes (schema
    ``Tensor(a!)``, plus ``native_batch_norm``'s running statistics, which its schema does not
    mark) gets a new version. Costs are summed over the ATen ops each node dispatches."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.shape_prop import ShapeProp
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode

    ctx = _Context(torch, where)
    vals = _Values(name, source)
    live: dict[int, tuple] = {}  # storage cdata -> (weak ref, key)
    serial = [0]

    def key_of(t, create: bool):
        st = t.untyped_storage()
        cd = st._cdata
        hit = live.get(cd)
        if hit is not None and not hit[0].expired():
            return hit[1]
        if not create:
            return None
        serial[0] += 1
        k = serial[0]
        live[cd] = (StorageWeakRef(st), k)
        return k

    class _Recorder(TorchDispatchMode):
        """Collects flops and the storages written by the ATen ops of one node."""

        def __init__(self):
            super().__init__()
            self.flops = self.trans = 0.0
            self.writes: list = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            schema = getattr(func, "_schema", None)
            written = []
            if schema is not None:
                for i, a in enumerate(schema.arguments):
                    if a.alias_info is not None and a.alias_info.is_write:
                        written.append(args[i] if i < len(args) else kwargs.get(a.name))
                if schema.name == "aten::native_batch_norm" and len(args) > 5 and args[5]:
                    written.extend(args[3:5])  # running_mean/var, updated in place, unmarked
            for t in written:
                for x in (t if isinstance(t, (list, tuple)) else [t]):
                    if isinstance(x, torch.Tensor):
                        k = key_of(x, create=False)
                        if k is not None:
                            self.writes.append(k)
            out = func(*args, **kwargs)
            if schema is not None and schema.name.startswith("aten::"):
                f, tr, modelled = _aten_cost(torch, func, args, kwargs, out)
                self.flops += f
                self.trans += tr
                if not modelled:
                    ctx.note_unmodelled(str(func))
            return out

    fqn_of: dict[int, str] = {}
    persistent: set[str] = set()
    param_ids: set[int] = set()

    def input_key(t, label: str, kind: str):
        k = key_of(t, create=False)
        if k is None:
            k = key_of(t, create=True)
            vals.add_input(k, label, ctx.meta(t, label), kind)
        return k

    def weight_kind(fqn: str, t) -> str:
        if id(t) in param_ids or fqn in persistent:
            return "parameter"
        return "constant"

    class _Prop(ShapeProp):
        def __init__(self, module):
            super().__init__(module, fake_mode=FakeTensorMode(allow_non_fake_inputs=True))
            fake = self.fake_module
            for n, p in fake.named_parameters(remove_duplicate=False):
                fqn_of.setdefault(id(p), n)
                param_ids.add(id(p))
            for n, bf in fake.named_buffers(remove_duplicate=False):
                fqn_of.setdefault(id(bf), n)
            persistent.update(_persistent_buffers(fake))
            self.rec = None

        def _recorded(self, fn, *a):
            self.rec = _Recorder()
            with self.rec:
                return fn(*a)

        def call_function(self, target, args, kwargs):
            return self._recorded(super().call_function, target, args, kwargs)

        def call_method(self, target, args, kwargs):
            return self._recorded(super().call_method, target, args, kwargs)

        def call_module(self, target, args, kwargs):
            return self._recorded(super().call_module, target, args, kwargs)

        def _base_run(self, n):
            """ShapeProp's run_node, its printed traceback kept off stderr; a failure is one
            line naming the node."""
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    return super().run_node(n)
            except Exception as e:  # noqa: BLE001
                ctx.fail(f"node {n.name!r} ({n.op} {n.target}): shape propagation failed: "
                         f"{_first_line(e.__cause__ or e)}")

        def run_node(self, n):
            if n.op == "output":
                return self._base_run(n)
            if n.op in ("placeholder", "get_attr"):
                result = self._base_run(n)
                for idx, t in _tensor_leaves(torch, result):
                    if t is None:
                        continue
                    if n.op == "placeholder":
                        input_key(t, _leaf_name(n.name, idx), "parameter")
                    else:
                        label = fqn_of.get(id(t), str(n.target))
                        input_key(t, label, weight_kind(label, t))
                return result
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            ins = [t for t in torch.utils._pytree.tree_leaves((args, kwargs))
                   if isinstance(t, torch.Tensor)]
            if n.op == "call_module":
                sub = self.fake_module.get_submodule(n.target)
                for t in list(sub.parameters()) + list(sub.buffers()):
                    label = fqn_of.get(id(t), str(n.target))
                    input_key(t, label, weight_kind(label, t))
                    ins.append(t)
            reads = list(dict.fromkeys(key_of(t, create=False) for t in ins))
            if None in reads:
                ctx.fail(f"node {n.name!r} reads a tensor that no earlier node produced")
            in_bytes = sum(ctx.meta(t, n.name).size_bytes for t in
                           {id(t): t for t in ins}.values())
            result = self._base_run(n)
            rec = self.rec
            writes = list(dict.fromkeys(rec.writes))
            fresh = []
            for idx, t in _tensor_leaves(torch, result):
                if t is None:
                    continue
                k = key_of(t, create=False)
                if k is None:
                    k = key_of(t, create=True)
                    fresh.append((k, _leaf_name(n.name, idx), ctx.meta(t, n.name)))
            if not fresh and not writes:
                return result  # a view or a no-op: a rename
            out_bytes = sum(m.size_bytes for _, _, m in fresh) + sum(
                vals.meta[vals.current(k)].size_bytes for k in writes)
            opcode = _fx_opcode(n, self.fake_module)
            vals.add_op(n.name, opcode, op_name=_op_label(n, opcode),
                        reads=[k for k in reads if k not in writes], writes=writes, fresh=fresh,
                        flops=rec.flops, transcendentals=rec.trans,
                        bytes_accessed=float(in_bytes + out_bytes))
            return result

    prop = _Prop(gm)
    with _quiet_torch_logs():
        try:
            outputs = prop.propagate(*args)
        except TorchImportError as e:  # the Interpreter appends "While executing ..." lines
            first = str(e).splitlines()[0]
            raise TorchImportError(where, first.removeprefix(f"{where}: ")) from None
        except Exception as e:  # noqa: BLE001 - arity mismatch and the like
            raise TorchImportError(where, f"shape propagation failed: {_first_line(e)}") from None
    out_keys = []
    for _, t in _tensor_leaves(torch, outputs):
        if t is not None:
            k = key_of(t, create=False)
            if k is not None:
                out_keys.append(k)
    for k in out_keys:
        vals.b.mark_output(vals.current(k))
    mutated = {}
    for k in sorted(vals.mutated_inputs(), key=lambda k: vals.root[k]):
        root = vals.root[k]  # an input or weight overwritten in place: written back
        vals.b.mark_output(vals.current(k), donated_param=root)
        mutated[vals.names[root]] = vals.names[vals.current(k)]
    info = dict(info, ir="torch.fx (ShapeProp on fake tensors)", mutated_inputs=mutated,
                ops_without_flop_model=dict(sorted(ctx.unmodelled.items())))
    return vals.build(where, info)


def _fx_opcode(node, root) -> str:
    if node.op == "call_module":
        mod = root.get_submodule(node.target)
        return f"{type(mod).__module__}.{type(mod).__qualname__}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    from torch.fx.node import _get_qualified_name

    try:
        return _get_qualified_name(node.target)
    except Exception:  # noqa: BLE001 - lambdas and the like
        return str(node.target)


# --------------------------------------------------------------------------------------------
# Public entry points


def from_torch(module, example_inputs=(), *, train: bool = False, name: str | None = None) -> Graph:
    """Import a PyTorch model as a :class:`Graph`.

    Args:
      module: an ``nn.Module`` (traced with ``torch.export.export``, then decomposed to core
        ATen), a ``torch.export.ExportedProgram`` (imported as it is, decomposed to core ATen),
        or a ``torch.fx.GraphModule`` (``train=False``: the plain FX path, ``ShapeProp`` on fake
        tensors; ``train=True``: traced like any module).
      example_inputs: a tensor or a tuple of tensors ``module`` is called with. Every dimension
        is specialised to these shapes (no symbolic shapes). Not needed for an
        ``ExportedProgram`` with ``train=False``.
      train: import the joint forward+backward graph
        (``torch._functorch.aot_autograd.aot_export_module(..., trace_joint=True)`` with the
        core ATen decompositions). The loss is the first output, summed when it is not a
        scalar; outputs: the loss, one gradient per parameter that requires grad, and the new
        values of mutated buffers (BatchNorm statistics).
      name: graph name (default: the module's class name).

    Returns:
      The graph; ``source`` is ``"torch:<class name>"``; the default schedule is the order torch
      traced the ops (``schedule_origin="torch"``). ``graph.info`` holds ``frontend``, ``ir``,
      ``torch_inputs`` (value name -> parameter/buffer/user_input/constant),
      ``outputs_by_role``, ``ops_without_flop_model`` and, for ``train=True``, ``loss``.

    Raises:
      TorchImportError: torch not installed (with the install hint), a module torch cannot
        trace (data-dependent control flow, ...), symbolic shapes, an unsupported dtype or
        operator; the one-line message names the module and the node.

    Example::

        g = from_torch(torch.nn.Linear(16, 4), (torch.randn(8, 16),))
        g = from_torch(model, (x,), train=True)       # forward + backward
    """
    cls = type(module).__name__
    where = f"torch:{cls}"
    torch = _require_torch(where)
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    args = tuple(example_inputs)
    gname = name or cls
    if isinstance(module, torch.export.ExportedProgram):
        if train:
            return _joint(torch, module.module(), args or _program_example_inputs(torch, module, where),
                          where=where, source=where, name=gname,
                          info=_program_info(torch, "torch.export") | {"train": True})
        return _import_program(torch, module, where=where, source=where, name=gname,
                               info=_program_info(torch, "torch.export") | {"train": False})
    if not isinstance(module, torch.nn.Module):
        raise TorchImportError(where, f"expected an nn.Module, a torch.fx.GraphModule or an "
                                      f"ExportedProgram, got {cls}")
    if train:
        return _joint(torch, module, args, where=where, source=where, name=gname,
                      info=_program_info(torch, "aot_autograd") | {"train": True})
    if isinstance(module, torch.fx.GraphModule):
        return _import_fx(torch, module, args, where=where, source=where, name=gname,
                          info=_program_info(torch, "torch.fx") | {"train": False})
    ep = _export(torch, module, args, where)
    return _import_program(torch, ep, where=where, source=where, name=gname,
                           info=_program_info(torch, "torch.export") | {"train": False})


def _program_example_inputs(torch, ep, where: str) -> tuple:
    """Zeros shaped like the program's user inputs (for re-tracing a loaded program)."""
    from torch.export.graph_signature import InputKind

    user = {s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT}
    out = []
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            v = node.meta.get("val")
            if not isinstance(v, torch.Tensor):
                raise TorchImportError(where, f"user input {node.name!r} is not a tensor")
            _Context(torch, where, ep.range_constraints).meta(v, node.name)
            out.append(torch.zeros(tuple(v.shape), dtype=v.dtype))
    return tuple(out)


def import_pt2(path: str | os.PathLike, *, train: bool = False, name: str | None = None) -> Graph:
    """Import a program saved with ``torch.export.save`` (a ``.pt2`` file).

    ``train=True`` re-traces the saved forward program with its backward
    (``program.module()`` through ``aot_export_module``; example inputs are zeros of the saved
    shapes); a program that already is a joint program (LOSS/GRADIENT outputs, as
    ``torch.export.experimental._export_forward_backward`` makes) imports as it is.

    Raises:
      TorchImportError: torch missing, a file that is not a torch.export program, or any
        import error; the message starts with the path.
    """
    where = str(path)
    p = Path(path)
    torch = _require_torch(where)
    if not p.is_file():
        raise TorchImportError(where, "no such file", path=where)
    try:
        with _quiet_torch_logs() as tail:
            ep = torch.export.load(str(p))
    except Exception as e:  # noqa: BLE001 - zip, archive and deserialisation errors
        reason = _first_line(e)
        if "warnings above" in reason and tail.last:
            reason = tail.last
        raise TorchImportError(where, f"not a torch.export program (torch.export.load: "
                                      f"{reason})", path=where) from None
    gname = name or p.name.split(".")[0]
    try:
        if train:
            from torch.export.graph_signature import OutputKind

            if not any(s.kind == OutputKind.LOSS_OUTPUT for s in ep.graph_signature.output_specs):
                return _joint(torch, ep.module(), _program_example_inputs(torch, ep, where),
                              where=where, source=where, name=gname,
                              info=_program_info(torch, "torch.export.load") | {"train": True,
                                                                                 "path": where})
        return _import_program(torch, ep, where=where, source=where, name=gname,
                               info=_program_info(torch, "torch.export.load") | {"train": train,
                                                                                  "path": where})
    except TorchImportError as e:
        e.path = where
        raise
