"""Perplexity against the Wanda/SparseGPT/GPTQ evaluation loop run in transformers (no network).

The reference below is written from ``wanda/lib/eval.py`` ``eval_ppl_wikitext``: tokenize the
joined text once with an HF tokenizer, cut ``numel // seqlen`` windows, per window torch
``CrossEntropyLoss`` on the shifted logits times ``seqlen``, ``exp(sum / (windows * seqlen))``.
The model is a tiny random ``LlamaForCausalLM`` (300 ids, matching the ``tiny_tokenizer``
fixture) saved with ``save_pretrained`` and loaded with ``load_hf_folder``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from zipcal_jax.data import builtins
from zipcal_jax.evals import perplexity
from zipcal_jax.models.checkpoints import load_hf_folder
from zipcal_jax.models.tokenizers import TextTokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from hf_models import tiny_hf_llama  # noqa: E402

pytestmark = pytest.mark.usefixtures("highest_precision")

SEQLEN = 64
RTOL = 1e-4


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Four pieces of Python reference prose: about 30 windows of 64 tokens, with a tail."""
    return [doc[:1600] for doc in builtins.pydoc_documents()[:4]]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    hf = tiny_hf_llama(vocab_size=300, tie_word_embeddings=False)
    path = tmp_path_factory.mktemp("tiny-ppl")
    hf.save_pretrained(path)
    return hf, load_hf_folder(path), path


@pytest.fixture(scope="module")
def bos_tokenizer(tiny_tokenizer):
    """A copy of the tiny tokenizer that adds ``<|endoftext|>`` (id 0) as BOS, like LLaMA's."""
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_str(tiny_tokenizer.to_str())
    tok.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]
    )
    return tok


def reference_ppl(hf, tokenizer, text: str, seqlen: int, max_windows: int | None = None) -> tuple[float, int]:
    """(ppl, numel) by the reference loop, batch size 1, float32."""
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    enc = hf_tok(text, return_tensors="pt").input_ids  # (1, numel)
    nsamples = enc.numel() // seqlen
    if max_windows is not None:
        nsamples = min(nsamples, max_windows)
    loss_fct = torch.nn.CrossEntropyLoss()
    nlls = []
    with torch.no_grad():
        for i in range(nsamples):
            batch = enc[:, i * seqlen : (i + 1) * seqlen]
            lm_logits = hf(batch).logits
            shift_logits = lm_logits[:, :-1, :].contiguous()
            shift_labels = batch[:, 1:]
            loss = loss_fct(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1))
            nlls.append(loss.float() * seqlen)
    return torch.exp(torch.stack(nlls).sum() / (nsamples * seqlen)).item(), enc.numel()


def test_matches_reference_loop(model, tiny_tokenizer, texts):
    hf, ours, _ = model
    ref, numel = reference_ppl(hf, tiny_tokenizer, "\n\n".join(texts), SEQLEN)
    windows = numel // SEQLEN
    assert numel % SEQLEN and windows % 3, "the test needs a tail and a partial last batch"
    out = perplexity.evaluate(ours, tiny_tokenizer, texts, SEQLEN, batch_size=3, progress=False)
    assert out["ppl"] == pytest.approx(ref, rel=RTOL)
    assert out["nll"] == pytest.approx(math.log(out["ppl"]), rel=1e-12)
    assert (out["windows"], out["tokens"], out["seqlen"]) == (windows, windows * SEQLEN, SEQLEN)
    assert out["dtype"] == "float32" and out["batch_size"] == 3 and out["seconds"] > 0
    assert out["source"] == "4 text(s)"


def test_max_windows_takes_the_first(model, tiny_tokenizer, texts):
    hf, ours, _ = model
    ref, _ = reference_ppl(hf, tiny_tokenizer, "\n\n".join(texts), SEQLEN, max_windows=5)
    out = perplexity.evaluate(
        ours, tiny_tokenizer, texts, SEQLEN, max_windows=5, batch_size=2, progress=False
    )
    assert (out["windows"], out["tokens"]) == (5, 5 * SEQLEN)
    assert out["ppl"] == pytest.approx(ref, rel=RTOL)


