"""Choose calibration samples: ZipCal and the baselines it is compared with.

``select(ids, k, method=...)`` is the one entry point. ZipCal (``method="zipcal"``) is
greedy maximum coverage of normalised tokens ("concepts", see :mod:`zipcal_jax.concepts`):
each step takes the candidate that adds the most concepts not yet covered; ties go to the
candidate with more distinct concepts, then to the lowest index. It always returns exactly
``min(k, n)`` picks — once everything is covered it keeps taking zero-gain candidates by
the same order, as the reference code does.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from zipcal_jax import baselines, greedy
from zipcal_jax.concepts import num_concepts as _num_concepts

__all__ = ["METHODS", "Selection", "prepare_sets", "select", "select_multi"]

METHODS = ("zipcal", "random", "random_tokens", "zipf", "words", "least_perplexity", "cola")


@dataclass
class Selection:
    """What :func:`select` chose.

    Attributes:
      indices: ``int64 (k,)`` candidate indices in selection order; ``-1`` marks a
        synthetic sample (``method="words"``), whose tokens are in ``ids``/``mask``.
      gains: ``int64 (k,)`` new concepts each pick added (``zipcal``), else None.
      method: the method name.
      seconds: wall time of the selection (set building included).
      ids, mask: the tokens of synthetic samples (``words``), else None.
      texts: the text of synthetic samples (``words``), else None.
      info: method details (e.g. the number of lazy-greedy full re-scores).
    """

    indices: np.ndarray
    gains: np.ndarray | None
    method: str
    seconds: float
    ids: np.ndarray | None = None
    mask: np.ndarray | None = None
    texts: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)


def _check_inputs(ids, mask, concepts):
    """Validate the arrays; returns ``(ids int32, mask bool or None, concepts, top)``, where
    ``top`` bounds the token ids (the largest one, or the largest under the mask)."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"ids must be a 2-D (n, L) array of token ids, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must hold integers (token ids), got dtype {ids.dtype}")
    if mask is not None:
        mask = np.asarray(mask).astype(bool, copy=False)
        if mask.shape != ids.shape:
            raise ValueError(f"mask shape {mask.shape} must equal ids shape {ids.shape}")
    low, top = (int(ids.min()), int(ids.max())) if ids.size else (0, -1)
    in_range = low >= 0 and (concepts is None or top < len(concepts))
    if mask is not None and not in_range:  # junk under the mask (pad ids) is allowed
        low = int(np.min(np.where(mask, ids, 0), initial=0))
        top = int(np.max(np.where(mask, ids, -1), initial=-1))
    if low < 0:
        raise ValueError(f"ids hold a negative token id ({low}) where the mask is True; mask padding out")
    if concepts is not None:
        concepts = np.asarray(concepts, dtype=np.int32)
        if concepts.ndim != 1:
            raise ValueError("concepts must be a 1-D concept_table(tokenizer) array")
        if top >= len(concepts):
            raise ValueError(
                f"token id {top} is outside the concept table (vocab {len(concepts)}): build "
                "concept_table() from the tokenizer that produced these ids"
            )
    return ids.astype(np.int32, copy=False), mask, concepts, top


def _data_sharding(mesh: Mesh | None, rank: int):
    if mesh is None:
        return None
    if "data" not in mesh.axis_names:
        raise ValueError(f"mesh needs a 'data' axis to shard candidates over, has {mesh.axis_names}")
    return NamedSharding(mesh, P("data", *([None] * (rank - 1))))


