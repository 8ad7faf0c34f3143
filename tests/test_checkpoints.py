"""HF safetensors loading: the name table, every-problem-at-once errors, tied heads, bf16 files,
sharded indexes, corrupt files, the hub fallback, and the inverse map (no network)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from zipcal_jax.models import checkpoints, llama
from zipcal_jax.models.checkpoints import (
    SafetensorsState,
    hf_name,
    load_hf_folder,
    load_hf_hub,
    load_hf_state,
    model_path,
    state_from_model,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from hf_models import tiny_hf_llama  # noqa: E402

pytestmark = pytest.mark.usefixtures("highest_precision")


def _hf_model(tied: bool, kv: int = 2, seed: int = 0):
    return tiny_hf_llama(seed, vocab_size=200, num_key_value_heads=kv, tie_word_embeddings=tied)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Untied and tied tiny models saved with ``save_pretrained``: name → (hf, folder, state dict)."""
    out = {}
    for name, tied in (("untied", False), ("tied", True)):
        hf = _hf_model(tied)
        path = tmp_path_factory.mktemp(name)
        hf.save_pretrained(path)
        out[name] = SimpleNamespace(hf=hf, path=path, state=load_file(path / "model.safetensors"))
    return out


def _cfg(folder) -> llama.LlamaConfig:
    return llama.LlamaConfig.from_hf_config(json.loads((folder / "config.json").read_text()))


def _logits(hf, ids) -> np.ndarray:
    with torch.no_grad():
        return hf(torch.tensor(ids, dtype=torch.long)).logits.float().numpy()


IDS = np.random.default_rng(0).integers(0, 200, (2, 11)).astype(np.int32)


def test_name_table_both_directions():
    assert model_path("model.layers.12.self_attn.k_proj.weight") == ("layers.12.self_attn.k_proj.kernel", "T")
    assert model_path("model.layers.3.post_attention_layernorm.weight") == (
        "layers.3.post_attention_layernorm.weight",
        None,
    )
    assert model_path("model.embed_tokens.weight") == ("embed.embedding", None)
    assert model_path("model.layers.0.self_attn.rotary_emb.inv_freq") is None
    assert hf_name("layers.5.mlp.down_proj.kernel") == ("model.layers.5.mlp.down_proj.weight", "T")
    assert hf_name("lm_head.kernel") == ("lm_head.weight", "T")
    for hf, _, _ in checkpoints.HF_TO_MODEL:
        name = hf.format(i=7)
        assert hf_name(model_path(name)[0])[0] == name


@pytest.mark.parametrize("name", ["untied", "tied"])
def test_load_folder_matches_hf_and_round_trips(saved, name):
    s = saved[name]
    model = load_hf_folder(s.path)
    assert (model.lm_head is None) == (name == "tied")
    np.testing.assert_allclose(np.asarray(llama.forward(model, IDS)), _logits(s.hf, IDS), atol=1e-4, rtol=0)
    back = state_from_model(model)
    expected = {k: v for k, v in s.state.items() if not (name == "tied" and k == "lm_head.weight")}
    assert back.keys() == expected.keys()
    for k, v in expected.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_all_problems_reported_together(saved):
    s = saved["untied"]
    state = dict(s.state)
    del state["model.layers.1.mlp.up_proj.weight"]
    state["model.layers.0.self_attn.k_proj.weight"] = np.zeros((64, 64), np.float32)  # kv width is 32
    state["model.layers.0.self_attn.q_norm.weight"] = np.ones(16, np.float32)
    state["model.layers.9.input_layernorm.weight"] = np.ones(64, np.float32)  # a layer the config lacks
    with pytest.raises(ValueError) as e:
        load_hf_state(_cfg(s.path), state)
    msg = str(e.value)
    assert "4 problem(s)" in msg
    assert "missing tensor model.layers.1.mlp.up_proj.weight" in msg
    assert "wrong shape for model.layers.0.self_attn.k_proj.weight: got (64, 64), expected (32, 64)" in msg
    assert "unexpected tensor model.layers.0.self_attn.q_norm.weight" in msg
    assert "unexpected tensor model.layers.9.input_layernorm.weight" in msg


