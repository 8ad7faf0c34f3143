"""Zero-shot scoring: log-likelihoods against a direct transformers computation, and the metrics.

The reference (:func:`_reference`) implements lm-evaluation-harness's rules on its own — trailing
context whitespace onto the continuation, ``whole[len(ctx):]`` split, ``[BOS]`` for an empty
context, ``(ctx + cont)[-(max_length + 1):][:-1]`` — and scores each request alone with torch
``log_softmax`` on a tiny random ``LlamaForCausalLM`` (300-token vocabulary, the ``tiny_tokenizer``
fixture). Ours loads the same weights via ``save_pretrained`` → ``load_hf_folder``.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from zipcal_jax.evals import zeroshot as zs
from zipcal_jax.evals.tasks.base import Doc, Task
from zipcal_jax.models.checkpoints import load_hf_folder
from zipcal_jax.models.tokenizers import TextTokenizer

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from hf_models import tiny_hf_llama  # noqa: E402

pytestmark = pytest.mark.usefixtures("highest_precision")

ATOL = 2e-4  # on sums of up to ~30 float32 token log-probs
BOS = 0  # the tiny tokenizer's <|endoftext|>, which TextTokenizer reports as BOS (and EOS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_tokenizer):
    hf = tiny_hf_llama(0, vocab_size=300)
    path = tmp_path_factory.mktemp("tiny_zeroshot")
    hf.save_pretrained(path)
    return SimpleNamespace(hf=hf, ours=load_hf_folder(path), tok=tiny_tokenizer)


def _enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


def _reference(hf, tok, ctx: str, cont: str, max_length: int = 2048, add_bos: bool = False):
    """(log-likelihood, is_greedy) of one request, the harness's way, with torch."""
    if ctx == "":
        ctx_enc, cont_enc = [BOS], _enc(tok, cont)
    else:
        n = len(ctx) - len(ctx.rstrip())
        if n:
            ctx, cont = ctx[:-n], ctx[-n:] + cont
        whole, ctx_enc = _enc(tok, ctx + cont), _enc(tok, ctx)
        cont_enc = whole[len(ctx_enc) :]
        if add_bos:
            ctx_enc = [BOS, *ctx_enc]
    inp = (ctx_enc + cont_enc)[-(max_length + 1) :][:-1]
    with torch.no_grad():
        logits = hf(torch.tensor([inp])).logits[0, -len(cont_enc) :].double()
    logp = torch.log_softmax(logits, dim=-1)
    target = torch.tensor(cont_enc)
    ll = logp.gather(1, target[:, None]).sum().item()
    return ll, bool((logp.argmax(-1) == target).all())


def _check(tiny, requests, ours, **ref_kw):
    assert len(ours) == len(requests)
    for (ctx, cont), (ll, greedy) in zip(requests, ours):
        ref_ll, ref_greedy = _reference(tiny.hf, tiny.tok, ctx, cont, **ref_kw)
        assert isinstance(ll, float) and isinstance(greedy, bool)
        assert ll == pytest.approx(ref_ll, abs=ATOL), (ctx, cont)
        assert greedy == ref_greedy, (ctx, cont)


# ----------------------------------------------------------------------------- against torch

EDGE_CASES = [
    ("The quick brown fox", " jumps over the lazy dog."),
    ("The quick brown fox ", "jumps"),  # trailing space moves onto the continuation
    ("Question: what is 2 + 2?\nAnswer:", " 4"),
    ("A line that ends in a newline\n", "Next line."),  # "\n" is trailing whitespace too
    ("", "Calibration data decides which weights a pruned model keeps."),  # empty context → [BOS]
    ("Café naïve résumé — ", "über straße ☕ 日本語"),  # unicode, multi-byte, trailing space
    ("Numbers such as 0, 1, 2", "42"),  # continuation without a leading space
    ("   ", "whitespace-only context"),
]


def test_matches_torch_on_edge_cases(tiny):
    ours = zs.loglikelihood(tiny.ours, tiny.tok, EDGE_CASES[:-1], batch_size=4, progress=False)
    _check(tiny, EDGE_CASES[:-1], ours)
    # A whitespace-only context strips to nothing; the harness would assert, we use [BOS].
    ((ll, _),) = zs.loglikelihood(tiny.ours, tiny.tok, EDGE_CASES[-1:], progress=False)
    assert ll == pytest.approx(_reference(tiny.hf, tiny.tok, "", "   whitespace-only context")[0], abs=ATOL)


