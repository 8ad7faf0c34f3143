"""Model-free baselines ZipCal is compared with (reference code: ``zipf_sampling``,
``words_dataset_sampling``, ``random_sample``), with explicit seeds."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np

__all__ = ["decode_rows", "random_indices", "tokenize_fixed", "words_samples", "zipf_indices"]


def random_indices(n: int, k: int, seed: int) -> np.ndarray:
    """``k`` distinct indices in ``[0, n)``, uniformly at random."""
    return np.random.default_rng(seed).permutation(n)[:k].astype(np.int64)


def decode_rows(ids: np.ndarray, mask: np.ndarray, tokenizer: Any) -> list[str]:
    """The text of each row (masked tokens only, special tokens skipped)."""
    rows = [row[m].tolist() for row, m in zip(ids, mask)]
    if hasattr(tokenizer, "decode_batch"):
        return tokenizer.decode_batch(rows, skip_special_tokens=True)
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def _zipf_words(text: str) -> set[str]:
    return set(text.lower().replace(".", " ").replace(",", " ").split())


def zipf_indices(texts: list[str], k: int) -> np.ndarray:
    """Top-``k`` texts by rarity: the sum of ``1 / count(w)`` over a text's distinct words,
    counts taken over all texts (reference ``zipf_sampling``: lowercase, '.' and ','
    become spaces, split on whitespace). Highest score first; ties to the lower index."""
    words = [_zipf_words(t) for t in texts]
    count = Counter(w for ws in words for w in ws)
    scores = np.array([sum(1.0 / count[w] for w in ws) for ws in words])
    return np.argsort(-scores, kind="stable")[:k].astype(np.int64)


def words_samples(texts: list[str], k: int, words_per_sample: int, seed: int) -> list[str]:
    """``k`` synthetic texts of ``words_per_sample`` words each, drawn by cycling through
    the shuffled multiset of all corpus words, so word frequencies follow the corpus
    (reference ``words_dataset_sampling``: lowercase, split on whitespace)."""
    pool = [w for t in texts for w in t.lower().split()]
    if not pool:
        raise ValueError("method 'words' found no words in the candidates' texts")
    random.Random(seed).shuffle(pool)
    total = k * words_per_sample
    reps = -(-total // len(pool))
    stream = (pool * reps)[:total]
    return [" ".join(stream[i * words_per_sample : (i + 1) * words_per_sample]) for i in range(k)]


def tokenize_fixed(texts: list[str], tokenizer: Any, seqlen: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids ``int32 (len(texts), seqlen)`` and mask, truncated and right-padded."""
    from zipcal_jax.models.tokenizers import TextTokenizer

    return TextTokenizer(tokenizer).batch_encode(texts, max_length=seqlen)
