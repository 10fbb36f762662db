"""Weight-free JAX workloads, lowered to HLO text, for the memory-mapping benchmarks.

Every workload is built from randomly *shaped* (never materialised) parameters: the network's
``init`` runs under :func:`jax.eval_shape`, so a workload is a function plus a pytree of
:class:`jax.ShapeDtypeStruct` arguments. Nothing is downloaded and no weight is ever allocated;
lowering and compiling only need shapes.

Workloads (``WORKLOADS``; each network has a ``.fwd`` and a ``.train`` variant):

=================  ==========================================================================
name               network
=================  ==========================================================================
``mobilenet_v1``   MobileNetV1 (1.0x, 13 depthwise-separable blocks, BatchNorm), B=8, 224x224x3
``resnet50``       ResNet-50 v1 (bottleneck blocks 3-4-6-3, BatchNorm), B=8, 224x224x3
``bert_base``      BERT-base: 12 post-LN layers, d=768, 12 heads, FFN 3072, vocab 30522,
                   B=4, T=128; MLM head tied to the word embedding + NSP head on the pooler
``gpt2_small``     GPT-2 small: 12 pre-LN causal layers, d=768, 12 heads, FFN 3072, vocab 50257,
                   B=4, T=128; LM head tied to the token embedding
``small_cnn``      CIFAR-style CNN: 2x conv3x3(32), max-pool, 2x conv3x3(64), max-pool, dense 256,
                   dense 10 (ReLU, no BatchNorm), B=8, 32x32x3 -- the bundled example
``lstm``           one LSTM layer (hidden 128) unrolled with ``jax.lax.scan`` over T=16 steps
                   (a ``while`` loop in HLO), B=8, 32 features, linear classifier on the last
                   output
``mlp``            tiny MLP 64 -> 128 -> 128 -> 10, B=8
=================  ==========================================================================

``<net>.fwd`` is inference (``fn(params, state, inputs) -> outputs``; BatchNorm uses its moving
statistics). ``<net>.train`` is one optimiser step
(``fn(params, state, opt_state, batch) -> (params, state, opt_state, loss)``): forward, loss,
``jax.value_and_grad`` and an optax update -- SGD with momentum 0.9 for the CNNs, AdamW for the
transformers, Adam for the LSTM and the MLP. Dropout is left out everywhere so every workload is
deterministic and needs no random key. All floating-point tensors are ``jnp.float32``; token ids
and labels are ``jnp.int32``.

HLO stages: ``"before"`` is pre-optimisation HLO (``lowered.as_text(dialect="hlo")``: no fusion,
no schedule), ``"after"`` is XLA:CPU's post-optimisation HLO (``lowered.compile().as_text()``:
fused, ``is_scheduled=true``, ENTRY printed in schedule order). Source-file metadata in the
post-optimisation text is made relative (to the repository root, or to ``site-packages``) so the
text does not depend on where the repository is checked out.

Example::

    from benchmarks import zoo
    text = zoo.hlo_text("mlp.train", "after")
    path = zoo.cached_hlo_path("resnet50.fwd", "before")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import haiku as hk
import jax
import jax.numpy as jnp
import optax
from jax._src import config as _jax_config  # thread-local context managers for config knobs

__all__ = [
    "DEFAULT_CACHE_DIR",
    "STAGES",
    "WORKLOADS",
    "Stage",
    "WorkloadSpec",
    "cache_metadata",
    "cached_hlo_path",
    "dump_folder",
    "entry_instruction_count",
    "hlo_text",
    "lower",
]

Stage = Literal["before", "after"]
STAGES: tuple[Stage, ...] = ("before", "after")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE_DIR = Path(__file__).resolve().parent / "cache"

# Removed from every source_file in HLO metadata: the checkout location and site-packages.
_SOURCE_FILE_CANONICALIZATION_REGEX = r"^(.*/site-packages/|" + re.escape(str(REPO_ROOT)) + r"/)"

Batch = dict[str, jax.ShapeDtypeStruct]
WorkloadFn = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    """One benchmark workload.

    Attributes:
      name: ``"<network>.<variant>"``, e.g. ``"resnet50.train"``.
      description: one line naming the network, batch shape and variant.
      build: ``build() -> (fn, args)``; ``fn`` is a pure JAX function and ``args`` a tuple of
        :class:`jax.ShapeDtypeStruct` pytrees, so ``jax.jit(fn).lower(*args)`` lowers it
        without materialising any weight.
    """

    name: str
    description: str
    build: Callable[[], tuple[WorkloadFn, tuple[Any, ...]]]


# --------------------------------------------------------------------------------------------
# Networks (haiku). Each returns the network's outputs for a batch dict.
# --------------------------------------------------------------------------------------------

_GELU = jax.nn.gelu  # tanh approximation, as in the original BERT and GPT-2 code


class _TransformerLayer(hk.Module):
    """One transformer encoder/decoder layer: attention + GELU feed-forward.

    ``pre_ln=False`` is BERT's post-LN layer (``LN(x + sublayer(x))``); ``pre_ln=True`` is
    GPT-2's pre-LN layer (``x + sublayer(LN(x))``).
    """

    def __init__(self, *, d_model: int, num_heads: int, d_ff: int, pre_ln: bool, name: str):
        super().__init__(name=name)
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.pre_ln = pre_ln

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: [B, T, d_model]; mask: broadcastable to [B, num_heads, T, T] (1 = attend)."""
        init = hk.initializers.TruncatedNormal(stddev=0.02)
        attention = hk.MultiHeadAttention(
            num_heads=self.num_heads,
            key_size=self.d_model // self.num_heads,
            model_size=self.d_model,
            w_init=init,
            name="attention",
        )
        ln_attention = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name="ln_attention")
        ln_ffn = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name="ln_ffn")
        ffn_in = hk.Linear(self.d_ff, w_init=init, name="ffn_in")
        ffn_out = hk.Linear(self.d_model, w_init=init, name="ffn_out")

        def ffn(h: jax.Array) -> jax.Array:
            return ffn_out(_GELU(ffn_in(h)))

        if self.pre_ln:
            h = ln_attention(x)
            x = x + attention(h, h, h, mask=mask)
            return x + ffn(ln_ffn(x))
        x = ln_attention(x + attention(x, x, x, mask=mask))
        return ln_ffn(x + ffn(x))