def test_tied_and_untied_lm_head(saved):
    tied, untied = saved["tied"], saved["untied"]
    # Tied: lm_head.weight is ignored whether or not the file has it; the RoPE buffer too.
    extra = {**tied.state, "lm_head.weight": np.zeros((200, 64), np.float32),
             "model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(8, np.float32)}  # fmt: skip
    without = {k: v for k, v in tied.state.items() if k != "lm_head.weight"}
    a = llama.forward(load_hf_state(_cfg(tied.path), extra), IDS)
    b = llama.forward(load_hf_state(_cfg(tied.path), without), IDS)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Untied: lm_head.weight is required.
    state = {k: v for k, v in untied.state.items() if k != "lm_head.weight"}
    with pytest.raises(ValueError, match=r"1 problem\(s\) .*\n  - missing tensor lm_head\.weight\n"):
        load_hf_state(_cfg(untied.path), state)


def test_param_dtype_and_compute_dtype(saved):
    s = saved["untied"]
    model = load_hf_folder(s.path, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    dtypes = {x.dtype for x in jax.tree.leaves(state_from_model(model))}
    assert dtypes == {np.dtype(ml_dtypes.bfloat16)}
    out = llama.forward(model, IDS)
    assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()


def test_bf16_safetensors(saved, tmp_path):
    s = saved["untied"]
    hf16 = _hf_model(tied=False).to(torch.bfloat16)
    hf16.save_pretrained(tmp_path)
    with open(tmp_path / "model.safetensors", "rb") as f:
        assert b'"BF16"' in f.read(4096)
    state = SafetensorsState.from_files([tmp_path / "model.safetensors"])
    w = state["model.layers.0.mlp.gate_proj.weight"]
    assert w.dtype == ml_dtypes.bfloat16 and w.shape == (96, 64)
    ref = hf16.state_dict()["model.layers.0.mlp.gate_proj.weight"].float().numpy()
    np.testing.assert_array_equal(w.astype(np.float32), ref)
    # Loaded as float32 parameters, the model equals a float32 HF model holding the same bf16 values
    # (not ``hf16.float()``: that also keeps HF's RoPE ``inv_freq`` buffer rounded to bf16).
    ref_model = _hf_model(tied=False)
    ref_model.load_state_dict({k: v.float() for k, v in hf16.state_dict().items()})
    model = load_hf_folder(tmp_path)
    np.testing.assert_allclose(
        np.asarray(llama.forward(model, IDS)), _logits(ref_model, IDS), atol=1e-4, rtol=0
    )
    model16 = load_hf_folder(tmp_path, param_dtype=jnp.bfloat16)
    got = np.asarray(model16.layers[0].mlp.gate_proj.kernel[...]).T.astype(np.float32)
    np.testing.assert_array_equal(got, ref)
    assert s.path != tmp_path


def test_sharded_index(saved, tmp_path):
    s = saved["untied"]
    s.hf.save_pretrained(tmp_path, max_shard_size="40KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    model = load_hf_folder(tmp_path)
    np.testing.assert_allclose(np.asarray(llama.forward(model, IDS)), _logits(s.hf, IDS), atol=1e-4, rtol=0)
    first = sorted(set(index["weight_map"].values()))[0]
    (tmp_path / first).unlink()
    with pytest.raises(FileNotFoundError, match=first):
        load_hf_folder(tmp_path)


def test_corrupt_or_truncated_safetensors(saved, tmp_path):
    s = saved["tied"]
    shutil.copy(s.path / "config.json", tmp_path / "config.json")
    raw = (s.path / "model.safetensors").read_bytes()
    target = tmp_path / "model.safetensors"
    for bad in (raw[: len(raw) - 100], raw[:30], b"not a safetensors file at all"):
        target.write_bytes(bad)
        with pytest.raises(ValueError, match=r"model\.safetensors"):
            load_hf_folder(tmp_path)
    save_file({"x": np.ones(3, np.float32)}, str(target))  # a valid file with the wrong tensors
    with pytest.raises(ValueError, match="unexpected tensor x"):
        load_hf_folder(tmp_path)


def test_folder_errors(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_hf_folder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_hf_folder(tmp_path)
    config = json.loads((saved["tied"].path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="safe_serialization"):
        load_hf_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "gpt_neox"}))
    with pytest.raises(ValueError, match="gpt_neox"):
        load_hf_folder(tmp_path)


def test_hub_offline_error_and_success(saved, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("Cannot find the requested files in the local cache (offline).")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError) as e:
        load_hf_hub("someone/some-llama")
    msg = str(e.value)
    assert "someone/some-llama" in msg and "load_hf_folder" in msg and "LocalEntryNotFoundError" in msg

    calls = []

    def fake(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(saved["tied"].path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    model = load_hf_hub("someone/tiny-llama", revision="main")
    assert calls[0][0] == "someone/tiny-llama" and calls[0][1]["revision"] == "main"
    assert set(calls[0][1]["allow_patterns"]) == {"*.json", "*.safetensors"}
    np.testing.assert_allclose(
        np.asarray(llama.forward(model, IDS)), _logits(saved["tied"].hf, IDS), atol=1e-4, rtol=0
    )
