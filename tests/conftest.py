"""Shared test fixtures."""

from __future__ import annotations

import pytest

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Calibration data decides which weights a pruned model keeps; a good sample covers many concepts.
Python's reference manual describes the syntax and the core semantics of the language.
In the beginning God created the heaven and the earth. And the earth was without form, and void.
Cynic, n. A blackguard whose faulty vision sees things as they are, not as they ought to be.
Numbers such as 0, 1, 2, 3, 42, 128 and 2048 appear in code; so do brackets [], braces {} and colons.
"""


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE ``tokenizers.Tokenizer`` with 300 ids: ``<|endoftext|>`` = 0, ``<pad>`` = 1.

    Trained in a few milliseconds on a few KB of fixed English text; it has no post-processor,
    so ``add_special_tokens`` adds nothing.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 8, trainer)
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.token_to_id("<pad>") == 1
    return tok


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests write caches (tokenizers, compiled XLA programs, converted models) into a
    temporary folder, never into the user's ``~/.cache/zipcal_jax``, and run offline."""
    import os

    private = {
        "ZIPCAL_CACHE": str(tmp_path_factory.mktemp("zipcal-cache")),
        "HF_HUB_OFFLINE": "1",  # tests never reach for the hub; hub paths are tested with fakes
        "HF_DATASETS_OFFLINE": "1",
    }
    old = {key: os.environ.get(key) for key in private}
    os.environ.update(private)
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def highest_precision():
    """float32 matmuls at full precision for a module's parity tests (``pytestmark =
    pytest.mark.usefixtures("highest_precision")``)."""
    import jax

    with jax.default_matmul_precision("highest"):
        yield
