"""PyTorch workloads: the same architectures in JAX and in torch (for the import parity checks),
and larger torch models for the torch benchmarks (benchmarks/torch_bench.py).

Paired architectures (``PAIRS``; float32, random init, inputs of fixed shape):

=============  ===============================================================================
name           network
=============  ===============================================================================
``mlp``        256 -> 512 -> 512 -> 10, ReLU, B=32; loss: cross-entropy on integer labels
``cnn``        3x32x32 images, all-convolutional: conv3x3(16) - conv3x3/2(32) - conv3x3/2(32),
               ReLU, flatten, dense 10, B=8; loss: cross-entropy. Each framework's native layout:
               NHWC/HWIO in JAX (XLA:CPU would transpose NCHW to NHWC around every
               convolution), NCHW/OIHW in torch
``block``      one pre-LN transformer block: D=128, 4 heads, T=64, B=4, MLP 4x with tanh-GELU,
               attention written out (q k^T, softmax, v); loss: mean of the squared output
=============  ===============================================================================

``jax_fn(name, train)`` gives ``(fn, args)`` for :func:`memmap.from_jax` (``train``: the
function returns ``(loss, grads)`` via ``jax.value_and_grad``); ``torch_case(name, train)`` gives
``(module, args)`` for :func:`memmap.from_torch` (``train``: the module returns the scalar loss,
and ``from_torch(..., train=True)`` adds the backward). Both compute the same function with
parameters of the same shapes (torch's ``Linear`` stores ``[out, in]``, JAX ``[in, out]``).

Benchmark-only torch models (``TORCH_WORKLOADS``): a ResNet-18-style CNN (BatchNorm, B=8,
3x64x64) and a 4-layer GPT-style decoder (D=256, T=128, B=4, tied embedding), forward and
training.
"""

from __future__ import annotations

import math

PAIRS = ("mlp", "cnn", "block")


# --------------------------------------------------------------------------------------------
# JAX


def _jax_params(name: str):
    """Parameter shapes (``jax.ShapeDtypeStruct``: lowering needs no values)."""
    import jax
    import jax.numpy as jnp

    def arr(*shape):
        return jax.ShapeDtypeStruct(shape, jnp.float32)

    def dense(i, o):
        return {"w": arr(i, o), "b": arr(o)}

    def conv(i, o):
        return {"w": arr(3, 3, i, o), "b": arr(o)}

    if name == "mlp":
        return [dense(256, 512), dense(512, 512), dense(512, 10)]
    if name == "cnn":
        return {"c1": conv(3, 16), "c2": conv(16, 32), "c3": conv(32, 32),
                "fc": dense(8 * 8 * 32, 10)}
    if name == "block":
        d = 128
        return {"ln1": {"g": arr(d), "b": arr(d)}, "qkv": dense(d, 3 * d),
                "proj": dense(d, d), "ln2": {"g": arr(d), "b": arr(d)},
                "fc1": dense(d, 4 * d), "fc2": dense(4 * d, d)}
    raise KeyError(name)


