"""GGUF tokenizers: a Hugging Face ``tokenizers.Tokenizer`` rebuilt from GGUF metadata, torch-free.

:func:`tokenizer_from_gguf` reads the ``tokenizer.ggml.*`` fields of a ``.gguf`` file, builds a
byte-level BPE tokenizer with :func:`build_gguf_tokenizer` (vocabulary, merges, the pre-tokenizer
named by ``tokenizer.ggml.pre``, special and user-defined tokens, BOS/EOS post-processor, padding)
and caches it as ``tokenizer.json`` text under :func:`tokenizer_cache_dir`.

The public names are re-exported from :mod:`zipcal_jax.models.tokenizers`, whose
:func:`~zipcal_jax.models.tokenizers.load_tokenizer` is the usual entry point.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

__all__ = ["build_gguf_tokenizer", "tokenizer_cache_dir", "tokenizer_from_gguf"]

# Bump when the GGUF → tokenizer build changes, so stale cache entries are ignored.
_GGUF_BUILD_VERSION = 1
# GGUF token types (llama.cpp ``llama_token_type``).
_CONTROL, _USER_DEFINED = 3, 4
# Split regexes of the pre-tokenizers llama.cpp names in ``tokenizer.ggml.pre``. Vocabularies in
# the GPT-2 family use the ByteLevel pre-tokenizer's own (GPT-2) regex; the StarCoder family first
# isolates every digit; Llama-3 and Qwen2 split with their own regex and match whole words first.
_GPT2_PRE = frozenset({"default", "gpt2", "gpt-2", "olmo", "mpt", "jais"})
_DIGITS_PRE = frozenset({"smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva-7b"})
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
_SPLIT_PRE = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2_SPLIT),
}
_GGUF_MODEL_NAMES = {"llama": "SentencePiece BPE", "t5": "SentencePiece Unigram", "bert": "WordPiece"}


def tokenizer_cache_dir() -> Path:
    """Where built tokenizers are cached: ``<cache_dir()>/tokenizers``."""
    from zipcal_jax.cache import cache_dir

    return cache_dir(create=False) / "tokenizers"


def _cache_file(path: Path) -> Path:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|v{_GGUF_BUILD_VERSION}"
    return tokenizer_cache_dir() / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _write_atomic(target: Path, text: str) -> None:
    from zipcal_jax.cache import atomic_write_bytes

    atomic_write_bytes(target, text.encode("utf-8"))


def tokenizer_from_gguf(path: str | os.PathLike, *, cache: bool = True) -> Tokenizer:
    """The byte-level BPE tokenizer stored in a GGUF file's metadata (no torch, no transformers).

    Reading the GGUF fields takes seconds for a real model, so the result is cached as
    ``tokenizer.json`` text under :func:`tokenizer_cache_dir`, keyed by the file's path, size
    and modification time, and written atomically. See :func:`build_gguf_tokenizer` for the rules.

    Raises:
        NoTokenizerError: the file has no ``tokenizer.ggml.model``.
        ValueError: the tokenizer type is not supported (only ``"gpt2"`` byte-level BPE).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    cached = _cache_file(path) if cache else None
    if cached is not None and cached.is_file():
        with contextlib.suppress(Exception):  # corrupt, or from an incompatible tokenizers version: rebuild
            return Tokenizer.from_file(str(cached))
    tokenizer = build_gguf_tokenizer(_read_gguf_metadata(path), source=str(path))
    if cached is not None:
        try:
            _write_atomic(cached, tokenizer.to_str())
        except OSError as err:
            warnings.warn(f"could not cache the tokenizer of {path} in {cached.parent}: {err}", stacklevel=2)
    return tokenizer


def _field_value(field: Any) -> Any:
    """A ``gguf.ReaderField``'s value; ``contents()`` where gguf has it, else decoded from its parts."""
    if hasattr(field, "contents"):
        return field.contents()
    from gguf import GGUFValueType

    is_string = field.types[-1] == GGUFValueType.STRING
    values = [
        bytes(field.parts[i]).decode("utf-8") if is_string else field.parts[i].tolist()[0] for i in field.data
    ]
    return values if field.types[0] == GGUFValueType.ARRAY else values[0]


def _read_gguf_metadata(path: Path) -> dict[str, Any]:
    """The ``tokenizer.*`` and ``general.architecture`` fields of a GGUF file."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path, "r")
    except Exception as err:
        raise ValueError(f"{path} is not a readable GGUF file ({err})") from err
    return {
        name: _field_value(field)
        for name, field in reader.fields.items()
        if name.startswith("tokenizer.") or name == "general.architecture"
    }


def _split_merge(merge: str, vocab: Mapping[str, int]) -> tuple[str, str]:
    """Split a GGUF merge ``"a b"``; where a token itself holds a space, pick the split found in the vocab."""
    left, _, right = merge.partition(" ")
    if left in vocab and right in vocab:
        return left, right
    found = (i for i, char in enumerate(merge) if char == " " and {merge[:i], merge[i + 1 :]} <= vocab.keys())
    i = next(found, len(left))
    return merge[:i], merge[i + 1 :]


def _byte_level_pre_tokenizer(pre: str) -> tuple[pre_tokenizers.PreTokenizer, bool]:
    """The pre-tokenizer for llama.cpp's ``tokenizer.ggml.pre`` and whether BPE ignores merges."""
    if pre in _SPLIT_PRE:
        split = pre_tokenizers.Split(Regex(_SPLIT_PRE[pre]), behavior="isolated")
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        return pre_tokenizers.Sequence([split, byte_level]), True
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGITS_PRE:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]), False
    if pre not in _GPT2_PRE:
        warnings.warn(
            f"GGUF pre-tokenizer {pre!r} is not known to zipcal_jax; using the GPT-2 split, so ids may "
            "differ from llama.cpp on some text. Prefer the model's tokenizer.json if you have it.",
            stacklevel=3,
        )
    return byte_level, False