def prepare_sets(ids, mask=None, concepts=None, mesh: Mesh | None = None):
    """Concept sets of all candidates, padded to the mesh's ``data`` size and placed on it.

    Returns ``(S, sizes, valid, prio, C)``: ``S``/``sizes`` as
    :func:`zipcal_jax.greedy.concept_sets` gives them, ``valid`` False on padding rows, and
    the tie-break ranks of :func:`zipcal_jax.greedy.tie_priority`.
    """
    ids, mask, concepts, top = _check_inputs(ids, mask, concepts)
    n = ids.shape[0]
    C = _num_concepts(concepts) if concepts is not None else top + 1
    shards = mesh.shape["data"] if mesh is not None else 1
    pad = (-n) % shards
    if pad or (mask is None and jax.default_backend() != "cpu"):
        mask = np.ones(ids.shape, bool) if mask is None else mask
        ids = np.concatenate([ids, np.zeros((pad, ids.shape[1]), ids.dtype)])
        mask = np.concatenate([mask, np.zeros((pad, mask.shape[1]), bool)])
    valid = np.arange(n + pad) < n
    rows, flat = _data_sharding(mesh, 2), _data_sharding(mesh, 1)
    # Rows are sorted with the sentinel last, so columns past the largest set are all
    # sentinel: drop them (padding-heavy candidates shrink the greedy's passes a lot).
    if jax.default_backend() == "cpu":  # NumPy's SIMD row sort beats XLA:CPU's ~10x
        S, sizes = greedy.concept_sets_numpy(ids, mask, concepts, C)
        S = S[:, : max(1, int(sizes.max(initial=0)))]
        prio = greedy.tie_priority(sizes, valid)
        S, sizes, prio = jax.device_put(S, rows), jax.device_put(sizes, flat), jax.device_put(prio, flat)
        valid = jax.device_put(valid, flat)
    else:
        ids, mask = jax.device_put(ids, rows), jax.device_put(mask, rows)
        table = None if concepts is None else jnp.asarray(concepts)
        S, sizes = greedy.concept_sets(ids, mask, table, C)
        S = jax.device_put(S[:, : max(1, int(sizes.max()))], rows)
        valid = jax.device_put(valid, flat)
        prio = greedy.tie_priority(sizes, valid)
    return S, sizes, valid, prio, C


