"""Tests for zipcal_jax.data (source specs, readers, built-ins, candidates) and zipcal_jax.cache."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zipcal_jax import cache
from zipcal_jax.data import (
    Candidates,
    SourceSpec,
    TextSource,
    build_candidates,
    load_texts,
    parse_spec,
)
from zipcal_jax.data import builtins as bi


@pytest.fixture(autouse=True)
def _empty_cache_per_test(request, tmp_path_factory, monkeypatch):
    """Every offline test gets its own empty cache; network tests use the real one."""
    if request.node.get_closest_marker("network") is None:
        monkeypatch.setenv("ZIPCAL_CACHE", str(tmp_path_factory.mktemp("cache")))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


# --------------------------------------------------------------------------- specs


def test_parse_spec_kinds(tmp_path):
    assert parse_spec("a/b.txt").kind == "txt"
    assert parse_spec("a/b.JSONL").kind == "jsonl"
    assert parse_spec("b.json").kind == "json"
    assert parse_spec("b.parquet").kind == "parquet"
    assert parse_spec("b.csv").kind == "csv"
    assert parse_spec(str(tmp_path)).kind == "disk"
    hf = parse_spec("hf:allenai/c4?config=en&split=validation&field=text")
    assert (hf.kind, hf.location, hf.get("config"), hf.get("split"), hf.field) == (
        "hf",
        "allenai/c4",
        "en",
        "validation",
        "text",
    )
    bb = parse_spec("builtin:bigbench/logical_deduction/three_objects?limit=5")
    assert (bb.kind, bb.location, bb.limit) == ("builtin", "bigbench/logical_deduction/three_objects", 5)
    assert parse_spec(bb) is bb


def test_parse_spec_options_and_str():
    spec = parse_spec("qa.jsonl?template=Q: {question} %26 A: {answer}&min_chars=3")
    assert spec.template == "Q: {question} & A: {answer}"
    assert spec.template_fields == ["question", "answer"]
    assert spec.min_chars == 3 and spec.limit is None
    assert "%26" in str(spec) and parse_spec(str(spec)) == spec
    assert spec.raw == "qa.jsonl?template=Q: {question} %26 A: {answer}&min_chars=3"
    # only the first '?' splits; options are unordered; a mapping is accepted
    assert parse_spec("x.jsonl?field=a?b").field == "a?b"
    assert parse_spec("x.txt?unit=line&limit=2") == parse_spec("x.txt?limit=2&unit=line")
    assert SourceSpec("txt", "x.txt", {"unit": "line"}) == parse_spec("x.txt?unit=line")
    assert str(parse_spec("builtin:pydoc")) == "builtin:pydoc"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("notes.docx", ["'.docx'", ".txt", ".jsonl", ".parquet"]),
        ("notes.txt?colour=red", ["'colour'", "unit", "limit", "min_chars"]),
        ("data.jsonl?unit=line", ["'unit'", "field", "template"]),
        ("builtin:wikipedia", ["'wikipedia'", "pydoc", "bigbench/<task>"]),
        ("builtin:bigbench/../etc", ["bigbench"]),
        ("a.jsonl?field=a&template={b}", ["either field= or template="]),
        ("a.txt?unit=word", ["'word'", "paragraph", "line", "document"]),
        ("a.txt?limit=zero", ["limit", ">= 1"]),
        ("a.jsonl?template=no fields", ["names no field"]),
        ("a.jsonl?template={x!r}", ["format spec or conversion"]),
        ("a.txt?unit", ["key=value"]),
        ("s3://bucket/a.txt", ["hf:NAME", "builtin:NAME"]),
        ("builtin:pydoc?split=validation", ["'validation'", "builtin:pydoc", "train, test, all"]),
        ("builtin:bigbench/winowhy?split=test", ["'split'", "field", "template"]),
        ("notes.txt?split=test", ["'split'", "unit"]),
    ],
)
def test_parse_spec_errors_name_the_culprit(spec, words):
    with pytest.raises(ValueError) as info:
        parse_spec(spec)
    for word in words:
        assert word in str(info.value)


def test_source_spec_rejects_unknown_kind():
    with pytest.raises(ValueError, match=r"unknown source kind 'ftp'.*txt, jsonl"):
        SourceSpec("ftp", "x")


_values = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=150, deadline=None)
@given(
    name=st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True),
    field_or_template=st.one_of(
        st.builds(lambda v: ("field", v), _values),
        st.builds(
            lambda a, b: ("template", "{" + a + "}" + b.replace("{", "{{").replace("}", "}}")),
            st.from_regex(r"[a-z][a-z0-9_.]{0,8}", fullmatch=True),
            st.text(st.characters(exclude_categories=("Cs",)), max_size=15),
        ),
    ),
    limit=st.none() | st.integers(1, 10**6),
)
def test_spec_round_trip(name, field_or_template, limit):
    options = dict([field_or_template])
    if limit is not None:
        options["limit"] = str(limit)
    spec = SourceSpec("jsonl", f"data/{name}.jsonl", options)
    again = parse_spec(str(spec))
    assert again == spec
    assert str(again) == str(spec)
    assert dict(again.options)[field_or_template[0]] == field_or_template[1]


# --------------------------------------------------------------------------- local readers


def test_txt_units(tmp_path):
    path = write(tmp_path / "a.txt", "First para\nline two\n\n\n  \nSecond para\n\nThird\n")
    para = load_texts(str(path))
    assert para.texts == ["First para\nline two", "Second para", "Third"]
    assert para.rows == [0, 1, 2] and para.dropped == 0
    assert para.spec == str(path)
    line = load_texts(f"{path}?unit=line")
    assert line.texts == ["First para", "line two", "Second para", "Third"]
    assert line.rows == [0, 1, 5, 7]  # 0-based line numbers in the file
    assert line.dropped == 4  # blank and whitespace-only lines, counted
    doc = load_texts(f"{path}?unit=document")
    assert doc.texts == [path.read_text()] and doc.rows == [0]


def test_txt_crlf_and_bom(tmp_path):
    path = tmp_path / "w.txt"
    path.write_bytes(b"\xef\xbb\xbfalpha\r\n\r\nbeta\r\n")
    assert load_texts(str(path)).texts == ["alpha", "beta"]
    path.write_bytes(b"\xef\xbb\xbfok\r\nx\n\xff\n")
    with pytest.raises(ValueError, match=r"w\.txt: line 3: bytes ff"):
        load_texts(str(path))


def test_limit_min_chars_and_dropped(tmp_path):
    path = write(tmp_path / "a.txt", "tiny\n\nthis one is long enough\n\nok\n\nanother long paragraph\n")
    src = load_texts(f"{path}?min_chars=10")
    assert src.texts == ["this one is long enough", "another long paragraph"]
    assert src.rows == [1, 3] and src.dropped == 2
    limited = load_texts(f"{path}?min_chars=10&limit=2")
    assert limited.texts == ["this one is long enough"] and limited.dropped == 1


RECORDS = [
    {"question": "What is red?", "choices": {"text": ["apple", "sky"], "label": ["A", "B"]}, "id": 1},
    {"question": "What is blue?", "choices": {"text": ["sea", "grass"], "label": ["A", "B"]}, "id": 2},
    {"question": "", "choices": {"text": [], "label": []}, "id": 3},
]


def test_jsonl_field_template_list_and_dotted(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", RECORDS)
    default = load_texts(str(path))  # 'question' is the first default field present
    assert default.texts == ["What is red?", "What is blue?"] and default.dropped == 1
    assert default.rows == [0, 1]
    templ = load_texts(f"{path}?template=Q: {{question}} Options: {{choices.text}} ({{id}})")
    assert templ.texts[0] == "Q: What is red? Options: apple sky (1)"
    assert templ.texts[2] == "Q:  Options:  (3)"
    assert load_texts(f"{path}?field=choices.label").texts[0] == "A B"


def test_jsonl_list_of_dicts_and_strings(tmp_path):
    recs = [{"prompt": "p0", "answers": [{"t": "x"}, {"t": "y"}]}, {"prompt": "p1", "answers": [{"t": "z"}]}]
    path = write_jsonl(tmp_path / "a.jsonl", recs)
    assert load_texts(f"{path}?field=answers.t").texts == ["x y", "z"]
    assert load_texts(f"{path}?field=answers.0.t").texts == ["x", "z"]
    assert load_texts(str(path)).texts == ["p0", "p1"]
    plain = write(tmp_path / "s.jsonl", '"just text"\n\n"more"\n')
    assert load_texts(str(plain)).texts == ["just text", "more"]


def test_json_list_and_keyed(tmp_path):
    listed = write(tmp_path / "l.json", json.dumps([{"text": "a"}, {"text": "b"}]))
    assert load_texts(str(listed)).texts == ["a", "b"]
    keyed = write(tmp_path / "k.json", json.dumps({"version": 1, "data": [{"sentence": "s"}]}))
    assert load_texts(str(keyed)).texts == ["s"]
    task = {"name": "t", "metrics": ["m"], "examples": [{"input": "2+2?", "target_scores": {"3": 0, "4": 1}}]}
    bb = write(tmp_path / "task.json", json.dumps(task))
    assert load_texts(str(bb)).texts == ["2+2?"]
    assert load_texts(f"{bb}?template={{input}} {{choices}} -> {{target}}").texts == ["2+2? 3 4 -> 4"]
    ambiguous = write(tmp_path / "a.json", json.dumps({"x": [1], "y": [2]}))
    with pytest.raises(ValueError, match="list-valued keys: x, y"):
        load_texts(str(ambiguous))


def test_csv_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = write(tmp_path / "a.csv", 'id,text,label\n1,"hello, world",x\n2,"multi\nline",y\n3,,z\n')
    src = load_texts(str(csv_path))
    assert src.texts == ["hello, world", "multi\nline"] and src.dropped == 1
    assert load_texts(f"{csv_path}?template={{label}}:{{text}}").texts[0] == "x:hello, world"
    table = pa.table({"sentence": ["one", "two", "three"], "meta": [{"k": "a"}, {"k": "b"}, {"k": "c"}]})
    pq.write_table(table, tmp_path / "a.parquet")
    assert load_texts(str(tmp_path / "a.parquet")).texts == ["one", "two", "three"]
    assert load_texts(f"{tmp_path / 'a.parquet'}?field=meta.k&limit=2").texts == ["a", "b"]


def test_save_to_disk_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    single = datasets.Dataset.from_dict({"text": ["a", "", "c"], "n": [1, 2, 3]})
    single.save_to_disk(str(tmp_path / "single"))
    src = load_texts(str(tmp_path / "single"))
    assert src.texts == ["a", "c"] and src.rows == [0, 2] and src.dropped == 1
    splits = datasets.DatasetDict(
        {
            "validation": datasets.Dataset.from_dict({"input": ["v"]}),
            "test": datasets.Dataset.from_dict({"input": ["t"]}),
        }
    )
    splits.save_to_disk(str(tmp_path / "dict"))
    assert load_texts(str(tmp_path / "dict")).texts == ["t"]  # no train -> test
    assert load_texts(f"{tmp_path / 'dict'}?split=validation").texts == ["v"]
    with pytest.raises(ValueError, match=r"split 'train' not in .*available splits: validation, test"):
        load_texts(f"{tmp_path / 'dict'}?split=train")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match=r"save_to_disk.*hf:"):
        load_texts(str(tmp_path / "plain"))


def test_hf_local_dataset_folder(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    repo = tmp_path / "repo"
    repo.mkdir()
    write_jsonl(repo / "train.jsonl", [{"text": f"row {i}", "q": f"q{i}"} for i in range(5)])
    write_jsonl(repo / "test.jsonl", [{"text": "held out", "q": "qt"}])
    src = load_texts(f"hf:{repo}?limit=3")
    assert src.texts == ["row 0", "row 1", "row 2"] and src.spec == f"hf:{repo}?limit=3"
    assert load_texts(f"hf:{repo}?split=test&field=q").texts == ["qt"]


def test_builtin_pydoc():
    from pydoc_data.topics import topics

    docs = load_texts("builtin:pydoc?unit=document&split=all")  # the default split=train holds 90%
    assert len(docs) == len(topics) and docs.rows == list(range(len(topics)))
    paras = load_texts("builtin:pydoc")
    assert len(paras) > 5 * len(topics)
    assert paras.rows == sorted(paras.rows) and all(t.strip() for t in paras.texts)
    assert len(load_texts("builtin:pydoc?limit=7").texts) <= 7


@pytest.mark.parametrize("unit", ["paragraph", "line", "document"])
def test_builtin_split_train_test_partition_all(unit):
    every = load_texts(f"builtin:pydoc?split=all&unit={unit}")
    train = load_texts(f"builtin:pydoc?unit={unit}")  # split=train is the default
    test = load_texts(f"builtin:pydoc?split=test&unit={unit}")
    assert parse_spec("builtin:pydoc").split == "train"  # the default
    assert parse_spec("builtin:kjv?split=test").split == "test"
    if unit == "document":  # the boundary document is cut in two, between two paragraphs
        k = len(train) - 1
        assert len(train) + len(test) == len(every) + 1
        assert train.texts[:k] == every.texts[:k] and test.texts[1:] == every.texts[k + 1 :]
        cut = every.texts[k]
        assert cut.startswith(train.texts[k]) and cut.endswith(test.texts[0])
        assert not cut[len(train.texts[k]) : len(cut) - len(test.texts[0])].strip()  # only a blank line
    else:
        assert train.texts + test.texts == every.texts  # in order, nothing lost, nothing shared
    assert train.rows == sorted(train.rows) and test.rows == sorted(test.rows)


def test_builtin_split_sizes_and_determinism():
    every = load_texts("builtin:pydoc?split=all")
    train, test = load_texts("builtin:pydoc?split=train"), load_texts("builtin:pydoc?split=test")
    n = len(every)
    assert len(test) == n - n * 9 // 10 and 0.09 < len(test) / n < 0.11
    assert not set(train.texts) & set(test.texts) - set(t for t in every.texts if every.texts.count(t) > 1)
    assert test.texts == every.texts[len(train) :] and train.texts == every.texts[: len(train)]
    assert load_texts("builtin:pydoc?split=test").texts == test.texts  # deterministic
    assert load_texts("builtin:pydoc?split=test&limit=3").texts == test.texts[:3]


def test_split_documents_edges():
    from zipcal_jax.data.readers import split_documents

    docs = ["\n\np0\n\np1\n \n\np2\n", "", "p3\n\n\np4"]
    assert split_documents(docs, "all") == docs
    assert split_documents(docs, "train") == ["\n\np0\n\np1\n \n\np2\n", "", "p3"]  # 4 of 5
    assert split_documents(docs, "test") == ["p4"]
    assert split_documents(["only one"], "train") == []
    assert split_documents(["only one"], "test") == ["only one"]
    assert split_documents([], "test") == [] and split_documents(["\n \n"], "test") == []
    eleven = ["\n\n".join(f"p{i}" for i in range(11))]
    assert split_documents(eleven, "test") == ["p9\n\np10"]  # ceil(11 / 10) = 2 held out
    with pytest.raises(ValueError, match="train, test, all"):
        split_documents(docs, "dev")


# --------------------------------------------------------------------------- reader errors


@pytest.mark.parametrize("name", ["gone.txt", "gone.jsonl", "gone.json", "gone.csv", "gone.parquet"])
def test_missing_file_names_the_path(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=name):
        load_texts(str(tmp_path / name))


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_texts(str(tmp_path / "nowhere"))


def test_missing_field_lists_available(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", RECORDS)
    with pytest.raises(ValueError) as info:
        load_texts(f"{path}?field=answer")
    msg = str(info.value)
    assert "'answer'" in msg and "question" in msg and "choices.text" in msg and "id" in msg
    with pytest.raises(ValueError, match=r"'choices\.txt'.*choices\.text"):
        load_texts(f"{path}?field=choices.txt")
    nodefault = write_jsonl(tmp_path / "n.jsonl", [{"body": "x", "title": "y"}])
    with pytest.raises(ValueError, match=r"no text field.*body, title.*field=NAME"):
        load_texts(str(nodefault))
    with pytest.raises(ValueError, match=r"mapping.*choices\.text"):
        load_texts(f"{path}?field=choices")


def test_template_missing_field(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", RECORDS)
    with pytest.raises(ValueError) as info:
        load_texts(f"{path}?template={{question}} {{answer}}")
    msg = str(info.value)
    assert "'answer'" in msg and "available fields" in msg and "question" in msg


def test_empty_source_names_it(tmp_path):
    path = write(tmp_path / "blank.txt", "\n  \n\n\t\n")
    with pytest.raises(ValueError, match=r"blank\.txt.*no usable text"):
        load_texts(str(path))
    short = write(tmp_path / "short.txt", "ab\n\ncd\n")
    with pytest.raises(ValueError, match=r"short\.txt.*2 dropped.*min_chars=5"):
        load_texts(f"{short}?min_chars=5")


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv", ".json"])
def test_undecodable_bytes_name_file_and_line(tmp_path, suffix):
    lines = {
        ".txt": [b"good line", b"still good", b"caf\xe9 au lait"],
        ".jsonl": [b'{"text": "a"}', b'{"text": "b"}', b'{"text": "caf\xe9"}'],
        ".csv": [b"text", b"fine", b"caf\xe9"],
        ".json": [b"[", b'{"text": "a"},', b'{"text": "caf\xe9"}]'],
    }[suffix]
    path = tmp_path / f"latin1{suffix}"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError) as info:
        load_texts(str(path))
    msg = str(info.value)
    assert str(path) in msg and "line 3" in msg and "UTF-8" in msg and "iconv" in msg


def test_malformed_json_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"text": "a"}\n\n{"text": "b",}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 3: malformed JSON"):
        load_texts(str(path))
    whole = write(tmp_path / "bad.json", '[\n {"text": "a"},\n {"text" "b"}\n]')
    with pytest.raises(ValueError, match=r"bad\.json: line 3: malformed JSON"):
        load_texts(str(whole))
    scalar = write_jsonl(tmp_path / "num.jsonl", [1])
    with pytest.raises(ValueError, match="record 0 is a int"):
        load_texts(str(scalar))


# --------------------------------------------------------------------------- cache


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("ZIPCAL_CACHE", str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    monkeypatch.delenv("ZIPCAL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir(create=False) == tmp_path / "home" / ".cache" / "zipcal_jax"


def test_cache_dir_refuses_the_repository(monkeypatch):
    repo = Path(cache.__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        pytest.skip("not running from a repository checkout")
    monkeypatch.setenv("ZIPCAL_CACHE", str(repo / "runs" / "cache"))
    with pytest.raises(ValueError, match="inside the repository"):
        cache.cache_dir(create=False)


def test_atomic_writes_and_verify(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    cache.atomic_write_bytes(target, b"hello")
    assert target.read_bytes() == b"hello"
    with pytest.raises(RuntimeError), cache.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"hello" and sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]
    digest = cache.sha256_file(target)
    assert digest == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    cache.verify(target, sha256=digest, size=5)
    with pytest.raises(cache.ChecksumError, match=r"f\.bin.*size 5 bytes, expected 6"):
        cache.verify(target, size=6)
    assert not target.exists()  # the bad file is removed
    with pytest.raises(FileNotFoundError):
        cache.verify(target)


# --------------------------------------------------------------------------- BIG-bench built-in

TASKS = {
    "winowhy": {
        "examples": [
            {"input": "The cat sat because it was tired. Why?", "target_scores": {"Yes": 0, "No": 1}},
            {"input": "It rained, so the ground got wet.", "target_scores": {"Yes": 1, "No": 0}},
        ]
    },
    "logical_deduction/three_objects": {
        "examples": [{"input": "A is left of B.", "target_scores": {"A": 1}}]
    },
    "gen_task": {"examples": [{"input": "Say hi", "target": ["hi", "hello"]}]},
}


def make_fake_sdist(directory: Path) -> Path:
    """A tiny tar.gz with the sdist's internal layout."""
    path = directory / bi.BIGBENCH_SDIST
    with tarfile.open(path, "w:gz") as tar:
        files = {"bigbench-1.0.0/PKG-INFO": b"Version: 1.0.0\n"}
        for task, content in TASKS.items():
            files[f"{bi.BIGBENCH_TASKS_PREFIX}{task}/task.json"] = json.dumps(content).encode()
            files[f"{bi.BIGBENCH_TASKS_PREFIX}{task}/README.md"] = b"readme"
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def fake_sdist(tmp_path_factory, monkeypatch):
    """Pin the fake tarball's digest and make the 'download' copy it."""
    source = make_fake_sdist(tmp_path_factory.mktemp("pypi"))
    calls = []

    def fake_download(dest_dir: Path) -> Path:
        calls.append(dest_dir)
        return Path(shutil.copy(source, dest_dir))

    monkeypatch.setattr(bi, "download_bigbench_sdist", fake_download)
    monkeypatch.setattr(bi, "BIGBENCH_SDIST_SHA256", cache.sha256_file(source))
    return calls


