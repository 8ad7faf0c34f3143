"""Model-based selection baselines (``least_perplexity``, ``cola``) and the multi-domain k-center step.

Everything here takes a JAX LLaMA (:class:`zipcal_jax.models.llama.Llama`) but imports no model
code at module import time. The forward passes run in one jitted program per fixed batch shape
(the last batch is padded with dummy all-pad rows whose results are dropped); with ``mesh=`` (a
``data`` axis) the batch is sharded over it and the parameters are replicated.

* :func:`perplexity_scores` / :func:`least_perplexity` — mean next-token NLL over each
  candidate's real tokens; keep the ``k`` lowest.
* :func:`activation_features`, :func:`random_projection`, :func:`cola_embeddings`,
  :func:`kmeans`, :func:`nearest_distinct`, :func:`cola` — COLA's stage 3 (sample selection in
  activation space), as the ZipCal paper compares against.
* :func:`mean_token_embeddings`, :func:`k_center_greedy` — the coreset step of multi-domain ZipCal
  (:func:`zipcal_jax.select.select_multi`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

__all__ = [
    "activation_features",
    "cola",
    "cola_embeddings",
    "k_center_greedy",
    "kmeans",
    "least_perplexity",
    "mean_token_embeddings",
    "nearest_distinct",
    "perplexity_scores",
    "random_projection",
]

_TOKENS_PER_BATCH = 4096  # default forward batch: this many token positions

# ----------------------------------------------------------------------------- batching


def _check(model: Any, ids: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"ids must be a 2-D (n, L) array of token ids, got shape {ids.shape}")
    mask = np.ones(ids.shape, bool) if mask is None else np.asarray(mask).astype(bool)
    if mask.shape != ids.shape:
        raise ValueError(f"mask shape {mask.shape} must equal ids shape {ids.shape}")
    ids = np.where(mask, ids, 0).astype(np.int32)  # pad ids may be anything; feed token 0
    vocab = model.cfg.vocab_size
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(
            f"token ids range over [{ids.min()}, {ids.max()}] under the mask but the model's vocabulary "
            f"has {vocab} ids; the tokenizer does not belong to this model"
        )
    return ids, mask


def _batch_size(batch: int | None, n: int, L: int, shards: int) -> int:
    B = max(1, min(n, _TOKENS_PER_BATCH // max(L, 1))) if batch is None else int(batch)
    if B < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return -(-B // shards) * shards  # a multiple of the data shards


def _run_batched(fn, model, ids, mask, batch, mesh, desc, progress, static=()):
    """``fn(graphdef, state, ids_b, mask_b, *static) -> (B, ...)`` over fixed-size batches; returns
    the stacked float64 NumPy results of the ``n`` real rows (on every process of a mesh that
    spans several: each batch's rows are gathered)."""
    from zipcal_jax.distributed import local_value, put_global

    n, L = ids.shape
    shards = 1
    rows = None
    graphdef, state = nnx.split(model)
    if mesh is not None:
        if "data" not in mesh.axis_names:
            raise ValueError(f"mesh needs a 'data' axis to shard candidates over, has {mesh.axis_names}")
        shards = mesh.shape["data"]
        rows = NamedSharding(mesh, P("data", None))
        state = put_global(state, NamedSharding(mesh, P()))
    B = _batch_size(batch, n, L, shards)
    total = -(-n // B) * B
    pids = np.zeros((total, L), np.int32)
    pmask = np.zeros((total, L), bool)
    pids[:n], pmask[:n] = ids, mask
    outs: list[np.ndarray] = []
    with tqdm(total=n, desc=desc, unit="sample", disable=not progress) as bar:
        pending = None
        for start in range(0, total, B):
            xb, mb = pids[start : start + B], pmask[start : start + B]
            if rows is not None:
                xb, mb = put_global(xb, rows), put_global(mb, rows)
            result = fn(graphdef, state, jnp.asarray(xb), jnp.asarray(mb), *static)
            if pending is not None:  # read back the previous batch while this one runs
                outs.append(np.asarray(local_value(pending), np.float64))
                bar.update(min(B, n - start + B))
            pending = result
        if pending is not None:
            outs.append(np.asarray(local_value(pending), np.float64))
            bar.update(n - bar.n)
    return np.concatenate(outs)[:n] if outs else np.zeros((0,))


# ----------------------------------------------------------------------------- least perplexity


@functools.partial(jax.jit, static_argnums=(0, 4))
def _masked_nll(graphdef, state, ids, mask, n_chunks: int):
    """Mean next-token NLL over real tokens: (B, T) → (B,) float32; NaN with no scored token.
    Position ``t`` predicts token ``t + 1``; it is scored when both are real tokens."""
    from zipcal_jax.evals.perplexity import next_token_nll

    nll = next_token_nll(nnx.merge(graphdef, state), ids, mask, n_chunks)  # (B, T - 1)
    w = (mask[:, 1:] & mask[:, :-1]).astype(jnp.float32)
    count = w.sum(-1)
    return jnp.where(count > 0, (nll * w).sum(-1) / jnp.maximum(count, 1.0), jnp.nan)


def perplexity_scores(
    model: Any,
    ids: Any,
    mask: Any = None,
    *,
    batch: int | None = None,
    mesh: Mesh | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Mean next-token NLL (nats; perplexity = exp) of each candidate over its real tokens.

    ``ids``/``mask``: ``(n, L)``; padding (mask False) is neither attended to nor scored, so its
    position and content do not change a score. Candidates with fewer than two real tokens (nothing
    to score) get NaN. Returns float64 ``(n,)``.
    """
    ids, mask = _check(model, ids, mask)
    n, L = ids.shape
    if n == 0:
        return np.zeros(0)
    if L < 2:
        return np.full(n, np.nan)
    shards = mesh.shape["data"] if mesh is not None and "data" in mesh.axis_names else 1
    B = _batch_size(batch, n, L, shards)
    from zipcal_jax.evals.perplexity import _chunking

    n_chunks, _ = _chunking(L, B, model.cfg.vocab_size)
    return _run_batched(
        _masked_nll, model, ids, mask, B, mesh, f"perplexity scores (L {L})", progress, (n_chunks,)
    )


def least_perplexity(model, ids, k, mask=None, *, batch=None, mesh=None, progress=True, scores=None):
    """Indices of the ``k`` candidates with the lowest perplexity (ties → lower index; candidates
    with nothing to score rank last), in increasing perplexity; and all scores. ``scores``: the
    :func:`perplexity_scores` of these candidates, computed earlier (skips the model forward)."""
    if scores is None:
        scores = perplexity_scores(model, ids, mask, batch=batch, mesh=mesh, progress=progress)
    scores = np.asarray(scores)
    if scores.shape != (np.shape(ids)[0],):
        raise ValueError(f"scores has shape {scores.shape}; expected one per candidate ({np.shape(ids)[0]},)")
    key = np.where(np.isnan(scores), np.inf, scores)
    order = np.argsort(key, kind="stable")  # stable: ties keep the lower index first
    return order[:k].astype(np.int64), scores


# ----------------------------------------------------------------------------- COLA


@functools.partial(jax.jit, static_argnums=0)
def _layer_means(graphdef, state, ids, mask):
    """Per layer output: mean hidden state over real tokens, L2-normalised; concatenated over
    layers → (B, layers * D) float32."""
    model = nnx.merge(graphdef, state)
    h, positions, attn = model.prepare_inputs(ids, mask)
    w = mask.astype(jnp.float32)
    denom = jnp.maximum(w.sum(-1, keepdims=True), 1.0)
    feats = []
    for layer in model.layers:
        h = layer(h, positions, attn)
        mean = jnp.einsum("BTD,BT->BD", h.astype(jnp.float32), w) / denom
        norm = jnp.linalg.norm(mean, axis=-1, keepdims=True)
        feats.append(mean / jnp.maximum(norm, 1e-12))
    return jnp.concatenate(feats, axis=-1)


def activation_features(model, ids, mask=None, *, batch=None, mesh=None, progress=True) -> np.ndarray:
    """COLA's activation features: for every decoder layer's output, the mean over the candidate's
    real tokens, L2-normalised per layer, concatenated in layer order → float64 ``(n, layers * D)``."""
    ids, mask = _check(model, ids, mask)
    if ids.shape[0] == 0:
        return np.zeros((0, len(model.layers) * model.cfg.hidden_size))
    return _run_batched(_layer_means, model, ids, mask, batch, mesh, "cola activations", progress)


def random_projection(d_in: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Seeded Gaussian projection matrix ``(d_in, dim)`` with entries N(0, 1) / sqrt(dim), as COLA's
    ``random_projection`` (which uses an unseeded ``torch.randn``; seeded here for reproducibility)."""
    return np.random.default_rng(seed).standard_normal((d_in, dim)) / np.sqrt(dim)


def cola_embeddings(model, ids, mask=None, *, dim=64, seed=0, batch=None, mesh=None, progress=True):
    """:func:`activation_features` projected with :func:`random_projection` → float64 ``(n, dim)``."""
    feats = activation_features(model, ids, mask, batch=batch, mesh=mesh, progress=progress)
    return feats @ random_projection(feats.shape[1], dim, seed)


def _sqdist(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    d = (X * X).sum(1)[:, None] - 2.0 * X @ C.T + (C * C).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _kmeans_pp(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = X.shape[0]
    centers = [int(rng.integers(n))]
    d = _sqdist(X, X[centers[0]][None])[:, 0]
    for _ in range(1, k):
        total = d.sum()
        nxt = int(rng.choice(n, p=d / total)) if total > 0 else int(rng.integers(n))
        centers.append(nxt)
        d = np.minimum(d, _sqdist(X, X[nxt][None])[:, 0])
    return X[centers].copy()


def kmeans(
    X: Any, k: int, *, seed: int = 0, n_init: int = 4, max_iter: int = 100, tol: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means with k-means++ seeding, ``n_init`` seeded restarts, the lowest inertia kept.

    An empty cluster is re-seeded at the point farthest from its current centroid (as sklearn
    does). Stops when no label changes or the centroids move less than ``tol`` (squared, summed).
    Returns ``(centroids (k, d), labels (n,), inertia)``.
    """
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n, got k={k}, n={n}")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(n_init):
        C = _kmeans_pp(X, k, rng)
        labels = None
        for _ in range(max_iter):
            D = _sqdist(X, C)
            new = D.argmin(1)
            counts = np.bincount(new, minlength=k)
            sums = np.zeros_like(C)
            np.add.at(sums, new, X)
            Cn = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], C)
            dist = D[np.arange(n), new]
            for j in np.flatnonzero(counts == 0):  # re-seed empty clusters at far points
                far = int(dist.argmax())
                Cn[j], dist[far] = X[far], 0.0
            shift = float(((Cn - C) ** 2).sum())
            done = labels is not None and np.array_equal(new, labels)
            C, labels = Cn, new
            if done or shift <= tol:
                break
        D = _sqdist(X, C)
        labels = D.argmin(1)
        inertia = float(D[np.arange(n), labels].sum())
        if best is None or inertia < best[2]:
            best = (C, labels, inertia)
    return best


def nearest_distinct(X: Any, centroids: Any) -> np.ndarray:
    """For each centroid in order, the nearest sample not taken by an earlier centroid (ties →
    lower index). Returns int64 ``(k,)`` distinct indices; needs ``k <= n``."""
    X = np.asarray(X, np.float64)
    D = _sqdist(X, np.asarray(centroids, np.float64))
    used = np.zeros(X.shape[0], bool)
    out = np.empty(D.shape[1], np.int64)
    for j in range(D.shape[1]):
        order = np.argsort(D[:, j], kind="stable")
        pick = order[~used[order]][0]
        out[j], used[pick] = pick, True
    return out


def cola(
    model, ids, k, mask=None, *, seed=0, dim=64, n_init=4, batch=None, mesh=None, progress=True, features=None
):
    """COLA stage 3: :func:`cola_embeddings` → :func:`kmeans` with ``k`` clusters → the sample nearest
    each centroid (:func:`nearest_distinct`). Returns ``(indices (k,), embeddings (n, dim))``.
    ``features``: the :func:`activation_features` of these candidates, computed earlier (skips the
    model forward; the seeded projection and k-means still run)."""
    if features is None:
        features = activation_features(model, ids, mask, batch=batch, mesh=mesh, progress=progress)
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] != np.shape(ids)[0]:
        raise ValueError(
            f"features has shape {features.shape}; expected (candidates={np.shape(ids)[0]}, layers * hidden)"
        )
    emb = features @ random_projection(features.shape[1], dim, seed)
    if k == 0:
        return np.zeros(0, np.int64), emb
    C, _, _ = kmeans(emb, k, seed=seed, n_init=n_init)
    return nearest_distinct(emb, C), emb


# ----------------------------------------------------------------------------- multi-domain coreset


def mean_token_embeddings(model: Any, ids: Any, mask: Any = None, *, batch: int = 64) -> np.ndarray:
    """Default multi-domain embedder: the mean of the model's input token embeddings
    (``model.embed``) over each row's real tokens → float64 ``(n, D)`` (zeros for an empty row)."""
    ids, mask = _check(model, ids, mask)
    E = np.asarray(model.embed.embedding[...], np.float64)
    out = np.zeros((ids.shape[0], E.shape[1]))
    for s in range(0, ids.shape[0], batch):
        w = mask[s : s + batch].astype(np.float64)
        summed = np.einsum("btd,bt->bd", E[ids[s : s + batch]], w)
        out[s : s + batch] = summed / np.maximum(w.sum(1), 1.0)[:, None]
    return out


def k_center_greedy(emb: Any, k: int, first: int = 0) -> np.ndarray:
    """K-center greedy as the ZipCal reference's ``k_center_greedy``: start at ``first`` (index 0
    there), keep each point's min squared-L2 distance to the chosen centers, and repeatedly take the
    ``argmax`` (ties → lower index). ``k >= n`` returns ``arange(n)`` as the reference does. Unlike
    the reference, a chosen point is never chosen again (differs only when rows are duplicates)."""
    X = np.asarray(emb, np.float64)
    n = X.shape[0]
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k <= 0:
        return np.zeros(0, np.int64)
    out = [int(first)]
    d = ((X - X[first]) ** 2).sum(1)
    d[first] = -np.inf  # chosen points are never re-picked (matters only with duplicate rows)
    for _ in range(1, k):
        nxt = int(d.argmax())
        out.append(nxt)
        d = np.minimum(d, ((X - X[nxt]) ** 2).sum(1))
        d[nxt] = -np.inf
    return np.asarray(out, np.int64)
