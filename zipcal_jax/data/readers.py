"""Readers: turn a source spec into a list of texts with provenance.

:func:`load_texts` is the single entry point. Every reader produces *units* (records, or
paragraphs/lines/documents of running text) numbered from 0 in source order; ``limit`` keeps
the first N units, then texts shorter than ``min_chars`` (after stripping surrounding
whitespace) are dropped and counted, never lost silently.
"""

from __future__ import annotations

import csv
import io
import json
import re
import string
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zipcal_jax.data import builtins
from zipcal_jax.data.specs import DEFAULT_FIELDS, DISK_MARKERS, TEST_PERCENT, SourceSpec, parse_spec

__all__ = ["TextSource", "load_texts", "split_documents"]

_MISSING = object()


@dataclass
class TextSource:
    """Texts read from one source.

    Attributes:
        spec: the canonical spec string of the source.
        texts: the usable texts, in source order.
        rows: ``rows[i]`` is the index (record, paragraph, line or document, from 0) in the source
            that ``texts[i]`` came from; for a running-text built-in, counted within its
            ``split=`` part.
        dropped: how many units were dropped as empty or shorter than ``min_chars``.
    """

    spec: str
    texts: list[str]
    rows: list[int]
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.texts)


# --------------------------------------------------------------------------- bytes and text


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise FileNotFoundError(f"source file {what}: {path}")
    return path.read_bytes()