def test_bigbench_builtin_extracts_one_task(fake_sdist):
    src = load_texts("builtin:bigbench/winowhy")
    assert src.texts == [e["input"] for e in TASKS["winowhy"]["examples"]]
    root = cache.cache_dir()
    assert (root / "downloads" / bi.BIGBENCH_SDIST).is_file()
    assert (root / "bigbench" / "winowhy" / "task.json").is_file()
    assert not (root / "bigbench" / "gen_task").exists()  # nothing else unpacked
    templ = load_texts("builtin:bigbench/winowhy?template={input} [{choices}] {target}")
    assert templ.texts[1].endswith("[Yes No] Yes")
    nested = load_texts("builtin:bigbench/logical_deduction/three_objects")
    assert nested.texts == ["A is left of B."]
    assert len(fake_sdist) == 1  # downloaded once, then reused from the cache
    assert bi.bigbench_records(TASKS["gen_task"]) == [{"input": "Say hi", "choices": [], "target": "hi"}]


def test_bigbench_unknown_task_lists_tasks(fake_sdist):
    with pytest.raises(ValueError) as info:
        load_texts("builtin:bigbench/logical_deduction")
    msg = str(info.value)
    assert "logical_deduction/three_objects" in msg and "winowhy" in msg and "strategyqa" in msg
    with pytest.raises(ValueError, match=r"unknown BIG-bench task 'winowhyy'.*Similar: winowhy"):
        load_texts("builtin:bigbench/winowhyy")  # answered from the saved task index


