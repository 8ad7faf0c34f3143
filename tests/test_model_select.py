"""Model-based selection (least_perplexity, cola), random_tokens and select_multi."""

from __future__ import annotations

import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from multidevice import run_on_8_devices

from zipcal_jax import model_select as ms
from zipcal_jax import select_multi
from zipcal_jax.models import llama
from zipcal_jax.select import select

V, N, L = 97, 21, 12


@pytest.fixture(scope="module")
def model():
    cfg = llama.LlamaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
    )  # fmt: skip
    return llama.Llama(cfg, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (N, L)).astype(np.int32)
    lengths = rng.choice([2, 7, L], N)  # few distinct lengths: few reference compiles
    mask = np.arange(L)[None] < lengths[:, None]  # right padding
    ids = np.where(mask, ids, 5)
    return ids, mask


def _ref_nll(model, ids, mask):
    out = []
    for row, m in zip(ids, mask):
        real = row[m][None]
        logits = np.asarray(llama.forward(model, real), np.float64)[0]
        logp = logits - logits.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        out.append(-logp[np.arange(real.shape[1] - 1), real[0, 1:]].mean())
    return np.array(out)


def test_least_perplexity_matches_reference(model, data):
    ids, mask = data
    ref = _ref_nll(model, ids, mask)
    scores = ms.perplexity_scores(model, ids, mask, batch=4, progress=False)  # padded last batch
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-5)
    # padding: other pad content and left padding leave scores unchanged
    left_ids, left_mask = np.zeros_like(ids) + 7, np.zeros_like(mask)
    for i, (row, m) in enumerate(zip(ids, mask)):
        left_ids[i, L - m.sum() :], left_mask[i, L - m.sum() :] = row[m], True
    left = ms.perplexity_scores(model, left_ids, left_mask, progress=False)
    np.testing.assert_allclose(left, ref, rtol=1e-4, atol=1e-5)
    sel = select(ids, 5, method="least_perplexity", mask=mask, model=model)
    np.testing.assert_array_equal(sel.indices, np.argsort(ref, kind="stable")[:5])
    assert sel.method == "least_perplexity" and sel.gains is None


def _ref_cola_features(model, ids, mask):
    feats = []
    for row, m in zip(ids, mask):
        real = jnp.asarray(row[m][None])
        h, pos, attn = model.prepare_inputs(real, None)
        per_layer = []
        for layer in model.layers:
            h = layer(h, pos, attn)
            mean = np.asarray(h, np.float64)[0].mean(0)
            per_layer.append(mean / np.linalg.norm(mean))
        feats.append(np.concatenate(per_layer))
    return np.array(feats)


def test_cola_embeddings_match_reference(model, data):
    ids, mask = data
    rows = np.arange(0, N, 3)  # eager per-row reference: a subset keeps the test fast
    ref = _ref_cola_features(model, ids[rows], mask[rows])
    emb = ms.cola_embeddings(model, ids, mask, seed=3, batch=4, progress=False)
    proj = ms.random_projection(ref.shape[1], 64, 3)
    assert proj.shape == (2 * 32, 64)
    np.testing.assert_allclose(emb[rows], ref @ proj, rtol=1e-4, atol=1e-4)
    feats = ms.activation_features(model, ids, mask, progress=False)
    np.testing.assert_allclose(feats[rows], ref, rtol=1e-4, atol=1e-5)


def test_kmeans_blobs_and_nearest():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(5, 8)) * 50
    X = np.concatenate([c + rng.normal(size=(12, 8)) for c in centers])
    blob = np.repeat(np.arange(5), 12)
    for seed in (0, 1, 2):
        C, labels, _ = ms.kmeans(X, 5, seed=seed)
        picks = ms.nearest_distinct(X, C)
        assert sorted(blob[picks]) == [0, 1, 2, 3, 4]
        assert len(np.unique(labels)) == 5
    # two centroids at the same place: the second takes the next nearest unused sample
    picks = ms.nearest_distinct(X, np.stack([X[3], X[3]]))
    assert picks[0] == 3 and picks[1] != 3


def test_cola_select(model, data):
    ids, mask = data
    a = select(ids, 6, method="cola", mask=mask, model=model, seed=0)
    b = select(ids, 6, method="cola", mask=mask, model=model, seed=0)
    c = select(ids, 6, method="cola", mask=mask, model=model, seed=5)
    np.testing.assert_array_equal(a.indices, b.indices)
    for s in (a, c):
        assert len(s) == 6 and len(set(s.indices.tolist())) == 6 and s.indices.dtype == np.int64
    with pytest.warns(UserWarning):
        d = select(ids, N + 4, method="cola", mask=mask, model=model)
    assert sorted(d.indices.tolist()) == list(range(N))
    with pytest.raises(ValueError, match="model"):
        select(ids, 3, method="cola", mask=mask)