def test_batch_size_and_head_chunks_do_not_change_scores(model, tiny_tokenizer, texts, monkeypatch):
    _, ours, _ = model
    windows = perplexity.token_windows(tiny_tokenizer, texts, SEQLEN, max_windows=7)
    assert windows.shape == (7, SEQLEN) and windows.dtype == np.int32
    whole = perplexity.score_windows(ours, windows, batch_size=2, progress=False)
    one_by_one = perplexity.score_windows(ours, windows, batch_size=1, progress=False)
    np.testing.assert_allclose(one_by_one, whole, rtol=1e-5)
    # Force the head into 8 chunks of 8 positions (63 scored + 1 padded) for a batch of 2.
    monkeypatch.setattr(perplexity, "_LOGITS_PER_CHUNK", 2 * 300 * 8)
    assert perplexity._chunking(SEQLEN, 2, 300) == (8, 8)
    chunked = perplexity.score_windows(ours, windows, batch_size=2, progress=False)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5)


def test_txt_file_spec_and_list_agree(model, tiny_tokenizer, texts, tmp_path):
    _, ours, _ = model
    path = tmp_path / "held_out.txt"
    path.write_text("\n\n".join(texts), encoding="utf-8")
    run = dict(seqlen=SEQLEN, max_windows=6, batch_size=2, progress=False)
    from_list = perplexity.evaluate(ours, tiny_tokenizer, texts, **run)
    from_path = perplexity.evaluate(ours, tiny_tokenizer, path, **run)
    from_str = perplexity.evaluate(ours, tiny_tokenizer, str(path), **run)
    from_spec = perplexity.evaluate(ours, tiny_tokenizer, f"{path}?unit=document", **run)
    for out in (from_path, from_str, from_spec):
        assert out["ppl"] == pytest.approx(from_list["ppl"], rel=1e-6)
    assert from_path["source"] == str(path) and from_spec["source"].endswith("?unit=document")


def test_tokenizer_forms_agree(model, tiny_tokenizer, texts):
    """Raw ``tokenizers.Tokenizer``, ``TextTokenizer``, a transformers fast tokenizer and a tokenizer
    with truncation and fixed-length padding switched on all give the same windows."""
    from tokenizers import Tokenizer

    expected = perplexity.token_windows(tiny_tokenizer, texts, SEQLEN)
    truncating = Tokenizer.from_str(tiny_tokenizer.to_str())
    truncating.enable_truncation(16)
    truncating.enable_padding(pad_id=1, pad_token="<pad>", length=16)
    for tok in (
        TextTokenizer(tiny_tokenizer),
        transformers.PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer),
        truncating,
    ):
        np.testing.assert_array_equal(perplexity.token_windows(tok, texts, SEQLEN), expected)
    assert truncating.truncation is not None  # the caller's tokenizer is left as it was


def test_bos_tokenizer_marks_only_the_first_window(model, bos_tokenizer, texts):
    hf, ours, _ = model
    windows = perplexity.token_windows(bos_tokenizer, texts, SEQLEN)
    assert windows[0, 0] == 0 and (windows == 0).sum() == 1  # one BOS, at the very start
    ref, _ = reference_ppl(hf, bos_tokenizer, "\n\n".join(texts), SEQLEN, max_windows=4)
    out = perplexity.evaluate(ours, bos_tokenizer, texts, SEQLEN, max_windows=4, batch_size=2, progress=False)
    assert out["ppl"] == pytest.approx(ref, rel=RTOL)


def test_too_short_source_says_what_fits(model, tiny_tokenizer):
    _, ours, _ = model
    with pytest.raises(
        ValueError, match=r"only \d+ tokens, fewer than one window of seqlen=2048.*seqlen <= "
    ):
        perplexity.evaluate(ours, tiny_tokenizer, ["A short text."], 2048, progress=False)
    with pytest.raises(ValueError, match="seqlen must be >= 2"):
        perplexity.token_windows(tiny_tokenizer, "some text", 1)