def test_bigbench_hash_mismatch_removes_download(fake_sdist, monkeypatch):
    monkeypatch.setattr(bi, "BIGBENCH_SDIST_SHA256", "0" * 64)
    with pytest.raises(cache.ChecksumError, match="sha256"):
        load_texts("builtin:bigbench/winowhy")
    downloads = cache.cache_dir() / "downloads"
    assert not (downloads / bi.BIGBENCH_SDIST).exists() and list(downloads.iterdir()) == []
    assert not (cache.cache_dir() / "bigbench" / "winowhy").exists()


def test_bigbench_unpinned_records_digest(tmp_path):
    source = make_fake_sdist(tmp_path)
    sdist = bi.ensure_bigbench_sdist(cache=tmp_path / "c", downloader=lambda d: source)
    record = json.loads((sdist.parent / f"{bi.BIGBENCH_SDIST}.json").read_text())
    assert record["sha256"] == cache.sha256_file(source) and record["pinned"] is False
    sdist.write_bytes(b"tampered")
    with pytest.raises(cache.ChecksumError):
        bi.ensure_bigbench_sdist(cache=tmp_path / "c")


def test_bigbench_download_failure_is_clear(monkeypatch, tmp_path):
    import subprocess

    monkeypatch.setattr(
        bi, "run", lambda cmd, cwd=None: subprocess.CompletedProcess(cmd, 1, "", "No matching distribution")
    )
    with pytest.raises(cache.DownloadError, match=r"(?s)No matching distribution.*task\.json"):
        bi.download_bigbench_sdist(tmp_path)


