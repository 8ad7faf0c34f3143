"""Calibration sets: statistics against hand-computed numbers, gathering a selection into a
CalibrationSet, and the save / load / JSONL round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zipcal_jax.calibration import CalibrationSet, fit_zipf_exponent, rank_frequency, set_statistics
from zipcal_jax.concepts import concept_table
from zipcal_jax.data import build_candidates
from zipcal_jax.select import select


def ols_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope written out (no polyfit): cov(x, y) / var(x)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx = x - x.mean()
    return float((dx * (y - y.mean())).sum() / (dx * dx).sum())


# --------------------------------------------------------------------------- fit_zipf_exponent


@pytest.mark.parametrize("s", [0.8, 1.0, 1.3])
def test_zipf_exponent_exact_power_law(s):
    r = np.arange(1, 501, dtype=float)
    assert fit_zipf_exponent(1e6 * r**-s) == pytest.approx(s, abs=1e-6)


@pytest.mark.parametrize("s", [0.8, 1.0, 1.3])
def test_zipf_exponent_rounded_counts(s):
    r = np.arange(1, 301, dtype=float)
    counts = np.round(1e5 * r**-s)
    assert counts.min() >= 1  # every rank still present, so the fit sees all 300 points
    expected = -ols_slope(np.log(r), np.log(counts))
    got = fit_zipf_exponent(counts)
    assert got == pytest.approx(expected, abs=1e-9)
    assert got == pytest.approx(s, abs=0.05)


def test_zipf_exponent_sorts_and_drops_zeros():
    r = np.arange(1, 51, dtype=float)
    counts = 1000 * r**-1.1
    shuffled = np.random.default_rng(0).permutation(np.concatenate([counts, [0, 0, 0]]))
    assert fit_zipf_exponent(shuffled) == pytest.approx(1.1, abs=1e-6)


@pytest.mark.parametrize("counts", [[], [7], [7, 0], [0, 0, 0]])
def test_zipf_exponent_nan_below_two_types(counts):
    assert np.isnan(fit_zipf_exponent(np.asarray(counts)))


def test_zipf_exponent_flat_curve_is_zero():
    assert fit_zipf_exponent(np.full(10, 4)) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- hand-computed stats

# Two samples of four tokens; id 0 is padding (masked out in row 0).
IDS = np.array([[5, 6, 7, 0], [5, 8, 9, 9]], np.int32)
MASK = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
# A pool: the two samples and one more row (its trailing 0 is padding).
POOL_IDS = np.concatenate([IDS, [[10, 11, 3, 0]]]).astype(np.int32)
POOL_MASK = np.concatenate([MASK, [[1, 1, 1, 0]]]).astype(bool)
# Concept table over 12 ids: 5 and 6 merge into concept 0; 8, 11 and the pad 0 count as nothing.
TABLE = np.full(12, -1, np.int32)
TABLE[[5, 6, 7, 9, 10, 3]] = [0, 0, 1, 2, 3, 4]


def test_rank_frequency_token_ids():
    # real tokens 5 6 7 | 5 8 9 9: 5 and 9 twice, 6 7 8 once
    np.testing.assert_array_equal(rank_frequency(IDS, MASK), [2, 2, 1, 1, 1])


def test_rank_frequency_concepts():
    # concepts 0 0 1 | 0 (8 dropped) 2 2  ->  c0: 3, c2: 2, c1: 1
    np.testing.assert_array_equal(rank_frequency(IDS, MASK, TABLE), [3, 2, 1])


def test_rank_frequency_mask_matters():
    # unmasked, the pad 0 of row 0 counts as a token of its own
    np.testing.assert_array_equal(rank_frequency(IDS, np.ones_like(MASK)), [2, 2, 1, 1, 1, 1])


def test_set_statistics_with_concepts_and_pool():
    stats = set_statistics(IDS, MASK, TABLE, POOL_IDS, POOL_MASK)
    assert stats["samples"] == 2
    assert stats["tokens"] == 7
    assert stats["distinct_tokens"] == 5  # {5, 6, 7, 8, 9}
    assert stats["type_token_ratio"] == pytest.approx(5 / 7)
    assert stats["concepts_covered"] == 3  # {0, 1, 2}
    assert stats["zipf_exponent"] == pytest.approx(-ols_slope(np.log([1, 2, 3]), np.log([3, 2, 1])))
    # pool concepts: {0, 1, 2} + {3 (id 10), 4 (id 3)}; id 11 is nothing
    assert stats["pool_size"] == 3
    assert stats["concepts_in_pool"] == 5
    assert stats["coverage"] == pytest.approx(3 / 5)
    # pool counts: c0 3, c2 2, c1 1, c3 1, c4 1
    expected_pool_s = -ols_slope(np.log([1, 2, 3, 4, 5]), np.log([3, 2, 1, 1, 1]))
    assert stats["pool_zipf_exponent"] == pytest.approx(expected_pool_s)


def test_set_statistics_token_ids_and_default_pool_mask():
    stats = set_statistics(IDS, MASK, None, POOL_IDS)  # pool_mask None: every position is real
    assert stats["concepts_covered"] == 5
    # pool tokens with the pads: {0, 3, 5, 6, 7, 8, 9, 10, 11}
    assert stats["concepts_in_pool"] == 9
    assert stats["coverage"] == pytest.approx(5 / 9)
    assert stats["pool_size"] == 3


def test_set_statistics_without_pool_has_no_pool_keys():
    stats = set_statistics(IDS, MASK, TABLE)
    assert not {"pool_size", "concepts_in_pool", "coverage", "pool_zipf_exponent"} & set(stats)
    assert stats["concepts_covered"] == 3


def test_set_statistics_empty_mask():
    stats = set_statistics(IDS, np.zeros_like(MASK), TABLE, POOL_IDS, POOL_MASK)
    assert stats["tokens"] == 0 and stats["concepts_covered"] == 0
    assert np.isnan(stats["type_token_ratio"]) and np.isnan(stats["zipf_exponent"])
    assert stats["coverage"] == 0.0


# --------------------------------------------------------------------------- from_selection

PARAGRAPHS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Calibration data decides which weights a pruned model keeps.",
    "aaa aaa aaa aaa aaa aaa aaa aaa",
    "Numbers such as 0, 1, 2, 3, 42, 128 and 2048 appear in code.",
    "In the beginning God created the heaven and the earth.",
    "Cynic: a blackguard whose faulty vision sees things as they are.",
    "the the the the the the the",
    "Python's reference manual describes the syntax of the language.",
    "Brackets [], braces {} and colons : mark structure; so do commas.",
    "A journey of a thousand miles begins with a single step.",
    "zebra quartz vexing jumpy wizard folk gym blowing",
    "dog dog dog dog dog dog",
]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "paras.txt"
    path.write_text("\n\n".join(PARAGRAPHS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pool(text_file, tiny_tokenizer):
    cands = build_candidates(str(text_file), tiny_tokenizer, seqlen=16, progress=False)
    return cands, concept_table(tiny_tokenizer)


def concept_sets(ids, mask, table):
    out = []
    for row, m in zip(ids, mask):
        c = table[row[m]]
        out.append({int(x) for x in c[c >= 0]})
    return out


def test_from_selection_gathers_rows_and_provenance(pool, text_file):
    cands, table = pool
    assert len(cands) == len(PARAGRAPHS)
    sel = select(cands.ids, 4, mask=cands.mask, concepts=table)
    calib = CalibrationSet.from_selection(
        cands, sel, concepts=table, seed=3, timing={"candidates": 0.5}, config={"k": 4}
    )
    assert len(calib) == 4 and calib.method == "zipcal" and calib.seed == 3
    assert calib.ids.dtype == np.int32 and calib.mask.dtype == bool
    assert calib.indices.dtype == np.int64 and calib.gains.dtype == np.int64
    np.testing.assert_array_equal(calib.indices, sel.indices)
    np.testing.assert_array_equal(calib.gains, sel.gains)
    for j, i in enumerate(sel.indices):
        np.testing.assert_array_equal(calib.ids[j], cands.ids[i])
        np.testing.assert_array_equal(calib.mask[j], cands.mask[i])
        prov = calib.provenance[j]
        assert prov["source"] == cands.sources[0] and str(text_file) in prov["source"]
        assert prov["row"] == i  # one paragraph per candidate, none dropped
        assert prov["text"] == PARAGRAPHS[i]
    assert calib.texts == [PARAGRAPHS[i] for i in sel.indices]
    assert calib.timing == {"candidates": 0.5, "select": sel.seconds}
    assert calib.config == {"k": 4}

    chosen = set().union(*concept_sets(calib.ids, calib.mask, table))
    in_pool = set().union(*concept_sets(cands.ids, cands.mask, table))
    s = calib.stats
    assert s["samples"] == 4 and s["pool_size"] == len(PARAGRAPHS)
    assert s["tokens"] == int(calib.mask.sum())
    assert s["concepts_covered"] == len(chosen) == int(sel.gains.sum())
    assert s["concepts_in_pool"] == len(in_pool)
    assert s["coverage"] == pytest.approx(len(chosen) / len(in_pool))


def test_from_selection_random_has_no_gains(pool):
    cands, table = pool
    sel = select(cands.ids, 5, method="random", mask=cands.mask, concepts=table, seed=1)
    calib = CalibrationSet.from_selection(cands, sel, concepts=table, seed=1)
    assert calib.gains is None and calib.method == "random"
    assert calib.texts == [PARAGRAPHS[i] for i in sel.indices]
    np.testing.assert_array_equal(calib.ids, cands.ids[sel.indices])


def test_from_selection_words_is_synthetic(pool, tiny_tokenizer):
    cands, table = pool
    sel = select(
        cands.ids, 3, method="words", mask=cands.mask, texts=cands.texts, tokenizer=tiny_tokenizer, seed=2
    )
    calib = CalibrationSet.from_selection(cands, sel, concepts=table, seed=2)
    assert len(calib) == 3 and calib.method == "words"
    np.testing.assert_array_equal(calib.indices, [-1, -1, -1])
    np.testing.assert_array_equal(calib.ids, sel.ids)
    np.testing.assert_array_equal(calib.mask, sel.mask)
    for prov, text in zip(calib.provenance, sel.texts):
        assert prov["source"].startswith("synthetic:") and prov["source"] == "synthetic:words"
        assert prov["row"] == -1 and prov["text"] == text
    corpus_words = {w for p in PARAGRAPHS for w in p.lower().split()}
    assert all(set(t.split()) <= corpus_words for t in calib.texts)
    assert calib.stats["pool_size"] == len(PARAGRAPHS) and calib.stats["samples"] == 3


# --------------------------------------------------------------------------- save / load / jsonl


@pytest.fixture(scope="module")
def zipcal_set(pool):
    cands, table = pool
    sel = select(cands.ids, 4, mask=cands.mask, concepts=table)
    return CalibrationSet.from_selection(
        cands, sel, concepts=table, seed=7, timing={"candidates": 0.25}, config={"seqlen": 16, "k": 4}
    )


def test_save_load_round_trip(zipcal_set, tmp_path):
    out = zipcal_set.save(tmp_path / "set")
    assert out == tmp_path / "set"
    assert {p.name for p in out.iterdir()} == {
        "ids.npy",
        "mask.npy",
        "indices.npy",
        "gains.npy",
        "manifest.json",
    }
    back = CalibrationSet.load(out)
    for name in ("ids", "mask", "indices", "gains"):
        a, b = getattr(zipcal_set, name), getattr(back, name)
        assert b.dtype == a.dtype, name
        np.testing.assert_array_equal(b, a)
    assert back.provenance == zipcal_set.provenance
    assert (back.method, back.seed) == ("zipcal", 7)
    assert back.timing == zipcal_set.timing and back.config == zipcal_set.config
    assert back.stats == pytest.approx(zipcal_set.stats)

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "zipcal-calibration-set"
    assert manifest["version"] == 1
    assert manifest["method"] == "zipcal" and manifest["seed"] == 7
    assert manifest["samples"] == 4 and manifest["seqlen"] == 16
    assert manifest["provenance"] == zipcal_set.provenance
    assert manifest["stats"]["concepts_covered"] == zipcal_set.stats["concepts_covered"]


def test_save_load_without_gains(pool, tmp_path):
    cands, table = pool
    sel = select(cands.ids, 3, method="random", mask=cands.mask, seed=0)
    calib = CalibrationSet.from_selection(cands, sel, concepts=table)
    out = calib.save(tmp_path / "r")
    assert not (out / "gains.npy").exists()
    back = CalibrationSet.load(out)
    assert back.gains is None and back.method == "random"
    np.testing.assert_array_equal(back.indices, sel.indices)


def test_save_over_a_zipcal_set_drops_stale_gains(zipcal_set, pool, tmp_path):
    cands, table = pool
    zipcal_set.save(tmp_path / "same")
    sel = select(cands.ids, 4, method="random", mask=cands.mask, seed=0)
    CalibrationSet.from_selection(cands, sel, concepts=table).save(tmp_path / "same")
    back = CalibrationSet.load(tmp_path / "same")
    assert back.method == "random"
    assert back.gains is None


def test_to_jsonl(zipcal_set, tmp_path):
    path = zipcal_set.to_jsonl(tmp_path / "samples.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(zipcal_set)
    for line, prov, index in zip(lines, zipcal_set.provenance, zipcal_set.indices):
        rec = json.loads(line)
        assert set(rec) == {"text", "source", "row", "index"}
        assert rec["text"] == prov["text"] and rec["source"] == prov["source"]
        assert rec["row"] == prov["row"] and rec["index"] == int(index)


def test_load_folder_without_manifest(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match=r"manifest\.json") as info:
        CalibrationSet.load(folder)
    assert str(folder) in str(info.value)


def test_load_foreign_manifest(zipcal_set, tmp_path):
    out = zipcal_set.save(tmp_path / "set")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format"] = "something-else"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="not a zipcal calibration-set manifest"):
        CalibrationSet.load(out)


def test_load_newer_version(zipcal_set, tmp_path):
    out = zipcal_set.save(tmp_path / "set")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["version"] = 99
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="newer"):
        CalibrationSet.load(out)


def test_constructor_checks_shapes():
    ids = np.zeros((2, 4), np.int32)
    prov = [{"source": "s", "row": 0, "text": "a"}, {"source": "s", "row": 1, "text": "b"}]
    idx = np.arange(2, dtype=np.int64)
    with pytest.raises(ValueError, match="one shape"):
        CalibrationSet(ids, np.ones((2, 3), bool), prov, "random", 0, idx)
    with pytest.raises(ValueError, match="provenance"):
        CalibrationSet(ids, np.ones((2, 4), bool), prov[:1], "random", 0, idx)
    ok = CalibrationSet(ids, np.ones((2, 4), bool), prov, "random", 0, idx)
    assert len(ok) == 2 and ok.texts == ["a", "b"]
