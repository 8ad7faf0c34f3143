"""Tests for zipcal_jax.evals.tasks: the registry, the lm-eval task loaders (on local fixtures in
each hub schema, tests/fixtures/tasks/), BIG-bench task.json tasks and the corpus cloze tasks."""

from __future__ import annotations

import itertools
import json
import re
import warnings
from collections import Counter
from pathlib import Path

import pytest

from zipcal_jax import cache
from zipcal_jax.data import builtins as bi
from zipcal_jax.data import load_texts
from zipcal_jax.evals.tasks import SUITES, Doc, Task, cloze, get_task, harness, known_tasks, resolve
from zipcal_jax.evals.tasks.bigbench import bigbench_docs

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
FILES = {
    "piqa": "piqa.jsonl",
    "hellaswag": "hellaswag.jsonl",
    "arc_easy": "arc.jsonl",
    "arc_challenge": "arc.jsonl",
    "boolq": "boolq.jsonl",
    "winogrande": "winogrande.jsonl",
    "openbookqa": "openbookqa.jsonl",
    "rte": "rte.jsonl",
}


@pytest.fixture(autouse=True)
def _empty_cache(tmp_path_factory, monkeypatch):
    """An empty cache per test: nothing real is downloaded (BIG-bench, Debian texts). (The
    session fixture of conftest.py, which this must not shadow, keeps the hub offline.)"""
    monkeypatch.setenv("ZIPCAL_CACHE", str(tmp_path_factory.mktemp("cache")))


def fixture_task(name: str, **kwargs) -> Task:
    return get_task(f"{name}@{FIXTURES / FILES[name]}", **kwargs)


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / FILES[name]).read_text().splitlines()]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- lm-eval tasks


def test_piqa_prompt_exactly_as_the_harness():
    task = fixture_task("piqa")
    assert (task.name, task.metrics, len(task.docs)) == ("piqa", ("acc", "acc_norm"), 3)
    doc = task.docs[1]
    assert doc.requests == (
        ("Question: To loosen a tight jar lid,\nAnswer:", " run the lid under cold water for a minute."),
        ("Question: To loosen a tight jar lid,\nAnswer:", " run the lid under hot water for a minute."),
    )
    assert doc.choices == (
        "run the lid under cold water for a minute.",
        "run the lid under hot water for a minute.",
    )
    assert [d.gold for d in task.docs] == [0, 1, 0]
    assert task.config["split"] == "validation" and "piqa/piqa.yaml" in task.config["harness"]


def test_hellaswag_preprocess_and_prompt():
    task = fixture_task("hellaswag")
    assert task.metrics == ("acc", "acc_norm") and [d.gold for d in task.docs] == [0, 0, 1]
    first, wikihow, caps = task.docs
    ctx = "Removing ice from car: A woman stands next to a snowy car holding a scraper. She"
    assert first.requests[0] == (ctx, " scrapes the ice off the windshield with long strokes.")
    assert first.choices[2] == "starts to paint the car red."  # stripped
    query = "Home and Garden: How to keep a cat off the counter. Make the counter unappealing."
    assert {c for c, _ in wikihow.requests} == {query}
    # Tags leave a leading space that the harness keeps (its choice is " Cover ...", the
    # continuation "  Cover ..."); we reproduce it rather than "fix" it.
    cover = " Cover the surface with aluminum foil or double-sided tape. Cats dislike the feel."
    assert wikihow.choices[0] == cover
    assert wikihow.requests[2][1] == "  Buy a bigger counter. A bigger counter is harder to reach."
    assert (
        caps.requests[0][0] == "Playing guitar: A man sits on a stool with a guitar. The man"
    )  # .capitalize()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  plain text ", "plain text"),
        ("[header] How to bake [title] Preheat the oven.", " How to bake. Preheat the oven."),  # strip first
        ("a [step] b", "a b"),
        ("one  two   three", "one two  three"),  # one pass of "  " -> " ", as in the harness
        ("[substeps] x", " x"),
    ],
)
def test_hellaswag_preprocess_cases(raw, expected):
    assert harness.hellaswag_preprocess(raw) == expected