# --------------------------------------------------------------------------- Debian built-ins


def test_debian_builtin_without_apt_get(monkeypatch):
    monkeypatch.setattr(bi.shutil, "which", lambda name: None)
    with pytest.raises(cache.DownloadError) as info:
        load_texts("builtin:kjv")
    msg = str(info.value)
    assert "apt-get" in msg and "bible-kjv-text" in msg and ".txt" in msg


def test_debian_builtin_reads_verified_cache():
    text = bi._format_kjv(
        "\nGenesis 1\n\n  1 In the beginning God created the heaven and the earth.\n  2 And the earth was "
        "without form,\nand void.\n\nGenesis 2\n\n  1 Thus the heavens were finished.\n"
    )
    assert text.split("\n\n")[0] == (
        "Genesis 1\n1 In the beginning God created the heaven and the earth.\n"
        "2 And the earth was without form, and void."
    )
    path = cache.cache_dir() / "debian" / "kjv.txt"
    cache.atomic_write_bytes(path, text.encode())
    meta = {"sha256": cache.sha256_file(path), "size": path.stat().st_size}
    cache.atomic_write_bytes(path.with_name("kjv.txt.json"), json.dumps(meta).encode())
    assert len(load_texts("builtin:kjv?split=all")) == 2
    assert load_texts("builtin:kjv?split=test").texts == [text.split("\n\n")[1].strip()]
    assert load_texts("builtin:kjv?unit=line").texts[:2] == ["Genesis 1", text.split("\n")[1]]
    path.write_text("changed")
    with pytest.raises(cache.ChecksumError):
        load_texts("builtin:kjv")


