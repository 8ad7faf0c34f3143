"""``zipcal eval`` end to end on a tiny random model folder (HF layout + tokenizer.json), offline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from zipcal_jax.cli import main

torch = pytest.importorskip("torch")
from hf_models import tiny_hf_llama  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
TEXT = " ".join(f"Paragraph {i} talks about rivers, lanterns and the number {i * 7}." for i in range(60))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_hf_llama(3, vocab_size=300, tie_word_embeddings=True).save_pretrained(folder)
    tiny_tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def run(capsys, argv) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_perplexity_and_tasks(model_dir, tmp_path, capsys, tiny_tokenizer):
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "out"
    argv = ["eval", "--model", str(model_dir), "--ppl", str(text), "--seqlen", "32", "--batch-size", "4",
            "--tasks", f"piqa@{FIXTURES / 'piqa.jsonl'},continuation/pydoc", "--limit", "3",
            "--no-progress", "--out", str(out)]  # fmt: skip
    code, stdout, err = run(capsys, argv)
    assert code == 0, err
    results = json.loads((out / "eval.json").read_text())
    ppl = results["perplexity"][str(text)]
    n_tokens = len(tiny_tokenizer.encode(TEXT).ids)
    assert ppl["windows"] == n_tokens // 32 and ppl["tokens"] == 32 * (n_tokens // 32)
    # A random 300-id model is near uniform: its perplexity is finite and of the vocabulary's order.
    assert math.isfinite(ppl["ppl"]) and 30 < ppl["ppl"] < 3000
    tasks = results["zeroshot"]["tasks"]
    assert set(tasks) == {"piqa", "continuation/pydoc"}
    assert tasks["piqa"]["n"] == 3 and tasks["continuation/pydoc"]["n"] == 3
    assert all(0.0 <= t["acc"] <= 1.0 for t in tasks.values())
    assert "continuation/pydoc" in stdout and "Perplexity" in stdout
    assert (out / "eval.md").read_text().count("|") > 10
    config = json.loads((out / "config.json").read_text())
    assert (
        config["limit"] == 3
        and config["seqlen"] == 32
        and config["tasks"] == ["piqa@" + str(FIXTURES / "piqa.jsonl"), "continuation/pydoc"]
    )


def test_eval_config_file(model_dir, tmp_path, capsys):
    cfg = tmp_path / "eval.json"
    cfg.write_text(
        json.dumps({"model": str(model_dir), "tasks": "last_word/pydoc", "limit": 2, "progress": False})
    )
    code, _, err = run(capsys, ["eval", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert code == 0, err
    results = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert results["zeroshot"]["tasks"]["last_word/pydoc"]["n"] == 2 and results["perplexity"] == {}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "nothing to evaluate"),
        (["--tasks", "piqaa"], "piqa"),  # unknown task: the message lists the known ones
        (["--ppl", "missing-file.txt"], "missing-file.txt"),
        (["--tasks", "offline", "--limit", "0"], "--limit"),
    ],
)
def test_eval_bad_input(model_dir, tmp_path, capsys, flags, message):
    code, _, err = run(
        capsys, ["eval", "--model", str(model_dir), "--no-progress", "--out", str(tmp_path), *flags]
    )
    assert code == 2 and message in err and "Traceback" not in err