def _jax_forward(name: str):
    import jax
    import jax.numpy as jnp

    def linear(p, x):
        return x @ p["w"] + p["b"]

    def conv(p, x, stride):
        y = jax.lax.conv_general_dilated(x, p["w"], (stride, stride), ((1, 1), (1, 1)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + p["b"]

    def layer_norm(p, x):  # as flax.linen.LayerNorm (fast variance: E[x^2] - E[x]^2)
        mu = x.mean(-1, keepdims=True)
        var = jnp.maximum((x * x).mean(-1, keepdims=True) - mu * mu, 0.0)
        return (x - mu) * jax.lax.rsqrt(var + 1e-5) * p["g"] + p["b"]

    if name == "mlp":
        def f(params, x):
            for p in params[:-1]:
                x = jax.nn.relu(linear(p, x))
            return linear(params[-1], x)
    elif name == "cnn":
        def f(p, x):
            x = jax.nn.relu(conv(p["c1"], x, 1))
            x = jax.nn.relu(conv(p["c2"], x, 2))
            x = jax.nn.relu(conv(p["c3"], x, 2))
            return linear(p["fc"], x.reshape(x.shape[0], -1))
    elif name == "block":
        def f(p, x):
            b, t, d = x.shape
            h = 4
            q, k, v = jnp.split(linear(p["qkv"], layer_norm(p["ln1"], x)), 3, axis=-1)
            q, k, v = (a.reshape(b, t, h, d // h).transpose(0, 2, 1, 3) for a in (q, k, v))
            att = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // h), axis=-1)
            y = (att @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
            x = x + linear(p["proj"], y)
            return x + linear(p["fc2"], jax.nn.gelu(linear(p["fc1"], layer_norm(p["ln2"], x)),
                                                    approximate=True))
    else:
        raise KeyError(name)
    return f


def _jax_inputs(name: str):
    import jax
    import jax.numpy as jnp

    labels = {"mlp": 32, "cnn": 8}
    x = {"mlp": (32, 256), "cnn": (8, 32, 32, 3), "block": (4, 64, 128)}[name]
    y = jax.ShapeDtypeStruct((labels[name],), jnp.int32) if name in labels else None
    return jax.ShapeDtypeStruct(x, jnp.float32), y


def jax_fn(name: str, train: bool):
    """``(fn, args)``: ``fn(params, x[, labels])`` -> output, or ``(loss, grads)`` when
    ``train``."""
    import jax
    import jax.numpy as jnp

    forward = _jax_forward(name)
    params = _jax_params(name)
    x, labels = _jax_inputs(name)
    if not train:
        return forward, (params, x)

    if labels is None:
        def loss(p, x):
            return jnp.mean(forward(p, x) ** 2)

        def step(p, x):
            return jax.value_and_grad(loss)(p, x)
        return step, (params, x)

    def loss(p, x, y):
        logp = jax.nn.log_softmax(forward(p, x), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def step(p, x, y):
        return jax.value_and_grad(loss)(p, x, y)
    return step, (params, x, labels)


# --------------------------------------------------------------------------------------------
# torch


def _torch_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(256, 512), nn.Linear(512, 512), nn.Linear(512, 10)])

        def forward(self, x):
            for layer in self.layers[:-1]:
                x = torch.relu(layer(x))
            return self.layers[-1](x)

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.c3 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
            self.fc = nn.Linear(8 * 8 * 32, 10)

        def forward(self, x):
            x = torch.relu(self.c1(x))
            x = torch.relu(self.c2(x))
            x = torch.relu(self.c3(x))
            return self.fc(x.flatten(1))

    class Block(nn.Module):
        def __init__(self, d: int = 128, heads: int = 4):
            super().__init__()
            self.heads = heads
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, d = x.shape
            h = self.heads
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
            q, k, v = (a.reshape(b, t, h, d // h).transpose(1, 2) for a in (q, k, v))
            att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // h), dim=-1)
            y = (att @ v).transpose(1, 2).reshape(b, t, d)
            x = x + self.proj(y)
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

    class WithLoss(nn.Module):
        """Cross-entropy on labels, or the mean square of the output without labels."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x, y=None):
            out = self.model(x)
            if y is None:
                return (out ** 2).mean()
            return F.cross_entropy(out, y)

    return {"mlp": MLP, "cnn": CNN, "block": Block}, WithLoss


def torch_case(name: str, train: bool):
    """``(module, args)`` for :func:`memmap.from_torch`; ``train``: the module returns the
    scalar loss."""
    import torch

    torch.manual_seed(0)
    models, with_loss = _torch_modules()
    model = models[name]()
    if name == "mlp":
        x, y = torch.randn(32, 256), torch.zeros(32, dtype=torch.long)
    elif name == "cnn":
        x, y = torch.randn(8, 3, 32, 32), torch.zeros(8, dtype=torch.long)
    else:
        x, y = torch.randn(4, 64, 128), None
    if not train:
        return model, (x,)
    return with_loss(model), ((x,) if y is None else (x, y))


def jax_graph(name: str, train: bool):
    """The JAX side of a pair as a Graph: XLA:CPU's post-optimization HLO (kernel granularity:
    elementwise chains fused into their producers' loops, as eager PyTorch's kernels are)
    compiled with the CPU-only YNNPACK subgraph fusion off, which otherwise swallows whole
    conv/matmul chains (and their activations) into one opaque fusion."""
    import jax

    from memmap.ir.hlo import import_hlo_text

    fn, args = jax_fn(name, train)
    compiled = jax.jit(fn).lower(*args).compile(
        compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""})
    return import_hlo_text(compiled.as_text(), where=f"jax:{name}", source=f"jax:{name}",
                           name=name, xla_cost=False)


# --------------------------------------------------------------------------------------------
# Benchmark-only torch models

TORCH_WORKLOADS = ("mlp", "cnn", "block", "resnet18s", "gpt4l")


def _bench_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            h = torch.relu(self.b1(self.c1(x)))
            h = self.b2(self.c2(h))
            return torch.relu(h + (x if self.down is None else self.down(x)))

    class ResNet18s(nn.Module):
        """ResNet-18 layout (2-2-2-2 basic blocks, widths 64-512), 64x64 inputs, 10 classes."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU())
            blocks, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                blocks += [Basic(cin, cout, stride), Basic(cout, cout, 1)]
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(512, 10)

        def forward(self, x):
            return self.fc(self.blocks(self.stem(x)).mean((2, 3)))

    models, _ = _torch_modules()

    class GPT(nn.Module):
        """4 pre-LN decoder blocks (the ``block`` pair, D=256, 8 heads, causal mask), untied
        embedding and head (torch.export's joint API rejects tied weights), vocab 2000."""

        def __init__(self, vocab=2000, d=256, t=128, layers=4):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(t, d)
            self.blocks = nn.ModuleList([models["block"](d, 8) for _ in range(layers)])
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab, bias=False)

        def forward(self, idx):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln(x))

    class Loss(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x, y):
            out = self.model(x)
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    return {"resnet18s": ResNet18s, "gpt4l": GPT}, Loss


def bench_case(name: str, train: bool):
    """``(module, args)`` of a benchmark workload: forward in eval mode, or the module that
    returns the training loss."""
    import torch

    torch.manual_seed(0)
    if name in PAIRS:
        model, args = torch_case(name, train)
        return (model if train else model.eval()), args
    models, loss = _bench_modules()
    model = models[name]()
    if name == "resnet18s":
        x, y = torch.randn(8, 3, 64, 64), torch.zeros(8, dtype=torch.long)
    else:
        x, y = torch.randint(0, 2000, (4, 128)), torch.zeros(4, 128, dtype=torch.long)
    if not train:
        return model.eval(), (x,)
    return loss(model), (x, y)


def save_program(name: str, train: bool, path) -> None:
    """``torch.export.save`` the forward program, or the joint training program made by
    ``torch.export.experimental._export_forward_backward`` (what ExecuTorch trains with)."""
    import torch

    model, args = bench_case(name, train)
    ep = torch.export.export(model, args)
    if train:
        from torch.export.experimental import _export_forward_backward

        ep = _export_forward_backward(ep, joint_loss_index=0)
    torch.export.save(ep, str(path))