@dataclasses.dataclass(frozen=True)
class _TransformerConfig:
    vocab_size: int
    max_positions: int
    num_layers: int = 12
    d_model: int = 768
    num_heads: int = 12
    d_ff: int = 3072


_BERT_BASE = _TransformerConfig(vocab_size=30522, max_positions=512)
_GPT2_SMALL = _TransformerConfig(vocab_size=50257, max_positions=1024)


def _bert(batch: Mapping[str, jax.Array], is_training: bool) -> dict[str, jax.Array]:
    """BERT-base pre-training network: MLM logits [B, T, V] and NSP logits [B, 2]."""
    del is_training  # no dropout, so training and inference graphs coincide
    cfg = _BERT_BASE
    init = hk.initializers.TruncatedNormal(stddev=0.02)
    tokens = batch["tokens"]  # [B, T] int32
    _, seq_len = tokens.shape
    word = hk.Embed(cfg.vocab_size, cfg.d_model, w_init=init, name="word_embeddings")
    position = hk.get_parameter("position_embeddings", [cfg.max_positions, cfg.d_model], init=init)
    token_type = hk.Embed(2, cfg.d_model, w_init=init, name="token_type_embeddings")
    x = word(tokens) + position[None, :seq_len] + token_type(batch["token_types"])
    x = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name="embeddings_ln")(x)
    # Padding mask [B, 1, 1, T]: every query may attend to every non-padding key.
    mask = batch["attention_mask"][:, None, None, :]
    for i in range(cfg.num_layers):
        x = _TransformerLayer(
            d_model=cfg.d_model, num_heads=cfg.num_heads, d_ff=cfg.d_ff, pre_ln=False, name=f"layer_{i}"
        )(x, mask)
    # MLM head: transform, then decode with the (tied) word embedding.
    h = _GELU(hk.Linear(cfg.d_model, w_init=init, name="mlm_transform")(x))
    h = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name="mlm_ln")(h)
    mlm_bias = hk.get_parameter("mlm_output_bias", [cfg.vocab_size], init=jnp.zeros)
    mlm_logits = h @ word.embeddings.T + mlm_bias
    # NSP head on the pooled [CLS] vector.
    pooled = jnp.tanh(hk.Linear(cfg.d_model, w_init=init, name="pooler")(x[:, 0]))
    nsp_logits = hk.Linear(2, w_init=init, name="nsp")(pooled)
    return {"mlm_logits": mlm_logits, "nsp_logits": nsp_logits}


