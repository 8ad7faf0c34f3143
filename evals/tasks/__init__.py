"""Zero-shot task registry: names -> :class:`Task` (lists of multiple-choice :class:`Doc`).

Task specs
==========

==================================  ==========================================================
``piqa``, ``hellaswag``,            lm-evaluation-harness tasks with the harness's prompts,
``arc_easy``, ``arc_challenge``,    splits, choices, gold and metrics (:mod:`.harness`), loaded
``boolq``, ``winogrande``,          from the hub with ``datasets.load_dataset`` (online only)
``openbookqa``, ``rte``
``NAME@PATH``                       the same task from a local ``.jsonl``/``.json``/``.parquet``
                                    file or ``save_to_disk`` folder in the hub schema, e.g.
                                    ``piqa@data/piqa_validation.jsonl``
``bigbench/TASK``                   a BIG-bench 1.0.0 multiple-choice task (:mod:`.bigbench`),
                                    e.g. ``bigbench/date_understanding``,
                                    ``bigbench/logical_deduction/three_objects``; fetched once
                                    into the cache (see :mod:`zipcal_jax.data.builtins`)
``bigbench/TASK@PATH``              the same from a local ``task.json``
``continuation/SOURCE``             corpus cloze tasks built from held-out text
``last_word/SOURCE``                (``builtin:SOURCE?split=test``) with SOURCE one of
                                    ``pydoc``, ``kjv``, ``devil`` (:mod:`.cloze`)
==================================  ==========================================================

Suites (:data:`SUITES`) name several tasks at once: ``offline`` (the default; no hub needed)
and ``harness`` (the eight lm-eval tasks; online). :func:`resolve` takes a comma-separated
string, a list, suites, names and :class:`Task` objects. A suite member that cannot load
(BIG-bench not downloadable, a Debian text without ``apt-get``, the hub offline) is skipped
with a warning and recorded in ``skipped``; a task named explicitly that cannot load raises.

Python::

    from zipcal_jax.evals.tasks import get_task, resolve
    task = get_task("continuation/pydoc", seed=0, limit=100)
    skipped = {}
    tasks = resolve("offline,piqa@piqa.jsonl", skipped=skipped)
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence
from pathlib import Path

from zipcal_jax.cache import DownloadError
from zipcal_jax.evals.tasks.base import METRICS, Doc, Task, TaskBuilder
from zipcal_jax.evals.tasks.bigbench import load_bigbench_task
from zipcal_jax.evals.tasks.cloze import CLOZE_KINDS, SOURCES, load_cloze_task
from zipcal_jax.evals.tasks.harness import HUB_TASKS, load_hub_task

__all__ = [
    "METRICS",
    "SUITES",
    "Doc",
    "Task",
    "TaskBuilder",
    "get_task",
    "known_tasks",
    "resolve",
]

#: Named groups of tasks. ``offline`` needs no hub: cloze tasks on held-out pydoc/KJV text and
#: one BIG-bench task (skipped, with the reason recorded, where BIG-bench cannot be fetched).
SUITES: dict[str, tuple[str, ...]] = {
    "offline": (
        "continuation/pydoc",
        "continuation/kjv",
        "last_word/pydoc",
        "last_word/kjv",
        "bigbench/date_understanding",
    ),
    "harness": tuple(HUB_TASKS),
}

# Exceptions that mean "this task's data cannot be had here" (suite members are then skipped).
_UNAVAILABLE = (DownloadError, OSError, ValueError)


def known_tasks() -> list[str]:
    """Every concrete task name (without ``@PATH``): the lm-eval tasks, the cloze tasks and the
    BIG-bench multiple-choice tasks known to work (any other ``bigbench/TASK`` is accepted too)."""
    from zipcal_jax.data.builtins import KNOWN_MC_TASKS

    cloze = [f"{kind}/{src}" for kind in CLOZE_KINDS for src in SOURCES]
    return [*HUB_TASKS, *cloze, *(f"bigbench/{t}" for t in KNOWN_MC_TASKS)]


def _unknown(name: str) -> ValueError:
    names = known_tasks()
    close = difflib.get_close_matches(name, [*names, *SUITES], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(
        f"unknown task {name!r}.{hint} Known tasks: {', '.join(names)}; suites: {', '.join(SUITES)}. "
        "Local files: NAME@PATH (e.g. piqa@piqa.jsonl) or bigbench/TASK@task.json; any BIG-bench "
        "task as bigbench/TASK."
    )


def _check_options(seed: int, limit: int | None) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")


def get_task(spec: str, *, seed: int = 0, limit: int | None = None) -> Task:
    """Build one task from its spec (see the module docstring).

    Args:
        spec: ``NAME``, ``NAME@PATH``, ``bigbench/TASK[@PATH]``, ``continuation/SOURCE`` or
            ``last_word/SOURCE``.
        seed: seeds the cloze tasks' construction (other tasks are fixed data).
        limit: keep at most this many docs (loaders stop early); None keeps all.

    Raises:
        ValueError: an unknown name (the message lists the known ones and the closest match),
            a suite name (use :func:`resolve`), or malformed data (the message names the field).
        FileNotFoundError: a local file that does not exist.
        zipcal_jax.cache.DownloadError: the data cannot be fetched here (hub offline, ...).
    """
    if not isinstance(spec, str):
        raise TypeError(f"a task spec is a string, not {type(spec).__name__}")
    _check_options(seed, limit)
    name, at, path = spec.strip().partition("@")
    name, path = name.strip(), path.strip()
    if at and not path:
        raise ValueError(f"task spec {spec!r} has an '@' but no path; write NAME@path/to/file")
    if name in SUITES:
        raise ValueError(f"{name!r} is a suite of tasks ({', '.join(SUITES[name])}); use resolve({name!r})")
    if name in HUB_TASKS:
        return load_hub_task(name, path or None, limit=limit)
    kind, _, rest = name.partition("/")
    if kind == "bigbench" and (rest or path):
        from zipcal_jax.data.specs import parse_spec

        task = rest or Path(path).parent.name  # bigbench@dir/TASK/task.json
        parse_spec(f"builtin:bigbench/{task}")  # validates the task name
        return load_bigbench_task(task, path or None, limit=limit)
    if kind in CLOZE_KINDS and rest in SOURCES:
        if path:
            raise ValueError(f"{name} is built from builtin:{rest}?split=test and takes no @PATH")
        return load_cloze_task(kind, rest, seed=seed, limit=limit)
    if kind in CLOZE_KINDS:
        raise ValueError(f"unknown source {rest!r} for {kind}/SOURCE; valid sources: {', '.join(SOURCES)}")
    raise _unknown(name)


def _names(tasks: str | Task | Sequence[str | Task]) -> list[str | Task]:
    items = [tasks] if isinstance(tasks, (str, Task)) else list(tasks)
    out: list[str | Task] = []
    for item in items:
        if isinstance(item, Task):
            out.append(item)
        elif isinstance(item, str):
            out += [part.strip() for part in item.split(",") if part.strip()]
        else:
            raise TypeError(f"a task is a spec string or a Task, not {type(item).__name__}")
    return out


def resolve(
    tasks: str | Task | Sequence[str | Task],
    *,
    seed: int = 0,
    limit: int | None = None,
    skipped: dict | None = None,
) -> list[Task]:
    """Turn task specs, suites and :class:`Task` objects into a list of tasks, in order.

    Args:
        tasks: ``"offline"``, ``"piqa,continuation/pydoc"``, a list of such strings and
            :class:`Task` objects (passed through unchanged).
        seed, limit: passed to :func:`get_task`.
        skipped: a dict that receives ``{name: reason}`` for each suite member that could not
            be loaded (each also raises a warning).

    Returns:
        The tasks, each name once (the first occurrence wins).

    Raises:
        ValueError: no tasks given, or an unknown name.
        Any error of :func:`get_task` for a task named explicitly.
    """
    _check_options(seed, limit)  # here, so that a bad value is not taken for a missing task
    items = _names(tasks)
    if not items:
        raise ValueError(f"no tasks given; name tasks or a suite ({', '.join(SUITES)})")
    out: list[Task] = []
    seen: set[str] = set()

    def add(task: Task) -> None:
        if task.name not in seen:
            seen.add(task.name)
            out.append(task)

    for item in items:
        if isinstance(item, Task):
            add(item)
        elif item in SUITES:
            for member in SUITES[item]:
                if member in seen:
                    continue
                try:
                    add(get_task(member, seed=seed, limit=limit))
                except _UNAVAILABLE as err:
                    reason = f"{type(err).__name__}: {err}"
                    warnings.warn(f"suite {item!r}: skipping {member}: {reason}", stacklevel=2)
                    if skipped is not None:
                        skipped[member] = reason
        elif "@" in item or item not in seen:
            add(get_task(item, seed=seed, limit=limit))
    if not out:
        raise ValueError(f"none of the tasks could be loaded: {skipped or items}")
    return out
