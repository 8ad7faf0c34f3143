"""Candidates: tokenized, padded calibration candidates with provenance.

One example of a source is one candidate (the ZipCal paper's unit), truncated and padded to
``seqlen`` tokens. With ``windows=True`` a source is instead joined into one token stream and cut
into non-overlapping ``seqlen`` windows (the C4/WikiText convention of Wanda/SparseGPT/GPTQ).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from zipcal_jax.data.readers import TextSource, load_texts
from zipcal_jax.data.specs import SourceSpec

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["Candidates", "build_candidates"]

SpecLike = str | SourceSpec | TextSource


@dataclass
class Candidates:
    """Tokenized candidates of one or more sources (``n`` candidates of ``L`` tokens).

    Attributes:
        ids: int32 ``(n, L)`` token ids, padded with the tokenizer's pad id.
        mask: bool ``(n, L)``, True where a real token stands.
        sources: spec strings of the sources, in the order given.
        source_index: int32 ``(n,)`` index into ``sources``.
        rows: int64 ``(n,)`` row within the source (the window index in windows mode).
        texts: the text of each candidate (the window's slice of the joined text in windows mode).
        dropped: per source spec, how many texts were dropped (empty, shorter than ``min_chars``,
            or tokenized to nothing).
    """

    ids: np.ndarray
    mask: np.ndarray
    sources: list[str]
    source_index: np.ndarray
    rows: np.ndarray
    texts: list[str]
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """int32 ``(n,)`` number of real tokens per candidate."""
        return self.mask.sum(axis=1, dtype=np.int32)

    def provenance(self, i: int) -> dict:
        """Where candidate ``i`` came from: ``{"source", "row", "text"}``."""
        return {
            "source": self.sources[int(self.source_index[i])],
            "row": int(self.rows[i]),
            "text": self.texts[i],
        }

    def subset(self, indices: Sequence[int] | np.ndarray) -> Candidates:
        """The candidates at ``indices`` (in that order; a boolean mask also works)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        return Candidates(
            ids=self.ids[idx],
            mask=self.mask[idx],
            sources=list(self.sources),
            source_index=self.source_index[idx],
            rows=self.rows[idx],
            texts=[self.texts[i] for i in idx],
            dropped=dict(self.dropped),
        )


def _prepare(tokenizer, seqlen: int, padding_side: str):
    from tokenizers import Tokenizer

    from zipcal_jax.models.tokenizers import pad_token_id

    tokenizer = getattr(tokenizer, "backend_tokenizer", tokenizer)  # a transformers fast tokenizer
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"expected a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
    if tokenizer.get_vocab_size() == 0:
        raise ValueError("the tokenizer has an empty vocabulary; load a trained tokenizer")
    if seqlen < 1:
        raise ValueError(f"seqlen must be >= 1, got {seqlen}")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    pad_id = pad_token_id(tokenizer)
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_truncation()
    plain.no_padding()
    return plain, pad_id


def _encode_examples(tok, texts, seqlen, pad_id, add_special_tokens, padding_side, batch_size, bar):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tok.to_str())
    tok.enable_truncation(max_length=seqlen)
    pad_token = tok.id_to_token(pad_id) or "<pad>"
    tok.enable_padding(direction=padding_side, pad_id=pad_id, pad_token=pad_token, length=seqlen)
    ids = np.full((len(texts), seqlen), pad_id, dtype=np.int32)
    mask = np.zeros((len(texts), seqlen), dtype=bool)
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        encodings = tok.encode_batch(chunk, add_special_tokens=add_special_tokens)
        ids[start : start + len(chunk)] = np.asarray([e.ids for e in encodings], dtype=np.int32)
        mask[start : start + len(chunk)] = np.asarray([e.attention_mask for e in encodings], dtype=bool)
        bar.update(len(chunk))
    return ids, mask