def test_shared_context_packing_matches_unpacked_and_torch(tiny):
    ctx_a = "Python's reference manual describes the syntax and the core semantics of the language."
    ctx_b = "In the beginning God created the heaven and the earth."
    endings = [" It is long.", " A journey of a thousand miles", " 42", " brackets [] and braces {}"]
    requests = [(ctx_a, e) for e in endings] + [(ctx_b, e) for e in endings[:3]] + [(ctx_a, " solo")]
    encoded = zs.encode_requests(tiny.tok, requests)
    rows = zs.plan_rows(encoded, max_length=2048, pack=True)
    assert len(rows) == 2 and sorted(len(r.conts) for r in rows) == [3, 5]  # one row per context
    packed = zs.loglikelihood(tiny.ours, tiny.tok, requests, pack=True, progress=False)
    plain = zs.loglikelihood(tiny.ours, tiny.tok, requests, pack=False, progress=False)
    auto = zs.loglikelihood(tiny.ours, tiny.tok, requests, progress=False)
    np.testing.assert_allclose([ll for ll, _ in packed], [ll for ll, _ in plain], atol=1e-4)
    np.testing.assert_allclose([ll for ll, _ in auto], [ll for ll, _ in plain], atol=1e-4)
    assert [g for _, g in packed] == [g for _, g in plain]
    _check(tiny, requests, packed)


def test_left_truncation_with_small_max_length(tiny):
    long_ctx = "The quick brown fox jumps over the lazy dog. "  # 35 tokens of the tiny tokenizer
    requests = [
        (long_ctx, "jumps"),
        (long_ctx, "Numbers"),
        ("Short context", " fits"),  # 14 tokens: not truncated
        (long_ctx, " braces {} and colons."),  # 12 continuation tokens, 4 context tokens kept
    ]
    for pack in (None, True, False):  # the long_ctx requests do not fit packed: plain rows
        ours = zs.loglikelihood(tiny.ours, tiny.tok, requests, max_length=16, pack=pack, progress=False)
        _check(tiny, requests, ours, max_length=16)
    too_long = [("ctx", " " + "word " * 20)]
    with pytest.raises(ValueError, match=r"request 0 .*more than max_length=16"):
        zs.loglikelihood(tiny.ours, tiny.tok, too_long, max_length=16, progress=False)


def test_lengths_across_buckets_compile_once_per_bucket(tiny):
    words = "Cynic, n. A blackguard whose faulty vision sees things as they are, not as they ought to be. "
    requests = [*[(words * k, " A single step.") for k in (1, 2, 3, 5)], ("Hi", " there")]
    requests += [(c, " Another step.") for c, _ in requests]  # shared contexts, two choices each
    before = zs._score_batch._cache_size()
    ours = zs.loglikelihood(tiny.ours, tiny.tok, requests, batch_size=2, progress=False)
    _check(tiny, requests, ours)
    rows = zs.plan_rows(zs.encode_requests(tiny.tok, requests), 2048)
    shapes = {(B, T, P) for B, T, P, _ in zs._batches(rows, 2, 2 * 256, 300)}
    assert len({T for _, T, _ in shapes}) >= 4  # the requests really span several buckets
    assert zs._score_batch._cache_size() - before <= len(shapes)
    zs.loglikelihood(tiny.ours, tiny.tok, requests, batch_size=2, progress=False)  # cached now
    assert zs._score_batch._cache_size() - before <= len(shapes)


def test_is_greedy_true_for_the_models_own_tokens(tiny):
    """Find a context whose greedy next tokens decode to text that tokenizes back to them."""
    tok = TextTokenizer(tiny.tok)
    found = None
    for ctx in (
        "The quick brown fox",
        "In the beginning",
        "Python's reference",
        "A journey of",
        "Numbers such",
    ):
        ctx_ids, new = _enc(tiny.tok, ctx), []
        for _ in range(3):
            with torch.no_grad():
                new = [*new, int(tiny.hf(torch.tensor([ctx_ids + new])).logits[0, -1].argmax())]
            cont = tok.decode(new)
            if cont and "\ufffd" not in cont and _enc(tiny.tok, ctx + cont)[len(ctx_ids) :] == new:
                found = (ctx, cont)
        if found:
            break
    assert found is not None, "no greedy continuation round-trips through the tokenizer"
    requests = [found, (found[0], " zzz unlikely text")]
    ours = zs.loglikelihood(tiny.ours, tiny.tok, requests, progress=False)
    assert ours[0][1] is True and ours[1][1] is False
    _check(tiny, requests, ours)


