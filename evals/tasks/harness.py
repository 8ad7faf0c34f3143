"""lm-evaluation-harness multiple-choice tasks with the harness's own prompts.

Each task reads rows in its hub dataset's schema and builds one :class:`Doc` per row exactly as
lm-evaluation-harness 0.4.x does (``doc_to_text`` / ``doc_to_choice`` / ``doc_to_target``, target
delimiter ``" "`` in front of every continuation). Checked against the task files shipped in the
``lm-eval==0.4.13`` wheel (the same files as ``lm_eval/tasks/...`` in
EleutherAI/lm-evaluation-harness on GitHub):

* **piqa** (``piqa/piqa.yaml``; ``baber/piqa``, validation): ``"Question: {goal}\nAnswer:"``,
  choices ``[sol1, sol2]``, gold ``label``; acc, acc_norm.
* **hellaswag** (``hellaswag/hellaswag.yaml``, ``hellaswag/utils.py``; ``Rowan/hellaswag``,
  validation): ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``, choices
  ``preprocess(ending)``, gold ``int(label)`` (a string on the hub); acc, acc_norm. ``preprocess``
  (:func:`hellaswag_preprocess`) strips, turns ``" [title]"`` into ``". "``, drops ``[...]`` tags
  and replaces ``"  "`` by ``" "`` once; an ending that starts with a tag keeps the leading
  space this leaves, as in the harness.
* **arc_easy**, **arc_challenge** (``arc/arc_easy.yaml``, ``arc/arc_challenge.yaml``;
  ``allenai/ai2_arc`` ARC-Easy / ARC-Challenge, test): ``"Question: {question}\nAnswer:"``,
  choices ``choices.text``, gold ``choices.label.index(answerKey)`` (labels are letters or
  ``"1".."5"``; a key spelled the other way is mapped, as the old harness did); acc, acc_norm.
* **boolq** (``super_glue/boolq/default.yaml``; ``aps/super_glue`` boolq, validation):
  ``"{passage}\nQuestion: {question}?\nAnswer:"``, choices ``["no", "yes"]``, gold ``label``
  (google/boolq's boolean ``answer`` is accepted when ``label`` is absent); acc.
* **winogrande** (``winogrande/default.yaml``, ``winogrande/preprocess_winogrande.py``;
  ``allenai/winogrande`` winogrande_xl, validation): partial evaluation, one context per option
  ``sentence[:i] + option`` (``i`` = index of ``"_"``) and the shared continuation
  ``" " + sentence[i + 1:].strip()``; gold ``answer`` (``"1"``/``"2"``) - 1; acc. ``Doc.choices``
  are the two options (the harness lists the partial contexts; only acc is reported).
* **openbookqa** (``openbookqa/openbookqa.yaml``; ``allenai/openbookqa`` main, test):
  ``question_stem`` alone, choices ``choices.text``, gold
  ``choices.label.index(answerKey.lstrip())``; acc, acc_norm.
* **rte** (``glue/rte/default.yaml``; ``nyu-mll/glue`` rte, validation):
  ``"{sentence1}\nQuestion: {sentence2} True or False?\nAnswer:"``, choices ``["True",
  "False"]``, gold ``label`` (0 = entailment = "True"); acc.

Sources: the bare name loads ``datasets.load_dataset(hub_id, config, split=split)`` (online
only); ``NAME@PATH`` reads a local ``.jsonl``/``.json``/``.parquet`` file or a ``save_to_disk``
folder with rows in the same schema (from a ``DatasetDict`` the task's split is taken).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zipcal_jax.cache import DownloadError
from zipcal_jax.evals.tasks.base import Doc, Task

__all__ = ["HUB_TASKS", "HubTask", "hellaswag_preprocess", "load_hub_task"]

HARNESS_VERSION = "lm-eval 0.4.13"


# --------------------------------------------------------------------------- field access


class _Row:
    """Typed access to one row's fields; every error names the field and the row."""

    def __init__(self, row: Any, index: int, source: str, task: str, fields: tuple[str, ...]):
        self.where = f"{source}: row {index}"
        self.task, self.fields = task, fields
        if not isinstance(row, dict):
            raise ValueError(f"{self.where} is a {type(row).__name__}, not an object with fields")
        self.row = row

    def _fail(self, name: str, problem: str) -> ValueError:
        return ValueError(
            f"{self.where}: field {name!r} {problem} ({self.task} rows need {', '.join(self.fields)})"
        )

    def get(self, name: str) -> Any:
        if name not in self.row:
            raise self._fail(name, f"is missing; the row has {', '.join(map(str, self.row)) or 'no fields'}")
        return self.row[name]

    def text(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str):
            raise self._fail(name, f"must be a string, got {type(value).__name__} {value!r}")
        return value

    def texts(self, name: str, value: Any = None) -> list[str]:
        value = self.get(name) if value is None else value
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise self._fail(name, f"must be a list of strings, got {value!r}")
        return list(value)

    def index(self, name: str, n: int, *, offset: int = 0) -> int:
        """An integer label (ints or digit strings, as the hub stores them) in ``0..n-1``."""
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self._fail(name, f"must be an integer label, got {value!r}")
        if isinstance(value, str):
            if not value.strip().lstrip("-").isdigit():
                raise self._fail(name, f"must be an integer label, got {value!r}")
            value = int(value)
        value -= offset
        if not 0 <= value < n:
            lo, hi = offset, n - 1 + offset
            raise self._fail(name, f"is {value + offset}, outside {lo}..{hi} (a test row without labels?)")
        return value

    def choices(self, name: str) -> tuple[list[str], list[str]]:
        """``choices`` as ``{"text": [...], "label": [...]}`` (the ai2_arc / openbookqa schema)."""
        value = self.get(name)
        if not isinstance(value, dict) or "text" not in value or "label" not in value:
            raise self._fail(name, f"must be an object with 'text' and 'label' lists, got {value!r}")
        text = self.texts(f"{name}.text", value["text"])
        label = self.texts(f"{name}.label", value["label"])
        if len(text) != len(label) or len(text) < 2:
            raise self._fail(name, f"needs 2+ texts and as many labels, got {len(text)} and {len(label)}")
        return text, label


