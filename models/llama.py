"""LLaMA in Flax NNX: config, pure math, modules, layer-wise API, generation, load/save.

One model, one file. Parameter names follow Hugging Face (``self_attn.q_proj``, ``mlp.gate_proj``,
``input_layernorm``), so the checkpoint table in :mod:`zipcal_jax.models.checkpoints` is short.

Layouts and conventions:

* RoPE uses the HF *rotate-half* layout (the first and second halves of each head are the two
  coordinates of a rotation pair), so HF ``q_proj``/``k_proj`` weights load with no permutation.
  Meta's original checkpoints (and GGUF files) interleave the pairs instead; HF's conversion
  script permutes q/k rows ``w.view(n, d // n // 2, 2, d_in).transpose(1, 2)`` — undo that before
  loading such weights here.
* ``nnx.Linear`` kernels are ``(d_in, d_out)``; :func:`get_linear_weight` and
  :func:`set_linear_weight` speak the papers' ``W: (d_out, d_in)`` layout.
* Positions come from the attention mask (``cumsum(mask) - 1``, clipped at 0), so left- and
  right-padded batches give the real tokens the same logits as the unpadded sequences. (HF
  ``LlamaForCausalLM.forward`` uses ``arange(T)`` unless ``position_ids`` is passed; its
  ``generate`` derives them from the mask the same way as here.)
* Sharding helpers live in :mod:`zipcal_jax.models.sharding` and are re-exported here;
  :func:`load` / :func:`save` delegate to :mod:`zipcal_jax.models.persist`.
* Generation (:func:`init_cache`, :func:`generate`: KV cache, jitted decode step, sampling) lives
  in :mod:`zipcal_jax.models.generation` and is re-exported here.
* Parameters live in ``param_dtype``; compute runs in ``dtype``; RMSNorm statistics, RoPE
  angles, attention softmax and the returned logits are float32.

Shapes: ``B`` batch, ``T`` query length, ``S`` key length, ``D`` hidden, ``N`` query heads,
``K`` key/value heads, ``G = N // K``, ``H`` head dim, ``F`` MLP width, ``V`` vocab.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zipcal_jax.models.generation import generate, init_cache
from zipcal_jax.models.sharding import DEFAULT_RULES, batch_sharding, logical_axes, param_sharding, shard

Array = jax.Array
DType = Any

__all__ = ["DEFAULT_RULES", "LINEAR_MODULES", "MLP", "Attention", "DecoderLayer", "Llama", "LlamaConfig",
    "RMSNorm", "RopeScaling", "apply_rope", "attention", "batch_sharding", "forward", "generate",
    "get_linear_weight", "init_cache", "linear_names", "load", "logical_axes", "param_sharding",
    "positions_from_mask", "rms_norm", "rope_frequencies", "save", "set_linear_weight", "shard"]  # fmt: skip


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling. ``linear``: every inverse frequency divided by ``factor``.
    ``llama3``: the Llama-3.1 wavelength bands (low frequencies divided by ``factor``, high ones
    kept, a smooth blend between ``original_max_position_embeddings / high_freq_factor`` and
    ``original_max_position_embeddings / low_freq_factor``)."""

    rope_type: Literal["linear", "llama3"]
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Architecture of a LLaMA-family decoder (HF field names)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False

    def __post_init__(self) -> None:
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")

    # -- HF adapters
    @classmethod
    def from_hf_config(cls, d: Mapping[str, Any]) -> LlamaConfig:
        """Read an HF ``config.json`` dict (transformers 4.x ``rope_theta``/``rope_scaling`` or 5.x
        ``rope_parameters``). Raises ValueError for other architectures or unsupported options."""
        model_type = d.get("model_type")
        if model_type is not None and model_type != "llama":
            raise ValueError(f"unsupported model_type {model_type!r}: only 'llama' checkpoints load here")
        other = [a for a in d.get("architectures") or [] if a != "LlamaForCausalLM"]
        if other:
            raise ValueError(f"unsupported architecture {other[0]!r}: only LlamaForCausalLM loads here")
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads")  # fmt: skip
        missing = [k for k in required if d.get(k) is None]
        if missing:
            raise ValueError(f"config is missing {', '.join(missing)}")
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported hidden_act {d['hidden_act']!r}: LLaMA uses 'silu'")
        legacy = dict(d.get("rope_scaling") or {})
        params = {**legacy, **dict(d.get("rope_parameters") or {})}
        rope_type = params.get("rope_type", params.get("type")) or "default"
        scaling: RopeScaling | None = None
        if rope_type == "linear":
            scaling = RopeScaling("linear", float(params["factor"]))
        elif rope_type == "llama3":
            orig = params.get("original_max_position_embeddings", d.get("max_position_embeddings", 8192))
            scaling = RopeScaling(
                "llama3",
                float(params["factor"]),
                float(params.get("low_freq_factor", 1.0)),
                float(params.get("high_freq_factor", 4.0)),
                int(orig),
            )
        elif rope_type != "default":
            raise ValueError(f"unsupported rope type {rope_type!r}: supported are default, linear, llama3")
        heads = int(d["num_attention_heads"])
        return cls(
            vocab_size=int(d["vocab_size"]),
            hidden_size=int(d["hidden_size"]),
            intermediate_size=int(d["intermediate_size"]),
            num_hidden_layers=int(d["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(d.get("num_key_value_heads") or heads),
            head_dim=int(d.get("head_dim") or d["hidden_size"] // heads),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=float(params.get("rope_theta", d.get("rope_theta", 10000.0))),
            rope_scaling=scaling,
            max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            attention_bias=bool(d.get("attention_bias", False)),
            mlp_bias=bool(d.get("mlp_bias", False)),
        )

    def to_hf_config(self) -> dict[str, Any]:
        """An HF ``config.json`` dict (transformers 5 style: RoPE in ``rope_parameters``)."""
        rope: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling is not None:
            rope.update(dataclasses.asdict(self.rope_scaling))
            if self.rope_scaling.rope_type == "linear":
                for k in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
                    rope.pop(k)
        fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
                  "max_position_embeddings", "tie_word_embeddings", "attention_bias", "mlp_bias")  # fmt: skip
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            **{k: getattr(self, k) for k in fields},
            "rope_parameters": rope,
        }

    # -- presets from the published HF config.json files
    @classmethod
    def smollm2_135m(cls) -> LlamaConfig:
        """HuggingFaceTB/SmolLM2-135M(-Instruct)."""
        return cls(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                   num_attention_heads=9, num_key_value_heads=3, head_dim=64, rms_norm_eps=1e-5,
                   rope_theta=100000.0, max_position_embeddings=8192, tie_word_embeddings=True)  # fmt: skip

    @classmethod
    def llama3_2_1b(cls) -> LlamaConfig:
        """meta-llama/Llama-3.2-1B."""
        return cls(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                   head_dim=64, rope_scaling=RopeScaling("llama3", 32.0), tie_word_embeddings=True,
                   **_LLAMA3)  # fmt: skip

    @classmethod
    def llama3_2_3b(cls) -> LlamaConfig:
        """meta-llama/Llama-3.2-3B."""
        return cls(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                   head_dim=128, rope_scaling=RopeScaling("llama3", 32.0), tie_word_embeddings=True,
                   **_LLAMA3)  # fmt: skip

    @classmethod
    def llama3_1_8b(cls) -> LlamaConfig:
        """meta-llama/Llama-3.1-8B."""
        return cls(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                   head_dim=128, rope_scaling=RopeScaling("llama3", 8.0), tie_word_embeddings=False,
                   **_LLAMA3)  # fmt: skip

    @classmethod
    def llama2_7b(cls) -> LlamaConfig:
        """meta-llama/Llama-2-7b-hf."""
        return cls(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                   num_attention_heads=32, num_key_value_heads=32, head_dim=128, rms_norm_eps=1e-5,
                   rope_theta=10000.0, max_position_embeddings=4096, tie_word_embeddings=False)  # fmt: skip


# Shared by the Llama 3.x presets.
_LLAMA3 = dict(vocab_size=128256, num_key_value_heads=8, rms_norm_eps=1e-5, rope_theta=500000.0,
               max_position_embeddings=131072)  # fmt: skip


# ----------------------------------------------------------------------------- pure math


def rms_norm(x: Array, w: Array, eps: float) -> Array:
    """RMSNorm: ``x / sqrt(mean(x**2) + eps) * w``; statistics in float32, result in ``x.dtype``.
    x: (..., D); w: (D,)."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype) * w.astype(x.dtype)


@functools.lru_cache(maxsize=64)
def rope_frequencies(cfg: LlamaConfig) -> np.ndarray:
    """Inverse frequencies ``theta ** (-2i / H)``, i < H/2, float32 (H/2,), with the config's scaling.

    ``llama3`` (Llama 3.1): wavelength ``w = 2π / f``; ``w > L / low_freq_factor`` → ``f / factor``;
    ``w < L / high_freq_factor`` → ``f``; between, ``(1 - s) f / factor + s f`` with
    ``s = (L / w - low_freq_factor) / (high_freq_factor - low_freq_factor)``, ``L`` the original
    context length. Computed in float32 like the HF reference.
    """
    H = cfg.head_dim
    exponent = np.arange(0, H, 2, dtype=np.float32) / np.float32(H)
    inv = (np.float32(1.0) / np.float32(cfg.rope_theta) ** exponent).astype(np.float32)
    rs = cfg.rope_scaling
    if rs is None or rs.rope_type == "linear":
        out = inv if rs is None else (inv / np.float32(rs.factor)).astype(np.float32)
        out.setflags(write=False)  # cached: shared by every caller
        return out
    factor = np.float32(rs.factor)
    L = np.float32(rs.original_max_position_embeddings)
    low_wavelen, high_wavelen = L / np.float32(rs.low_freq_factor), L / np.float32(rs.high_freq_factor)
    wavelen = np.float32(2 * math.pi) / inv
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
    s = (L / wavelen - np.float32(rs.low_freq_factor)) / np.float32(rs.high_freq_factor - rs.low_freq_factor)
    smoothed = (1 - s) * scaled / factor + s * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    out = np.where(medium, smoothed, scaled).astype(np.float32)
    out.setflags(write=False)  # cached: shared by every caller
    return out


def apply_rope(x: Array, positions: Array, inv_freq: Array) -> Array:
    """Rotate-half RoPE. x: (B, T, N, H); positions: (B, T) int; inv_freq: (H/2,) float32.
    Angles and the rotation in float32; result in ``x.dtype``."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)  # (B, T, H/2)
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # (B, T, 1, H)
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x32 * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


def attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """Grouped-query softmax attention. q: (B, T, N, H); k, v: (B, S, K, H); mask: (B, T, S) bool,
    True where query t may attend key s. Scores and softmax in float32. Returns (B, T, N*H).
    Rows with no allowed key get a uniform (finite) average instead of NaN."""
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    G = N // K
    # Heads sharing a KV head are stacked along the query axis: one (G*T, H) x (H, S) matmul
    # per (batch, KV head) instead of G small ones (about 1.5x faster on CPU).
    qg = q.reshape(B, T, K, G, H).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, H)
    kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # (B, K, S, H)
    scores = jnp.einsum("BKQH,BKSH->BKQS", qg, kt, preferred_element_type=jnp.float32) * (H**-0.5)
    scores = jnp.where(mask[:, None, None], scores.reshape(B, K, G, T, S), jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype).reshape(B, K, G * T, S)
    out = jnp.einsum("BKQS,BKSH->BKQH", probs, vt).reshape(B, K, G, T, H)
    return out.transpose(0, 3, 1, 2, 4).reshape(B, T, N * H)