@pytest.mark.parametrize("name", ["arc_easy", "arc_challenge"])
def test_arc_numeric_answer_keys(name):
    task = fixture_task(name)
    assert task.name == name and task.metrics == ("acc", "acc_norm") and task.config["split"] == "test"
    assert [d.gold for d in task.docs] == [0, 1, 2]  # 'A'; '2' among labels '1'..'4'; 'C' of five
    ctx = "Question: Which tool is best for measuring the mass of a rock?\nAnswer:"
    assert task.docs[1].requests[1] == (ctx, " a balance")
    assert len(task.docs[2].choices) == 5


def test_arc_answer_key_spelled_the_other_way(tmp_path):
    row = rows("arc_easy")[1] | {"answerKey": "B"}  # a letter key over numeric labels (old harness)
    assert get_task(f"arc_easy@{write_jsonl(tmp_path / 'a.jsonl', [row])}").docs[0].gold == 1


def test_boolq_prompt_and_labels(tmp_path):
    task = fixture_task("boolq")
    assert task.metrics == ("acc",) and [d.gold for d in task.docs] == [0, 1, 1]
    ctx = (
        "The Moon is Earth's only natural satellite. Its diameter is about one quarter of Earth's.\n"
        "Question: is the moon larger than the earth?\nAnswer:"
    )
    assert task.docs[0].requests == ((ctx, " no"), (ctx, " yes")) and task.docs[0].choices == ("no", "yes")
    google = {"question": "is it", "passage": "P", "answer": True}  # google/boolq schema
    assert get_task(f"boolq@{write_jsonl(tmp_path / 'g.jsonl', [google])}").docs[0].gold == 1


def test_winogrande_partial_evaluation():
    task = fixture_task("winogrande")
    assert task.metrics == ("acc",) and [d.gold for d in task.docs] == [1, 0, 0]
    doc = task.docs[0]
    assert doc.requests == (
        ("The trophy would not fit in the suitcase because the trophy", " was too small."),
        ("The trophy would not fit in the suitcase because the suitcase", " was too small."),
    )
    for d, row in zip(task.docs, rows("winogrande")):  # one context per option, one shared continuation
        assert len({c for c, _ in d.requests}) == 2 and len({t for _, t in d.requests}) == 1
        assert d.choices == (row["option1"], row["option2"])
    assert task.docs[2].requests[0] == ("The soup was colder than the tea, so Ken heated the soup", " first.")


def test_openbookqa_stem_only_and_lstripped_key():
    task = fixture_task("openbookqa")
    assert task.metrics == ("acc", "acc_norm") and [d.gold for d in task.docs] == [1, 0, 2]
    assert task.docs[0].requests[1] == ("A magnet will stick to", " a steel nail")


def test_rte_prompt_label_zero_is_true():
    task = fixture_task("rte")
    assert task.metrics == ("acc",) and [d.gold for d in task.docs] == [0, 1, 0]
    ctx = (
        "Heavy rain delayed the start of the match by an hour.\n"
        "Question: The match was cancelled. True or False?\nAnswer:"
    )
    assert task.docs[1].requests == ((ctx, " True"), (ctx, " False"))
    assert task.docs[1].choices == ("True", "False")


def test_local_formats_agree(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected = fixture_task("arc_easy").docs
    records = rows("arc_easy")
    (tmp_path / "a.json").write_text(json.dumps({"data": records}))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "a.parquet")
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(records[:1]), "test": datasets.Dataset.from_list(records)}
    ).save_to_disk(str(tmp_path / "dict"))
    for path in ("a.json", "a.parquet", "dict"):
        assert get_task(f"arc_easy@{tmp_path / path}").docs == expected, path
    assert len(fixture_task("piqa", limit=2).docs) == 2


def test_hub_tasks_offline_say_how_to_give_a_file():
    with pytest.raises(cache.DownloadError) as info:
        get_task("piqa")
    message = str(info.value)
    assert "offline" in message and "piqa@" in message and "baber/piqa" in message and ".jsonl" in message


