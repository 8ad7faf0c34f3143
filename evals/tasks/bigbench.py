"""BIG-bench JSON multiple-choice tasks (``task.json`` with ``target_scores``) as zero-shot tasks.

Format, as verified against the sources:

* lm-evaluation-harness 0.4.x (``lm_eval/tasks/bigbench/multiple_choice_template_a_yaml``)
  evaluates ``hails/bigbench`` (the HF ``bigbench`` dataset, zero-shot): ``doc_to_text:
  inputs``, choices ``multiple_choice_targets``, gold ``multiple_choice_targets.index(targets[0])``,
  metric ``acc``, target delimiter ``" "``. The HF builder (huggingface/datasets
  ``datasets/bigbench/bigbench.py``) writes ``inputs = <BIG-bench formatted input>.strip()`` and
  strips each choice.
* The BIG-bench formatting (``bigbench/api/json_task.py`` ``default_format_fn``; the same in the
  harness's older ``lm_eval/tasks/bigbench.py``, which read ``task.json`` directly) is
  ``task_prefix + example_input_prefix + input [+ choice_prefix + choice_prefix.join(choices)] +
  example_output_prefix`` with defaults ``""``, ``"\\nQ: "``, ``"\\n  choice: "``, ``"\\nA: "``;
  the choice list is appended unless ``append_choices_to_input`` is false.

What we build: ``context = (task_prefix + example_input_prefix + input + choice list +
example_output_prefix).strip()``, one request ``(context, " " + choice)`` per key of
``target_scores`` (in key order, stripped), gold = the first key with the highest score (as
``default_format_fn`` picks ``target``), metric ``acc``. Duplicate examples are dropped (the old
harness's ``_get_unique_examples``; the HF dataset has the same counts, e.g. winowhy 2,862 of
2,865). Examples without ``target_scores`` are skipped (the harness's ``filter_multiple_choice``).

One difference cannot be removed offline: the order of the choices *listed inside the prompt*.
BIG-bench permutes them with a random stream that depends on how its seqio pipeline was run; we
use the old harness's reproducible rule, ``np.random.RandomState(42).permutation(sorted(keys))``
per example. The scored continuations and the gold do not depend on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from zipcal_jax.evals.tasks.base import Doc, Task

__all__ = ["bigbench_docs", "load_bigbench_task"]

_DEFAULTS = {"task_prefix": "", "example_input_prefix": "\nQ: ", "example_output_prefix": "\nA: "}
_CHOICE_PREFIX = "\n  choice: "


def _string(data: dict, key: str, default: str, where: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {key!r} must be a string, got {value!r}")
    return value


def bigbench_docs(task_json: Any, source: str, *, limit: int | None = None) -> list[Doc]:
    """Docs of a parsed BIG-bench ``task.json`` (see the module docstring for the format).

    Raises:
        ValueError: a malformed task: the message names the field (``examples``,
            ``examples[i].input``, ``examples[i].target_scores``, a prefix) and the source.
    """
    if not isinstance(task_json, dict):
        raise ValueError(f"{source}: a BIG-bench task.json is an object, got {type(task_json).__name__}")
    examples = task_json.get("examples")
    if not isinstance(examples, list) or not examples:
        raise ValueError(f"{source}: field 'examples' must be a non-empty list of examples")
    prefixes = {key: _string(task_json, key, value, source) for key, value in _DEFAULTS.items()}
    choice_prefix = _string(task_json, "choice_prefix", _CHOICE_PREFIX, source)
    append = task_json.get("append_choices_to_input", True)
    if not isinstance(append, bool):
        raise ValueError(f"{source}: field 'append_choices_to_input' must be true or false, got {append!r}")
    docs, seen = [], set()
    for i, example in enumerate(examples):
        where = f"{source}: examples[{i}]"
        if not isinstance(example, dict):
            raise ValueError(f"{where} must be an object with 'input' and 'target_scores'")
        if "target_scores" not in example:
            continue  # a generative example in a mixed task
        key = json.dumps(example)
        if key in seen:
            continue
        seen.add(key)
        text = example.get("input")
        if not isinstance(text, str):
            raise ValueError(f"{where}.input must be a string, got {text!r}")
        scores = example["target_scores"]
        if (
            not isinstance(scores, dict)
            or len(scores) < 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values())
        ):
            raise ValueError(
                f"{where}.target_scores must map 2+ choice strings to numeric scores, got {scores!r}"
            )
        keys = list(scores)
        listing = ""
        if append:
            permuted = np.random.RandomState(seed=42).permutation(sorted(keys))
            listing = choice_prefix + choice_prefix.join(str(k) for k in permuted)
        context = prefixes["task_prefix"] + prefixes["example_input_prefix"] + text + listing
        context = (context + prefixes["example_output_prefix"]).strip()
        best = max(scores.values())
        gold = next(j for j, k in enumerate(keys) if scores[k] == best)
        choices = tuple(k.strip() for k in keys)
        if len(set(choices)) != len(choices):
            raise ValueError(f"{where}.target_scores has choices that are equal once stripped: {keys}")
        docs.append(
            Doc(
                requests=tuple((context, " " + c) for c in choices),
                gold=gold,
                choices=choices,
                meta={"example": i},
            )
        )
        if limit is not None and len(docs) >= limit:
            break
    if not docs:
        raise ValueError(f"{source}: no multiple-choice examples (none has 'target_scores')")
    return docs


def load_bigbench_task(task: str, path: str | None = None, *, limit: int | None = None) -> Task:
    """``bigbench/TASK`` from the cached BIG-bench 1.0.0 sdist (fetched once, see
    :func:`zipcal_jax.data.builtins.bigbench_task_path`), or from a local ``task.json``.

    Raises:
        zipcal_jax.cache.DownloadError: the sdist cannot be downloaded.
        FileNotFoundError: a local ``path`` does not exist.
        ValueError: an unknown task or a malformed ``task.json`` (the message names the field).
    """
    if path is None:
        from zipcal_jax.data import builtins

        file = builtins.bigbench_task_path(task)
        source = f"builtin:bigbench/{task}"
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"BIG-bench task file not found: {file}")
        source = str(path)
    raw = file.read_bytes()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file}: not valid JSON ({err})") from None
    docs = bigbench_docs(data, source, limit=limit)
    return Task(
        name=f"bigbench/{task}",
        docs=tuple(docs),
        metrics=("acc",),
        source=source,
        config={
            "limit": limit,
            "format": "BIG-bench json_task default_format_fn, strip()ped (hails/bigbench)",
        },
    )
