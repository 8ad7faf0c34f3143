"""Rows and buckets: how encoded requests are packed into fixed-shape batches for the zero-shot scorer.

:func:`plan_rows` lays out ``(ctx_enc, cont_enc)`` token lists (from
:func:`zipcal_jax.evals.zeroshot.encode_requests`) in rows (:class:`Row`): one request per row, or the
requests that share a context in one row ``[ctx, cont_1[:-1], cont_2[:-1], ...]`` scored with a tree
attention mask (:func:`zipcal_jax.evals.zeroshot.tree_attention_mask`). ``_batches`` groups rows by
:func:`bucket_length` and cuts them into batches with one ``(B, T, P)`` per bucket, so XLA compiles
one program per bucket; ``_row_arrays`` pads a batch into the NumPy inputs of the jitted scorer
(``zipcal_jax.evals.zeroshot._score_batch``, arguments in the order of ``_INPUTS``). NumPy only: no
JAX, no model.

Shapes: ``B`` rows per batch, ``T`` row length (bucketed), ``P`` scored tokens per row (bucketed),
``V`` vocabulary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["Row", "bucket_length", "plan_rows"]

Tokens = tuple[int, ...]

# Upper bound on the float32 logits one batch materialises (B * P * V): 1 GiB.
_MAX_BATCH_LOGITS = 1 << 28


def bucket_length(n: int, minimum: int = 16) -> int:
    """The smallest of ``minimum * {1, 1.5, 2, 3, 4, 6, ...}`` (powers of two and 1.5x them)
    that is ``>= n``; ``minimum`` is a power of two >= 2. At most a third is padding."""
    size = minimum
    while True:
        if n <= size:
            return size
        if n <= size * 3 // 2:
            return size * 3 // 2
        size *= 2


@dataclasses.dataclass(frozen=True)
class Row:
    """One model input: a context and the continuations scored against it.

    The row's tokens are ``ctx + cont_1[:-1] + cont_2[:-1] + ...``: a continuation's last token is
    only a target, never an input. ``conts`` holds ``(key, tokens)``; ``key`` indexes the
    de-duplicated requests."""

    ctx: Tokens
    conts: tuple[tuple[int, Tokens], ...]

    @property
    def length(self) -> int:
        return len(self.ctx) + sum(len(k) - 1 for _, k in self.conts)

    @property
    def n_scored(self) -> int:
        return sum(len(k) for _, k in self.conts)


def _plain_row(key: int, ctx: Tokens, cont: Tokens, max_length: int) -> Row:
    """``(ctx + cont)[-(max_length + 1):][:-1]`` as a row: the context left-truncated."""
    keep = max_length + 1 - len(cont)  # >= 1 context tokens, since len(cont) <= max_length
    return Row(ctx[-keep:] if len(ctx) > keep else ctx, ((key, cont),))


def _packed_rows(keys: list[int], ctx: Tokens, conts: list[Tokens], max_length: int) -> list[Row] | None:
    """The continuations of one context greedily packed into rows of at most ``max_length``
    tokens; None when some continuation does not fit without truncation."""
    rows: list[Row] = []
    current: list[tuple[int, Tokens]] = []
    length = len(ctx)
    for key, cont in zip(keys, conts):
        if len(ctx) + len(cont) - 1 > max_length:
            return None
        if current and length + len(cont) - 1 > max_length:
            rows.append(Row(ctx, tuple(current)))
            current, length = [], len(ctx)
        current.append((key, cont))
        length += len(cont) - 1
    rows.append(Row(ctx, tuple(current)))
    return rows


def plan_rows(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], max_length: int, pack: bool | None = None
) -> list[Row]:
    """Lay out encoded requests ``(ctx_enc, cont_enc)`` (their list index is the row key) in rows.

    Requests with the same ``ctx_enc`` share a row when ``pack`` is True, or when ``pack`` is None
    and sharing needs fewer bucket-padded tokens; a context whose continuations do not all fit
    untruncated in ``max_length`` is never shared. Every other request gets its own row, left-
    truncated as the harness does. Raises ValueError for a continuation longer than
    ``max_length``."""
    groups: dict[Tokens, list[int]] = {}
    for key, (ctx, cont) in enumerate(pairs):
        if len(cont) > max_length:
            raise ValueError(
                f"request {key}: the continuation has {len(cont)} tokens, more than max_length={max_length}"
            )
        groups.setdefault(tuple(ctx), []).append(key)
    rows: list[Row] = []
    for ctx, keys in groups.items():
        conts = [tuple(pairs[k][1]) for k in keys]
        plain = [_plain_row(k, ctx, c, max_length) for k, c in zip(keys, conts)]
        packed = _packed_rows(keys, ctx, conts, max_length) if pack is not False and len(keys) > 1 else None
        if packed is not None and pack is None:
            cost = lambda rs: sum(bucket_length(r.length) for r in rs)  # noqa: E731
            packed = packed if cost(packed) <= cost(plain) else None
        rows.extend(packed if packed is not None else plain)
    return rows


def _row_arrays(rows: Sequence[Row], B: int, T: int, P: int) -> tuple[dict[str, np.ndarray], list]:
    """NumPy inputs of :func:`~zipcal_jax.evals.zeroshot._score_batch` for ``rows`` padded to (B, T)
    and (B, P), and the spans ``(key, b, start, stop)``: the targets of request ``key`` are
    ``[b, start:stop]``."""
    ids = np.zeros((B, T), np.int32)
    positions = np.zeros((B, T), np.int32)
    segments = np.full((B, T), -1, np.int32)
    gather = np.zeros((B, P), np.int32)
    targets = np.zeros((B, P), np.int32)
    spans = []
    for b, row in enumerate(rows):
        c = len(row.ctx)
        ids[b, :c], positions[b, :c], segments[b, :c] = row.ctx, np.arange(c), 0
        t, p = c, 0  # next free row position, next free target slot
        for s, (key, cont) in enumerate(row.conts, start=1):
            n = len(cont)
            ids[b, t : t + n - 1] = cont[:-1]
            positions[b, t : t + n - 1] = c + np.arange(n - 1)  # as if ctx + cont were alone
            segments[b, t : t + n - 1] = s
            gather[b, p] = c - 1  # the first token is predicted by the last context token
            gather[b, p + 1 : p + n] = t + np.arange(n - 1)
            targets[b, p : p + n] = cont
            spans.append((key, b, p, p + n))
            t, p = t + n - 1, p + n
    arrays = dict(ids=ids, positions=positions, segments=segments, gather=gather, targets=targets)
    return arrays, spans


_INPUTS = ("ids", "positions", "segments", "gather", "targets")  # _score_batch's array arguments, in order


def _batches(rows: list[Row], batch_size: int, max_batch_tokens: int, vocab: int, multiple: int = 1):
    """Yield ``(B, T, P, rows)``: rows bucketed by length (longest buckets first), then cut into
    batches of at most ``B`` rows; every batch of a bucket has the same (B, T, P). ``B`` is a
    multiple of ``multiple`` (the mesh's ``data`` size), padding rows included."""
    buckets: dict[int, list[Row]] = {}
    for row in rows:
        buckets.setdefault(bucket_length(row.length), []).append(row)
    for T in sorted(buckets, reverse=True):
        members = sorted(buckets[T], key=lambda r: -r.length)
        P = bucket_length(max(r.n_scored for r in members), minimum=8)
        B = min(batch_size, max(1, max_batch_tokens // T), max(1, _MAX_BATCH_LOGITS // (P * vocab)))
        B = min(B, 1 << (len(members) - 1).bit_length())  # small runs: no batch of mostly padding
        B = -(-B // multiple) * multiple
        for i in range(0, len(members), B):
            yield B, T, P, members[i : i + B]