def test_hub_tasks_load_the_harness_dataset(monkeypatch):
    import datasets

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        files = {"baber/piqa": "piqa", "allenai/ai2_arc": "arc_easy", "nyu-mll/glue": "rte"}
        return datasets.Dataset.from_list(rows(files[path]))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert get_task("piqa").docs == fixture_task("piqa").docs
    assert len(get_task("arc_challenge", limit=2).docs) == 2
    assert get_task("rte").source == "hf:nyu-mll/glue?config=rte&split=validation"
    assert calls == [
        ("baber/piqa", None, "validation"),
        ("allenai/ai2_arc", "ARC-Challenge", "test"),
        ("nyu-mll/glue", "rte", "validation"),
    ]
    ids = {n: (t.hub_id, t.config, t.split) for n, t in harness.HUB_TASKS.items()}
    assert ids == {
        "piqa": ("baber/piqa", None, "validation"),
        "hellaswag": ("Rowan/hellaswag", None, "validation"),
        "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test"),
        "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "test"),
        "boolq": ("aps/super_glue", "boolq", "validation"),
        "winogrande": ("allenai/winogrande", "winogrande_xl", "validation"),
        "openbookqa": ("allenai/openbookqa", "main", "test"),
        "rte": ("nyu-mll/glue", "rte", "validation"),
    }

    def broken(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(cache.DownloadError, match=r"(?s)no route to host.*hellaswag@"):
        get_task("hellaswag")


@pytest.mark.parametrize(
    ("name", "row", "words"),
    [
        ("piqa", {"goal": "g", "sol1": "a", "label": 0}, ["row 0", "'sol2'", "missing"]),
        ("piqa", {"goal": "g", "sol1": "a", "sol2": "b", "label": 2}, ["row 0", "'label'", "0..1"]),
        (
            "hellaswag",
            {"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["x", "y"], "label": ""},
            ["'label'", "integer"],
        ),
        (
            "hellaswag",
            {"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": "xy", "label": "0"},
            ["'endings'", "list of strings"],
        ),
        (
            "arc_easy",
            {"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"},
            ["'answerKey'", "'E'"],
        ),
        ("arc_easy", {"question": "q", "choices": ["a", "b"], "answerKey": "A"}, ["'choices'", "'text'"]),
        (
            "winogrande",
            {"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"},
            ["'sentence'", "blank"],
        ),
        ("winogrande", {"sentence": "a _ b", "option1": "a", "option2": "b", "answer": ""}, ["'answer'"]),
        ("rte", {"sentence1": "a", "sentence2": "b", "label": -1}, ["'label'", "-1"]),
        ("boolq", {"question": "q", "passage": 3, "label": 1}, ["'passage'", "string"]),
    ],
)
def test_malformed_rows_name_field_and_row(tmp_path, name, row, words):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(ValueError) as info:
        get_task(f"{name}@{path}")
    for word in [*words, "bad.jsonl"]:
        assert word in str(info.value)


def test_malformed_files(tmp_path):
    good = json.dumps(rows("piqa")[0])
    (tmp_path / "broken.jsonl").write_text(good + '\n{"goal": \n')
    with pytest.raises(ValueError, match=r"broken\.jsonl: line 2: malformed JSON"):
        get_task(f"piqa@{tmp_path / 'broken.jsonl'}")
    with pytest.raises(FileNotFoundError, match=r"gone\.jsonl"):
        get_task(f"piqa@{tmp_path / 'gone.jsonl'}")
    (tmp_path / "x.csv").write_text("goal\n")
    with pytest.raises(ValueError, match=r"\.jsonl, \.json or \.parquet"):
        get_task(f"piqa@{tmp_path / 'x.csv'}")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no rows"):
        get_task(f"piqa@{tmp_path / 'empty.jsonl'}")
    with pytest.raises(ValueError, match="no path"):
        get_task("piqa@")


# --------------------------------------------------------------------------- registry


def test_unknown_task_lists_known_ones_and_suggests():
    with pytest.raises(ValueError) as info:
        get_task("hellaswg")
    message = str(info.value)
    assert "Did you mean 'hellaswag'?" in message
    for name in ("piqa", "winogrande", "continuation/pydoc", "last_word/kjv", "bigbench/date_understanding"):
        assert name in message
    assert "offline" in message and "NAME@PATH" in message
    with pytest.raises(ValueError, match="valid sources: pydoc, kjv, devil"):
        get_task("continuation/wiki")
    with pytest.raises(ValueError, match=r"suite .*resolve\('offline'\)"):
        get_task("offline")
    assert set(harness.HUB_TASKS) < set(known_tasks())


def test_resolve_comma_strings_tasks_and_dedup():
    own = Task("mine", [Doc((("a", " b"), ("a", " c")), 0, ("b", "c"))], metrics=("acc",))
    spec = f"piqa@{FIXTURES / 'piqa.jsonl'}, continuation/pydoc"
    tasks = resolve([spec, own, "continuation/pydoc"], limit=5)
    assert [t.name for t in tasks] == ["piqa", "continuation/pydoc", "mine"]
    assert tasks[2] is own and all(len(t.docs) <= 5 for t in tasks)
    assert [t.name for t in resolve(own)] == ["mine"]
    with pytest.raises(ValueError, match="no tasks given"):
        resolve(" , ")
    with pytest.raises(ValueError, match="seed must be"):
        resolve("offline", seed=-1)
    with pytest.raises(ValueError, match="limit must be"):
        get_task("continuation/pydoc", limit=0)
    with pytest.raises(cache.DownloadError):  # named explicitly: raises
        resolve("continuation/pydoc,piqa")


def test_resolve_suite_skips_and_records_unavailable(monkeypatch):
    def no_bigbench(task, **kwargs):
        raise cache.DownloadError("pip could not download bigbench==1.0.0: No matching distribution")

    def no_apt(name, **kwargs):
        raise cache.DownloadError(f"builtin:{name} needs apt-get")

    monkeypatch.setattr(bi, "bigbench_task_path", no_bigbench)
    monkeypatch.setattr(bi, "debian_text_path", no_apt)
    skipped: dict = {}
    with pytest.warns(UserWarning) as record:
        tasks = resolve("offline", limit=4, skipped=skipped)
    assert sorted(str(w.message).split(":")[1].split()[-1] for w in record) == sorted(skipped)
    assert [t.name for t in tasks] == ["continuation/pydoc", "last_word/pydoc"]
    assert set(skipped) == {"continuation/kjv", "last_word/kjv", "bigbench/date_understanding"}
    assert "No matching distribution" in skipped["bigbench/date_understanding"]
    assert SUITES["offline"][0] == "continuation/pydoc"
    with pytest.raises(cache.DownloadError, match="apt-get"):  # the same task named explicitly
        resolve("continuation/kjv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="none of the tasks could be loaded"):
            resolve("harness")  # offline: every member skipped


# --------------------------------------------------------------------------- BIG-bench


def test_bigbench_fixture_format():
    task = get_task(f"bigbench/tiny_dates@{FIXTURES / 'bigbench_task.json'}")
    assert (task.name, task.metrics) == ("bigbench/tiny_dates", ("acc",))
    assert len(task.docs) == 3  # duplicate example dropped, generative example skipped
    first = task.docs[0]
    context = (
        "Q: Today is 9/7/2021. What is the date tomorrow in MM/DD/YYYY?\n"
        "  choice: 09/08/1921\n  choice: 10/07/2021\n  choice: 09/06/2021\n  choice: 09/08/2021\nA:"
    )
    assert first.requests[0] == (context, " 09/08/2021")
    assert first.choices == ("09/08/2021", "09/06/2021", "10/07/2021", "09/08/1921") and first.gold == 0
    assert [d.gold for d in task.docs] == [0, 1, 0]  # a tie goes to the first maximum
    assert len(get_task(f"bigbench/tiny_dates@{FIXTURES / 'bigbench_task.json'}", limit=2).docs) == 2


def test_bigbench_prefixes_and_options():
    data = {
        "task_prefix": "Decide.",
        "example_input_prefix": "\nStatement: ",
        "example_output_prefix": "\nAnswer: ",
        "append_choices_to_input": False,
        "examples": [{"input": "Pigs fly.", "target_scores": {" plausible": 0, "implausible ": 1}}],
    }
    (doc,) = bigbench_docs(data, "t.json")
    assert doc.requests == (
        ("Decide.\nStatement: Pigs fly.\nAnswer:", " plausible"),
        ("Decide.\nStatement: Pigs fly.\nAnswer:", " implausible"),
    )
    assert doc.gold == 1


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], "object"),
        ({"examples": []}, "'examples'"),
        ({"examples": [{"input": 3, "target_scores": {"a": 1, "b": 0}}]}, "examples[0].input"),
        ({"examples": [{"input": "x", "target_scores": ["a", "b"]}]}, "examples[0].target_scores"),
        ({"examples": [{"input": "x", "target_scores": {"a": 1}}]}, "examples[0].target_scores"),
        ({"examples": [{"input": "x", "target_scores": {"a": "1", "b": 0}}]}, "examples[0].target_scores"),
        ({"examples": [{"input": "x", "target": "y"}]}, "target_scores"),
        ({"example_input_prefix": 1, "examples": [{"input": "x"}]}, "'example_input_prefix'"),
        ({"append_choices_to_input": "no", "examples": [{"input": "x"}]}, "'append_choices_to_input'"),
    ],
)
def test_bigbench_malformed_names_the_field(tmp_path, data, field):
    path = tmp_path / "task.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        get_task(f"bigbench/bad@{path}")
    assert field in str(info.value)