def test_random_tokens():
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 300, (200, 16)).astype(np.int32)
    mask = np.arange(16)[None] < rng.integers(1, 17, 200)[:, None]
    table = rng.integers(-1, 150, 300).astype(np.int32)
    zc = select(ids, 10, mask=mask, concepts=table)
    target = mask[zc.indices].sum()
    a = select(ids, 10, method="random_tokens", mask=mask, concepts=table, seed=4)
    b = select(ids, 10, method="random_tokens", mask=mask, concepts=table, seed=4)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert mask[a.indices].sum() >= target > mask[a.indices[:-1]].sum()
    assert a.info["target_tokens"] == target
    assert len(set(a.indices.tolist())) == len(a)
    np.testing.assert_array_equal(a.indices, np.random.default_rng(4).permutation(200)[: len(a)])


def _brute_kcenter(X, k):
    chosen = [0]
    while len(chosen) < k:
        best, best_d = None, -1.0
        for i in range(len(X)):
            if i in chosen:
                continue
            d = min(((X[i] - X[j]) ** 2).sum() for j in chosen)
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def test_select_multi(model):
    rng = np.random.default_rng(3)
    p1 = rng.integers(0, V, (30, 10)).astype(np.int32)
    m1 = np.arange(10)[None] < rng.integers(2, 11, 30)[:, None]
    p2 = rng.integers(0, V, (25, 14)).astype(np.int32)
    m2 = np.arange(14)[None] < rng.integers(2, 15, 25)[:, None]
    k = 8
    sel = select_multi([(p1, m1), (p2, m2)], k, model=model)
    assert len(sel) == k and len(set(sel.indices.tolist())) == k
    s1, s2 = select(p1, k, mask=m1), select(p2, k, mask=m2)
    union = [(0, i) for i in s1.indices] + [(1, i) for i in s2.indices]
    # the first center is the first pick of the first pool
    assert sel.indices[0] == s1.indices[0] and sel.info["pool"][0] == 0
    emb = np.array([
        ms.mean_token_embeddings(model, (p1, p2)[p][i : i + 1], (m1, m2)[p][i : i + 1])[0] for p, i in union
    ])  # fmt: skip
    E = np.asarray(model.embed.embedding[...], np.float64)
    np.testing.assert_allclose(emb[0], E[p1[s1.indices[0]][m1[s1.indices[0]]]].mean(0), rtol=1e-6)
    expect = _brute_kcenter(emb, k)
    got = [30 * p + r if p == 1 else r for p, r in zip(sel.info["pool"], sel.info["row"])]
    want = [(30 + union[j][1]) if union[j][0] == 1 else union[j][1] for j in expect]
    assert got == want == sel.indices.tolist()
    # pluggable embedder
    calls = []
    sel2 = select_multi(
        [(p1, m1), (p2, None)], 5, embed=lambda i, m: calls.append(i.shape) or m.sum(1)[:, None]
    )
    assert calls == [(2 * 5, 14)] and len(sel2) == 5


def test_sharded_cola_embeddings_equal_unsharded():
    script = textwrap.dedent(
        """
        import json, jax, numpy as np
        from flax import nnx
        from jax.sharding import AxisType
        from zipcal_jax import model_select as ms
        from zipcal_jax.models import llama
        assert len(jax.devices()) == 8
        mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
        cfg = llama.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2)
        model = llama.Llama(cfg, rngs=nnx.Rngs(1))
        rng = np.random.default_rng(0)
        ids = rng.integers(0, 97, (19, 10)).astype(np.int32)
        mask = np.arange(10)[None] < rng.integers(1, 11, 19)[:, None]
        one = ms.cola_embeddings(model, ids, mask, batch=8, progress=False)
        eight = ms.cola_embeddings(model, ids, mask, batch=8, mesh=mesh, progress=False)
        p1 = ms.perplexity_scores(model, ids, mask, batch=8, progress=False)
        p8 = ms.perplexity_scores(model, ids, mask, batch=8, mesh=mesh, progress=False)
        print(json.dumps({"err": float(np.abs(one - eight).max()), "perr": float(np.nanmax(np.abs(p1 - p8))),
                          "shape": list(eight.shape)}))
        """
    )
    r = run_on_8_devices(script)
    assert r["shape"] == [19, 64]
    assert r["err"] < 1e-5 and r["perr"] < 1e-5


def test_precomputed_forward_gives_the_same_picks(model, data):
    ids, mask = data
    feats = ms.activation_features(model, ids, mask, progress=False)
    for seed in (0, 3):
        a, emb_a = ms.cola(model, ids, 5, mask, seed=seed, progress=False)
        b, emb_b = ms.cola(None, ids, 5, mask, seed=seed, features=feats)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(emb_a, emb_b, rtol=1e-12)
    scores = ms.perplexity_scores(model, ids, mask, progress=False)
    a, _ = ms.least_perplexity(model, ids, 5, mask, progress=False)
    b, _ = ms.least_perplexity(None, ids, 5, mask, scores=scores)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="features has shape"):
        ms.cola(None, ids, 5, mask, features=feats[:-1])
    with pytest.raises(ValueError, match="scores has shape"):
        ms.least_perplexity(None, ids, 5, mask, scores=scores[:3])
