"""Source specs: one string names a text source everywhere (CLI ``--data``, Python, configs).

Grammar: ``LOCATION[?key=value&key=value...]``. The string is split at its first ``?``; options
are ``&``-separated ``key=value`` pairs whose values are percent-decoded, so a ``&`` inside a
template is written ``%26``. See :mod:`zipcal_jax.data` for the full reference with examples.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from urllib.parse import quote, unquote

__all__ = ["BUILTINS", "EXTENSIONS", "KINDS", "TEXT_SPLITS", "SourceSpec", "parse_spec"]

#: File extension -> kind of a local file source.
EXTENSIONS = {".txt": "txt", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
#: Every kind of source; ``disk`` is a folder written by ``datasets.save_to_disk``.
KINDS = ("txt", "jsonl", "json", "parquet", "csv", "disk", "hf", "builtin")
#: Built-in sources (``bigbench/<task>`` takes any BIG-bench task name).
BUILTINS = ("pydoc", "kjv", "devil", "bigbench/<task>")
UNITS = ("paragraph", "line", "document")
#: ``split=`` values of the running-text built-ins (``pydoc``, ``kjv``, ``devil``): the first 90%
#: of the paragraphs (default), the last 10% (held out for evaluation), or everything.
TEXT_SPLITS = ("train", "test", "all")
#: Percentage of a running-text built-in's paragraphs held out as ``split=test``: the last
#: ``ceil(n * TEST_PERCENT / 100)`` of its ``n`` paragraphs, so at least one.
TEST_PERCENT = 10
#: Files whose presence marks a folder written by ``datasets`` ``save_to_disk``.
DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
#: Fields tried, in order, when a record source names no ``field`` or ``template``.
DEFAULT_FIELDS = ("text", "sentence", "prompt", "question", "input")

_COMMON = ("limit", "min_chars")
_RECORDS = ("field", "template", *_COMMON)
_OPTIONS = {
    "txt": ("unit", *_COMMON),
    "jsonl": _RECORDS,
    "json": _RECORDS,
    "parquet": _RECORDS,
    "csv": _RECORDS,
    "disk": ("split", *_RECORDS),
    "hf": ("config", "split", *_RECORDS),
    "builtin:text": ("split", "unit", *_COMMON),
    "builtin:bigbench": _RECORDS,
}
_PREFIXES = {"hf:": "hf", "builtin:": "builtin"}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_TASK = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
# Printable ASCII kept readable in str(spec); '%' and '&' are always escaped.
_SAFE = "".join(c for c in string.printable if c not in "%&\t\n\r\x0b\x0c" and c.isprintable())


def _option_group(kind: str, location: str) -> str:
    if kind != "builtin":
        return kind
    return "builtin:bigbench" if location.startswith("bigbench/") else "builtin:text"


def _template_fields(template: str) -> list[str]:
    """Field names a template refers to; format specs and conversions are rejected."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"bad template {template!r}: {err} (write a literal brace as {{{{ or }}}})") from err
    names = []
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if not name:
            raise ValueError(f"bad template {template!r}: empty {{}}; name a field, e.g. {{question}}")
        if spec or conversion:
            raise ValueError(
                f"bad template {template!r}: {{{name}}} may not carry a format spec or conversion"
            )
        names.append(name)
    if not names:
        raise ValueError(f"template {template!r} names no field; write fields in braces, e.g. {{question}}")
    return names