def positions_from_mask(attention_mask: Array) -> Array:
    """(B, T) mask → (B, T) int32 positions: ``cumsum(mask) - 1`` clipped at 0 (pads get 0)."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


# ----------------------------------------------------------------------------- modules

KVCache = tuple[Array, Array]  # per layer: k, v (B, S, K, H)


class RMSNorm(nnx.Module):
    """RMSNorm with an HF-named ``weight`` (D,)."""

    def __init__(self, dim: int, eps: float, *, param_dtype: DType = jnp.float32):
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        return rms_norm(x, self.weight[...], self.eps)


class Attention(nnx.Module):
    """Self-attention with q/k/v/o ``nnx.Linear`` projections, RoPE and GQA."""

    def __init__(self, cfg: LlamaConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        self.cfg = cfg
        D, N, K, H = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        kw = dict(use_bias=cfg.attention_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = nnx.Linear(D, N * H, **kw)
        self.k_proj = nnx.Linear(D, K * H, **kw)
        self.v_proj = nnx.Linear(D, K * H, **kw)
        self.o_proj = nnx.Linear(N * H, D, **kw)

    def __call__(
        self, x: Array, positions: Array, mask: Array, kv_cache: KVCache | None = None, cache_index: Any = 0
    ) -> tuple[Array, KVCache]:
        """x: (B, T, D); positions: (B, T); mask: (B, T, S) bool. Without a cache S = T and the
        returned kv is this call's (k, v); with one, k/v are written at ``cache_index`` into the
        (B, S, K, H) cache, attention runs over the whole cache, and the updated cache returns."""
        B, T, _ = x.shape
        N, K, H = self.cfg.num_attention_heads, self.cfg.num_key_value_heads, self.cfg.head_dim
        inv_freq = rope_frequencies(self.cfg)
        q = apply_rope(self.q_proj(x).reshape(B, T, N, H), positions, inv_freq)  # (B, T, N, H)
        k = apply_rope(self.k_proj(x).reshape(B, T, K, H), positions, inv_freq)  # (B, T, K, H)
        v = self.v_proj(x).reshape(B, T, K, H)
        if kv_cache is not None:
            start = (0, cache_index, 0, 0)
            k = jax.lax.dynamic_update_slice(kv_cache[0], k.astype(kv_cache[0].dtype), start)
            v = jax.lax.dynamic_update_slice(kv_cache[1], v.astype(kv_cache[1].dtype), start)
        return self.o_proj(attention(q, k, v, mask)), (k, v)


class MLP(nnx.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, cfg: LlamaConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        D, F = cfg.hidden_size, cfg.intermediate_size
        kw = dict(use_bias=cfg.mlp_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = nnx.Linear(D, F, **kw)
        self.up_proj = nnx.Linear(D, F, **kw)
        self.down_proj = nnx.Linear(F, D, **kw)

    def __call__(self, x: Array) -> Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    """Pre-norm block: ``h + attn(norm(h))`` then ``h + mlp(norm(h))``."""

    def __init__(self, cfg: LlamaConfig, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)
        self.self_attn = Attention(cfg, **kw)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)
        self.mlp = MLP(cfg, **kw)

    def __call__(self, h: Array, positions: Array, mask: Array) -> Array:
        """h: (B, T, D) in the compute dtype; positions: (B, T) int32; mask: (B, T, T) bool (True:
        query t may attend key s), all as :meth:`Llama.prepare_inputs` returns. Returns (B, T, D)."""
        return self.decode(h, positions, mask)[0]

    def decode(
        self, h: Array, positions: Array, mask: Array, kv_cache: KVCache | None = None, cache_index: Any = 0
    ) -> tuple[Array, KVCache]:
        """Like ``__call__`` but with an optional KV cache (see :meth:`Attention.__call__`)."""
        a, kv = self.self_attn(self.input_layernorm(h), positions, mask, kv_cache, cache_index)
        h = h + a
        return h + self.mlp(self.post_attention_layernorm(h)), kv


class Llama(nnx.Module):
    """LLaMA causal LM: ``embed`` → ``layers`` → ``final_norm`` → ``lm_head`` (None when tied:
    logits = h @ embed.embedding.T)."""

    def __init__(
        self,
        cfg: LlamaConfig,
        *,
        dtype: DType = jnp.float32,
        param_dtype: DType = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.cfg, self.dtype = cfg, dtype
        D, V = cfg.hidden_size, cfg.vocab_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embed = nnx.Embed(V, D, **kw)
        self.layers = nnx.List([DecoderLayer(cfg, **kw) for _ in range(cfg.num_hidden_layers)])
        self.final_norm = RMSNorm(D, cfg.rms_norm_eps, param_dtype=param_dtype)
        self.lm_head = None if cfg.tie_word_embeddings else nnx.Linear(D, V, use_bias=False, **kw)

    def embed_tokens(self, input_ids: Array) -> Array:
        """(B, T) int → (B, T, D) in the compute dtype."""
        return self.embed(input_ids)

    def prepare_inputs(
        self, input_ids: Array, attention_mask: Array | None = None
    ) -> tuple[Array, Array, Array]:
        """Everything a layer needs: ``h`` (B, T, D), ``positions`` (B, T) int32 from the mask, and
        ``mask`` (B, T, T) bool = causal AND key is a real token. Run layer by layer with
        ``for layer in model.layers: h = layer(h, positions, mask)`` then ``model.head(h)``."""
        input_ids = jnp.asarray(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, bool)
        attention_mask = jnp.asarray(attention_mask).astype(bool)
        T = input_ids.shape[1]
        mask = jnp.tril(jnp.ones((T, T), bool)) & attention_mask[:, None, :]  # (B, T, T)
        return self.embed_tokens(input_ids), positions_from_mask(attention_mask), mask

    def head(self, h: Array) -> Array:
        """Final norm + LM head: (B, T, D) → float32 logits (B, T, V)."""
        h = self.final_norm(h)
        if self.lm_head is None:  # tied: contract with the embedding rows, no transposed copy
            logits = jnp.einsum("BTD,VD->BTV", h, self.embed.embedding[...].astype(h.dtype))
        else:
            logits = self.lm_head(h)
        return logits.astype(jnp.float32)

    def __call__(
        self, input_ids: Array, attention_mask: Array | None = None, *, remat: bool | Callable = False
    ) -> Array:
        """input_ids: (B, T) int; attention_mask: (B, T), 1/True = real token, or None.
        Returns float32 logits (B, T, V).

        ``remat`` (for training; the logits are the same): ``True`` wraps every decoder layer in
        ``nnx.remat`` (``jax.checkpoint``), so the backward pass recomputes a layer's activations
        instead of keeping them (memory ~ one layer's activations plus the layer inputs); a
        ``jax.checkpoint_policies`` policy (e.g. ``dots_with_no_batch_dims_saveable``) is passed to
        ``nnx.remat`` as ``policy``. ``False`` (default) runs the layers as they are."""
        h, positions, mask = self.prepare_inputs(input_ids, attention_mask)
        if not callable(remat) and not isinstance(remat, (bool, np.bool_)):
            raise ValueError(f"remat={remat!r} must be True, False or a jax.checkpoint_policies policy")
        if not remat:
            for layer in self.layers:
                h = layer(h, positions, mask)
            return self.head(h)
        policy = remat if callable(remat) else None
        run = nnx.remat(lambda layer, h: layer(h, positions, mask), policy=policy)
        for layer in self.layers:
            h = run(layer, h)
        return self.head(h)


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef: nnx.GraphDef, state: nnx.State, input_ids: Array, attention_mask: Array) -> Array:
    return nnx.merge(graphdef, state)(input_ids, attention_mask)


def forward(model: Llama, input_ids: Array, attention_mask: Array | None = None) -> Array:
    """Jitted ``model(input_ids, attention_mask)``; compiles once per input shape."""
    ids = jnp.asarray(input_ids, jnp.int32)
    mask = jnp.ones(ids.shape, bool) if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
    return _forward(*nnx.split(model), ids, mask)


# ----------------------------------------------------------------------------- linear access

# The linears of a decoder layer, in forward order (the compression targets).
LINEAR_MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip


def linear_names(model: Llama) -> list[str]:
    """Names of the decoder-layer linears in forward order, e.g. ``"layers.3.self_attn.q_proj"``."""
    return [f"layers.{i}.{n}" for i in range(len(model.layers)) for n in LINEAR_MODULES]


def _linear(model: Llama, name: str) -> nnx.Linear:
    obj: Any = model
    try:
        for part in name.split("."):
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    except (AttributeError, IndexError) as e:
        raise ValueError(f"no linear named {name!r}; see linear_names(model)") from e
    if not isinstance(obj, nnx.Linear):
        raise ValueError(f"{name!r} is not a linear layer; see linear_names(model)")
    return obj


def get_linear_weight(model: Llama, name: str) -> np.ndarray:
    """The weight of linear ``name`` as ``W: (d_out, d_in)`` (NumPy, parameter dtype). A kernel split
    over several processes' devices is gathered (a collective: every process must call this)."""
    from zipcal_jax.distributed import local_value

    return np.asarray(local_value(_linear(model, name).kernel[...])).T


def set_linear_weight(model: Llama, name: str, W: Any) -> None:
    """Replace linear ``name``'s weight with ``W: (d_out, d_in)`` (cast to the parameter dtype,
    placed with the old kernel's sharding)."""
    kernel = _linear(model, name).kernel
    old = kernel[...]
    W = jnp.asarray(W)
    if W.shape != old.shape[::-1]:
        raise ValueError(f"{name}: expected W of shape (d_out, d_in) = {old.shape[::-1]}, got {W.shape}")
    from zipcal_jax.distributed import put_global  # (also a kernel over several processes' devices)

    kernel.set_value(put_global(W.T.astype(old.dtype), old.sharding))


# ----------------------------------------------------------------------------- load / save


def load(
    spec: Any, *, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32, mesh: Any = None
) -> tuple[Llama, Any]:
    """``(model, tokenizer)`` from an HF folder, a ``.gguf`` file, a folder written by :func:`save`, a
    named default (``"smollm2-135m"``) or a hub id; ``tokenizer`` is a ``TextTokenizer`` or None.
    ``dtype`` is the compute dtype, ``param_dtype`` the storage dtype; with ``mesh`` parameters load
    sharded. See :func:`zipcal_jax.models.persist.load`."""
    from zipcal_jax.models import persist

    return persist.load(spec, dtype=dtype, param_dtype=param_dtype, mesh=mesh)


def save(model: Llama, path: Any, format: Literal["orbax", "hf"] = "orbax", *, tokenizer: Any = None) -> Any:
    """Save ``model`` (and ``tokenizer``) to the folder ``path`` as an Orbax checkpoint (bit-exact with
    :func:`load`) or an HF folder that ``transformers`` loads. Refuses to overwrite a non-empty folder
    that is not a previous save. See :func:`zipcal_jax.models.persist.save`."""
    from zipcal_jax.models import persist

    return persist.save(model, path, format, tokenizer=tokenizer)