def _bert_loss(outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array]) -> jax.Array:
    """Masked-LM cross-entropy (averaged over positions with weight 1) + NSP cross-entropy."""
    mlm = optax.softmax_cross_entropy_with_integer_labels(outputs["mlm_logits"], batch["mlm_labels"])
    weights = batch["mlm_weights"]
    mlm_loss = jnp.sum(mlm * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    nsp_loss = optax.softmax_cross_entropy_with_integer_labels(outputs["nsp_logits"], batch["nsp_labels"])
    return mlm_loss + jnp.mean(nsp_loss)


def _gpt2(batch: Mapping[str, jax.Array], is_training: bool) -> jax.Array:
    """GPT-2 small: next-token logits [B, T, V]."""
    del is_training  # no dropout
    cfg = _GPT2_SMALL
    init = hk.initializers.TruncatedNormal(stddev=0.02)
    tokens = batch["tokens"]  # [B, T] int32
    _, seq_len = tokens.shape
    wte = hk.Embed(cfg.vocab_size, cfg.d_model, w_init=init, name="wte")
    wpe = hk.get_parameter("wpe", [cfg.max_positions, cfg.d_model], init=init)
    x = wte(tokens) + wpe[None, :seq_len]
    causal_mask = jnp.tril(jnp.ones((seq_len, seq_len), dtype=jnp.bool_))[None, None]  # [1,1,T,T]
    for i in range(cfg.num_layers):
        x = _TransformerLayer(
            d_model=cfg.d_model, num_heads=cfg.num_heads, d_ff=cfg.d_ff, pre_ln=True, name=f"h_{i}"
        )(x, causal_mask)
    x = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name="ln_f")(x)
    return x @ wte.embeddings.T


def _lm_loss(logits: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
    """Mean next-token cross-entropy; ``batch["targets"]`` are the tokens shifted by one."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]))


def _classification_loss(logits: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
    """Mean softmax cross-entropy against integer ``batch["labels"]``."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]))


def _mobilenet_v1(batch: Mapping[str, jax.Array], is_training: bool) -> jax.Array:
    """MobileNetV1 1.0x with BatchNorm: logits [B, 1000]."""
    return hk.nets.MobileNetV1(num_classes=1000, use_bn=True)(batch["images"], is_training=is_training)


def _resnet50(batch: Mapping[str, jax.Array], is_training: bool) -> jax.Array:
    """ResNet-50 v1 with BatchNorm: logits [B, 1000]."""
    return hk.nets.ResNet50(num_classes=1000)(batch["images"], is_training=is_training)


def _small_cnn(batch: Mapping[str, jax.Array], is_training: bool) -> jax.Array:
    """CIFAR-style VGG-like CNN: 2x(conv3x3 32) pool 2x(conv3x3 64) pool, dense 256, logits [B, 10]."""
    del is_training
    x = batch["images"]  # [B, 32, 32, 3]
    for stage, channels in enumerate((32, 64)):
        for i in range(2):
            x = jax.nn.relu(hk.Conv2D(channels, kernel_shape=3, name=f"conv{stage}_{i}")(x))
        x = hk.max_pool(x, window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1), padding="VALID")
    x = hk.Flatten()(x)  # [B, 8 * 8 * 64]
    x = jax.nn.relu(hk.Linear(256, name="dense")(x))
    return hk.Linear(10, name="logits")(x)