def _decode(data: bytes, path: Path) -> str:
    """Strict UTF-8 (a BOM is skipped); an error names the 1-based line of the bad bytes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        bad = data[err.start : err.end].hex(" ")
        raise ValueError(
            f"{path}: line {line}: bytes {bad} are not valid UTF-8 ({err.reason}). Re-encode the file "
            f"to UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}`."
        ) from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


_PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t]*\n)+")


def _units(documents: Iterable[str], unit: str) -> Iterator[str]:
    """Cut running text into paragraphs (blank-line separated), lines, or whole documents."""
    for doc in documents:
        if unit == "document":
            yield doc
        elif unit == "line":
            lines = doc.split("\n")
            yield from lines[:-1] if lines and lines[-1] == "" else lines
        else:
            yield from _PARAGRAPH_BREAK.split(doc.strip("\n"))


def _paragraph_spans(doc: str) -> list[tuple[int, int]]:
    """``(start, end)`` offsets in ``doc`` of its non-blank paragraphs, cut as :func:`_units` cuts them."""
    lead = len(doc) - len(doc.lstrip("\n"))
    body = doc.strip("\n")
    spans, start = [], 0
    for brk in _PARAGRAPH_BREAK.finditer(body):
        spans.append((start, brk.start()))
        start = brk.end()
    spans.append((start, len(body)))
    return [(lead + a, lead + b) for a, b in spans if body[a:b].strip()]


def split_documents(documents: list[str], split: str) -> list[str]:
    """The part of running text that a ``split=`` option names.

    The paragraphs (non-blank, blank-line separated blocks) of all documents are counted in
    order; of their number ``n``, ``train`` keeps the first ``n - ceil(n * TEST_PERCENT / 100)``
    and ``test`` the rest (at least one when ``n >= 1``); ``all`` keeps everything. The result is
    again a list of documents: those wholly inside the part, plus the piece of the one document
    that the boundary cuts (cut between two paragraphs, so paragraph, line and document units
    are then cut within the part and train and test never share a paragraph).
    """
    if split == "all":
        return list(documents)
    if split not in ("train", "test"):
        raise ValueError(f"split {split!r} is not one of train, test, all")
    where = [(d, a, b) for d, doc in enumerate(documents) for a, b in _paragraph_spans(doc)]
    n_train = len(where) * (100 - TEST_PERCENT) // 100
    if split == "train":
        if n_train == 0:
            return []
        d, _, end = where[n_train - 1]
        return [*documents[:d], documents[d][:end]]
    if not where:
        return []
    d, start, _ = where[n_train]
    return [documents[d][start:], *documents[d + 1 :]]


# --------------------------------------------------------------------------- records


def _available(record: dict) -> list[str]:
    """Field names of a record, with one level of dotted names for dict-valued fields."""
    names = []
    for key, value in record.items():
        names.append(str(key))
        if isinstance(value, dict):
            names += [f"{key}.{sub}" for sub in value]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            names += [f"{key}.{sub}" for sub in value[0]]
    return names


def _lookup(value: Any, dotted: str) -> Any:
    """Follow a dotted name through dicts; over a list of dicts it maps; digits index lists."""
    for part in dotted.split("."):
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit():
            value = value[int(part)] if int(part) < len(value) else _MISSING
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = [v.get(part, _MISSING) for v in value]
            value = _MISSING if any(v is _MISSING for v in value) else value
        else:
            value = _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def _as_text(value: Any, name: str, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return " ".join(_as_text(v, name, where) for v in value)
    if isinstance(value, dict):
        keys = ", ".join(f"{name}.{k}" for k in value)
        raise ValueError(f"field {name!r} in {where} is a mapping; name one of its parts: {keys}")
    return str(value)


class _Extractor:
    """Builds the text of a record from ``field=`` or ``template=`` (or the default field)."""

    def __init__(self, spec: SourceSpec, source: str):
        self.spec, self.source = spec, source
        self.field = spec.field
        self.template = spec.template
        self.names = spec.template_fields

    def __call__(self, record: Any, row: int) -> str:
        where = f"{self.source} record {row}"
        if not isinstance(record, dict):
            if isinstance(record, str) and self.field is None and self.template is None:
                return record
            raise ValueError(f"{where} is a {type(record).__name__}, not an object with fields")
        if self.field is None and self.template is None:
            self.field = next((f for f in DEFAULT_FIELDS if f in record), None)
            if self.field is None:
                raise ValueError(
                    f"{self.source}: no text field found (tried {', '.join(DEFAULT_FIELDS)}); available "
                    f"fields: {', '.join(_available(record))}. Pick one with ?field=NAME or combine "
                    "several with ?template={a} {b}"
                )
        if self.template is None:
            value = _lookup(record, self.field)
            if value is _MISSING:
                raise ValueError(
                    f"field {self.field!r} not found in {where}; available fields: "
                    f"{', '.join(_available(record))}"
                )
            return _as_text(value, self.field, where)
        values = {}
        for name in self.names:
            value = _lookup(record, name)
            if value is _MISSING:
                raise ValueError(
                    f"template {self.template!r} names field {name!r}, which is not in {where}; "
                    f"available fields: {', '.join(_available(record))}"
                )
            values[name] = _as_text(value, name, where)
        return _fill(self.template, values)


def _fill(template: str, values: dict[str, str]) -> str:
    out = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(values[name])
    return "".join(out)


def _jsonl_records(path: Path) -> Iterator[Any]:
    text = _decode(_read_bytes(path), path)
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}: line {lineno}: malformed JSON ({err.msg} at column {err.colno})"
            ) from None


def _json_records(path: Path) -> list:
    text = _decode(_read_bytes(path), path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: line {err.lineno}: malformed JSON ({err.msg} at column {err.colno})"
        ) from None
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        key = next((k for k in ("examples", "data") if k in lists), lists[0] if len(lists) == 1 else None)
        if key is None:
            raise ValueError(
                f"{path}: expected a list of records, or an object with one list-valued key (such as "
                f"'examples' or 'data'); found list-valued keys: {', '.join(lists) or 'none'}"
            )
        records = data[key]
        if key == "examples" and records and isinstance(records[0], dict) and "target_scores" in records[0]:
            return builtins.bigbench_records(data)  # a BIG-bench task.json: input/choices/target
        return records
    if isinstance(data, list):
        return data
    raise ValueError(f"{path}: expected a list of records or an object, found {type(data).__name__}")


def _csv_records(path: Path) -> list[dict]:
    text = _decode(_read_bytes(path), path)
    old_limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long text cells; restored below
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        records = list(reader)
        for record in records:
            record.pop(None, None)  # cells beyond the header
        return records
    except csv.Error as err:
        raise ValueError(f"{path}: line {reader.line_num}: malformed CSV ({err})") from None
    finally:
        csv.field_size_limit(old_limit)


def _parquet_records(path: Path, limit: int | None) -> list[dict]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise FileNotFoundError(f"source file not found: {path}")
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError subclasses
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from None
    return (table.slice(0, limit) if limit else table).to_pylist()


def _dataset_records(ds: Any, limit: int | None) -> list[dict]:
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    return ds.to_list()


def _disk_records(spec: SourceSpec) -> list[dict]:
    import datasets

    path = spec.path
    if not path.is_dir():
        hint = f" (for a hub dataset write hf:{spec.location})" if not path.is_absolute() else ""
        raise FileNotFoundError(f"source folder not found: {path}{hint}")
    if not any((path / marker).is_file() for marker in DISK_MARKERS):
        raise ValueError(
            f"{path} is not a folder written by datasets' save_to_disk (none of {', '.join(DISK_MARKERS)} "
            f"in it). For a folder of data files (a dataset repository), use hf:{spec.location}"
        )
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[_pick_split(ds, spec.get("split"), str(spec))]
    elif spec.get("split"):
        raise ValueError(f"{path} holds a single dataset with no splits; remove split={spec.get('split')}")
    return _dataset_records(ds, spec.limit)


def _pick_split(ds: Any, split: str | None, source: str) -> str:
    splits = list(ds)
    if split is not None:
        if split not in splits:
            raise ValueError(f"split {split!r} not in {source}; available splits: {', '.join(splits)}")
        return split
    return next((s for s in ("train", "test") if s in splits), splits[0])


def _hf_records(spec: SourceSpec) -> list[dict]:
    import datasets

    split = spec.get("split", "train")
    ds = datasets.load_dataset(spec.location, spec.get("config"), split=split)
    return _dataset_records(ds, spec.limit)


# --------------------------------------------------------------------------- entry point


def _raw_units(spec: SourceSpec, progress: bool) -> tuple[str, Iterable[Any]]:
    """('text', units of running text) or ('records', records) for any kind of source."""
    kind = spec.kind
    if kind == "txt":
        return "text", _units([_decode(_read_bytes(spec.path), spec.path)], spec.unit)
    if kind == "builtin":
        name = spec.location
        if name.startswith("bigbench/"):
            path = builtins.bigbench_task_path(name[len("bigbench/") :], progress=progress)
            return "records", builtins.bigbench_records(json.loads(path.read_bytes()))
        if name == "pydoc":
            documents = builtins.pydoc_documents()
        else:
            path = builtins.debian_text_path(name)
            documents = [_decode(path.read_bytes(), path)]
        return "text", _units(split_documents(documents, spec.split), spec.unit)
    readers = {
        "jsonl": lambda: _jsonl_records(spec.path),
        "json": lambda: _json_records(spec.path),
        "csv": lambda: _csv_records(spec.path),
        "parquet": lambda: _parquet_records(spec.path, spec.limit),
        "disk": lambda: _disk_records(spec),
        "hf": lambda: _hf_records(spec),
    }
    return "records", readers[kind]()


def load_texts(spec: str | SourceSpec | TextSource, *, progress: bool = True) -> TextSource:
    """Read the texts of one source (see :mod:`zipcal_jax.data` for the spec grammar).

    Args:
        spec: a spec string, a :class:`SourceSpec`, or an already loaded :class:`TextSource`
            (returned unchanged).
        progress: show progress bars for downloads of built-in sources.

    Returns:
        A :class:`TextSource` with the texts, their row in the source, and the dropped count.

    Raises:
        FileNotFoundError: a local file or folder does not exist.
        ValueError: a bad spec, a missing field (the message lists the available ones), bytes that
            are not UTF-8 or malformed JSON (the message names file and line), or no usable text.
    """
    if isinstance(spec, TextSource):
        return spec
    spec = parse_spec(spec)
    source = str(spec)
    what, units = _raw_units(spec, progress)
    extract = _Extractor(spec, source) if what == "records" else None
    limit, min_chars = spec.limit, spec.min_chars
    texts: list[str] = []
    rows: list[int] = []
    total = dropped = 0
    for row, unit in enumerate(units):
        if limit is not None and row >= limit:
            break
        total += 1
        text = extract(unit, row) if extract else unit
        if len(text.strip()) < min_chars:
            dropped += 1
            continue
        texts.append(text)
        rows.append(row)
    if not texts:
        raise ValueError(
            f"source {source!r} has no usable text: {total} unit(s) read, {dropped} dropped as empty or "
            f"shorter than min_chars={min_chars}"
        )
    return TextSource(spec=source, texts=texts, rows=rows, dropped=dropped)
