"""Fine-tuning compressed models with optax: keep a pruned model sparse, keep a quantized model on
its grid (recovery fine-tuning after Wanda / SparseGPT / GPTQ).

Sparsity. ``sparsity_masks(model)`` marks the pruned entries (True = pruned, the library's mask
convention) of every decoder-layer linear as a pytree shaped like the model's ``nnx.Param`` state
(``None`` for parameters that are not pruned: embeddings, norms, ``lm_head``). ``keep_sparsity(tx,
masks)`` wraps any optax optimizer so the pruned entries stay exactly zero for any number of steps:

1. the gradient of a pruned entry is zeroed before ``tx`` sees it, so ``tx`` optimizes the
   sub-network of kept weights (its state for pruned entries stays zero, and global statistics,
   e.g. ``optax.clip_by_global_norm``, count only kept weights);
2. the update ``tx`` returns is replaced by ``-param`` at pruned entries, so after
   ``optax.apply_updates`` they are exactly ``0.0`` whatever ``tx`` did: decoupled weight decay
   (``adamw``), momentum left in the state, a schedule, or a pruned entry that was not yet zero.

Masking only the gradient (step 1) is not enough: ``adamw`` adds ``weight_decay * param`` after the
gradient statistics, and a momentum or Adam state filled before pruning keeps moving weights with
zero gradient. For the kept entries, an elementwise ``tx`` (sgd, momentum, adam, adamw, ...) gives
exactly the update it gives on the dense parameters. ``keep_sparsity`` must be the outermost
transformation (its updates go straight to ``apply_updates``; a later ``optax.scale`` would scale
the ``-param`` correction too). The masks live in the optimizer state, so they are jit arguments,
not constants baked into the program, and are saved with the optimizer state.

Quantization. ``fake_quant(W, params)`` rounds ``W: (d_out, d_in)`` onto a fixed GPTQ grid (the
``scales``/``zeros``/``g_idx`` of a :class:`~zipcal_jax.compress.quant.QuantParams`) in the
forward pass and passes the gradient straight through (``d fake_quant / d W = I``, the
straight-through estimator). ``fake_quant_model(model, qparams)`` returns a copy of the model whose
listed linears are fake-quantized, to call inside the loss; the gradient w.r.t. the original
model's kernels is the gradient w.r.t. the grid weights. After training, ``snap_to_grid`` writes the
grid weights back and returns the new codes (same scales and zeros). The pipeline's per-linear
``QuantParams`` (and prune masks) are collected with ``compress(..., callback=CompressionCollector())``.

Example (pruned model, masked AdamW)::

    masks = training.sparsity_masks(model)
    optimizer = nnx.Optimizer(model, training.keep_sparsity(optax.adamw(1e-5, weight_decay=0.01), masks),
                              wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, ids, mask):
        loss, grads = nnx.value_and_grad(training.lm_loss)(model, ids, mask, True)  # remat=True
        optimizer.update(model, grads)
        return loss
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from zipcal_jax.compress import quant
from zipcal_jax.models import llama

Array = jax.Array

__all__ = ["CompressionCollector", "KeepSparsityState", "fake_quant", "fake_quant_model", "keep_sparsity",
           "linear_sparsity", "lm_loss", "snap_to_grid", "sparsity_masks", "sparsity_violations"]  # fmt: skip


# ----------------------------------------------------------------------------- loss


def lm_loss(model: Any, input_ids: Array, attention_mask: Array | None = None, remat: Any = False) -> Array:
    """Mean next-token cross-entropy (nats) of a causal LM: position ``t`` predicts token ``t + 1``,
    counted where both tokens are real (``attention_mask`` True). input_ids: (B, T) int;
    attention_mask: (B, T) or None (all real). ``remat`` is passed to the model's ``__call__``
    (see :meth:`zipcal_jax.models.llama.Llama.__call__`); it is not keyword-only because
    ``nnx.grad`` passes keyword arguments on by position. Returns a float32 scalar."""
    ids = jnp.asarray(input_ids)
    if ids.ndim != 2 or ids.shape[1] < 2:
        raise ValueError(f"input_ids must be (batch, tokens) with at least 2 tokens, got shape {ids.shape}")
    mask = jnp.ones(ids.shape, bool) if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask {mask.shape} must have the shape of input_ids {ids.shape}")
    logits = model(ids, mask, remat=remat)[:, :-1]  # (B, T-1, V) float32
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:])  # (B, T-1)
    weight = (mask[:, :-1] & mask[:, 1:]).astype(jnp.float32)
    return jnp.sum(nll * weight) / jnp.maximum(jnp.sum(weight), 1.0)


# ----------------------------------------------------------------------------- sparsity


def _key_name(key: Any) -> str:
    return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))


def _kernel_paths(model: Any) -> dict[str, tuple[str, ...]]:
    """Decoder-layer linear name → path of its kernel in the Param state."""
    return {name: (*name.split("."), "kernel") for name in llama.linear_names(model)}


def _weight_shape(model: Any, name: str) -> tuple[int, int]:
    """``(d_out, d_in)`` of linear ``name`` (also under tracing); ValueError for unknown names."""
    return tuple(jnp.shape(llama._linear(model, name).kernel[...]))[::-1]


def sparsity_masks(model: Any, pruned: Mapping[str, Any] | None = None) -> nnx.State:
    """Masks of the pruned weights, as a pytree matching ``nnx.as_pure(nnx.state(model, nnx.Param))``
    (the parameters ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` updates).

    Every decoder-layer linear (:func:`zipcal_jax.models.llama.linear_names`) gets a bool array in
    the kernel's layout ``(d_in, d_out)``, True where the weight is pruned: by default its exact
    zeros (what Wanda / SparseGPT / magnitude pruning leave); with ``pruned`` (``{name: mask}`` in
    the papers' ``(d_out, d_in)`` layout, e.g. :attr:`CompressionCollector.masks`) the given masks,
    and only for the linears named there. Every other parameter gets ``None`` (not pruned).
    """
    paths = _kernel_paths(model)
    chosen: dict[tuple[str, ...], Any] = {}
    if pruned is None:
        chosen = {p: None for p in paths.values()}
    else:
        for name, m in pruned.items():
            W_shape = _weight_shape(model, name)
            m = np.asarray(m)
            if m.shape != W_shape or m.dtype != np.bool_:
                raise ValueError(
                    f"pruned[{name!r}] must be a bool mask of the weight's shape (d_out, d_in) = {W_shape}, "
                    f"got {m.dtype} {m.shape}"
                )
            chosen[(*name.split("."), "kernel")] = m.T

    def leaf(path, x):
        key = tuple(_key_name(k) for k in path)
        if key not in chosen:
            return None
        given = chosen[key]
        return jnp.asarray(x == 0) if given is None else jax.device_put(given, getattr(x, "sharding", None))

    return jax.tree_util.tree_map_with_path(leaf, nnx.as_pure(nnx.state(model, nnx.Param)))


def _is_none(x: Any) -> bool:
    return x is None


def _masked_map(fn: Callable[..., Any], masks: Any, tree: Any, *rest: Any) -> Any:
    """``fn(mask, leaf, *rest_leaves)`` for every masked leaf of ``tree``; other subtrees unchanged.
    ``masks`` is a tree prefix of ``tree`` (its leaves may be arrays or ``nnx.Variable`` nodes)."""

    def per_subtree(m, sub, *others):
        if m is None:
            return sub
        return jax.tree.map(lambda leaf, *o: fn(m, leaf, *o), sub, *others)

    try:
        return jax.tree.map(per_subtree, masks, tree, *rest, is_leaf=_is_none)
    except _MaskShapeError:
        raise
    except ValueError as e:
        raise ValueError(
            "the sparsity masks do not match the parameter tree: build them with "
            "sparsity_masks(model) for an optimizer over nnx.Param (nnx.Optimizer(model, tx, wrt=nnx.Param)) "
            f"or give a tree of the same structure ({e})"
        ) from e


class KeepSparsityState(NamedTuple):
    """State of :func:`keep_sparsity`: the wrapped optimizer's state and the masks."""

    inner_state: Any
    masks: Any


def keep_sparsity(tx: optax.GradientTransformation, masks: Any) -> optax.GradientTransformationExtraArgs:
    """Wrap ``tx`` so that the entries marked True in ``masks`` (pruned weights) stay exactly zero.

    ``masks``: a pytree prefix of the parameters with bool leaves (True = pruned) or ``None`` (not
    pruned), e.g. :func:`sparsity_masks`. Semantics (see the module docstring): gradients of pruned
    entries are zeroed before ``tx``; the final update of a pruned entry is ``-param`` (so the entry
    is exactly zero after ``optax.apply_updates``), or ``0`` when ``update`` gets no ``params``
    (then pruned entries only stay at their current value, which must be zero). Use it as the
    outermost transformation; extra arguments of ``update`` are passed to ``tx``.
    """
    inner = optax.with_extra_args_support(tx)

    def zero_pruned(m, g):
        return jnp.where(m, jnp.zeros((), g.dtype), g)

    def init_fn(params):
        _masked_map(lambda m, p: _check_shape(m, p), masks, params)
        return KeepSparsityState(inner.init(params), masks)

    def update_fn(updates, state, params=None, **extra_args):
        m = state.masks
        grads = _masked_map(zero_pruned, m, updates)
        new_updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
        if params is None:
            new_updates = _masked_map(zero_pruned, m, new_updates)
        else:
            new_updates = _masked_map(
                lambda mk, u, p: jnp.where(mk, -jnp.asarray(p).astype(u.dtype), u), m, new_updates, params
            )
        return new_updates, KeepSparsityState(inner_state, m)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class _MaskShapeError(ValueError):
    pass


def _check_shape(m: Any, p: Any) -> Any:
    if jnp.shape(m) != jnp.shape(p):
        raise _MaskShapeError(
            f"a sparsity mask of shape {jnp.shape(m)} stands for a parameter of shape {jnp.shape(p)}; "
            "build the masks from the model being trained (sparsity_masks(model))"
        )
    return p


def sparsity_violations(model: Any, masks: Any) -> int:
    """Number of entries that ``masks`` marks pruned but that are not exactly zero in ``model``."""
    total = 0

    def count(m, p):
        nonlocal total
        total += int(jnp.sum(m & (p != 0)))
        return p

    _masked_map(count, masks, nnx.as_pure(nnx.state(model, nnx.Param)))
    return total


def linear_sparsity(model: Any) -> float:
    """Fraction of exact zeros over all decoder-layer linear weights of ``model``."""
    zeros = total = 0
    for name in llama.linear_names(model):
        W = llama.get_linear_weight(model, name)
        zeros += int(np.count_nonzero(W == 0))
        total += W.size
    return zeros / max(total, 1)


# ----------------------------------------------------------------------------- fake quantization


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _round_to_grid(W: Array, scale: Array, zero: Array, maxq: int) -> Array:
    return quant.quantize(W, scale, zero, maxq)


@_round_to_grid.defjvp
def _round_to_grid_jvp(maxq, primals, tangents):
    W, scale, zero = primals
    return _round_to_grid(W, scale, zero, maxq), tangents[0]  # straight through: d/dW = identity


def fake_quant(W: Array, params: quant.QuantParams) -> Array:
    """``W: (d_out, d_in)`` rounded onto the grid of ``params`` (its ``scales``, ``zeros``, ``g_idx``,
    ``bits``; its ``codes`` are not used): column ``i`` uses group ``g_idx[i]``,
    ``scale * (clamp(round(W / scale) + zero, 0, maxq) - zero)``. Computed in the scales' dtype,
    returned in ``W``'s. The gradient is the identity (straight-through estimator), so
    ``grad(f(fake_quant(W)))`` equals ``grad f`` at the grid weights. For ``W`` already on the grid
    (e.g. ``params.dequantize()``) the result equals ``W`` bit for bit."""
    W = jnp.asarray(W)
    d_out = params.scales.shape[0]
    if W.ndim != 2 or W.shape != (d_out, params.g_idx.shape[0]):
        raise ValueError(
            f"W has shape {W.shape} but the quantization parameters are for (d_out, d_in) = "
            f"{(d_out, params.g_idx.shape[0])}; pass the weight in the papers' layout (d_out, d_in)"
        )
    scale = params.scales[:, params.g_idx]  # (d_out, d_in)
    zero = params.zeros[:, params.g_idx].astype(scale.dtype)
    maxq = 2**params.bits - 1
    return _round_to_grid(W.astype(scale.dtype), scale, zero, maxq).astype(W.dtype)


def _check_qparams(model: Any, qparams: Mapping[str, quant.QuantParams]) -> dict[tuple[str, ...], Any]:
    if not isinstance(qparams, Mapping):
        raise ValueError(
            "qparams must be a mapping {linear name: QuantParams}, e.g. CompressionCollector.params"
        )
    out = {}
    for name, p in qparams.items():
        shape = _weight_shape(model, name)
        if not isinstance(p, quant.QuantParams):
            raise ValueError(f"qparams[{name!r}] must be a QuantParams, got {type(p).__name__}")
        if (p.scales.shape[0], p.g_idx.shape[0]) != shape:
            raise ValueError(
                f"qparams[{name!r}] is for a ({p.scales.shape[0]}, {p.g_idx.shape[0]}) weight but {name} is "
                f"{shape}; the parameters come from another model"
            )
        out[(*name.split("."), "kernel")] = p
    return out


def fake_quant_model(model: Any, qparams: Mapping[str, quant.QuantParams]) -> Any:
    """A copy of ``model`` whose linears named in ``qparams`` (``{name: QuantParams}``, names as
    :func:`zipcal_jax.models.llama.linear_names`) have their kernels replaced by
    :func:`fake_quant` of them. Call it inside the loss::

        loss = lambda m: lm_loss(fake_quant_model(m, qparams), ids, mask)

    The copy's arrays are functions of ``model``'s, so ``nnx.grad`` w.r.t. ``model`` flows through
    the straight-through estimator; ``model`` itself is not changed."""
    by_path = _check_qparams(model, qparams)
    graphdef, state = nnx.split(model)

    def leaf(path, x):
        keys = tuple(_key_name(k) for k in path)
        keys = keys[:-1] if keys and keys[-1] == "value" else keys
        p = by_path.get(keys)
        return x if p is None else fake_quant(x.T, p).T  # kernel (d_in, d_out) ↔ W (d_out, d_in)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(leaf, state))


def snap_to_grid(model: Any, qparams: Mapping[str, quant.QuantParams]) -> dict[str, quant.QuantParams]:
    """Round the linears named in ``qparams`` onto their grids, in place, and return their new
    ``QuantParams`` (same scales, zeros, ``g_idx``; new codes), e.g. after fake-quant fine-tuning
    and before :func:`zipcal_jax.compress.quant.pack`. Afterwards each weight equals
    ``new[name].dequantize()`` in float32."""
    _check_qparams(model, qparams)
    new = {}
    for name, p in qparams.items():
        W = jnp.asarray(llama.get_linear_weight(model, name), jnp.float32)
        scale = p.scales[:, p.g_idx]
        zero = p.zeros[:, p.g_idx].astype(scale.dtype)
        codes = quant.to_codes(W.astype(scale.dtype), scale, zero, 2**p.bits - 1)
        new[name] = dataclasses.replace(p, codes=codes)
        llama.set_linear_weight(model, name, new[name].dequantize())
    return new


class CompressionCollector:
    """A ``callback`` for :func:`zipcal_jax.compress.compress` that keeps what the pipeline computed
    per linear: ``params`` (``{name: QuantParams}``: GPTQ, RTN, SparseGPT with ``bits``) and
    ``masks`` (``{name: bool (d_out, d_in)}``, True = pruned: Wanda, SparseGPT, magnitude)::

        collector = CompressionCollector()
        compress(model, calib, "gptq", bits=4, callback=collector)
        qparams = collector.params
    """

    def __init__(self) -> None:
        self.params: dict[str, quant.QuantParams] = {}
        self.masks: dict[str, np.ndarray] = {}

    def __call__(self, name: str, W_new: Array, extras: Mapping[str, Any]) -> None:
        if extras.get("params") is not None:
            self.params[name] = extras["params"]
        if extras.get("mask") is not None:
            self.masks[name] = np.asarray(extras["mask"]).astype(bool)