def _encode_windows(tok, texts, seqlen, pad_id, padding_side, bar):
    joined = "\n\n".join(texts)
    enc = tok.encode(joined, add_special_tokens=False)
    bar.update(len(texts))
    stream = np.asarray(enc.ids, dtype=np.int32)
    n = -(-len(stream) // seqlen)
    ids = np.full((n, seqlen), pad_id, dtype=np.int32)
    mask = np.zeros((n, seqlen), dtype=bool)
    offsets = enc.offsets  # a fresh Python list on every attribute access: fetch it once
    starts = [0] + [offsets[w * seqlen][0] for w in range(1, n)]
    ends = [*starts[1:], len(joined)]
    for w in range(n):
        piece = stream[w * seqlen : (w + 1) * seqlen]
        cols = slice(0, len(piece)) if padding_side == "right" else slice(seqlen - len(piece), seqlen)
        ids[w, cols] = piece
        mask[w, cols] = True
    return ids, mask, [joined[a:b] for a, b in zip(starts, ends, strict=True)]


def build_candidates(
    specs: SpecLike | Sequence[SpecLike],
    tokenizer: Tokenizer,
    seqlen: int = 128,
    *,
    windows: bool = False,
    add_special_tokens: bool = True,
    padding_side: str = "right",
    batch_size: int = 4096,
    progress: bool = True,
) -> Candidates:
    """Tokenize one or more sources into padded candidates.

    Args:
        specs: one source or a list; each a spec string, a :class:`SourceSpec` or a loaded
            :class:`TextSource`.
        tokenizer: a ``tokenizers.Tokenizer`` (it is copied, never modified).
        seqlen: ``L``, tokens per candidate; longer examples are truncated.
        windows: join each source's texts with ``"\\n\\n"``, tokenize once without special tokens
            and cut the stream into non-overlapping ``seqlen`` windows (the last one is padded).
        add_special_tokens: let the tokenizer's post-processor add BOS/EOS (examples mode only).
        padding_side: ``"right"`` or ``"left"``.
        batch_size: texts per ``encode_batch`` call (tokenized in parallel in Rust).
        progress: show a tqdm bar.

    Returns:
        :class:`Candidates` with ``ids`` int32 ``(n, seqlen)`` and ``mask`` bool ``(n, seqlen)``.

    Raises:
        ValueError: an empty-vocabulary tokenizer, ``seqlen < 1``, or a source without candidates.
    """
    plain, pad_id = _prepare(tokenizer, seqlen, padding_side)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = [specs] if isinstance(specs, (str, SourceSpec, TextSource)) else list(specs)
    if not items:
        raise ValueError("build_candidates needs at least one source")
    loaded = [load_texts(item, progress=progress) for item in items]
    parts, sources, dropped = [], [], {}
    with tqdm(total=sum(len(s) for s in loaded), desc="tokenizing", unit="text", disable=not progress) as bar:
        for k, src in enumerate(loaded):
            sources.append(src.spec)
            if windows:
                ids, mask, texts = _encode_windows(plain, src.texts, seqlen, pad_id, padding_side, bar)
                rows = np.arange(len(texts), dtype=np.int64)
            else:
                ids, mask = _encode_examples(
                    plain, src.texts, seqlen, pad_id, add_special_tokens, padding_side, batch_size, bar
                )
                texts, rows = src.texts, np.asarray(src.rows, dtype=np.int64)
            keep = mask.any(axis=1)  # texts the tokenizer turned into nothing
            dropped[src.spec] = dropped.get(src.spec, 0) + src.dropped + int((~keep).sum())
            if not keep.any():
                raise ValueError(f"source {src.spec!r} produced no candidates (no tokens after tokenizing)")
            if not keep.all():
                ids, mask, rows = ids[keep], mask[keep], rows[keep]
                texts = [t for t, ok in zip(texts, keep, strict=True) if ok]
            parts.append((ids, mask, np.full(len(ids), k, dtype=np.int32), rows, texts))
    return Candidates(
        ids=np.concatenate([p[0] for p in parts]),
        mask=np.concatenate([p[1] for p in parts]),
        sources=sources,
        source_index=np.concatenate([p[2] for p in parts]),
        rows=np.concatenate([p[3] for p in parts]),
        texts=[t for p in parts for t in p[4]],
        dropped=dropped,
    )