_LSTM_HIDDEN = 128


def _lstm(batch: Mapping[str, jax.Array], is_training: bool) -> jax.Array:
    """One LSTM layer over a time-major sequence [T, B, F] (lax.scan), logits [B, 10]."""
    del is_training
    sequence = batch["sequence"]
    core = hk.LSTM(_LSTM_HIDDEN, name="lstm")
    initial_state = core.initial_state(sequence.shape[1])
    outputs, _ = hk.dynamic_unroll(core, sequence, initial_state, time_major=True)
    return hk.Linear(10, name="classifier")(outputs[-1])


def _mlp(batch: Mapping[str, jax.Array], is_training: bool) -> jax.Array:
    """Tiny MLP 64 -> 128 -> 128 -> 10 with ReLU: logits [B, 10]."""
    del is_training
    return hk.nets.MLP([128, 128, 10], name="mlp")(batch["features"])


# --------------------------------------------------------------------------------------------
# Workload construction: forward and train-step functions over ShapeDtypeStruct arguments.
# --------------------------------------------------------------------------------------------


def _sds(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))


@dataclasses.dataclass(frozen=True)
class _Network:
    """A network with its batch layout, loss and optimiser.

    ``batch`` maps input names to shapes; ``input_keys`` are the entries the forward pass reads
    (the rest are labels/targets/weights used only by the loss).
    """

    key: str
    title: str
    net: Callable[[Mapping[str, jax.Array], bool], Any]
    batch: Batch
    input_keys: tuple[str, ...]
    loss: Callable[[Any, Mapping[str, jax.Array]], jax.Array]
    optimizer: Callable[[], optax.GradientTransformation]
    optimizer_title: str

    def inputs(self) -> Batch:
        return {k: self.batch[k] for k in self.input_keys}

    def transformed(self) -> hk.TransformedWithState:
        return hk.transform_with_state(self.net)

    def abstract_params_and_state(self) -> tuple[Any, Any]:
        """Shapes of the initial parameters and state, computed without allocating them."""
        rng = _sds((2,), jnp.uint32)  # a raw PRNG key, abstract
        init = self.transformed().init
        return jax.eval_shape(lambda key, inputs: init(key, inputs, True), rng, self.inputs())

    def build_forward(self) -> tuple[WorkloadFn, tuple[Any, ...]]:
        apply = self.transformed().apply

        def forward(params, state, inputs):
            outputs, _ = apply(params, state, None, inputs, False)
            return outputs

        forward.__name__ = f"{self.key}_fwd"
        params, state = self.abstract_params_and_state()
        return forward, (params, state, self.inputs())

    def build_train(self) -> tuple[WorkloadFn, tuple[Any, ...]]:
        apply = self.transformed().apply
        optimizer = self.optimizer()
        loss_of_batch = self.loss
        input_keys = self.input_keys

        def train_step(params, state, opt_state, batch):
            inputs = {k: batch[k] for k in input_keys}

            def loss_fn(p):
                outputs, new_state = apply(p, state, None, inputs, True)
                return loss_of_batch(outputs, batch), new_state

            (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, new_opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), new_state, new_opt_state, loss

        train_step.__name__ = f"{self.key}_train"
        params, state = self.abstract_params_and_state()
        opt_state = jax.eval_shape(optimizer.init, params)
        return train_step, (params, state, opt_state, dict(self.batch))