def test_add_bos_prepends_bos_to_every_context(tiny):
    requests = [("The quick brown fox", " jumps"), ("", "Alone"), ("Numbers ", "42")]
    encoded = zs.encode_requests(tiny.tok, requests, add_bos=True)
    assert [c[0] for c, _ in encoded] == [BOS, BOS, BOS] and encoded[1][0] == [BOS]
    ours = zs.loglikelihood(tiny.ours, tiny.tok, requests, add_bos=True, progress=False)
    _check(tiny, requests, ours, add_bos=True)


def test_encoding_rules_and_errors(tiny):
    tok = TextTokenizer(tiny.tok)
    ((ctx, cont),) = zs.encode_requests(tok, [("Answer: ", "yes")])
    assert ctx == _enc(tiny.tok, "Answer:") and cont == _enc(tiny.tok, "Answer: yes")[len(ctx) :]
    assert zs.encode_requests(tok, [("", "x")], prefix_token_id=7)[0][0] == [7]
    assert zs.loglikelihood(tiny.ours, tok, [], progress=False) == []
    with pytest.raises(ValueError, match=r"request 1 .*zero tokens"):
        zs.loglikelihood(tiny.ours, tok, [("a", " b"), ("context", "")], progress=False)
    with pytest.raises(TypeError, match=r"request 2 .*two strings"):
        zs.loglikelihood(tiny.ours, tok, [("a", " b"), ("c", " d"), ("e", 5)], progress=False)
    with pytest.raises(TypeError, match=r"request 0 .*pair"):
        zs.loglikelihood(tiny.ours, tok, ["just a string"], progress=False)
    with pytest.raises(TypeError, match="list of"):
        zs.loglikelihood(tiny.ours, tok, "not a list", progress=False)


# ----------------------------------------------------------------------------- pure pieces


def test_tree_mask_and_row_layout():
    row = zs.Row(ctx=(5, 6, 7), conts=((0, (10, 11, 12)), (1, (20,)), (2, (30, 31))))
    assert row.length == 3 + 2 + 0 + 1 and row.n_scored == 6
    arrays, spans = zs._row_arrays([row], B=2, T=8, P=8)
    np.testing.assert_array_equal(arrays["ids"][0, :6], [5, 6, 7, 10, 11, 30])
    np.testing.assert_array_equal(arrays["positions"][0, :6], [0, 1, 2, 3, 4, 3])
    np.testing.assert_array_equal(arrays["segments"][0], [0, 0, 0, 1, 1, 3, -1, -1])
    np.testing.assert_array_equal(arrays["gather"][0, :6], [2, 3, 4, 2, 2, 5])
    np.testing.assert_array_equal(arrays["targets"][0, :6], [10, 11, 12, 20, 30, 31])
    assert spans == [(0, 0, 0, 3), (1, 0, 3, 4), (2, 0, 4, 6)]
    mask = np.asarray(zs.tree_attention_mask(arrays["segments"]))[0]
    assert mask[4].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]  # cont 1 sees ctx and itself
    assert mask[5].tolist() == [1, 1, 1, 0, 0, 1, 0, 0]  # cont 3 does not see cont 1
    assert mask[2].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]  # ctx is causal


def test_bucket_lengths():
    assert [zs.bucket_length(n) for n in (1, 16, 17, 24, 25, 33, 49, 97, 1000)] == [
        16, 16, 24, 24, 32, 48, 64, 128, 1024,
    ]  # fmt: skip
    assert zs.bucket_length(9, minimum=8) == 12


def test_choice_scores_ties_and_unicode_lengths():
    s = zs.choice_scores([-2.0, -2.0, -3.0], ["a", "b", "c"], gold=1)
    assert s == {"acc": 0.0, "acc_norm": 0.0}  # tie → first index, as np.argmax
    assert zs.choice_scores([-2.0, -2.0], ["a", "b"], gold=0)["acc"] == 1.0
    # "é" (1 code point) vs "e\u0301" (2 code points): acc_norm divides by characters, not bytes.
    # Per character -4/4 < -4.9/5 picks choice 1; per UTF-8 byte -4/5 > -4.9/6 would pick 0.
    s = zs.choice_scores([-4.0, -4.9], ["caf\u00e9", "cafe\u0301"], gold=1)
    assert s["acc"] == 0.0 and s["acc_norm"] == 1.0
    # "日本" is 2 characters (6 bytes): -3/2 < -3.6/3 picks "abc"; per byte it would pick "日本".
    s = zs.choice_scores([-3.0, -3.6], ["日本", "abc"], gold=0)
    assert s["acc"] == 1.0 and s["acc_norm"] == 0.0
    assert zs.choice_scores([-1.0, -5.0], ["x", "y"], 1, greedy=[True, False])["greedy"] == 0.0