def build_gguf_tokenizer(metadata: Mapping[str, Any], *, source: str = "GGUF metadata") -> Tokenizer:
    """Build a :class:`tokenizers.Tokenizer` from GGUF ``tokenizer.ggml.*`` metadata values.

    Rules: ``tokenizer.ggml.model`` must be ``"gpt2"`` (byte-level BPE). The vocabulary is
    ``tokens`` in id order, the merges ``merges``; the pre-tokenizer follows ``tokenizer.ggml.pre``
    (GPT-2 regex by default, digits isolated for SmolLM/StarCoder, Llama-3/Qwen2 split regexes),
    with a ByteLevel decoder. Tokens typed CONTROL (3) and the bos/eos/unk/pad tokens become
    special added tokens; USER_DEFINED (4) tokens become non-special added tokens (matched whole,
    decoded as text, as in llama.cpp). ``add_bos_token`` / ``add_eos_token`` add a template
    post-processor. Padding is enabled on ``padding_token_id`` (else ``eos_token_id``).

    Args:
        metadata: field name → value, as read from the GGUF file.
        source: the file name, for error messages.
    """
    model_type = metadata.get("tokenizer.ggml.model")
    if model_type is None:
        from zipcal_jax.models.tokenizers import NoTokenizerError  # here: tokenizers imports this module

        raise NoTokenizerError(f"no tokenizer in {source}: it has no tokenizer.ggml.model metadata")
    if model_type != "gpt2":
        kind = _GGUF_MODEL_NAMES.get(str(model_type), "this tokenizer type")
        raise ValueError(
            f"{source} stores a {model_type!r} tokenizer ({kind}); reading it from GGUF is not supported yet, "
            "only byte-level BPE ('gpt2'). Pass the model's tokenizer.json (folder or hub id) instead."
        )
    tokens = [str(t) for t in metadata.get("tokenizer.ggml.tokens") or []]
    merges_text = metadata.get("tokenizer.ggml.merges")
    if not tokens or merges_text is None:
        raise ValueError(f"{source} has a 'gpt2' tokenizer without tokens or merges (a truncated file?)")
    types = list(metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)
    if len(vocab) < len(tokens):
        warnings.warn(f"{source}: {len(tokens) - len(vocab)} duplicate tokens; first ids win", stacklevel=2)

    def token_at(key: str) -> str | None:
        value = metadata.get(f"tokenizer.ggml.{key}")
        return tokens[int(value)] if value is not None and 0 <= int(value) < len(tokens) else None

    bos, eos, unk = token_at("bos_token_id"), token_at("eos_token_id"), token_at("unknown_token_id")
    pad = token_at("padding_token_id") or eos
    pre = str(metadata.get("tokenizer.ggml.pre", "default"))
    pre_tokenizer, ignore_merges = _byte_level_pre_tokenizer(pre)
    merges = [_split_merge(str(m), vocab) for m in merges_text]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, ignore_merges=ignore_merges))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()

    special = [tokens[i] for i, kind in enumerate(types) if kind == _CONTROL]
    special += [t for t in dict.fromkeys((bos, eos, unk, pad)) if t is not None and t not in special]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    user = [tokens[i] for i, kind in enumerate(types) if kind == _USER_DEFINED and tokens[i] not in special]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])

    bos_added = bos if metadata.get("tokenizer.ggml.add_bos_token") else None
    eos_added = eos if metadata.get("tokenizer.ggml.add_eos_token") else None
    tokenizer.post_processor = _post_processor(bos_added, eos_added, vocab)
    if pad is not None:
        tokenizer.enable_padding(pad_id=vocab[pad], pad_token=pad)
    return tokenizer


def _post_processor(bos: str | None, eos: str | None, vocab: Mapping[str, int]) -> processors.PostProcessor:
    """ByteLevel offsets, plus a template adding ``bos`` before / ``eos`` after each sequence when given."""
    byte_level = processors.ByteLevel(trim_offsets=False)
    if bos is None and eos is None:
        return byte_level

    def framed(piece: str, type_id: int) -> list[str]:
        return [f"{t}:{type_id}" for t in (bos, piece, eos) if t is not None]

    specials = [(t, vocab[t]) for t in dict.fromkeys((bos, eos)) if t is not None]
    template = processors.TemplateProcessing(
        single=framed("$A", 0), pair=framed("$A", 0) + framed("$B", 1), special_tokens=specials
    )
    return processors.Sequence([byte_level, template])
