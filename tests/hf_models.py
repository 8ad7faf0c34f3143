"""Tiny random ``transformers`` LLaMAs for parity tests (test-only; imports torch)."""

from __future__ import annotations

import torch
import transformers

TINY = dict(
    hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, initializer_range=0.08, rms_norm_eps=1e-5,
)  # fmt: skip


def tiny_hf_llama(seed: int = 0, **config) -> transformers.LlamaForCausalLM:
    """A random ``LlamaForCausalLM`` in eval mode: ``TINY`` overridden by ``config``; norm
    weights and biases randomised too, so a mis-mapped one changes the logits."""
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**TINY, **config})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.2)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05)
    return model