def test_mean_stderr_formula():
    values = [1.0, 0.0, 1.0, 1.0]
    assert zs.mean_stderr(values) == pytest.approx(np.std(values, ddof=1) / 2)
    assert zs.mean_stderr([0.5, 0.5]) == 0.0
    assert math.isnan(zs.mean_stderr([1.0]))


# ----------------------------------------------------------------------------- evaluate (fake scorer)


def _fake_scorer(table):
    """A loglikelihood stand-in: log-likelihood from ``table[(ctx, cont)]``, greedy if > -1."""
    calls = []

    def fake(model, tokenizer, requests, **kw):
        calls.append((list(requests), kw))
        return [(table[r], table[r] > -1) for r in requests]

    return fake, calls


def _tasks():
    hella = Task(
        name="mini_hella",
        docs=[
            Doc((("ctx1", " aa"), ("ctx1", " bbbb")), gold=1, choices=("aa", "bbbb")),
            Doc((("ctx2", " aa"), ("ctx2", " bbbb")), gold=0, choices=("aa", "bbbb")),
            Doc((("ctx3", " aa"), ("ctx3", " bbbb")), gold=0, choices=("aa", "bbbb")),
        ],
        source="test",
        config={"seed": 0},
    )
    wino = Task(  # winogrande shape: one context per option, a shared continuation
        name="mini_wino",
        docs=[
            Doc((("Anna gave Bo", " a book."), ("Bo gave Anna", " a book.")), gold=0, choices=("Anna", "Bo")),
            Doc((("X then", " left."), ("Y then", " left.")), gold=0, choices=("X", "Y")),
        ],
        metrics=("acc",),
    )
    greedy = Task(
        name="mini_lambada", docs=[Doc((("c", " w"), ("c", " v")), 0, ("w", "v"))], metrics=("greedy",)
    )
    table = {
        ("ctx1", " aa"): -2.0, ("ctx1", " bbbb"): -3.0,  # acc wrong, acc_norm right (-1 vs -0.75)
        ("ctx2", " aa"): -1.0, ("ctx2", " bbbb"): -5.0,  # both right
        ("ctx3", " aa"): -4.0, ("ctx3", " bbbb"): -4.0,  # tie → index 0 (right); norm picks 1
        ("Anna gave Bo", " a book."): -5.0, ("Bo gave Anna", " a book."): -6.0,
        ("X then", " left."): -3.0, ("Y then", " left."): -2.0,
        ("c", " w"): -0.5, ("c", " v"): -2.0,
    }  # fmt: skip
    return [hella, wino, greedy], table


def test_evaluate_metrics_on_crafted_loglikelihoods(monkeypatch, tmp_path):
    tasks, table = _tasks()
    fake, calls = _fake_scorer(table)
    monkeypatch.setattr(zs, "loglikelihood", fake)
    model = SimpleNamespace(cfg=SimpleNamespace(max_position_embeddings=64, vocab_size=300))
    res = zs.evaluate(model, None, tasks, batch_size=8, progress=False, per_doc=True)
    assert len(calls) == 1 and len(calls[0][0]) == 6 + 4 + 2  # one call for every task
    assert calls[0][1]["batch_size"] == 8
    hella, wino, lam = (res["tasks"][n] for n in ("mini_hella", "mini_wino", "mini_lambada"))
    assert hella["acc"] == pytest.approx(2 / 3) and hella["acc_norm"] == pytest.approx(2 / 3)
    assert hella["acc_stderr"] == pytest.approx(np.std([0, 1, 1], ddof=1) / math.sqrt(3))
    assert hella["n"] == 3 and hella["source"] == "test" and hella["config"] == {"seed": 0}
    assert wino == {**wino, "acc": 0.5, "n": 2} and "acc_norm" not in wino
    assert lam["greedy"] == 1.0 and math.isnan(lam["greedy_stderr"]) and "acc" not in lam
    assert res["mean"] == {
        "acc": pytest.approx((2 / 3 + 0.5) / 2),
        "acc_norm": pytest.approx(2 / 3),
        "greedy": 1.0,
    }
    assert res["config"]["max_length"] == 64 and res["config"]["limit"] is None and res["seconds"] >= 0
    assert [d["pred"] for d in res["per_doc"]["mini_hella"]] == [0, 0, 0]
    assert [d["pred_norm"] for d in res["per_doc"]["mini_hella"]] == [1, 0, 1]

    limited = zs.evaluate(model, None, tasks, limit=1, progress=False)
    assert [r["n"] for r in limited["tasks"].values()] == [1, 1, 1] and limited["config"]["limit"] == 1
    assert zs.evaluate(model, None, tasks[:1], limit=0.5, progress=False)["tasks"]["mini_hella"]["n"] == 2

    md = zs.to_markdown(res)
    assert "| mini_hella | 3 | 0.6667 ± 0.3333 | 0.6667 ± 0.3333 | – |" in md
    assert "| mini_lambada | 1 | – | – | 1.0000 |" in md and "**mean**" in md
    json_path, md_path = zs.save_results(res, tmp_path / "out")
    loaded = json.loads(json_path.read_text())
    assert loaded["tasks"]["mini_lambada"]["greedy_stderr"] is None  # NaN → null
    assert loaded["tasks"]["mini_hella"]["acc"] == pytest.approx(2 / 3)
    assert md_path.read_text() == md


