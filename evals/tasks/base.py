"""The task representation every evaluator consumes.

A multiple-choice item is a :class:`Doc`: one ``(context, continuation)`` request per choice, the
gold choice, and the choice strings that ``acc_norm`` divides by. Loaders (hub schemas, local
files, BIG-bench ``task.json``, corpus cloze tasks) turn their sources into ``Doc`` lists; the
scorer (:mod:`zipcal_jax.evals.zeroshot`) never needs to know which kind of task it scores.

Two request shapes cover every task of lm-evaluation-harness we use:

* shared context, one continuation per choice (piqa, hellaswag, arc, boolq, openbookqa, rte,
  BIG-bench, the cloze tasks): ``requests = ((ctx, " " + choice_i) for i)``;
* one context per choice, a shared continuation (winogrande's "partial evaluation"):
  ``requests = ((prefix + option_i, " " + rest) for i)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# Metrics a task may report. ``acc``: argmax of the summed log-likelihoods is the gold choice.
# ``acc_norm``: the same after dividing each by the character length of its choice string.
# ``greedy``: greedy decoding reproduces the gold continuation exactly (LAMBADA-style).
METRICS = ("acc", "acc_norm", "greedy")


@dataclass(frozen=True)
class Doc:
    """One multiple-choice item.

    Attributes:
        requests: one ``(context, continuation)`` pair per choice, in choice order, exactly as
            lm-evaluation-harness builds them (the target delimiter, usually ``" "``, already
            at the start of each continuation).
        gold: index of the correct choice.
        choices: the choice strings without the delimiter; ``acc_norm`` divides each
            log-likelihood by ``len(choices[i])`` (characters, not bytes or tokens).
        meta: anything a loader wants to keep for inspection (source row, ids); not scored.
    """

    requests: tuple[tuple[str, str], ...]
    gold: int
    choices: tuple[str, ...]
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.requests) < 2:
            raise ValueError(f"a multiple-choice Doc needs at least 2 requests, got {len(self.requests)}")
        if len(self.choices) != len(self.requests):
            raise ValueError(
                f"Doc has {len(self.requests)} requests but {len(self.choices)} choice strings; give one per request"
            )
        if not 0 <= self.gold < len(self.requests):
            raise ValueError(f"Doc gold index {self.gold} is outside 0..{len(self.requests) - 1}")


@dataclass(frozen=True)
class Task:
    """A named list of :class:`Doc` items and the metrics it reports (a subset of ``METRICS``).

    ``docs`` is materialised at construction by the loader; ``source`` says where they came
    from (a hub id, a file path, ``builtin:kjv?split=test``) and ``config`` records everything
    that determines them (seed, sizes), so a result can be reproduced.
    """

    name: str
    docs: Sequence[Doc]
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    source: str = ""
    config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"task {self.name!r}: unknown metric(s) {unknown}; known: {list(METRICS)}")
        if not self.docs:
            raise ValueError(f"task {self.name!r} has no documents (source: {self.source or 'unknown'})")


TaskBuilder = Callable[..., Task]