def _shared_context(ctx: str, choices: list[str], gold: int, row: int) -> Doc:
    return Doc(
        requests=tuple((ctx, " " + c) for c in choices), gold=gold, choices=tuple(choices), meta={"row": row}
    )


# --------------------------------------------------------------------------- per-task rows


def _piqa(r: _Row, i: int) -> Doc:
    choices = [r.text("sol1"), r.text("sol2")]
    return _shared_context(f"Question: {r.text('goal')}\nAnswer:", choices, r.index("label", 2), i)


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's ``hellaswag/utils.py`` ``preprocess``: strip, ``" [title]"`` -> ``". "``, drop
    ``[...]`` tags (WikiHow artifacts), then replace double spaces by single ones (once)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def _hellaswag(r: _Row, i: int) -> Doc:
    ctx = r.text("ctx_a") + " " + r.text("ctx_b").capitalize()
    query = hellaswag_preprocess(r.text("activity_label") + ": " + ctx)
    endings = [hellaswag_preprocess(e) for e in r.texts("endings")]
    return _shared_context(query, endings, r.index("label", len(endings)), i)


def _answer_index(r: _Row, labels: list[str], key: str) -> int:
    if key in labels:
        return labels.index(key)
    # Old harness (tasks/arc.py) mapped numeric keys to letters; accept either spelling.
    numeric = {str(n + 1): chr(ord("A") + n) for n in range(len(labels))}
    alias = numeric.get(key) or {v: k for k, v in numeric.items()}.get(key)
    if alias in labels:
        return labels.index(alias)
    raise r._fail("answerKey", f"is {key!r}, which is not one of choices.label {labels}")


