"""ZipCal greedy against a plain-Python greedy written from the paper's rule, plus
properties of every selection method."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from greedy_reference import python_greedy, row_sets
from hypothesis import given, settings
from hypothesis import strategies as st

from zipcal_jax import greedy
from zipcal_jax.select import prepare_sets, select


def random_instance(rng, n, L, V, pad_frac=0.3):
    ids = rng.integers(0, V, (n, L))
    lengths = rng.integers(0, L + 1, n)
    mask = np.arange(L)[None, :] < lengths[:, None]
    mask &= rng.random((n, L)) > pad_frac * 0.1
    return ids, mask


@pytest.mark.parametrize("seed", range(40))
def test_exact_greedy_matches_python(seed):
    rng = np.random.default_rng(seed)
    n, L, V = int(rng.integers(1, 60)), int(rng.integers(1, 12)), int(rng.integers(2, 40))
    ids, mask = random_instance(rng, n, L, V)
    table = None
    if seed % 2:  # many tokens share a concept, some are no concept at all
        table = rng.integers(-1, max(2, V // 3), V).astype(np.int32)
    k = int(rng.integers(0, n + 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = select(ids, k, mask=mask, concepts=table, batch=int(rng.integers(1, 8)))
    want_picks, want_gains = python_greedy(row_sets(ids, mask, table), k)
    assert got.indices.tolist() == want_picks
    assert got.gains.tolist() == want_gains


@pytest.mark.parametrize("batch, wide", [(1, 1), (1, 4), (3, 16), (8, 64), (64, 399)])
def test_lazy_paths_agree_with_python(batch, wide):
    rng = np.random.default_rng(batch + wide)
    ids = rng.zipf(1.3, (400, 16)) % 300  # Zipfian tokens: many ties, saturation
    S, sizes, valid, prio, C = prepare_sets(ids)
    covered = jnp.zeros(C + 1, bool).at[C].set(True)
    picks, gains, misses, full = greedy.lazy_greedy(S, sizes, valid, prio, covered, 120, batch, wide)
    want_picks, want_gains = python_greedy(row_sets(ids), 120)
    assert np.asarray(picks).tolist() == want_picks
    assert np.asarray(gains).tolist() == want_gains
    if 1 < wide < 64:
        assert int(misses) > int(full) > 0  # both fallbacks ran, and stayed exact


def test_select_reports_lazy_details():
    ids = np.random.default_rng(0).zipf(1.3, (400, 16)) % 300
    info = select(ids, 50).info
    assert info["algorithm"] == "lazy" and info["wide"] == 399 and info["batch"] == 256


def test_full_greedy_fallback_when_keys_overflow(monkeypatch):
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 30, (50, 6))
    monkeypatch.setattr(greedy, "lazy_keys_fit", lambda *a: False)
    got = select(ids, 20)
    assert got.info["algorithm"] == "full"
    assert got.indices.tolist() == python_greedy(row_sets(ids), 20)[0]


def test_ties_go_to_larger_set_then_lower_index():
    ids = np.array([[1, 2, 0, 0], [3, 4, 0, 0], [3, 4, 5, 0], [1, 2, 0, 0]])
    mask = ids > 0
    # Step 1: row 2 has most new concepts. Step 2: rows 0 and 3 tie (2 new, size 2) -> 0.
    # Step 3: row 3 (0 new, size 2) beats row 1 (0 new, size 2)? equal size -> lower index 1.
    got = select(ids, 4, mask=mask)
    assert got.indices.tolist() == [2, 0, 1, 3]
    assert got.gains.tolist() == [3, 2, 0, 0]


def test_concepts_merge_tokens_and_drop_nothing_ids():
    ids = np.array([[0, 1, 2], [3, 3, 3], [4, 5, 5]])
    table = np.array([0, 0, 1, -1, 2, 3], np.int32)  # ids 0,1 share a concept; id 3 is nothing
    got = select(ids, 3, concepts=table)
    assert got.gains.tolist() == [2, 2, 0]
    assert got.indices.tolist() == [0, 2, 1]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 30),
    L=st.integers(1, 8),
    V=st.integers(1, 20),
    k=st.integers(0, 40),
    seed=st.integers(0, 2**16),
)
def test_properties(n, L, V, k, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, (n, L))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = select(ids, k)
    assert len(got.indices) == min(k, n)
    assert len(set(got.indices.tolist())) == len(got.indices)  # no duplicates
    sets = row_sets(ids)
    covered: set = set()
    sizes = []
    for i, gain in zip(got.indices, got.gains):
        assert gain == len(sets[i] - covered)
        covered |= sets[i]
        sizes.append(len(covered))
    assert sizes == sorted(sizes)  # coverage never decreases
    assert list(got.gains) == sorted(got.gains, reverse=True)  # submodular: gains never rise


def test_k_larger_than_n_warns_and_returns_all():
    ids = np.arange(12).reshape(4, 3)
    with pytest.warns(UserWarning, match="pool of 4"):
        got = select(ids, 10)
    assert sorted(got.indices.tolist()) == [0, 1, 2, 3]


def test_pool_variant_is_seeded_and_valid():
    rng = np.random.default_rng(3)
    ids = rng.zipf(1.4, (300, 12)) % 500
    a = select(ids, 40, pool_size=50, seed=1)
    b = select(ids, 40, pool_size=50, seed=1)
    c = select(ids, 40, pool_size=50, seed=2)
    assert a.indices.tolist() == b.indices.tolist()
    assert a.indices.tolist() != c.indices.tolist()
    assert len(set(a.indices.tolist())) == 40
    sets, covered = row_sets(ids), set()
    for i, g in zip(a.indices, a.gains):
        assert g == len(sets[i] - covered)
        covered |= sets[i]
    exact = select(ids, 40)
    assert exact.gains.sum() >= a.gains.sum()  # the sampled variant covers no more


def test_pool_at_least_n_is_the_exact_greedy():
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 60, (80, 10))
    assert select(ids, 30, pool_size=80).indices.tolist() == select(ids, 30).indices.tolist()
    assert select(ids, 30, pool_size=1000).indices.tolist() == python_greedy(row_sets(ids), 30)[0]


def test_pool_tail_scans_all_remaining():
    # n=10, P=4: the last 4 picks scan every remaining candidate (ties -> lowest index).
    ids = np.arange(10)[:, None].repeat(2, 1)  # each row one distinct concept
    got = select(ids, 10, pool_size=4, seed=0)
    assert sorted(got.indices.tolist()) == list(range(10))
    tail = got.indices[6:].tolist()
    assert tail == sorted(tail)


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="2-D"):
        select(np.arange(5), 2)
    with pytest.raises(ValueError, match="mask shape"):
        select(np.zeros((3, 4), int), 2, mask=np.ones((3, 5), bool))
    with pytest.raises(ValueError, match="concept table"):
        select(np.full((2, 2), 9), 1, concepts=np.zeros(5, np.int32))
    with pytest.raises(ValueError, match="unknown method"):
        select(np.zeros((2, 2), int), 1, method="nope")
    with pytest.raises(ValueError, match="non-negative"):
        select(np.zeros((2, 2), int), -1)
    with pytest.raises(ValueError, match="pool_size"):
        select(np.zeros((2, 2), int), 1, pool_size=0)
    with pytest.raises(ValueError, match=r"texts=\.\.\. or tokenizer"):
        select(np.zeros((2, 2), int), 1, method="zipf")


def test_random_is_seeded_and_distinct():
    ids = np.zeros((50, 4), int)
    a, b = select(ids, 20, method="random", seed=5), select(ids, 20, method="random", seed=5)
    assert a.indices.tolist() == b.indices.tolist()
    assert len(set(a.indices.tolist())) == 20
    assert a.indices.tolist() != select(ids, 20, method="random", seed=6).indices.tolist()


def test_zipf_scores_rare_words_first():
    texts = ["the cat. the dog", "the the the", "zebra, quokka", "the cat", "cat dog"]
    got = select(np.zeros((5, 2), int), 3, method="zipf", texts=texts)
    # counts: the 3, cat 3, dog 2, zebra 1, quokka 1 -> scores 1/3+1/3+1/2, 1/3, 2, 2/3, 1/3+1/2
    assert got.indices.tolist() == [2, 0, 4]


def test_words_keeps_word_frequencies(tiny_tokenizer):
    texts = ["alpha beta beta gamma gamma gamma"] * 4 + ["delta"]
    got = select(np.zeros((5, 6), int), 3, method="words", texts=texts, tokenizer=tiny_tokenizer, seed=0)
    assert got.indices.tolist() == [-1, -1, -1]
    assert got.ids.shape == (3, 6) and got.mask.shape == (3, 6)
    words = " ".join(got.texts).split()
    assert len(words) == 18
    counts = {w: words.count(w) for w in set(words)}
    assert counts["gamma"] > counts["beta"] > counts.get("delta", 0)
    assert (
        got.texts
        == select(
            np.zeros((5, 6), int), 3, method="words", texts=texts, tokenizer=tiny_tokenizer, seed=0
        ).texts
    )


@pytest.mark.parametrize("use_table", [False, True])
def test_concept_sets_numpy_and_jax_agree(use_table):
    rng = np.random.default_rng(11)
    ids = rng.integers(0, 40, (300, 64)).astype(np.int32)  # many repeats inside each row
    mask = rng.random(ids.shape) > 0.3
    table = rng.integers(-1, 25, 40).astype(np.int32) if use_table else None
    C = 25 if use_table else 40
    S_np, sizes_np = greedy.concept_sets_numpy(ids, mask, table, C)
    S_jx, sizes_jx = greedy.concept_sets(ids, mask, table, C)
    assert np.asarray(S_jx).tolist() == S_np.astype(np.int32).tolist()
    assert np.asarray(sizes_jx).tolist() == sizes_np.tolist()
    for row, size, want in zip(S_np, sizes_np, row_sets(ids, mask, table)):
        assert row[:size].tolist() == sorted(want)  # distinct concepts, ascending...
        assert (row[size:] == C).all()  # ...then only the sentinel


def test_tie_priority_host_and_device_agree():
    rng = np.random.default_rng(12)
    sizes = rng.integers(0, 5, 200).astype(np.int32)
    valid = rng.random(200) > 0.1
    host = greedy.tie_priority(sizes, valid)
    device = np.asarray(greedy.tie_priority(jnp.asarray(sizes), jnp.asarray(valid)))
    assert host.tolist() == device.tolist()
    order = sorted(range(200), key=lambda i: (valid[i] * (sizes[i] + 1), -i), reverse=True)
    assert host[order].tolist() == list(range(199, -1, -1))


def test_padding_ids_outside_the_vocabulary_are_ignored():
    ids = np.array([[5, 6, 70000, -3], [5, 7, 99, 99]])  # masked-out slots hold junk ids
    mask = np.array([[True, True, False, False], [True, True, False, False]])
    table = np.arange(10, dtype=np.int32)
    for concepts in (None, table):
        got = select(ids, 2, mask=mask, concepts=concepts)
        assert got.indices.tolist() == [0, 1] and got.gains.tolist() == [2, 1]
    with pytest.raises(ValueError, match="negative token id"):
        select(np.array([[-1, 2]]), 1)


def test_token_histogram_counts_occurrences():
    rng = np.random.default_rng(13)
    ids = rng.integers(0, 30, (50, 12)).astype(np.int32)
    mask = rng.random(ids.shape) > 0.25
    table = rng.integers(-1, 10, 30).astype(np.int32)
    got = np.asarray(greedy.token_histogram(ids, mask, table, 10))
    mapped = table[ids[mask]]
    want = np.bincount(mapped[mapped >= 0], minlength=10)
    assert got.tolist() == want.tolist()
    raw = np.asarray(greedy.token_histogram(ids, mask, None, 30))
    assert raw.tolist() == np.bincount(ids[mask], minlength=30).tolist()