def test_devil_text_is_gunzipped(tmp_path, monkeypatch):
    root = tmp_path / "x"
    (root / "usr/share/dictd").mkdir(parents=True)
    raw = b"00-database-short\n  The Devil's Dictionary\n\nABSURDITY, n.  A statement.\n\n abcdefghijklmnopqrstuvwxyz\n"
    (root / "usr/share/dictd/devil.dict.dz").write_bytes(gzip.compress(raw))
    text = bi._extract_debian_text("devil", root)
    assert text == "  The Devil's Dictionary\n\nABSURDITY, n.  A statement.\n\n"


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize(("name", "needle"), [("kjv", "In the beginning"), ("devil", "ABSURDITY")])
def test_debian_builtins_real(name, needle):
    if shutil.which("apt-get") is None:
        pytest.skip("needs apt-get")
    src = load_texts(f"builtin:{name}")
    assert len(src) > 500 and any(needle in t for t in src.texts)


@pytest.mark.network
@pytest.mark.slow
def test_bigbench_real_download():
    try:
        src = load_texts("builtin:bigbench/winowhy")
    except cache.DownloadError as err:
        if "No matching distribution" in str(err):  # e.g. a registry mirror that lacks 1.0.0
            pytest.skip(f"this machine's package registry does not offer bigbench 1.0.0: {err}"[:300])
        raise
    assert len(src) == 2865