def _arc(r: _Row, i: int) -> Doc:
    text, label = r.choices("choices")
    gold = _answer_index(r, label, r.text("answerKey"))
    return _shared_context(f"Question: {r.text('question')}\nAnswer:", text, gold, i)


def _boolq(r: _Row, i: int) -> Doc:
    ctx = f"{r.text('passage')}\nQuestion: {r.text('question')}?\nAnswer:"
    if "label" not in r.row and isinstance(r.row.get("answer"), bool):  # google/boolq schema
        gold = int(r.row["answer"])
    else:
        gold = r.index("label", 2)
    return _shared_context(ctx, ["no", "yes"], gold, i)


def _winogrande(r: _Row, i: int) -> Doc:
    sentence = r.text("sentence")
    if "_" not in sentence:
        raise r._fail("sentence", f"has no blank '_' to fill: {sentence!r}")
    idx = sentence.index("_")
    options = [r.text("option1"), r.text("option2")]
    target = sentence[idx + 1 :].strip()
    gold = r.index("answer", 2, offset=1)
    return Doc(
        requests=tuple((sentence[:idx] + opt, " " + target) for opt in options),
        gold=gold,
        choices=tuple(options),
        meta={"row": i, "partial": True},
    )


def _openbookqa(r: _Row, i: int) -> Doc:
    text, label = r.choices("choices")
    gold = _answer_index(r, label, r.text("answerKey").lstrip())
    return _shared_context(r.text("question_stem"), text, gold, i)


def _rte(r: _Row, i: int) -> Doc:
    ctx = f"{r.text('sentence1')}\nQuestion: {r.text('sentence2')} True or False?\nAnswer:"
    return _shared_context(ctx, ["True", "False"], r.index("label", 2), i)


@dataclass(frozen=True)
class HubTask:
    """One lm-evaluation-harness task: where its data lives and how a row becomes a Doc."""

    name: str
    hub_id: str
    config: str | None
    split: str
    metrics: tuple[str, ...]
    fields: tuple[str, ...]
    row_to_doc: Callable[[_Row, int], Doc]
    yaml: str


HUB_TASKS: dict[str, HubTask] = {
    t.name: t
    for t in (
        HubTask("piqa", "baber/piqa", None, "validation", ("acc", "acc_norm"),
                ("goal", "sol1", "sol2", "label"), _piqa, "piqa/piqa.yaml"),
        HubTask("hellaswag", "Rowan/hellaswag", None, "validation", ("acc", "acc_norm"),
                ("activity_label", "ctx_a", "ctx_b", "endings", "label"), _hellaswag,
                "hellaswag/hellaswag.yaml + hellaswag/utils.py"),
        HubTask("arc_easy", "allenai/ai2_arc", "ARC-Easy", "test", ("acc", "acc_norm"),
                ("question", "choices", "answerKey"), _arc, "arc/arc_easy.yaml"),
        HubTask("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "test", ("acc", "acc_norm"),
                ("question", "choices", "answerKey"), _arc, "arc/arc_challenge.yaml"),
        HubTask("boolq", "aps/super_glue", "boolq", "validation", ("acc",),
                ("passage", "question", "label"), _boolq, "super_glue/boolq/default.yaml"),
        HubTask("winogrande", "allenai/winogrande", "winogrande_xl", "validation", ("acc",),
                ("sentence", "option1", "option2", "answer"), _winogrande,
                "winogrande/default.yaml + winogrande/preprocess_winogrande.py"),
        HubTask("openbookqa", "allenai/openbookqa", "main", "test", ("acc", "acc_norm"),
                ("question_stem", "choices", "answerKey"), _openbookqa, "openbookqa/openbookqa.yaml"),
        HubTask("rte", "nyu-mll/glue", "rte", "validation", ("acc",),
                ("sentence1", "sentence2", "label"), _rte, "glue/rte/default.yaml"),
    )
}  # fmt: skip


# --------------------------------------------------------------------------- reading rows