def _sgd_momentum() -> optax.GradientTransformation:
    return optax.sgd(learning_rate=0.1, momentum=0.9)


def _adamw() -> optax.GradientTransformation:
    return optax.adamw(learning_rate=1e-4, weight_decay=0.01)


def _adam() -> optax.GradientTransformation:
    return optax.adam(learning_rate=1e-3)


_IMAGE_BATCH, _IMAGE_SIZE = 8, 224
_TOKEN_BATCH, _SEQ_LEN = 4, 128
_SMALL_CNN_BATCH, _SMALL_CNN_SIZE = 8, 32
_LSTM_BATCH, _LSTM_STEPS, _LSTM_FEATURES = 8, 16, 32
_MLP_BATCH, _MLP_FEATURES = 8, 64

_NETWORKS: tuple[_Network, ...] = (
    _Network(
        key="mobilenet_v1",
        title=f"MobileNetV1 1.0x, B={_IMAGE_BATCH}, {_IMAGE_SIZE}x{_IMAGE_SIZE}x3",
        net=_mobilenet_v1,
        batch={
            "images": _sds((_IMAGE_BATCH, _IMAGE_SIZE, _IMAGE_SIZE, 3), jnp.float32),
            "labels": _sds((_IMAGE_BATCH,), jnp.int32),
        },
        input_keys=("images",),
        loss=_classification_loss,
        optimizer=_sgd_momentum,
        optimizer_title="SGD momentum 0.9",
    ),
    _Network(
        key="resnet50",
        title=f"ResNet-50 v1, B={_IMAGE_BATCH}, {_IMAGE_SIZE}x{_IMAGE_SIZE}x3",
        net=_resnet50,
        batch={
            "images": _sds((_IMAGE_BATCH, _IMAGE_SIZE, _IMAGE_SIZE, 3), jnp.float32),
            "labels": _sds((_IMAGE_BATCH,), jnp.int32),
        },
        input_keys=("images",),
        loss=_classification_loss,
        optimizer=_sgd_momentum,
        optimizer_title="SGD momentum 0.9",
    ),
    _Network(
        key="bert_base",
        title=f"BERT-base (12 layers, d=768, 12 heads, FFN 3072), B={_TOKEN_BATCH}, T={_SEQ_LEN}",
        net=_bert,
        batch={
            "tokens": _sds((_TOKEN_BATCH, _SEQ_LEN), jnp.int32),
            "token_types": _sds((_TOKEN_BATCH, _SEQ_LEN), jnp.int32),
            "attention_mask": _sds((_TOKEN_BATCH, _SEQ_LEN), jnp.int32),
            "mlm_labels": _sds((_TOKEN_BATCH, _SEQ_LEN), jnp.int32),
            "mlm_weights": _sds((_TOKEN_BATCH, _SEQ_LEN), jnp.float32),
            "nsp_labels": _sds((_TOKEN_BATCH,), jnp.int32),
        },
        input_keys=("tokens", "token_types", "attention_mask"),
        loss=_bert_loss,
        optimizer=_adamw,
        optimizer_title="AdamW",
    ),
    _Network(
        key="gpt2_small",
        title=f"GPT-2 small (12 causal layers, d=768, 12 heads), B={_TOKEN_BATCH}, T={_SEQ_LEN}",
        net=_gpt2,
        batch={
            "tokens": _sds((_TOKEN_BATCH, _SEQ_LEN), jnp.int32),
            "targets": _sds((_TOKEN_BATCH, _SEQ_LEN), jnp.int32),
        },
        input_keys=("tokens",),
        loss=_lm_loss,
        optimizer=_adamw,
        optimizer_title="AdamW",
    ),
    _Network(
        key="small_cnn",
        title=f"small CNN (4 conv3x3, 2 dense), B={_SMALL_CNN_BATCH}, {_SMALL_CNN_SIZE}x{_SMALL_CNN_SIZE}x3",
        net=_small_cnn,
        batch={
            "images": _sds((_SMALL_CNN_BATCH, _SMALL_CNN_SIZE, _SMALL_CNN_SIZE, 3), jnp.float32),
            "labels": _sds((_SMALL_CNN_BATCH,), jnp.int32),
        },
        input_keys=("images",),
        loss=_classification_loss,
        optimizer=_sgd_momentum,
        optimizer_title="SGD momentum 0.9",
    ),
    _Network(
        key="lstm",
        title=f"LSTM (hidden {_LSTM_HIDDEN}) scanned over T={_LSTM_STEPS}, B={_LSTM_BATCH}",
        net=_lstm,
        batch={
            "sequence": _sds((_LSTM_STEPS, _LSTM_BATCH, _LSTM_FEATURES), jnp.float32),
            "labels": _sds((_LSTM_BATCH,), jnp.int32),
        },
        input_keys=("sequence",),
        loss=_classification_loss,
        optimizer=_adam,
        optimizer_title="Adam",
    ),
    _Network(
        key="mlp",
        title=f"MLP {_MLP_FEATURES}-128-128-10, B={_MLP_BATCH}",
        net=_mlp,
        batch={
            "features": _sds((_MLP_BATCH, _MLP_FEATURES), jnp.float32),
            "labels": _sds((_MLP_BATCH,), jnp.int32),
        },
        input_keys=("features",),
        loss=_classification_loss,
        optimizer=_adam,
        optimizer_title="Adam",
    ),
)