def test_bigbench_builtin_through_provisioning(monkeypatch, tmp_path):
    asked = []

    def fake_path(task, **kwargs):
        asked.append(task)
        return FIXTURES / "bigbench_task.json"

    monkeypatch.setattr(bi, "bigbench_task_path", fake_path)
    task = get_task("bigbench/logical_deduction/three_objects")
    assert task.name == "bigbench/logical_deduction/three_objects" and len(task.docs) == 3
    assert task.source == "builtin:bigbench/logical_deduction/three_objects"
    assert asked == ["logical_deduction/three_objects"]
    folder = tmp_path / "tiny_dates"
    folder.mkdir()
    (folder / "task.json").write_text((FIXTURES / "bigbench_task.json").read_text())
    assert get_task(f"bigbench@{folder / 'task.json'}").name == "bigbench/tiny_dates"
    with pytest.raises(ValueError, match="bad BIG-bench task name"):
        get_task("bigbench/../etc")
    with pytest.raises(FileNotFoundError):
        get_task(f"bigbench/x@{tmp_path / 'none.json'}")


# --------------------------------------------------------------------------- cloze tasks


def _normalised(spec: str, source: str) -> str:
    return " ".join(cloze.clean_text(t, source) for t in load_texts(spec).texts)


@pytest.fixture(scope="module")
def pydoc_parts():
    test = _normalised("builtin:pydoc?split=test&unit=document", "pydoc")
    train = _normalised("builtin:pydoc?split=train&unit=document", "pydoc")
    return train, test