# --------------------------------------------------------------------------- candidates


@pytest.fixture
def two_sources(tmp_path):
    a = write(tmp_path / "a.txt", "short one\n\n" + "a much longer paragraph " * 20 + "\n\n\n\nend")
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "record zero"}, {"text": " "}, {"text": "record two"}])
    return str(a), str(b)


def test_candidates_shapes_and_provenance(tiny_tokenizer, two_sources):
    a, b = two_sources
    c = build_candidates([a, b], tiny_tokenizer, seqlen=16, progress=False)
    assert isinstance(c, Candidates) and len(c) == 5
    assert c.ids.shape == c.mask.shape == (5, 16)
    assert (c.ids.dtype, c.mask.dtype, c.source_index.dtype, c.rows.dtype) == (
        np.int32,
        np.bool_,
        np.int32,
        np.int64,
    )
    assert c.sources == [a, b] and c.source_index.tolist() == [0, 0, 0, 1, 1]
    assert c.rows.tolist() == [0, 1, 2, 0, 2] and c.dropped == {a: 0, b: 1}
    assert c.provenance(4) == {"source": b, "row": 2, "text": "record two"}
    for i, text in enumerate(c.texts):
        expect = tiny_tokenizer.encode(text).ids[:16]
        assert c.ids[i, : len(expect)].tolist() == expect  # right padding, truncation to 16
        assert c.mask[i].sum() == len(expect) and c.mask[i, : len(expect)].all()
        assert (c.ids[i, len(expect) :] == 1).all()  # <pad> = 1
    assert c.mask[1].all()  # the long paragraph is truncated to exactly seqlen
    assert c.lengths.tolist() == c.mask.sum(1).tolist()
    sub = c.subset([4, 0])
    assert sub.texts == [c.texts[4], c.texts[0]] and sub.rows.tolist() == [2, 0] and sub.sources == c.sources
    assert len(c.subset(c.source_index == 1)) == 2