def _zipcal(ids, k, mask, concepts, seed, pool_size, mesh, batch):
    S, sizes, valid, prio, C = prepare_sets(ids, mask, concepts, mesh)
    covered = jnp.zeros(C + 1, bool).at[C].set(True)
    info: dict[str, Any] = {}
    if pool_size is not None:
        rng = jax.random.key(seed)
        picks, gains = greedy.pool_greedy(S, sizes, valid, covered, rng, k, min(pool_size, S.shape[0]))
        info["algorithm"] = f"sampled pools of {pool_size}"
    elif S.shape[0] > 1 and greedy.lazy_keys_fit(S.shape[1], S.shape[0]):
        n_rows = S.shape[0]
        wide = min(n_rows - 1, max(2048, min(32768, n_rows // 32)))
        b = max(1, min(batch, wide))
        picks, gains, misses, full = greedy.lazy_greedy(S, sizes, valid, prio, covered, k, b, wide)
        info.update(algorithm="lazy", batch=b, wide=wide, buffer_misses=int(misses), full_rescores=int(full))
    else:
        picks, gains = greedy.full_greedy(S, sizes, valid, covered, k)
        info["algorithm"] = "full"
    return np.asarray(picks, np.int64), np.asarray(gains, np.int64), info


def select(
    ids,
    k: int,
    *,
    method: str = "zipcal",
    mask=None,
    concepts=None,
    seed: int = 0,
    pool_size: int | None = None,
    mesh: Mesh | None = None,
    batch: int = 256,
    texts: list[str] | None = None,
    tokenizer: Any = None,
    model: Any = None,
) -> Selection:
    """Pick ``min(k, n)`` calibration samples out of ``n`` candidates.

    Args:
      ids: ``int (n, L)`` token ids of the candidates (see ``build_candidates``).
      k: samples wanted. ``k > n`` warns and returns all ``n``.
      method: ``"zipcal"`` (greedy concept coverage), ``"random"``, ``"zipf"`` (sum of
        1/frequency over distinct words, top-k), ``"words"`` (synthetic bag-of-words
        samples keeping corpus word frequencies), ``"random_tokens"`` (random candidates,
        seeded order, drawn until the set holds at least as many real tokens as the exact
        ZipCal set of the same pool and ``k``: the draw stops at the first candidate that
        reaches or exceeds that count, so the set size may differ from ``k``; needs
        ``concepts`` like zipcal), and the model-based ``"least_perplexity"`` (the ``k``
        lowest mean NLL over real tokens, ties to the lower index) and ``"cola"`` (COLA
        stage 3: k-means on projected layer activations, see
        :mod:`zipcal_jax.model_select`), which need ``model``.
      mask: ``bool (n, L)``, True where a real token stands (default: all True).
      concepts: ``concept_table(tokenizer)``, or None to count each token id as its own
        concept.
      seed: seeds every random choice (``random``, ``words``, and ``zipcal`` with
        ``pool_size``).
      pool_size: None for the exact greedy; ``P`` for the reference code's variant that
        scores a fresh random pool of ``P`` remaining candidates at each step.
      mesh: optional ``jax.sharding.Mesh`` with a ``data`` axis; candidates are sharded
        over it. The result is identical to the unsharded one.
      batch: candidates the lazy greedy re-scores per step (a speed knob; the result does
        not depend on it). On a miss it re-scores ``clip(n / 32, 2048, 32768)`` of them,
        then, if needed, all.
      texts: the candidates' texts (``zipf``/``words`` split them into words); else they
        are decoded from ``ids`` with ``tokenizer``.
      tokenizer: needed by ``words`` (to tokenize the synthetic samples) and by
        ``zipf``/``words`` when ``texts`` is not given.
      model: for the model-based methods.

    Returns:
      A :class:`Selection`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    if pool_size is not None and (not isinstance(pool_size, (int, np.integer)) or pool_size < 1):
        raise ValueError(f"pool_size must be a positive int or None (exact greedy), got {pool_size!r}")
    n = int(np.shape(ids)[0]) if np.ndim(ids) >= 1 else 0
    if k > n and method != "words":
        warnings.warn(f"asked for k={k} samples from a pool of {n}; returning all {n}", stacklevel=2)
    k = int(k) if method == "words" else min(int(k), n)
    start = time.perf_counter()
    if method == "zipcal":
        if k == 0:
            _check_inputs(ids, mask, concepts)
            indices, gains, info = np.zeros(0, np.int64), np.zeros(0, np.int64), {}
        else:
            indices, gains, info = _zipcal(ids, k, mask, concepts, seed, pool_size, mesh, batch)
        return Selection(indices, gains, method, time.perf_counter() - start, info=info)
    if method == "random":
        _check_inputs(ids, mask, concepts)
        indices = baselines.random_indices(n, k, seed)
        return Selection(indices, None, method, time.perf_counter() - start)
    if method == "random_tokens":
        return _random_tokens(ids, k, mask, concepts, seed, mesh, batch, start)
    if method in ("least_perplexity", "cola"):
        if model is None:
            raise ValueError(f"method {method!r} scores candidates with a model: pass model=...")
        from zipcal_jax import model_select  # lazy: keeps `import zipcal_jax` model-free

        ids, mask, _, _ = _check_inputs(ids, mask, None)
        if method == "least_perplexity":
            indices, scores = model_select.least_perplexity(model, ids, k, mask, mesh=mesh)
            info = {"nll": scores[indices]}
        else:
            indices, _ = model_select.cola(model, ids, k, mask, seed=seed, mesh=mesh)
            info = {"dim": 64, "n_init": 4}
        return Selection(indices, None, method, time.perf_counter() - start, info=info)
    ids, mask, _, _ = _check_inputs(ids, mask, None)
    mask = np.ones(ids.shape, bool) if mask is None else mask
    if texts is None:
        if tokenizer is None:
            raise ValueError(f"method {method!r} works on words: pass texts=... or tokenizer=...")
        texts = baselines.decode_rows(ids, mask, tokenizer)
    if len(texts) != n:
        raise ValueError(f"texts has {len(texts)} entries but ids has {n} rows")
    if method == "zipf":
        indices = baselines.zipf_indices(texts, k)
        return Selection(indices, None, method, time.perf_counter() - start)
    # words
    if tokenizer is None:
        raise ValueError("method 'words' tokenizes its synthetic samples: pass tokenizer=...")
    synth = baselines.words_samples(texts, k, ids.shape[1], seed)
    syn_ids, syn_mask = baselines.tokenize_fixed(synth, tokenizer, ids.shape[1])
    return Selection(
        np.full(k, -1, np.int64), None, method, time.perf_counter() - start, syn_ids, syn_mask, synth
    )


def _random_tokens(ids, k, mask, concepts, seed, mesh, batch, start):
    """Random candidates in a seeded order until the set holds at least the real-token count of
    the exact ZipCal set of the same pool and ``k``; stops at the first candidate that reaches or
    exceeds it (so dropping the last pick leaves the set below the target)."""
    ids, mask, concepts, _ = _check_inputs(ids, mask, concepts)
    lengths = (np.ones(ids.shape, bool) if mask is None else mask).sum(1)
    zc = select(ids, k, method="zipcal", mask=mask, concepts=concepts, mesh=mesh, batch=batch)
    target = int(lengths[zc.indices].sum())
    order = baselines.random_indices(len(lengths), len(lengths), seed)
    count = 0 if target == 0 else int(np.searchsorted(np.cumsum(lengths[order]), target)) + 1
    indices = order[:count]
    info = {"target_tokens": target, "tokens": int(lengths[indices].sum()), "zipcal_k": len(zc)}
    return Selection(indices, None, "random_tokens", time.perf_counter() - start, info=info)


def _as_pool(pool):
    if hasattr(pool, "ids") and hasattr(pool, "mask"):
        return np.asarray(pool.ids), np.asarray(pool.mask).astype(bool)
    ids, mask = pool
    ids = np.asarray(ids)
    return ids, (np.ones(ids.shape, bool) if mask is None else np.asarray(mask).astype(bool))


def select_multi(
    pools,
    k: int,
    *,
    concepts=None,
    embed: Any = None,
    model: Any = None,
    seed: int = 0,
    pool_size: int | None = None,
    mesh: Mesh | None = None,
    batch: int = 256,
) -> Selection:
    """Multi-domain ZipCal: ZipCal on each pool separately, then k-center greedy over the union.

    As the reference code does, each pool selects the full ``k`` (not ``k / len(pools)``); the
    union is the per-pool selections concatenated in pool order (each in selection order); the
    k-center greedy (squared L2) starts at union index 0 — the first pick of the first pool — and
    returns ``min(k, union size)`` picks in k-center order.

    Args:
      pools: a list of ``(ids, mask)`` pairs (``mask`` may be None) or ``Candidates``.
      k: samples wanted.
      concepts: one ``concept_table`` for all pools (same tokenizer), or None.
      embed: ``callable(ids, mask) -> (n, d)`` embedding the union (rows right-padded to the
        longest pool with id 0 / mask False); default: the mean of ``model``'s input token
        embeddings over real tokens (the reference uses MiniLM sentence embeddings, or the LLM's
        embedding layer for ``least_perplexity``).
      model: the model for the default embedder.
      seed, pool_size, mesh, batch: passed to each pool's ZipCal (see :func:`select`).

    Returns:
      A :class:`Selection` whose ``indices`` refer to the concatenation of the pools in order
      (pool ``p``'s row ``i`` is ``sum(len(pools[:p])) + i``); ``info["pool"]`` holds each pick's
      pool and ``info["row"]`` its row within that pool; ``gains`` is None.
    """
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    if embed is None and model is None:
        raise ValueError("select_multi embeds the union: pass model=... (default embedder) or embed=...")
    start = time.perf_counter()
    pools = [_as_pool(p) for p in pools]
    if not pools:
        raise ValueError("select_multi needs at least one pool")
    offsets = np.cumsum([0] + [len(ids) for ids, _ in pools])
    pool_of, rows = [], []
    for p, (ids, mask) in enumerate(pools):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a small pool just gives all its rows
            sel = select(
                ids, min(int(k), len(ids)), mask=mask, concepts=concepts, seed=seed,
                pool_size=pool_size, mesh=mesh, batch=batch,
            )  # fmt: skip
        pool_of.append(np.full(len(sel), p, np.int64))
        rows.append(sel.indices)
    pool_of, rows = np.concatenate(pool_of), np.concatenate(rows)
    if k > len(rows):
        warnings.warn(
            f"asked for k={k} but the per-pool selections hold {len(rows)}; returning all", stacklevel=2
        )
    width = max(ids.shape[1] for ids, _ in pools)
    u_ids = np.zeros((len(rows), width), np.int32)
    u_mask = np.zeros((len(rows), width), bool)
    for j, (p, r) in enumerate(zip(pool_of, rows)):
        ids, mask = pools[p]
        u_ids[j, : ids.shape[1]] = np.where(mask[r], ids[r], 0)
        u_mask[j, : ids.shape[1]] = mask[r]
    if embed is None:
        from zipcal_jax import model_select  # lazy: keeps `import zipcal_jax` model-free

        emb = model_select.mean_token_embeddings(model, u_ids, u_mask)
    else:
        emb = np.asarray(embed(u_ids, u_mask))
    if emb.shape[0] != len(rows):
        raise ValueError(f"embed returned {emb.shape[0]} rows for {len(rows)} samples")
    from zipcal_jax.model_select import k_center_greedy

    picks = k_center_greedy(emb, min(int(k), len(rows)), first=0)
    indices = (offsets[pool_of[picks]] + rows[picks]).astype(np.int64)
    info = {"pool": pool_of[picks], "row": rows[picks], "union_size": len(rows), "first_center": 0}
    return Selection(indices, None, "zipcal_multi", time.perf_counter() - start, info=info)