@pytest.mark.parametrize("kind", ["continuation", "last_word"])
def test_cloze_deterministic_by_seed(kind):
    a, b = get_task(f"{kind}/pydoc", seed=0), get_task(f"{kind}/pydoc", seed=0)
    c = get_task(f"{kind}/pydoc", seed=1)
    assert a.docs == b.docs and a.docs != c.docs
    assert sorted(d.meta["start"] for d in a.docs) == sorted(d.meta["start"] for d in c.docs)  # same passages
    short = get_task(f"{kind}/pydoc", seed=0, limit=10)
    assert short.docs == a.docs[:10] and short.config["limit"] == 10
    assert a.config["size"] == len(a.docs) == min(cloze.DEFAULT_SIZE, a.config["available"]) >= 50


@pytest.mark.parametrize("kind", ["continuation", "last_word"])
def test_cloze_gold_positions_are_balanced(kind):
    docs = get_task(f"{kind}/pydoc", seed=3).docs
    counts = Counter(d.gold for d in docs)
    assert set(counts) == {0, 1, 2, 3} and max(counts.values()) - min(counts.values()) <= 1
    counts = Counter(d.gold for d in docs[:10])
    assert max(counts.values()) - min(counts.values()) <= 2


def test_continuation_items_come_from_held_out_text(pydoc_parts):
    train, test = pydoc_parts
    task = get_task("continuation/pydoc")
    assert task.metrics == ("acc", "acc_norm") and task.source == "builtin:pydoc?split=test&unit=document"
    for doc in task.docs:
        context, truth = doc.requests[doc.gold][0], doc.choices[doc.gold]
        assert len(context.split()) == cloze.CONTEXT_WORDS and context.strip() == context
        assert all(len(c.split()) == cloze.SPAN_WORDS for c in doc.choices)
        assert len(set(doc.choices)) == 4
        assert doc.requests == tuple((context, " " + c) for c in doc.choices)
        assert f"{context} {truth}" in test and context not in train
        for i, choice in enumerate(doc.choices):
            assert choice in test and (i == doc.gold or choice not in f"{context} {truth}")


