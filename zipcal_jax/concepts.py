"""Token → concept table: the unit ZipCal counts.

A *concept* is what a token id means once case, spaces and word-boundary markers are
ignored: ``decode([id]).lower()`` with spaces, the byte-level marker ``Ġ`` and the
SentencePiece marker ``▁`` removed and surrounding whitespace stripped. ``" The"``,
``"the"`` and ``"THE"`` are one concept; sub-word pieces such as ``"ing"`` are concepts of
their own. Special tokens and ids that decode to nothing count as no concept (``-1``).

This is the normalisation of the reference code (``unique_tokens_sampling``), done once
over the vocabulary instead of once per dataset, so that selection can work on integer
concept ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zipcal_jax.models.tokenizers import special_token_ids, vocab_size

__all__ = ["concept_table", "normalize_token", "num_concepts"]


def normalize_token(text: str) -> str:
    """The concept string of one decoded token (empty: no concept).

    The markers are removed *before* lowercasing: the reference code lowercases first,
    which turns a literal ``Ġ`` into ``ġ`` and so never removes it (it only shows up with
    tokenizers that have no byte-level decoder).
    """
    return text.replace("Ġ", "").replace("▁", "").replace(" ", "").lower().strip()


def _decode_each(tokenizer: Any, n: int) -> list[str]:
    singles = [[i] for i in range(n)]
    if hasattr(tokenizer, "decode_batch"):  # tokenizers.Tokenizer: one Rust call
        return tokenizer.decode_batch(singles, skip_special_tokens=True)
    return tokenizer.batch_decode(singles, skip_special_tokens=True)  # transformers


def concept_table(tokenizer: Any) -> np.ndarray:
    """The concept id of every token id.

    Args:
      tokenizer: a ``tokenizers.Tokenizer`` or a ``transformers`` tokenizer.

    Returns:
      ``int32 (V,)``: ``table[token_id]`` is a concept id in ``[0, C)``, or ``-1`` for
      special tokens and ids that decode to an empty string. Equal concept strings share
      one id; ids are numbered in order of their first token id.
    """
    n = vocab_size(tokenizer)
    if n <= 0:
        raise ValueError("the tokenizer has no vocabulary; load a trained tokenizer (tokenizer.json)")
    special = special_token_ids(tokenizer)
    table = np.full(n, -1, dtype=np.int32)
    ids: dict[str, int] = {}
    for tid, text in enumerate(_decode_each(tokenizer, n)):
        if tid in special:
            continue
        concept = normalize_token(text)
        if concept:
            table[tid] = ids.setdefault(concept, len(ids))
    return table


def num_concepts(table: np.ndarray) -> int:
    """Number of distinct concepts in a table (``max + 1``; 0 for an all ``-1`` table)."""
    return int(table.max()) + 1 if table.size else 0
