"""A plain-Python greedy maximum coverage, written from the paper's selection rule, as
the independent reference for ZipCal's JAX greedy."""

from __future__ import annotations

import numpy as np


def python_greedy(sets: list[set], k: int) -> tuple[list[int], list[int]]:
    """Greedy max coverage: most new elements, then larger set, then lower index."""
    covered: set = set()
    remaining = list(range(len(sets)))
    picks, gains = [], []
    for _ in range(min(k, len(sets))):
        best = max(remaining, key=lambda i: (len(sets[i] - covered), len(sets[i]), -i))
        picks.append(best)
        gains.append(len(sets[best] - covered))
        covered |= sets[best]
        remaining.remove(best)
    return picks, gains


def row_sets(ids, mask=None, table=None) -> list[set]:
    mask = np.ones(ids.shape, bool) if mask is None else mask
    out = []
    for row, m in zip(ids, mask):
        toks = row[m]
        if table is not None:
            toks = table[toks]
            toks = toks[toks >= 0]
        out.append({int(t) for t in toks})
    return out