def test_last_word_items(pydoc_parts):
    train, test = pydoc_parts
    task = get_task("last_word/pydoc")
    assert task.metrics == ("acc", "greedy")
    starts = {}
    for doc in task.docs:
        context, target = doc.requests[0][0], doc.choices[doc.gold]
        assert target.isalpha() and len(target) >= 3
        assert cloze.LAST_WORD_MIN <= len(context.split()) + 1 <= cloze.LAST_WORD_MAX
        assert re.search(re.escape(f"{context} {target}") + r"[\"')\]”’]*[.!?]", test)
        assert context not in train
        assert len({c.lower() for c in doc.choices}) == 4 and all(c.isalpha() for c in doc.choices)
        assert all(c.lower() != target.lower() for i, c in enumerate(doc.choices) if i != doc.gold)
        starts[doc.meta["block"], doc.meta["start"]] = doc.meta["end"]
    spans = sorted(starts.items())
    for ((b1, _), e1), ((b2, s2), _) in itertools.pairwise(spans):
        assert b1 != b2 or e1 < s2  # passages never overlap


def test_cloze_on_fake_kjv(monkeypatch, tmp_path):
    import random

    rnd = random.Random(0)
    words = (
        "and the people of land went up unto city with great joy for lord was them she he they "
        "gathered wheat barley field house mother daughter kinsman gate elders bread water wine "
        "came saw spake said answered blessed kindness rest harvest night morning sandals redeem"
    ).split()
    chapters = []
    for c in range(1, 21):
        verses = [f"Ruth {c}"]
        for v in range(1, 31):
            verses.append(f"{v} " + " ".join(rnd.choice(words) for _ in range(rnd.randint(8, 16))) + ".")
        chapters.append("\n".join(verses))
    path = tmp_path / "kjv.txt"
    path.write_text("\n\n".join(chapters) + "\n")
    monkeypatch.setattr(bi, "debian_text_path", lambda name, **kwargs: path)
    spec, blocks = cloze.held_out_blocks("kjv")
    assert spec == "builtin:kjv?split=test&unit=paragraph" and len(blocks) == 2  # chapters 19 and 20
    assert not any(w.isdigit() or w == "Ruth" for b in blocks for w in b)  # headings, verse numbers gone
    for kind in ("continuation", "last_word"):
        task = get_task(f"{kind}/kjv", limit=7)
        assert len(task.docs) == 7 and task.source == spec
        train = " ".join(cloze.clean_text(t, "kjv") for t in load_texts("builtin:kjv?split=train").texts)
        held = " ".join(" ".join(b) for b in blocks)
        for doc in task.docs:
            assert doc.requests[0][0] in held and doc.requests[0][0] not in train
            assert doc.choices[doc.gold] in held
        assert task.config["available"] >= 7


def test_cloze_drops_passages_repeated_from_train(monkeypatch, tmp_path):
    import random

    rnd = random.Random(1)
    vocab = [f"{a}{b}" for a in ("ba", "ko", "mi", "tu", "re") for b in ("lan", "dor", "sik", "pem", "wu")]
    paragraphs = [" ".join(rnd.choice(vocab) for _ in range(70)) + "." for _ in range(18)]
    paragraphs += [paragraphs[2], " ".join(rnd.choice(vocab) for _ in range(200)) + "."]  # 19 = copy of 3
    path = tmp_path / "devil.txt"
    path.write_text("\n\n".join(paragraphs) + "\n")
    monkeypatch.setattr(bi, "debian_text_path", lambda name, **kwargs: path)
    (held,) = cloze.held_out_blocks("devil")[1]
    assert " ".join(held).startswith(paragraphs[2])  # the copy is in the held-out part
    task = get_task("continuation/devil")
    assert 0 < len(task.docs) < len(held) // 60
    for doc in task.docs:
        assert doc.meta["start"] >= 60 and not any(c in paragraphs[2] for c in doc.choices)
        assert doc.requests[0][0] not in " ".join(paragraphs[:18])
    unfiltered, _ = cloze.continuation_docs([held], size=100)
    assert len(unfiltered) == len(held) // 60  # without the train n-grams nothing is dropped


def test_cloze_needs_enough_text(monkeypatch, tmp_path):
    path = tmp_path / "devil.txt"
    path.write_text("ABSURDITY, n. A statement.\n\nBORE, n. A person who talks.\n")
    monkeypatch.setattr(bi, "debian_text_path", lambda name, **kwargs: path)
    with pytest.raises(ValueError, match=r"continuation/devil .*no passage of 60 words"):
        get_task("continuation/devil")
    with pytest.raises(ValueError, match=r"last_word/devil .*no passage of 40-100 words"):
        get_task("last_word/devil")
