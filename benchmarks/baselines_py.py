"""Pure-Python selection baselines the benchmark measures ZipCal against.

* ``reference_greedy`` — the reference code's approach (``unique_tokens_sampling``):
  Python sets per candidate, and at every step a fresh random pool of 2000 remaining
  candidates (all of them once 2000 or fewer remain), scanned in Python.
* ``heap_lazy_greedy`` — a good exact CPU baseline: Python sets plus lazy greedy over a
  heap of stale gains (re-score the top entry; accept it if it still beats the next).

Both take the same inputs as ``zipcal_jax.select`` (ids, mask, concept table) and build
their sets inside the timed call, as ``select`` does.
"""

from __future__ import annotations

import heapq
import random

import numpy as np


def python_sets(ids: np.ndarray, mask: np.ndarray, table: np.ndarray | None) -> list[set]:
    """Each candidate's set of concept ids, the reference code's way (one set per row)."""
    lookup = None if table is None else table.tolist()
    out = []
    for row, m in zip(ids.tolist(), mask.tolist()):
        if lookup is None:
            out.append({t for t, keep in zip(row, m) if keep})
        else:
            out.append({lookup[t] for t, keep in zip(row, m) if keep and lookup[t] >= 0})
    return out


def reference_greedy(ids, mask, table, k: int, pool: int = 2000, seed: int = 0) -> list[int]:
    sets = python_sets(ids, mask, table)
    rng = np.random.default_rng(seed)
    selected: list[int] = []
    covered: set = set()
    eligible = set(range(len(sets)))
    while len(selected) < k and eligible:
        cands = rng.choice(list(eligible), pool, replace=False) if len(eligible) > pool else eligible
        best, best_gain = -1, -1
        for idx in cands:
            gain = len(sets[idx] - covered)
            if gain > best_gain or (gain == best_gain and len(sets[idx]) > len(sets[best])):
                best, best_gain = idx, gain
        selected.append(int(best))
        eligible.discard(best)
        covered |= sets[best]
    return selected


def heap_lazy_greedy(ids, mask, table, k: int) -> list[int]:
    sets = python_sets(ids, mask, table)
    # entries: (-gain, -size, index); a popped stale gain is an upper bound (submodularity)
    heap = [(-len(s), -len(s), i) for i, s in enumerate(sets)]
    heapq.heapify(heap)
    covered: set = set()
    selected: list[int] = []
    while len(selected) < k and heap:
        _, neg_size, i = heapq.heappop(heap)
        fresh = len(sets[i] - covered)
        if not heap or (-fresh, neg_size, i) <= heap[0]:
            selected.append(i)
            covered |= sets[i]
        else:
            heapq.heappush(heap, (-fresh, neg_size, i))
    return selected


def zipfian_corpus(n: int, length: int, vocab: int, seed: int = 0, exponent: float = 1.1) -> np.ndarray:
    """``int32 (n, length)`` token ids with Zipfian frequencies over ``vocab`` ids."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab + 1)
    p = ranks ** (-exponent)
    p /= p.sum()
    perm = rng.permutation(vocab)  # frequent ids spread over the vocabulary
    return perm[rng.choice(vocab, size=(n, length), p=p)].astype(np.int32)


_ = random  # the reference uses numpy's global RNG; we seed a Generator instead