def _make_workloads() -> dict[str, WorkloadSpec]:
    workloads: dict[str, WorkloadSpec] = {}
    for network in _NETWORKS:
        fwd = WorkloadSpec(
            name=f"{network.key}.fwd",
            description=f"{network.title}: inference forward pass",
            build=network.build_forward,
        )
        train = WorkloadSpec(
            name=f"{network.key}.train",
            description=f"{network.title}: train step (loss, grads, {network.optimizer_title} update)",
            build=network.build_train,
        )
        workloads[fwd.name] = fwd
        workloads[train.name] = train
    return workloads


WORKLOADS: dict[str, WorkloadSpec] = _make_workloads()


# --------------------------------------------------------------------------------------------
# Lowering, HLO text, cache, dump folders.
# --------------------------------------------------------------------------------------------


def _spec(name: str) -> WorkloadSpec:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise KeyError(f"unknown workload {name!r}; known: {', '.join(sorted(WORKLOADS))}") from None


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown HLO stage {stage!r}; expected one of {STAGES}")


def lower(name: str) -> jax.stages.Lowered:
    """Lowers workload ``name`` with ``jax.jit(fn, keep_unused=True)`` over its abstract args.

    Source-file metadata is canonicalised (checkout path and ``site-packages`` prefix removed)
    and holds only the innermost user frame of each operation, so the text does not depend on
    where the repository lives nor on who called this function.
    """
    fn, args = _spec(name).build()
    with (
        _jax_config.hlo_source_file_canonicalization_regex(_SOURCE_FILE_CANONICALIZATION_REGEX),
        _jax_config.include_full_tracebacks_in_locations(False),
    ):
        return jax.jit(fn, keep_unused=True).lower(*args)


@dataclasses.dataclass(frozen=True)
class _Generated:
    text: str
    lower_s: float
    compile_s: float | None


def _generate(name: str, stage: Stage) -> _Generated:
    _check_stage(stage)
    start = time.perf_counter()
    lowered = lower(name)
    lower_s = time.perf_counter() - start
    if stage == "before":
        return _Generated(lowered.as_text(dialect="hlo"), lower_s, None)
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    return _Generated(compiled.as_text(), lower_s, compile_s)