def _check_value(key: str, value: str) -> None:
    if key in ("limit", "min_chars"):
        if not (value.isascii() and value.isdigit()) or int(value) < 1:
            raise ValueError(f"option {key}={value!r} must be an integer >= 1")
    elif key == "unit" and value not in UNITS:
        raise ValueError(f"option unit={value!r} is not one of {', '.join(UNITS)}")
    elif key == "template":
        _template_fields(value)
    elif key in ("field", "split", "config") and not value:
        raise ValueError(f"option {key}= needs a value")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec.

    Attributes:
        kind: one of :data:`KINDS`.
        location: a file or folder path (local kinds), a dataset name or folder (``hf``), or a
            built-in name such as ``pydoc`` or ``bigbench/winowhy`` (``builtin``); no prefix.
        options: ``(key, value)`` pairs sorted by key (a mapping is accepted and converted).
        raw: the string the spec was parsed from (not part of equality).
    """

    kind: str
    location: str
    options: tuple[tuple[str, str], ...] = ()
    raw: str = dc_field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")
        if not self.location:
            raise ValueError("a source spec needs a location (a path, hf:NAME or builtin:NAME)")
        if self.location != self.location.strip():
            raise ValueError(f"a source location may not start or end with whitespace: {self.location!r}")
        if "?" in self.location:
            raise ValueError(f"a source location may not contain '?': {self.location!r}")
        if self.kind == "builtin":
            _check_builtin(self.location)
        opts = self.options.items() if isinstance(self.options, Mapping) else self.options
        pairs = tuple(sorted((str(k), str(v)) for k, v in opts))
        keys = [k for k, _ in pairs]
        group = _option_group(self.kind, self.location)
        valid = _OPTIONS[group]
        for key, value in pairs:
            if key not in valid:
                raise ValueError(
                    f"unknown option {key!r} for a {self.kind} source {self.location!r}; "
                    f"valid options: {', '.join(valid)}"
                )
            if keys.count(key) > 1:
                raise ValueError(f"option {key!r} is given more than once")
            _check_value(key, value)
            if key == "split" and group == "builtin:text" and value not in TEXT_SPLITS:
                raise ValueError(
                    f"option split={value!r} is not valid for builtin:{self.location}; valid splits: "
                    f"{', '.join(TEXT_SPLITS)} (train = first 90% of the paragraphs, the default; "
                    "test = the last 10%, held out for evaluation)"
                )
        if "field" in keys and "template" in keys:
            raise ValueError("give either field= or template=, not both")
        object.__setattr__(self, "options", pairs)
        if not self.raw:
            object.__setattr__(self, "raw", str(self))

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of option ``key``, or ``default``."""
        return dict(self.options).get(key, default)

    @property
    def limit(self) -> int | None:
        """``limit=N``: read only the first N records (None: all)."""
        value = self.get("limit")
        return None if value is None else int(value)

    @property
    def min_chars(self) -> int:
        """``min_chars=N``: drop texts shorter than N characters once stripped (default 1: drop empty ones)."""
        return int(self.get("min_chars", "1"))

    @property
    def unit(self) -> str:
        """``unit=``: how running text is cut into candidates (default ``paragraph``)."""
        return self.get("unit", "paragraph")

    @property
    def split(self) -> str | None:
        """``split=``: a split name (``hf:``, save_to_disk folders), or for the running-text
        built-ins one of :data:`TEXT_SPLITS`, where it defaults to ``train``; None otherwise."""
        value = self.get("split")
        if value is None and _option_group(self.kind, self.location) == "builtin:text":
            return "train"
        return value

    @property
    def field(self) -> str | None:
        """``field=NAME``: the record field holding the text (dotted names reach into dicts)."""
        return self.get("field")

    @property
    def template(self) -> str | None:
        """``template=...``: a ``str.format``-style template over record fields."""
        return self.get("template")

    @property
    def template_fields(self) -> list[str]:
        """Field names used by ``template`` (empty when there is none)."""
        return _template_fields(self.template) if self.template else []

    @property
    def path(self) -> Path:
        """``location`` as a path with ``~`` expanded (local kinds)."""
        return Path(self.location).expanduser()

    def __str__(self) -> str:
        prefix = {"hf": "hf:", "builtin": "builtin:"}.get(self.kind, "")
        query = "&".join(f"{k}={_quote(v)}" for k, v in self.options)
        return f"{prefix}{self.location}" + (f"?{query}" if query else "")


def _quote(value: str) -> str:
    """Percent-encode ``%``, ``&``, control characters, non-ASCII and a trailing space."""
    core = quote(value, safe=_SAFE)
    stripped = core.rstrip(" ")
    return stripped + "%20" * (len(core) - len(stripped))


def _check_builtin(name: str) -> None:
    if name in ("pydoc", "kjv", "devil"):
        return
    if name.startswith("bigbench/"):
        task = name[len("bigbench/") :]
        if task and _TASK.match(task) and ".." not in task.split("/"):
            return
        raise ValueError(f"bad BIG-bench task name {task!r} in builtin:{name}; e.g. builtin:bigbench/winowhy")
    raise ValueError(f"unknown built-in source {name!r}; valid built-ins: {', '.join(BUILTINS)}")


def _local_kind(location: str) -> str:
    path = Path(location).expanduser()
    if path.is_dir():
        return "disk"
    suffix = path.suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    if not suffix:
        return "disk"  # a folder that may not exist yet; loading says so clearly
    raise ValueError(
        f"unknown file extension {suffix!r} in source {location!r}; valid extensions: "
        f"{', '.join(EXTENSIONS)}, or a folder written by datasets.save_to_disk, or hf:NAME, or builtin:NAME"
    )


def _parse_options(query: str) -> list[tuple[str, str]]:
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"option {item!r} is not key=value (a literal '&' is written %26)")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def parse_spec(spec: str | SourceSpec) -> SourceSpec:
    """Parse a source spec string (a :class:`SourceSpec` passes through unchanged).

    Raises:
        ValueError: unknown kind, extension, built-in or option key, or a bad option value; the
            message names the culprit and lists the valid choices.
    """
    if isinstance(spec, SourceSpec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a source spec is a string or SourceSpec, not {type(spec).__name__}")
    text = spec.strip()
    location, _, query = text.partition("?")
    options = _parse_options(query)
    for prefix, kind in _PREFIXES.items():
        if location.startswith(prefix):
            return SourceSpec(kind, location[len(prefix) :], tuple(options), raw=spec)
    if _SCHEME.match(location):
        raise ValueError(
            f"unsupported source {location!r}; valid forms: a local path ({', '.join(EXTENSIONS)} or a "
            "save_to_disk folder), hf:NAME, builtin:NAME"
        )
    return SourceSpec(_local_kind(location), location, tuple(options), raw=spec)
