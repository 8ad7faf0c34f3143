"""Corpus cloze tasks built from held-out real text: the default offline zero-shot suite.

Both kinds read ``builtin:SOURCE?split=test`` (the last 10% of the source's paragraphs, see
:mod:`zipcal_jax.data`), which no calibration pool drawn from the default ``split=train`` ever
sees. Construction is word-level (whitespace-separated words, whitespace normalised to single
spaces), so the items do not depend on any tokenizer and scores are comparable across models.
Everything random is drawn from generators seeded by ``(seed, item position)``, so the same
seed gives the same items, ``limit=N`` gives the first N items of the full task, and a
different seed changes the item order, distractors and gold positions. Gold positions are
balanced: every run of four consecutive items uses each of the four positions once.

``continuation/SOURCE``
    The held-out text is cut into non-overlapping passages of ``CONTEXT_WORDS + SPAN_WORDS``
    (48 + 12) words. The context is the first 48 words (about 64 tokens), the true choice the
    next 12 (about 16 tokens); three distractors are 12-word spans starting anywhere else in the
    same held-out text (never overlapping the item's own passage, all four distinct). Requests
    are ``(context, " " + span)``. Metrics ``acc``, ``acc_norm``.

``last_word/SOURCE``
    LAMBADA-like: passages of 40-100 words that start at a sentence start and end at a sentence
    end whose final word, stripped of its closing punctuation, is alphabetic with 3+ letters.
    The context is the passage without that word (and its punctuation); the choices are the word
    and three distractor words from the held-out vocabulary of the same source, chosen among
    the 20 closest in frequency with the same letter case pattern and a length within one
    letter (wider only where too few such words exist), never the target itself. Passages never overlap. Metrics ``acc`` and ``greedy`` (greedy decoding
    reproduces the word; the scorer takes it from the gold request).

Held-out passages (and distractor spans) that share any run of ``NGRAM`` (12) words with the
source's ``split=train`` text are dropped: the split is by position, and the sources repeat
themselves (pydoc topics share whole paragraphs; the KJV quotes itself).

Sources: ``pydoc`` (always available), ``kjv`` and ``devil`` (fetched once with ``apt-get
download``). The KJV's chapter headings and verse numbers are removed, and pydoc's heading
underlines and table rows (lines of ``*``, ``=``, ``-``; ``| ... |``), before the words are counted.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Sequence, Set

import numpy as np

from zipcal_jax.evals.tasks.base import Doc, Task

__all__ = [
    "CLOZE_KINDS",
    "CONTEXT_WORDS",
    "DEFAULT_SIZE",
    "SOURCES",
    "SPAN_WORDS",
    "clean_text",
    "continuation_docs",
    "held_out_blocks",
    "last_word_docs",
    "load_cloze_task",
    "train_ngrams",
]

CONTEXT_WORDS = 48  # ~64 tokens of context
SPAN_WORDS = 12  # ~16 tokens per choice
LAST_WORD_MIN, LAST_WORD_MAX = 40, 100  # passage length in words, target included
N_CHOICES = 4
NEAREST = 20  # distractor words are drawn among this many closest in frequency
NGRAM = 12  # a passage sharing any run of this many words with the train split is dropped
DEFAULT_SIZE = 500
#: Built-in running-text sources and the unit their held-out text is read in (one block each;
#: passages never cross blocks).
SOURCES = {"pydoc": "document", "kjv": "paragraph", "devil": "document"}
CLOZE_KINDS = ("continuation", "last_word")

_KJV_HEADING = re.compile(r"^(?:[1-4] )?[A-Z][A-Za-z ]* \d+$")
_KJV_VERSE = re.compile(r"^\d+\s+")
_RULE = re.compile(r"^\s*[*=~^#+\-_]{3,}\s*$")  # heading underlines, table borders
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*$")
_CLOSING = ".!?\"'”’)]"
_PUNCT = "\"'“”‘’()[]{}<>.,;:!?`*_-"


def clean_text(text: str, source: str) -> str:
    """Source-specific clean-up of one block: KJV headings and verse numbers, pydoc rules."""
    lines = text.split("\n")
    if source == "kjv":
        lines = [_KJV_VERSE.sub("", ln) for ln in lines if not _KJV_HEADING.match(ln.strip())]
    elif source == "pydoc":
        lines = [ln for ln in lines if not (_RULE.match(ln) or _TABLE_ROW.match(ln))]
    return " ".join(" ".join(lines).split())


def held_out_blocks(source: str) -> tuple[str, list[list[str]]]:
    """``(spec, blocks)``: the words of each block of ``builtin:SOURCE?split=test``.

    Raises:
        ValueError: an unknown source.
        zipcal_jax.cache.DownloadError: a Debian text cannot be fetched.
    """
    from zipcal_jax.data import load_texts

    if source not in SOURCES:
        raise ValueError(f"unknown cloze source {source!r}; valid sources: {', '.join(SOURCES)}")
    spec = f"builtin:{source}?split=test&unit={SOURCES[source]}"
    texts = load_texts(spec, progress=False).texts
    blocks = [clean_text(t, source).split() for t in texts]
    return spec, [b for b in blocks if b]


def _ngrams(words: Sequence[str], n: int = NGRAM) -> set[int]:
    return {hash(" ".join(words[i : i + n])) for i in range(len(words) - n + 1)}


def train_ngrams(source: str) -> set[int]:
    """Hashes of every ``NGRAM``-word run of ``builtin:SOURCE?split=train`` (cleaned the same
    way), to drop held-out passages that repeat training text verbatim: the split is by
    position, and sources repeat themselves (pydoc topics share whole paragraphs)."""
    from zipcal_jax.data import load_texts

    try:
        texts = load_texts(f"builtin:{source}?split=train&unit={SOURCES[source]}", progress=False).texts
    except ValueError:  # a source of one paragraph has no train part
        return set()
    grams: set[int] = set()
    for text in texts:
        grams |= _ngrams(clean_text(text, source).split())
    return grams


def _item_rng(seed: int, kind: int, *position: int) -> np.random.Generator:
    return np.random.default_rng([seed, kind, *position])


def _gold_positions(seed: int, kind: int, n: int) -> list[int]:
    """Balanced gold positions: each run of 4 items holds every position once, in a seeded order,
    so any prefix of the task (``limit``) is uniform to within one item per position."""
    rng = np.random.default_rng([seed, kind, 99])
    runs = [rng.permutation(N_CHOICES) for _ in range(-(-n // N_CHOICES))]
    return [int(g) for run in runs for g in run][:n]


def _with_gold(truth: str, distractors: list[str], gold: int) -> tuple[str, ...]:
    return (*distractors[:gold], truth, *distractors[gold:])


# --------------------------------------------------------------------------- continuation


def continuation_docs(
    blocks: Sequence[Sequence[str]],
    *,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    context_words: int = CONTEXT_WORDS,
    span_words: int = SPAN_WORDS,
    exclude: Set[int] = frozenset(),
) -> tuple[list[Doc], int]:
    """``(docs, available)``: up to ``size`` continuation items and how many passages exist.

    ``exclude``: n-gram hashes (:func:`train_ngrams`); passages and distractor spans that
    contain one are not used."""
    width = context_words + span_words
    passages = [
        (b, s)
        for b, w in enumerate(blocks)
        for s in range(0, len(w) - width + 1, width)
        if not _ngrams(w[s : s + width]) & exclude
    ]
    spans = [(b, s) for b, w in enumerate(blocks) for s in range(len(w) - span_words + 1)]
    if not passages:
        raise ValueError(f"the held-out text has no passage of {width} words")
    order = np.random.default_rng([seed, 0]).permutation(len(passages))[:size]
    golds = _gold_positions(seed, 0, len(order))
    docs = []
    for k, gold in zip(order, golds):
        b, s = passages[k]
        words = blocks[b]
        context = " ".join(words[s : s + context_words])
        truth = " ".join(words[s + context_words : s + width])
        rng = _item_rng(seed, 1, b, s)
        distractors: list[str] = []
        for _ in range(1000):
            bb, ss = spans[int(rng.integers(len(spans)))]
            if bb == b and ss < s + width and s < ss + span_words:
                continue  # overlaps the item's own passage
            span = " ".join(blocks[bb][ss : ss + span_words])
            if exclude and _ngrams(blocks[bb][ss : ss + span_words]) & exclude:
                continue  # also in the train split
            if span != truth and span not in distractors:
                distractors.append(span)
            if len(distractors) == N_CHOICES - 1:
                break
        else:
            raise ValueError(
                f"the held-out text is too small to draw {N_CHOICES - 1} distinct distractor spans"
            )
        choices = _with_gold(truth, distractors, gold)
        meta = {"block": b, "start": s}
        docs.append(Doc(tuple((context, " " + c) for c in choices), gold, choices, meta))
    return docs, len(passages)


# --------------------------------------------------------------------------- last word


def _target(word: str) -> str | None:
    """The word a sentence-final ``word`` ends on, if it is a valid cloze target."""
    if not _SENTENCE_END.search(word):
        return None
    core = word.rstrip(_CLOSING)
    return core if len(core) >= 3 and core.isalpha() else None


def _case(word: str) -> str:
    if word.islower():
        return "lower"
    if word.isupper():
        return "upper"
    return "title" if word.istitle() else "other"


class _Vocabulary:
    """Alphabetic words (3+ letters) of the held-out text, with frequencies, for distractors."""

    def __init__(self, blocks: Sequence[Sequence[str]]):
        forms = Counter(core for w in (x for b in blocks for x in b) if (core := w.strip(_PUNCT)).isalpha())
        self.freq: Counter[str] = Counter()
        best: dict[str, tuple[int, str]] = {}
        for form, n in forms.items():
            if len(form) < 3:
                continue
            low = form.lower()
            self.freq[low] += n
            if low not in best or (n, form) > best[low]:
                best[low] = (n, form)
        self.form = {low: form for low, (_, form) in best.items()}
        self.by_len: dict[tuple[str, int], list[str]] = {}
        for low in sorted(self.freq):
            self.by_len.setdefault((_case(self.form[low]), len(low)), []).append(low)

    def distractors(self, target: str, rng: np.random.Generator, n: int) -> list[str]:
        """``n`` distinct words, none equal to ``target`` (ignoring case), drawn among the
        ``NEAREST`` closest in log-frequency; preferred in order: same case pattern and length
        within one letter, same case pattern, other case patterns (recased like the target)."""
        low, case = target.lower(), _case(target)
        f = math.log(max(self.freq[low], 1))
        near_len = {len(low) - 1, len(low), len(low) + 1}
        tiers: list[list[str]] = [[], [], [], []]
        for (c, length), words in self.by_len.items():
            tier = (0 if length in near_len else 1) + (0 if c == case else 2)
            tiers[tier] += [w for w in words if w != low]
        pool: list[str] = []
        for tier in tiers:
            tier.sort(key=lambda w: (abs(math.log(self.freq[w]) - f), abs(len(w) - len(low)), w))
            pool += tier[: max(NEAREST, n) - len(pool)]
            if len(pool) >= max(NEAREST, n):
                break
        if len(pool) < n:
            raise ValueError(f"the held-out vocabulary has fewer than {n} distractor words for {target!r}")
        picked = [pool[int(i)] for i in rng.choice(len(pool), size=n, replace=False)]
        recase = {"lower": str.lower, "upper": str.upper, "title": str.capitalize}.get(case)
        return [recase(w) if recase else self.form[w] for w in picked]


def _passages(words: Sequence[str]) -> list[tuple[int, int, str]]:
    """Non-overlapping ``(start, end, target)``: ``words[start:end + 1]`` is the passage."""
    starts = [0] + [j + 1 for j, w in enumerate(words) if _SENTENCE_END.search(w)]
    found, pos = [], 0
    for e, word in enumerate(words):
        target = _target(word)
        if target is None:
            continue
        i = bisect.bisect_right(starts, e + 1 - LAST_WORD_MIN) - 1  # latest start leaving 40+ words
        if i < 0 or starts[i] < pos or e - starts[i] + 1 > LAST_WORD_MAX:
            continue
        found.append((starts[i], e, target))
        pos = e + 1
    return found


def last_word_docs(
    blocks: Sequence[Sequence[str]],
    *,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    exclude: Set[int] = frozenset(),
) -> tuple[list[Doc], int]:
    """``(docs, available)``: up to ``size`` last-word items and how many passages exist
    (``exclude`` as in :func:`continuation_docs`)."""
    passages = [
        (b, s, e, t)
        for b, words in enumerate(blocks)
        for s, e, t in _passages(words)
        if not _ngrams(words[s : e + 1]) & exclude
    ]
    if not passages:
        raise ValueError(
            f"the held-out text has no passage of {LAST_WORD_MIN}-{LAST_WORD_MAX} words ending a sentence "
            "on an alphabetic word"
        )
    vocab = _Vocabulary(blocks)
    order = np.random.default_rng([seed, 2]).permutation(len(passages))[:size]
    golds = _gold_positions(seed, 2, len(order))
    docs = []
    for k, gold in zip(order, golds):
        b, s, e, target = passages[k]
        context = " ".join(blocks[b][s:e])
        rng = _item_rng(seed, 3, b, s)
        distractors = vocab.distractors(target, rng, N_CHOICES - 1)
        choices = _with_gold(target, distractors, gold)
        meta = {"block": b, "start": s, "end": e}
        docs.append(Doc(tuple((context, " " + c) for c in choices), gold, choices, meta))
    return docs, len(passages)


# --------------------------------------------------------------------------- entry point


def load_cloze_task(kind: str, source: str, *, seed: int = 0, limit: int | None = None) -> Task:
    """``continuation/SOURCE`` or ``last_word/SOURCE`` with up to ``DEFAULT_SIZE`` items
    (fewer when the held-out text has fewer passages; ``limit`` caps it further)."""
    if kind not in CLOZE_KINDS:
        raise ValueError(f"unknown cloze task kind {kind!r}; valid: {', '.join(CLOZE_KINDS)}")
    spec, blocks = held_out_blocks(source)
    exclude = train_ngrams(source)
    size = DEFAULT_SIZE if limit is None else min(DEFAULT_SIZE, limit)
    try:
        if kind == "continuation":
            docs, available = continuation_docs(blocks, seed=seed, size=size, exclude=exclude)
            metrics: tuple[str, ...] = ("acc", "acc_norm")
            shape = {"context_words": CONTEXT_WORDS, "span_words": SPAN_WORDS}
        else:
            docs, available = last_word_docs(blocks, seed=seed, size=size, exclude=exclude)
            metrics = ("acc", "greedy")
            shape = {"passage_words": [LAST_WORD_MIN, LAST_WORD_MAX]}
    except ValueError as err:
        raise ValueError(f"{kind}/{source} ({spec}): {err}") from None
    config = {"seed": seed, "limit": limit, "size": len(docs), "available": available, **shape}
    return Task(name=f"{kind}/{source}", docs=tuple(docs), metrics=metrics, source=spec, config=config)