def hlo_text(name: str, stage: Stage) -> str:
    """HLO text of workload ``name``: ``"before"`` (pre-) or ``"after"`` (post-optimisation).

    ``before`` is ``lowered.as_text(dialect="hlo")``; ``after`` is
    ``lowered.compile().as_text()`` on the default backend (XLA:CPU here).
    """
    return _generate(name, stage).text


def entry_instruction_count(text: str) -> int:
    """Number of instructions in the ENTRY computation of HLO ``text``.

    Counts the one-instruction-per-line body between ``ENTRY ... {`` and its closing ``}``.
    """
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("ENTRY "):
            break
    else:
        raise ValueError("HLO text has no ENTRY computation")
    count = 0
    for line in lines[index + 1 :]:
        if line.startswith("}"):
            return count
        if " = " in line:
            count += 1
    raise ValueError(f"HLO text: ENTRY computation at line {index + 1} is never closed")


def _zoo_fingerprint() -> str:
    """sha256 of this module's source: a change to any workload invalidates the cache."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _cache_key() -> dict[str, str]:
    import jaxlib

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "zoo_sha256": _zoo_fingerprint(),
    }


def cache_metadata(name: str, stage: Stage, cache_dir: Path = DEFAULT_CACHE_DIR) -> dict[str, Any]:
    """The sidecar JSON of a cached HLO file (key, sizes, timings); see :func:`cached_hlo_path`."""
    sidecar = Path(cache_dir) / f"{name}.{stage}.json"
    try:
        return json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{sidecar}: no cache entry for {name} ({stage}); call cached_hlo_path first"
        ) from None


def _write_atomic(path: Path, data: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(data)
    os.replace(tmp, path)


def cached_hlo_path(
    name: str, stage: Stage, cache_dir: Path = DEFAULT_CACHE_DIR, *, force: bool = False
) -> Path:
    """Path of ``<cache_dir>/<name>.<stage>.hlo``, generated on first use.

    A sidecar ``<name>.<stage>.json`` records the key (jax and jaxlib versions, backend, sha256
    of this module) plus ``sha256``, ``size_bytes``, ``lower_s`` and ``compile_s`` (``null`` for
    ``before``). The file is regenerated when the key differs, the text's hash no longer
    matches, or ``force`` is set. The default ``cache_dir`` is ``benchmarks/cache`` (git-ignored).
    """
    _spec(name)
    _check_stage(stage)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{name}.{stage}.hlo"
    sidecar = cache_dir / f"{name}.{stage}.json"
    key = _cache_key()
    if not force and path.exists() and sidecar.exists():
        meta = json.loads(sidecar.read_text())
        if meta.get("key") == key and meta.get("sha256") == hashlib.sha256(path.read_bytes()).hexdigest():
            return path
    generated = _generate(name, stage)
    data = generated.text.encode()
    cache_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, generated.text)
    meta = {
        "name": name,
        "stage": stage,
        "key": key,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "entry_instructions": entry_instruction_count(generated.text),
        "lower_s": round(generated.lower_s, 4),
        "compile_s": None if generated.compile_s is None else round(generated.compile_s, 4),
    }
    _write_atomic(sidecar, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def dump_folder(name: str, out_dir: Path) -> Path:
    """Compiles workload ``name`` with XLA dumping on; returns ``out_dir``.

    ``out_dir`` receives XLA's per-module dump files (``*.before_optimizations.txt``,
    ``*.cpu_after_optimizations.txt``, ``*-buffer-assignment.txt``, ``*-live-range.txt``,
    ``*-memory-usage-report.txt``, ...), as produced by ``XLA_FLAGS=--xla_dump_to=DIR``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lower(name).compile(compiler_options={"xla_dump_to": str(out_dir), "xla_dump_hlo_as_text": True})
    if not any(out_dir.glob("*after_optimizations.txt")):
        raise RuntimeError(f"{out_dir}: XLA wrote no *after_optimizations.txt dump for workload {name}")
    return out_dir