def test_ids_outside_the_vocabulary_are_refused(model):
    _, ours, _ = model
    with pytest.raises(ValueError, match="vocabulary has 300 ids"):
        perplexity.score_windows(ours, np.full((1, 8), 300), progress=False)


@pytest.mark.parametrize("name", ["wikitext2", "c4"])
def test_hub_sources_offline_say_what_to_use(model, tiny_tokenizer, name, monkeypatch):
    _, ours, _ = model
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # even if imported before the env was set
    with pytest.raises(ConnectionError, match=r"offline source.*'pydoc'.*local \.txt file"):
        perplexity.evaluate(ours, tiny_tokenizer, name, progress=False)


def test_hub_sources_follow_the_reference_recipes(model, tiny_tokenizer, monkeypatch):
    """wikitext2: the test split joined with "\\n\\n"; c4: the first 1100 validation documents joined
    with " ", at most 256 windows. ``datasets.load_dataset`` is replaced by a fake (no network)."""
    datasets = pytest.importorskip("datasets")
    docs = [
        f"Document {i}: calibration data decides which weights a pruned model keeps." for i in range(1200)
    ]
    calls = []

    def fake_load_dataset(path, name=None, *, split=None, data_files=None):
        calls.append((path, name, split, data_files))
        return datasets.Dataset.from_dict({"text": docs if path == "allenai/c4" else docs[:3]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert perplexity.resolve_source("wikitext2") == ("\n\n".join(docs[:3]), "wikitext2", None)
    assert perplexity.resolve_source("c4") == (" ".join(docs[:1100]), "c4", 256)
    assert calls[0] == ("wikitext", "wikitext-2-raw-v1", "test", None)
    assert calls[1] == (
        "allenai/c4", None, "validation", {"validation": "en/c4-validation.00000-of-00008.json.gz"}
    )  # fmt: skip
    _, ours, _ = model
    out = perplexity.evaluate(ours, tiny_tokenizer, "c4", seqlen=8, batch_size=64, progress=False)
    assert (out["windows"], out["tokens"], out["source"]) == (256, 256 * 8, "c4")


def test_named_sources():
    names = perplexity.named_sources()
    assert set(names) == {"wikitext2", "c4", "pydoc", "kjv", "devil"}
    assert perplexity.NAMED_SOURCES["c4"].max_windows == 256
    assert perplexity.NAMED_SOURCES["pydoc"].spec == "builtin:pydoc?split=test&unit=document"


def _has_text_splits() -> bool:
    from zipcal_jax.data import parse_spec

    try:
        parse_spec("builtin:pydoc?split=test")
    except ValueError:
        return False
    return True


@pytest.mark.skipif(not _has_text_splits(), reason="zipcal_jax.data has no split= for built-ins yet")
def test_pydoc_held_out_text(model, tiny_tokenizer):
    from zipcal_jax.data import load_texts

    _, ours, _ = model
    out = perplexity.evaluate(
        ours, tiny_tokenizer, "pydoc", SEQLEN, max_windows=3, batch_size=2, progress=False
    )
    assert out["source"] == "pydoc (builtin:pydoc?split=test&unit=document)"
    held_out = load_texts("builtin:pydoc?split=test&unit=document").texts
    same = perplexity.evaluate(
        ours, tiny_tokenizer, held_out, SEQLEN, max_windows=3, batch_size=2, progress=False
    )
    assert out["ppl"] == same["ppl"] and out["windows"] == 3


def test_bfloat16_model_is_close_to_float32(model, tiny_tokenizer, texts):
    _, ours, path = model
    model16 = load_hf_folder(path, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    run = dict(seqlen=SEQLEN, max_windows=6, batch_size=2, progress=False)
    out16 = perplexity.evaluate(model16, tiny_tokenizer, texts, **run)
    out32 = perplexity.evaluate(ours, tiny_tokenizer, texts, **run)
    assert (out16["dtype"], out16["param_dtype"]) == ("bfloat16", "bfloat16")
    assert math.isfinite(out16["ppl"])
    assert out16["ppl"] == pytest.approx(out32["ppl"], rel=0.05)
