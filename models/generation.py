"""Generation for :class:`~zipcal_jax.models.llama.Llama`: KV cache, jitted decode step, sampling.

:func:`init_cache` builds the per-layer (k, v) cache; :func:`generate` prefills the prompt and
decodes token by token with one jitted step (``_step``) and a jitted sampler (``_sample``). Both
public names are re-exported from :mod:`zipcal_jax.models.llama` (``llama.generate``,
``llama.init_cache``), which imports this module; the model types are imported here only for
type checking, and :func:`~zipcal_jax.models.llama.positions_from_mask` when :func:`generate` runs,
so there is no import cycle.

Shapes as in :mod:`zipcal_jax.models.llama`: ``B`` batch, ``T`` new tokens per step, ``S`` cache
length, ``K`` key/value heads, ``H`` head dim, ``V`` vocab.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

if TYPE_CHECKING:
    from zipcal_jax.models.llama import Array, DType, KVCache, Llama, LlamaConfig

__all__ = ["generate", "init_cache"]


def init_cache(cfg: LlamaConfig, batch: int, length: int, dtype: DType = jnp.float32) -> list[KVCache]:
    """Zeroed KV cache: one (k, v) pair of (B, S, K, H) per layer."""
    shape = (batch, length, cfg.num_key_value_heads, cfg.head_dim)
    return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(cfg.num_hidden_layers)]


@functools.partial(jax.jit, static_argnums=0, donate_argnums=6)
def _step(graphdef, state, ids, positions, last, kv_valid, cache, index):
    """Run T new tokens (slots index..index+T-1) through the cache. ids, positions: (B, T);
    last: (B,) which of the T rows to return logits for; kv_valid: (B, S) bool real slots.
    Returns float32 logits (B, V) and the updated cache."""
    model = nnx.merge(graphdef, state)
    B, T = ids.shape
    S = kv_valid.shape[1]
    slots = index + jnp.arange(T)
    mask = (jnp.arange(S)[None, None, :] <= slots[None, :, None]) & kv_valid[:, None, :]  # (B, T, S)
    h = model.embed_tokens(ids)
    new_cache = []
    for layer, kv in zip(model.layers, cache):
        h, kv = layer.decode(h, positions, mask, kv, index)
        new_cache.append(kv)
    h = h[jnp.arange(B), last][:, None]  # (B, 1, D)
    return model.head(h)[:, 0], new_cache


@functools.partial(jax.jit, static_argnums=(2, 3))
def _sample(logits: Array, key: Array, temperature: float, top_k: int | None) -> Array:
    """(B, V) float32 logits → (B,) int32 tokens: argmax at temperature 0, else softmax sampling
    of ``logits / temperature`` restricted to the ``top_k`` largest."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def generate(
    model: Llama,
    input_ids: Any,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 0,
    eos_id: int | None = None,
    attention_mask: Any = None,
) -> np.ndarray:
    """Autoregressive decoding with a KV cache. input_ids: (B, T0) int; attention_mask: (B, T0) or
    None (left or right padding both work; every row needs a real token). Greedy at temperature 0,
    else sampling (optionally top-k) from ``jax.random.key(seed)``. Once a row emits ``eos_id`` it
    keeps emitting it. Returns (B, T0 + max_new_tokens) int32: the prompt (pads included) then the
    new tokens, like HF ``generate``. The prompt is left-padded to a multiple of 32 and the cache to
    a multiple of 128, so prefill compiles once per bucket and the decode step once."""
    from zipcal_jax.models.llama import positions_from_mask  # here: llama imports this module

    ids = np.asarray(input_ids, np.int32)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {ids.shape}")
    mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    if mask.shape != ids.shape or not mask.any(axis=1).all():
        raise ValueError("attention_mask must match input_ids and mark at least one real token per row")
    if max_new_tokens <= 0:
        return ids
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    B, T0 = ids.shape
    Tp = _round_up(T0, 32)
    ids_p, mask_p = np.pad(ids, ((0, 0), (Tp - T0, 0))), np.pad(mask, ((0, 0), (Tp - T0, 0)))
    S = _round_up(Tp + max_new_tokens, 128)
    kv_valid = np.zeros((B, S), bool)
    kv_valid[:, :Tp] = mask_p
    graphdef, state = nnx.split(model)
    cache = init_cache(model.cfg, B, S, model.dtype)
    positions = np.asarray(positions_from_mask(jnp.asarray(mask_p)))
    last = Tp - 1 - np.argmax(mask_p[:, ::-1], axis=1)  # last real token per row
    # kv_valid is copied into each call: it is edited in place between steps.
    logits, cache = _step(graphdef, state, ids_p, positions, last, kv_valid.copy(), cache, 0)
    next_pos = mask_p.sum(axis=1).astype(np.int32)
    key = jax.random.key(seed)
    out = np.full((B, max_new_tokens), eos_id if eos_id is not None else 0, np.int32)
    done = np.zeros(B, bool)
    for i in range(max_new_tokens):
        tok = np.asarray(_sample(logits, jax.random.fold_in(key, i), float(temperature), top_k))
        if eos_id is not None:
            tok = np.where(done, eos_id, tok)
            done |= tok == eos_id
        out[:, i] = tok
        if i == max_new_tokens - 1 or done.all():
            break
        kv_valid[:, Tp + i] = True
        pos = (next_pos + i)[:, None]
        zeros = np.zeros(B, np.int32)
        logits, cache = _step(graphdef, state, tok[:, None], pos, zeros, kv_valid.copy(), cache, Tp + i)
    return np.concatenate([ids, out], axis=1)
