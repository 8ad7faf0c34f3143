"""Greedy maximum coverage in JAX: the compute core of ZipCal.

Candidates are held as *concept sets*: ``S (n, L)`` (int16 when the concepts fit, else
int32), each row the sorted distinct concept ids of one candidate followed by the
sentinel ``C`` (the number of concepts) in every other slot. ``covered (C + 1,) bool`` has ``covered[C] = True`` for good, so the marginal
gain of row ``i`` is simply ``sum(~covered[S[i]])`` — no masks on the hot path.

The greedy picks, at every step, the candidate with the most uncovered concepts; ties go
to the larger set, then to the lower index. Two exact implementations and the reference
code's sampled variant live here:

* ``lazy_greedy`` — batched lazy greedy. Coverage is submodular, so a gain computed at an
  earlier step is an upper bound of the gain now. Keys ``gain * n + prio`` (``prio``
  encodes the tie-break order, so keys are unique) rank the candidates; each step
  re-scores only a small buffer of the top keys (found by bisection) and accepts the
  best fresh key when it beats the next key, which bounds every candidate outside the
  buffer. On a miss it re-scores a wider buffer, and only if that misses too, all ``n``.
  Exact, at a few passes over the data for ``k`` picks.
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
    "concept_sets",
    "concept_sets_numpy",
    "full_greedy",
    "lazy_greedy",
    "pool_greedy",
    "token_histogram",
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
def token_histogram(ids: jax.Array, mask: jax.Array, table: jax.Array | None, num_concepts: int):
    """``int32 (C,)``: how often each concept occurs under the mask (repeats counted).

    Same arguments as :func:`concept_sets`; with ``ids`` sharded over a mesh the partial
    histograms are summed across devices.
    """
    c = ids if table is None else table[ids]
    c = jnp.where(mask & (c >= 0) & (c < num_concepts), c, num_concepts)
    return jnp.zeros(num_concepts + 1, jnp.int32).at[c.reshape(-1)].add(1)[:num_concepts]


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


@partial(jax.jit, static_argnames=("k", "batch", "wide"))
def lazy_greedy(S, sizes, valid, prio, covered, k: int, batch: int, wide: int):
    """Exact greedy by batched lazy evaluation over two cached buffers.

    Keys ``gain * n + prio`` are upper bounds of what each candidate would add now: exact
    when scored, only ever too high since (submodularity). The *wide* buffer holds the
    ``W = wide`` largest keys of the last full scoring, their rows ``S2`` and ``bound2``,
    the ``(W+1)``-th key, which bounds every candidate outside it. The *narrow* buffer is
    the top ``B = batch`` of the wide buffer's keys, with ``bound1`` bounding the rest.

    Each step re-scores the narrow buffer (``B x L`` lookups) and takes its best when that
    beats ``bound1``. On a miss it re-scores the wide buffer (``W x L``); when that buffer's
    best beats ``bound2`` the narrow buffer is rebuilt from it, otherwise all ``n``
    candidates are re-scored and both buffers rebuilt. After a miss the best key is exact
    and inside the narrow buffer, so every step picks exactly what a full scan would.

    Args:
      S, sizes: from :func:`concept_sets` (``n`` rows).
      valid: ``bool (n,)``, False for padding rows (never picked).
      prio: ``int32 (n,)`` from :func:`tie_priority`.
      covered: ``bool (C + 1,)`` with the sentinel ``covered[C] = True``.
      k: picks to make (``k <= valid.sum()``).
      batch: ``B``, the narrow buffer (``1 <= B <= W``).
      wide: ``W``, the wide buffer (``W < n``).

    Returns:
      ``(picks, gains, misses, full)``: ``int32 (k,)`` indices in pick order, their
      marginal gains, how many steps missed the narrow buffer, and how many of those
      re-scored all ``n``.
    """
    n = S.shape[0]

    def largest(key, m, empty):  # slots of the m largest keys (any order) and the (m+1)-th key
        bound = _kth_largest(key, m + 1)
        above = key > bound
        return jnp.nonzero(above, size=m, fill_value=empty)[0], jnp.arange(m) < jnp.sum(above), bound

    def wide_buffer(key):  # key over all n
        idx, live, bound2 = largest(key, wide, 0)
        return idx, S[idx], jnp.where(live, key[idx], -1), bound2

    def narrow_buffer(key2, bound2):  # slots into the wide buffer; the empty slot `wide` clamps
        sub, live, bound1 = largest(key2, batch, wide)
        return sub, live, jnp.maximum(bound1, bound2)

    def step(t, state):
        alive, covered, idx, S2, key2, bound2, sub, live, bound1, picks, gains, misses, full = state
        fresh = jnp.where(live, _gains(S2[sub], covered) * n + prio[idx[sub]], -1)  # (B,)
        hit = fresh.max() > bound1

        def miss(_):
            key2_ = jnp.where(key2 >= 0, _gains(S2, covered) * n + prio[idx], -1)  # (W,)
            hit2 = key2_.max() > bound2

            def rescore_all(_):
                return wide_buffer(jnp.where(alive, _gains(S, covered) * n + prio, -1))

            wide_state = lax.cond(hit2, lambda _: (idx, S2, key2_, bound2), rescore_all, None)
            sub_, live_, bound1_ = narrow_buffer(wide_state[2], wide_state[3])
            fresh_ = jnp.where(live_, wide_state[2][jnp.minimum(sub_, wide - 1)], -1)  # exact now
            return (*wide_state, sub_, live_, bound1_, fresh_, ~hit2)

        kept = (idx, S2, key2, bound2, sub, live, bound1, fresh, False)
        idx, S2, key2, bound2, sub, live, bound1, fresh, all_n = lax.cond(hit, lambda _: kept, miss, None)
        j = jnp.argmax(fresh)
        best = idx[sub[j]]
        picks, gains = picks.at[t].set(best), gains.at[t].set(fresh[j] // n)
        alive, key2, live = alive.at[best].set(False), key2.at[sub[j]].set(-1), live.at[j].set(False)
        return (alive, _take(covered, S, best), idx, S2, key2, bound2, sub, live, bound1,
                picks, gains, misses + ~hit, full + all_n)  # fmt: skip

    picks, gains = _empty_outputs(k)
    wide_state = wide_buffer(jnp.where(valid, sizes * n + prio, -1))  # gain = size before any pick
    state = (valid, covered, *wide_state, *narrow_buffer(wide_state[2], wide_state[3]),
             picks, gains, jnp.int32(0), jnp.int32(0))  # fmt: skip
    state = lax.fori_loop(0, k, step, state)
    return state[-4:]


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