def test_candidates_left_padding_and_special_tokens(tiny_tokenizer, two_sources):
    from tokenizers import processors

    src = load_texts(two_sources[1])
    left = build_candidates(src, tiny_tokenizer, seqlen=12, padding_side="left", progress=False)
    expect = tiny_tokenizer.encode("record zero").ids
    assert left.ids[0, -len(expect) :].tolist() == expect and not left.mask[0, : 12 - len(expect)].any()
    with_bos = type(tiny_tokenizer).from_str(tiny_tokenizer.to_str())
    with_bos.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]
    )
    c = build_candidates(src, with_bos, seqlen=4, progress=False)
    assert (c.ids[:, 0] == 0).all() and c.mask.all()  # BOS kept inside the truncated length
    raw = build_candidates(src, with_bos, seqlen=4, add_special_tokens=False, progress=False)
    assert raw.ids[0].tolist() == expect[:4]
    assert with_bos.padding is None and with_bos.truncation is None  # the caller's tokenizer is untouched


def test_candidates_windows_reproduce_the_stream(tiny_tokenizer, two_sources):
    a, b = two_sources
    c = build_candidates([a, b], tiny_tokenizer, seqlen=8, windows=True, progress=False)
    for k, spec in enumerate([a, b]):
        texts = load_texts(spec).texts
        joined = "\n\n".join(texts)
        stream = tiny_tokenizer.encode(joined, add_special_tokens=False).ids
        sel = c.source_index == k
        assert (
            np.concatenate([row[m] for row, m in zip(c.ids[sel], c.mask[sel], strict=True)]).tolist()
            == stream
        )
        assert c.rows[sel].tolist() == list(range(-(-len(stream) // 8)))
        assert "".join(t for t, s in zip(c.texts, sel, strict=True) if s) == joined
        assert c.mask[sel][:-1].all()  # only the last window is partial
    left = build_candidates(b, tiny_tokenizer, seqlen=8, windows=True, padding_side="left", progress=False)
    assert left.mask[-1, -1] and (left.ids[~left.mask] == 1).all()


def test_candidates_errors(tiny_tokenizer, two_sources):
    from tokenizers import Regex, Tokenizer, models, normalizers

    with pytest.raises(ValueError, match="empty vocabulary"):
        build_candidates(two_sources[0], Tokenizer(models.BPE()), progress=False)
    with pytest.raises(ValueError, match="seqlen"):
        build_candidates(two_sources[0], tiny_tokenizer, seqlen=0, progress=False)
    with pytest.raises(ValueError, match="padding_side"):
        build_candidates(two_sources[0], tiny_tokenizer, padding_side="center", progress=False)
    silent = Tokenizer.from_str(tiny_tokenizer.to_str())
    silent.normalizer = normalizers.Replace(Regex(r"[\s\S]"), "")
    src = TextSource(spec="memory", texts=["abc"], rows=[0])
    with pytest.raises(ValueError, match="'memory' produced no candidates"):
        build_candidates(src, silent, progress=False)
    with pytest.raises(ValueError, match="'memory' produced no candidates"):
        build_candidates(src, silent, windows=True, progress=False)


def test_candidates_batches_match_one_batch(tiny_tokenizer):
    src = load_texts("builtin:pydoc?limit=200")
    big = build_candidates(src, tiny_tokenizer, seqlen=32, progress=False)
    small = build_candidates(src, tiny_tokenizer, seqlen=32, batch_size=7, progress=False)
    np.testing.assert_array_equal(big.ids, small.ids)
    np.testing.assert_array_equal(big.mask, small.mask)