def _offline() -> bool:
    flags = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    return any(os.environ.get(f, "").strip().upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def _hub_rows(task: HubTask, limit: int | None) -> list[dict]:
    where = f"{task.hub_id}" + (f" ({task.config})" if task.config else "")
    hint = (
        f"Give a local copy in the same schema instead: {task.name}@path/to/{task.split}.jsonl "
        f"(.jsonl, .json, .parquet or a datasets save_to_disk folder; fields {', '.join(task.fields)})."
    )
    if _offline():
        raise DownloadError(
            f"task {task.name!r} needs the hub dataset {where}, split {task.split!r}, but the hub is "
            f"offline (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set). {hint}"
        )
    import datasets

    try:
        ds = datasets.load_dataset(task.hub_id, task.config, split=task.split)
    except Exception as err:  # network, auth, missing dataset: all mean "cannot load"
        raise DownloadError(
            f"task {task.name!r}: could not load the hub dataset {where}, split {task.split!r} "
            f"({type(err).__name__}: {err}). {hint}"
        ) from err
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    return ds.to_list()


def _disk_rows(path: Path, task: HubTask) -> list[dict]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if task.split in ds:
            ds = ds[task.split]
        elif len(splits) == 1:
            ds = ds[splits[0]]
        else:
            raise ValueError(
                f"{path} holds splits {', '.join(splits)} but not {task.split!r}, the split {task.name} "
                f"evaluates; save that split (or a single dataset) to the folder"
            )
    return ds.to_list()


def _local_rows(path: Path, task: HubTask) -> Iterable[Any]:
    from zipcal_jax.data import readers

    if path.is_dir():
        if not any((path / m).is_file() for m in ("dataset_info.json", "state.json", "dataset_dict.json")):
            raise ValueError(f"{path} is not a folder written by datasets' save_to_disk")
        return _disk_rows(path, task)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"task file not found: {path}")
    if suffix == ".jsonl":
        return readers._jsonl_records(path)
    if suffix == ".json":
        text = readers._decode(path.read_bytes(), path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {err.lineno}: malformed JSON ({err.msg})") from None
        if isinstance(data, dict):
            lists = [k for k, v in data.items() if isinstance(v, list)]
            if len(lists) != 1 and "data" not in lists:
                raise ValueError(f"{path}: expected a list of rows or an object with one list (e.g. 'data')")
            data = data["data" if "data" in lists else lists[0]]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of rows, found {type(data).__name__}")
        return data
    if suffix == ".parquet":
        return readers._parquet_records(path, None)
    raise ValueError(
        f"unsupported task file {path.name!r}; give a .jsonl, .json or .parquet file or a save_to_disk folder"
    )


def load_hub_task(name: str, path: str | None = None, *, limit: int | None = None) -> Task:
    """Build an lm-evaluation-harness task from the hub (``path=None``) or a local file/folder.

    Raises:
        zipcal_jax.cache.DownloadError: the hub dataset cannot be loaded (offline, say); the
            message says how to give a local file instead.
        FileNotFoundError: ``path`` does not exist.
        ValueError: a malformed file or row; the message names the row and the field.
    """
    task = HUB_TASKS[name]
    if path is None:
        rows: Iterable[Any] = _hub_rows(task, limit)
        source = f"hf:{task.hub_id}" + (f"?config={task.config}" if task.config else "")
        source += f"{'&' if task.config else '?'}split={task.split}"
    else:
        rows = _local_rows(Path(path).expanduser(), task)
        source = str(path)
    docs = []
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        docs.append(task.row_to_doc(_Row(row, i, source, name, task.fields), i))
    if not docs:
        raise ValueError(f"task {name!r}: {source} has no rows")
    config = {"split": task.split, "limit": limit, "harness": f"{HARNESS_VERSION} lm_eval/tasks/{task.yaml}"}
    return Task(name=name, docs=tuple(docs), metrics=task.metrics, source=source, config=config)
