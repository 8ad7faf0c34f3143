"""Greedy maximum coverage in JAX: the compute core of ZipCal.

Candidates are held as *concept sets*: ``S (n, L) int32``, each row the distinct concept
ids of one candidate with every other slot set to the sentinel ``C`` (the number of
concepts). ``covered (C + 1,) bool`` has ``covered[C] = True`` for good, so the marginal
gain of row ``i`` is simply ``sum(~covered[S[i]])`` — no masks on the hot path.

The greedy picks, at every step, the candidate with the most uncovered concepts; ties go
to the larger set, then to the lower index. Two exact implementations and the reference
code's sampled variant live here:

* ``lazy_greedy`` — batched lazy greedy. Coverage is submodular, so a gain computed at an
  earlier step is an upper bound of the gain now. Keys ``gain * n + prio`` (``prio``
  encodes the tie-break order, so keys are unique) rank the candidates; each step
  re-scores only a buffer of the top-``B`` keys (found by bisection) and accepts the
  best fresh key when it beats the ``(B+1)``-th key, which bounds every candidate
  outside the buffer. On a miss it re-scores all ``n`` and refills the buffer. Exact,
  at a few passes over the data for ``k`` picks.
* ``full_greedy`` — re-scores all candidates at every step (used when the integer keys
  of the lazy variant would overflow int32).
* ``pool_greedy`` — the reference code's variant: each step scores a fresh random pool of
  ``P`` remaining candidates (all of them once ``P`` or fewer remain) and picks the best
  in pool order.

All loops are one ``lax.fori_loop`` under ``jax.jit``; arrays may be sharded over a
``data`` mesh axis along ``n`` and XLA partitions gathers and reductions.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "concept_histogram",
    "concept_sets",
    "concept_sets_numpy",
    "full_greedy",
    "lazy_greedy",
    "pool_greedy",
]

INT32_MAX = np.iinfo(np.int32).max


@partial(jax.jit, static_argnames=("num_concepts",))
def concept_sets(ids: jax.Array, mask: jax.Array, table: jax.Array | None, num_concepts: int):
    """Distinct concepts of each candidate.

    Args:
      ids: ``int32 (n, L)`` token ids.
      mask: ``bool (n, L)``, True where a real token stands.
      table: ``int32 (V,)`` concept of each token id (``-1``: none), or None to use the
        token ids themselves as concepts.
      num_concepts: ``C``; concept ids lie in ``[0, C)``.

    Returns:
      ``(S, sizes)``: ``S int32 (n, L)`` the sorted distinct concepts of each row,
      followed by the sentinel ``C`` in every other slot; ``sizes int32 (n,)`` the number of distinct concepts.
    """
    c = ids if table is None else table[ids]
    c = jnp.where(mask & (c >= 0) & (c < num_concepts), c, num_concepts)  # (n, L)
    c = jnp.sort(c, axis=1)
    repeat = jnp.concatenate([jnp.zeros_like(c[:, :1], dtype=bool), c[:, 1:] == c[:, :-1]], axis=1)
    S = jnp.sort(jnp.where(repeat, num_concepts, c), axis=1)  # sentinels last
    return S, jnp.sum(S < num_concepts, axis=1, dtype=jnp.int32)


def concept_sets_numpy(ids: np.ndarray, mask: np.ndarray | None, table: np.ndarray | None, num_concepts: int):
    """:func:`concept_sets` on the host with NumPy; the same sets. ``mask=None`` means all
    True; ids must lie in ``[0, len(table))`` (or ``[0, C)`` without a table).

    XLA:CPU sorts rows about ten times slower than NumPy's SIMD sort, so on CPU backends
    the sets are built here (in row blocks on a thread per core; NumPy releases the GIL)
    and then placed on the devices. ``S`` is int16 when the concepts fit (half the memory
    traffic of the greedy's gathers), else int32.
    """
    dtype = np.int16 if num_concepts < np.iinfo(np.int16).max else np.int32
    S = np.empty(ids.shape, dtype)
    sizes = np.empty(ids.shape[0], np.int32)

    def block(rows: slice) -> None:
        # ids under a False mask may be anything (pad ids): clip them into range
        c = ids[rows] if table is None else np.take(table, ids[rows], mode="clip")
        out = S[rows]  # a view: the block is built in place
        out[...] = c
        invalid = np.zeros(out.shape, bool) if mask is None else ~mask[rows]
        if table is not None:
            invalid |= c < 0
        elif mask is not None:
            np.clip(out, 0, num_concepts, out=out)
        # out = where(invalid, C, out), as a max: faster than putmask (concepts are < C)
        np.maximum(out, invalid.view(np.int8) * dtype(num_concepts), out=out)
        out.sort(axis=1)
        repeat = invalid  # reuse the buffer: True where a slot repeats its left neighbour
        repeat[:, 0] = False
        np.equal(out[:, 1:], out[:, :-1], out=repeat[:, 1:])
        np.maximum(out, repeat.view(np.int8) * dtype(num_concepts), out=out)
        out.sort(axis=1)  # push the repeats' sentinels to the end as well
        sizes[rows] = (out < num_concepts).view(np.int8).sum(axis=1, dtype=np.int32)

    workers = min(os.cpu_count() or 1, 8) if ids.size > 1 << 20 else 1
    step = -(-ids.shape[0] // workers)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(block, [slice(i, i + step) for i in range(0, ids.shape[0], step)]))
    return S, sizes


@partial(jax.jit, static_argnames=("num_concepts",))
def concept_histogram(S: jax.Array, num_concepts: int) -> jax.Array:
    """``int32 (C,)``: in how many candidates each concept occurs (document frequency)."""
    counts = jnp.zeros(num_concepts + 1, jnp.int32).at[S.reshape(-1)].add(1)
    return counts[:num_concepts]


def _gains(S_rows: jax.Array, covered: jax.Array) -> jax.Array:
    """New concepts each row would add: ``int32 (..., )``."""
    return jnp.sum(~covered[S_rows], axis=-1, dtype=jnp.int32)


def _lex_argmax(gain: jax.Array, size: jax.Array, eligible: jax.Array) -> jax.Array:
    """First index of the lexicographic maximum of ``(gain, size)`` among ``eligible``."""
    g = jnp.where(eligible, gain, -1)
    top = g == jnp.max(g)
    s = jnp.where(top, size, -1)
    return jnp.argmax(top & (s == jnp.max(s)))


def _take(covered, S, i):
    return covered.at[S[i]].set(True)


def _empty_outputs(k):
    return jnp.zeros(k, jnp.int32), jnp.zeros(k, jnp.int32)


def tie_priority(sizes, valid):
    """``prio[i]`` in ``[0, n)``: larger for a larger set, then for a lower index.

    NumPy arrays are ranked on the host (a radix sort, far faster than XLA:CPU's sort),
    JAX arrays with ``jnp.lexsort`` on their devices.
    """
    if isinstance(sizes, np.ndarray):
        n = len(sizes)
        order = np.argsort(-np.where(valid, sizes, -1), kind="stable")  # best first
        prio = np.empty(n, np.int32)
        prio[order] = np.arange(n - 1, -1, -1, dtype=np.int32)
        return prio
    n = sizes.shape[0]
    order = jnp.lexsort((jnp.arange(n), -jnp.where(valid, sizes, -1)))  # best first
    return jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n - 1, -1, -1, dtype=jnp.int32))


def lazy_keys_fit(max_size: int, n: int) -> bool:
    """Whether the lazy greedy's ``gain * n + prio`` keys fit in int32."""
    return (max_size + 1) * n <= INT32_MAX


def _kth_largest(key: jax.Array, kth: int) -> jax.Array:
    """The ``kth`` largest value of a non-negative-or-``-1`` int32 array, by bisection on
    the value: 32 counting passes, far cheaper than ``lax.top_k``'s sort on CPU."""

    def halve(_, lo_hi):
        lo, hi = lo_hi  # invariant: count(key >= lo) >= kth > count(key >= hi + 1)
        mid = lo + (hi - lo + 1) // 2
        enough = jnp.sum(key >= mid) >= kth
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid - 1)

    lo, _ = lax.fori_loop(0, 32, halve, (jnp.int32(-1), jnp.max(key)))
    return lo


@partial(jax.jit, static_argnames=("k", "batch"))
def lazy_greedy(S, sizes, valid, prio, covered, k: int, batch: int):
    """Exact greedy by batched lazy evaluation.

    A *buffer* holds the ``B = batch`` candidates with the highest keys after the last
    full scoring, together with their rows ``S_buf``, and ``bound``, the ``(B+1)``-th
    key. Candidates outside the buffer are not re-scored, so their keys stay at most
    ``bound`` (submodularity). Each step re-scores the buffer only (``B x L`` lookups)
    and takes its best when that beats ``bound``; otherwise it re-scores all ``n``
    candidates and refills the buffer (its top ``B`` found by bisection on the key).

    Args:
      S, sizes: from :func:`concept_sets` (``n`` rows).
      valid: ``bool (n,)``, False for padding rows (never picked).
      prio: ``int32 (n,)`` from :func:`tie_priority`.
      covered: ``bool (C + 1,)`` with the sentinel ``covered[C] = True``.
      k: picks to make (``k <= valid.sum()``).
      batch: ``B``, the buffer size (``1 <= B < n``).

    Returns:
      ``(picks, gains, refills)``: ``int32 (k,)`` indices in pick order, their marginal
      gains, and how many steps missed the buffer and re-scored all ``n``.
    """
    n = S.shape[0]

    def refill(alive, covered):
        return fill(jnp.where(alive, _gains(S, covered) * n + prio, -1))

    def fill(key):
        bound = _kth_largest(key, batch + 1)
        above = key > bound
        buf = jnp.nonzero(above, size=batch, fill_value=0)[0]  # the top B, any order
        return buf, S[buf], jnp.arange(batch) < jnp.sum(above), bound

    def step(t, state):
        alive, covered, buf, S_buf, buf_alive, bound, picks, gains, refills = state
        fresh = jnp.where(buf_alive, _gains(S_buf, covered) * n + prio[buf], -1)  # (B,)
        hit = fresh.max() > bound
        buf, S_buf, buf_alive, bound = lax.cond(
            hit, lambda: (buf, S_buf, buf_alive, bound), lambda: refill(alive, covered)
        )
        fresh = jnp.where(hit, fresh, jnp.where(buf_alive, _gains(S_buf, covered) * n + prio[buf], -1))
        j = jnp.argmax(fresh)
        best = buf[j]
        picks, gains = picks.at[t].set(best), gains.at[t].set(fresh[j] // n)
        state = (alive.at[best].set(False), _take(covered, S, best), buf, S_buf, buf_alive.at[j].set(False))
        return (*state, bound, picks, gains, refills + (~hit))

    picks, gains = _empty_outputs(k)
    first = fill(jnp.where(valid, sizes * n + prio, -1))  # gain = size before any pick
    state = (valid, covered, *first, picks, gains, jnp.int32(0))
    state = lax.fori_loop(0, k, step, state)
    return state[-3], state[-2], state[-1]


@partial(jax.jit, static_argnames=("k",))
def full_greedy(S, sizes, valid, covered, k: int):
    """Exact greedy that re-scores every candidate at every step. Same contract as
    :func:`lazy_greedy` minus ``rescans``."""

    def step(t, state):
        alive, covered, picks, gains = state
        g = _gains(S, covered)
        best = _lex_argmax(g, sizes, alive)
        picks, gains = picks.at[t].set(best), gains.at[t].set(g[best])
        return alive.at[best].set(False), _take(covered, S, best), picks, gains

    picks, gains = _empty_outputs(k)
    _, _, picks, gains = lax.fori_loop(0, k, step, (valid, covered, picks, gains))
    return picks, gains


@partial(jax.jit, static_argnames=("k", "pool_size"))
def pool_greedy(S, sizes, valid, covered, rng, k: int, pool_size: int):
    """The reference code's sampled greedy.

    While more than ``pool_size`` candidates remain, each step draws a fresh uniform
    random pool of ``pool_size`` of them (without replacement, in random order) and picks
    the best by (gain, size, pool order). Once ``pool_size`` or fewer remain it scans all
    of them, ties to the lowest index. Seeded by ``rng``.
    """
    n = S.shape[0]

    def step(t, state):
        alive, covered, picks, gains = state
        remaining = jnp.sum(alive)

        def sampled(_):
            u = jax.random.uniform(jax.random.fold_in(rng, t), (n,))
            _, pool = lax.top_k(jnp.where(alive, u, -1.0), pool_size)  # random subset, random order
            g = _gains(S[pool], covered)
            j = _lex_argmax(g, sizes[pool], jnp.ones(pool_size, bool))
            return pool[j], g[j]

        def scan_all(_):
            g = _gains(S, covered)
            best = _lex_argmax(g, sizes, alive)
            return best, g[best]

        best, gain = lax.cond(remaining > pool_size, sampled, scan_all, None)
        picks, gains = picks.at[t].set(best), gains.at[t].set(gain)
        return alive.at[best].set(False), _take(covered, S, best), picks, gains

    picks, gains = _empty_outputs(k)
    _, _, picks, gains = lax.fori_loop(0, k, step, (valid, covered, picks, gains))
    return picks, gains