def test_evaluate_rejects_bad_tasks(monkeypatch):
    tasks, table = _tasks()
    monkeypatch.setattr(zs, "loglikelihood", _fake_scorer(table)[0])
    model = SimpleNamespace(cfg=SimpleNamespace(max_position_embeddings=64))
    with pytest.raises(ValueError, match="more than once"):
        zs.evaluate(model, None, [tasks[0], tasks[0]], progress=False)
    with pytest.raises(TypeError, match=r"tasks\[1\]"):
        zs.evaluate(model, None, [tasks[0], 3], progress=False)
    with pytest.raises(ValueError, match="positive"):
        zs.evaluate(model, None, tasks, limit=0, progress=False)


def test_evaluate_resolves_names_through_the_registry(monkeypatch):
    from zipcal_jax.evals import tasks as T

    tasks, table = _tasks()
    monkeypatch.setattr(zs, "loglikelihood", _fake_scorer(table)[0])
    seen = []

    def fake_resolve(spec, *, seed, limit, skipped):
        seen.append((spec, seed, limit))
        skipped["missing_task"] = "not available offline"
        return [tasks[0], spec[1]]

    monkeypatch.setattr(T, "resolve", fake_resolve, raising=False)
    model = SimpleNamespace(cfg=SimpleNamespace(max_position_embeddings=64))
    res = zs.evaluate(model, None, ["mini_hella,missing_task", tasks[1]], limit=2, seed=3, progress=False)
    assert seen == [(["mini_hella,missing_task", tasks[1]], 3, 2)]
    assert list(res["tasks"]) == ["mini_hella", "mini_wino"] and res["tasks"]["mini_hella"]["n"] == 2
    assert res["skipped"] == {"missing_task": "not available offline"}
    assert "Skipped missing_task: not available offline" in zs.to_markdown(res)


def test_evaluate_end_to_end_on_the_tiny_model(tiny):
    """Real scoring through evaluate: the per-doc log-likelihoods are loglikelihood's."""
    docs = [
        Doc(
            (
                ("The quick brown fox", " jumps over"),
                ("The quick brown fox", " sleeps"),
                ("The quick brown fox", " 42"),
            ),
            gold=0,
            choices=("jumps over", "sleeps", "42"),
        ),
        Doc(
            (("In the beginning ", "God"), ("In the beginning ", "Python")), gold=0, choices=("God", "Python")
        ),
    ]
    task = Task(name="tiny_mc", docs=docs, source="inline")
    res = zs.evaluate(tiny.ours, tiny.tok, [task], progress=False, per_doc=True)
    lls = [ll for d in res["per_doc"]["tiny_mc"] for ll in d["lls"]]
    direct = zs.loglikelihood(
        tiny.ours, tiny.tok, [r for d in docs for r in d.requests], pack=False, progress=False
    )
    np.testing.assert_allclose(lls, [ll for ll, _ in direct], atol=1e-4)
    assert set(res["tasks"]["tiny_mc"]) >= {"acc", "acc_norm", "acc_stderr", "acc_norm_stderr", "n"}
    assert res["config"]["model"]["num_hidden_layers"] == 2


def test_evaluate_offline_registry_tasks_on_the_tiny_model(tiny):
    """Names resolved by the real registry (offline cloze tasks on held-out pydoc text)."""
    from zipcal_jax.evals import tasks as T

    if not hasattr(T, "resolve"):
        pytest.skip("zipcal_jax.evals.tasks.resolve is not there yet")
    res = zs.evaluate(
        tiny.ours, tiny.tok, "continuation/pydoc,last_word/pydoc", limit=2, max_length=128, progress=False
    )
    assert list(res["tasks"]) == ["continuation/pydoc", "last_word/pydoc"]
    assert all(row["n"] == 2 for row in res["tasks"].values())
    assert "greedy" in res["tasks"]["last_word/pydoc"] and "acc" in res["mean"]
