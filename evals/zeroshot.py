"""Zero-shot multiple choice with lm-evaluation-harness's scoring rules, batched for XLA.

:func:`loglikelihood` scores ``(context, continuation)`` string pairs: the summed log-probability
of the continuation given the context and whether greedy decoding reproduces it. :func:`evaluate`
turns those into ``acc`` / ``acc_norm`` / ``greedy`` per task (:class:`~zipcal_jax.evals.tasks.base.Task`)
and their mean; :func:`to_markdown` and :func:`save_results` report them.

**The harness's rules** (EleutherAI/lm-evaluation-harness, read through the ``search`` tool:
``lm_eval/api/model.py`` ``TemplateLM._encode_pair`` / ``loglikelihood`` and
``lm_eval/models/huggingface.py`` ``HFLM.tok_encode`` / ``prefix_token_id`` /
``_loglikelihood_tokens``), reproduced here exactly:

1. ``context == ""`` is checked first: the context becomes ``[prefix_token_id]`` (the tokenizer's
   BOS if it has one, else its EOS; ``prefix_token_id=`` overrides, like the harness's model arg)
   and the continuation is ``encode(continuation)``.
2. Otherwise trailing whitespace of the context moves onto the continuation
   (``n = len(ctx) - len(ctx.rstrip())``; ``cont = ctx[-n:] + cont``; ``ctx = ctx[:-n]``), then
   ``whole = encode(ctx + cont)``, ``ctx_enc = encode(ctx)``, ``cont_enc = whole[len(ctx_enc):]``.
3. The model reads ``(ctx_enc + cont_enc)[-(max_length + 1):][:-1]`` (left truncation), positions
   from 0; the last ``len(cont_enc)`` logits are log-softmaxed, the continuation tokens' log-probs
   summed, and ``is_greedy`` is "every argmax equals the continuation token". ``max_length``
   defaults to ``max_position_embeddings`` (HFLM reads ``n_positions`` / ``max_position_embeddings``).
4. The harness asserts ``len(ctx_enc) > 0``, ``0 < len(cont_enc) <= max_length``; here those are
   ValueErrors naming the request, except that a whitespace-only context (which strips to nothing
   and would trip the harness's assert) is conditioned on ``[prefix_token_id]`` as in rule 1.

**BOS — what "the harness's default" is depends on its version.** In the ``HFLM`` we read (the
``TemplateLM`` version with ``add_bos_token: bool | None = False``), ``tok_encode`` for causal models
passes ``add_special_tokens=False or self.add_bos_token``, i.e. *no* BOS unless the user sets
``add_bos_token=True`` (forced on only for Gemma). That is this module's default
(``add_bos=False``: every ``encode`` is ``add_special_tokens=False``). PR #3347 ("Delegate BOS to the
tokenizer; ``add_bos_token`` defaults to ``None``", merged 2025-10) changed ``HFLM`` and vLLM so
that an unset ``add_bos_token`` leaves the tokenizer's own default in force — for Llama-2/3-style
tokenizers a BOS before every encoded string. ``add_bos=True`` here reproduces that (a BOS before
every context; continuations never get one), so pass it to match harness releases after that PR,
or runs with ``add_bos_token=True``. Wanda's modified harness called it with
``add_special_tokens=False``.

**Speed.** Requests are tokenized in one batch, de-duplicated, and laid out in rows. Requests that
share a context (the 4 endings of a HellaSwag item) share one row ``[ctx, cont_1[:-1], cont_2[:-1],
...]`` with a tree attention mask (each continuation sees the context and its own earlier tokens;
positions restart at ``len(ctx)`` for each), which is exactly equivalent to scoring each
``ctx + cont_i`` alone — used when it fits in ``max_length`` and saves padded tokens. Rows are
grouped by length into a few bucket lengths (16, 24, 32, 48, 64, 96, ...), so XLA compiles one
program per bucket; the jitted scorer gathers the hidden states of the scored positions before the
LM head and returns only per-token log-probs and greedy flags, never (B, T, V) logits.
The row layout and bucketing live in :mod:`zipcal_jax.evals.batching`.

Shapes: ``B`` rows per batch, ``T`` row length (bucketed), ``P`` scored tokens per row (bucketed),
``D`` hidden size, ``V`` vocabulary.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from zipcal_jax.evals.batching import _INPUTS, Tokens, _batches, _row_arrays, plan_rows
from zipcal_jax.evals.batching import Row as Row  # Row, bucket_length: unused here, re-exported
from zipcal_jax.evals.batching import bucket_length as bucket_length
from zipcal_jax.evals.tasks.base import METRICS, Doc, Task

__all__ = [
    "choice_scores",
    "continuation_logprobs",
    "doc_predictions",
    "encode_requests",
    "evaluate",
    "loglikelihood",
    "mean_stderr",
    "plan_rows",
    "save_results",
    "to_markdown",
    "tree_attention_mask",
]

Array = jax.Array


# ----------------------------------------------------------------------------- pure math


def tree_attention_mask(segments: Array) -> Array:
    """(B, T) int segment ids → (B, T, T) bool mask, True where query t may attend key s.

    Segment 0 is the shared context, k ≥ 1 the k-th continuation of the row, -1 padding. A query
    attends every earlier-or-same key (``s <= t``) that is context or in its own continuation; a
    padding query sees the context only (its output is never read)."""
    T = segments.shape[1]
    causal = jnp.tril(jnp.ones((T, T), bool))[None]  # (1, T, T)
    q, k = segments[:, :, None], segments[:, None, :]  # (B, T, 1), (B, 1, T)
    return causal & (k >= 0) & ((k == 0) | (k == q))


def continuation_logprobs(logits: Array, targets: Array) -> tuple[Array, Array]:
    """Per-token log-probability and greedy match of the targets.

    logits: (B, P, V) float32, the logits predicting each target; targets: (B, P) int.
    Returns ``log_softmax(logits)[target]`` (B, P) float32 and ``argmax(logits) == target`` (B, P)
    bool (ties go to the lowest id, as ``torch.argmax`` / ``np.argmax`` do)."""
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # (B, P)
    logp = picked - jax.nn.logsumexp(logits, axis=-1)
    return logp, jnp.argmax(logits, axis=-1) == targets


@functools.partial(jax.jit, static_argnums=(0, 7))
def _score_batch(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    ids: Array,  # (B, T) int32
    positions: Array,  # (B, T) int32
    segments: Array,  # (B, T) int32, see tree_attention_mask
    gather: Array,  # (B, P) int32: row position whose logits predict each target
    targets: Array,  # (B, P) int32
    out_sharding: Any = None,
) -> tuple[Array, Array]:
    """One batch of rows → (logp, greedy), each (B, P). The LM head runs on the P gathered
    positions only. ``out_sharding`` (a mesh run): the outputs' sharding, replicated so every
    process of a multi-host run can read them."""
    model = nnx.merge(graphdef, state)
    mask = tree_attention_mask(segments)  # (B, T, T)
    h = model.embed_tokens(ids)  # (B, T, D)
    for layer in model.layers:
        h = layer(h, positions, mask)
    h = jnp.take_along_axis(h, gather[:, :, None], axis=1)  # (B, P, D)
    out = continuation_logprobs(model.head(h), targets)
    return out if out_sharding is None else jax.lax.with_sharding_constraint(out, out_sharding)


# ----------------------------------------------------------------------------- tokenization


def _text_tokenizer(tokenizer: Any) -> Any:
    from zipcal_jax.models.tokenizers import TextTokenizer

    return tokenizer if isinstance(tokenizer, TextTokenizer) else TextTokenizer(tokenizer)


def _encode_texts(tok: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, ``add_special_tokens=False``, ignoring any padding or truncation
    the tokenizer was configured with (a copy without them does the encoding)."""
    from zipcal_jax.models.tokenizers import plain_backend

    return [list(e.ids) for e in plain_backend(tok).encode_batch(texts, add_special_tokens=False)]


def _describe(i: int, request: Any) -> str:
    text = repr(request)
    return f"request {i} {text[:120] + '...' if len(text) > 120 else text}"


def _check_requests(requests: Any) -> list[tuple[str, str]]:
    if isinstance(requests, (str, bytes)) or not isinstance(requests, Sequence):
        raise TypeError(
            f"requests must be a list of (context, continuation) string pairs, got {type(requests).__name__}"
        )
    out = []
    for i, r in enumerate(requests):
        if not (isinstance(r, (tuple, list)) and len(r) == 2):
            raise TypeError(f"{_describe(i, r)} is not a (context, continuation) pair")
        if not (isinstance(r[0], str) and isinstance(r[1], str)):
            kinds = f"({type(r[0]).__name__}, {type(r[1]).__name__})"
            raise TypeError(f"{_describe(i, r)} must be two strings, got {kinds}")
        out.append((r[0], r[1]))
    return out


def encode_requests(
    tokenizer: Any,
    requests: Sequence[tuple[str, str]],
    *,
    add_bos: bool = False,
    prefix_token_id: int | None = None,
) -> list[tuple[list[int], list[int]]]:
    """``(ctx_enc, cont_enc)`` token lists for each request, by the harness's rules (module
    docstring). ``tokenizer``: a ``TextTokenizer`` or anything it wraps (``tokenizers.Tokenizer``,
    an HF fast tokenizer). ``add_bos``: prepend BOS to every non-empty context.

    Raises TypeError for a request that is not two strings, ValueError for a continuation that
    tokenizes to nothing (both name the request's index)."""
    pairs = _check_requests(requests)
    tok = _text_tokenizer(tokenizer)
    bos = tok.bos_id
    if add_bos and bos is None:
        raise ValueError("add_bos=True but the tokenizer has no BOS token")
    prefix = prefix_token_id if prefix_token_id is not None else (bos if bos is not None else tok.eos_id)

    split: list[tuple[str | None, str]] = []  # (context or None for "use the prefix token", cont)
    for ctx, cont in pairs:
        if ctx == "":
            split.append((None, cont))
            continue
        n_spaces = len(ctx) - len(ctx.rstrip())
        if n_spaces > 0:
            cont, ctx = ctx[-n_spaces:] + cont, ctx[:-n_spaces]
        split.append((ctx, cont))
    texts = sorted({t for ctx, cont in split for t in ((cont,) if ctx is None else (ctx, ctx + cont))})
    encoded = dict(zip(texts, _encode_texts(tok, texts)))

    out = []
    for i, (ctx, cont) in enumerate(split):
        if ctx is None:
            ctx_enc, cont_enc = [], list(encoded[cont])
        else:
            ctx_enc = list(encoded[ctx])
            cont_enc = encoded[ctx + cont][len(ctx_enc) :]
            if add_bos:
                ctx_enc = [bos, *ctx_enc]
        if not ctx_enc:  # empty context, or whitespace only (the harness would assert here)
            if prefix is None:
                raise ValueError(
                    f"{_describe(i, pairs[i])} has an empty context and the tokenizer has no BOS/EOS"
                )
            ctx_enc = [int(prefix)]
        if not cont_enc:
            raise ValueError(f"{_describe(i, pairs[i])}: the continuation tokenizes to zero tokens")
        out.append((ctx_enc, cont_enc))
    return out


# ----------------------------------------------------------------------------- log-likelihood


def loglikelihood(
    model: Any,
    tokenizer: Any,
    requests: Sequence[tuple[str, str]],
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    add_bos: bool = False,
    prefix_token_id: int | None = None,
    pack: bool | None = None,
    max_batch_tokens: int | None = None,
    progress: bool = True,
    mesh: Any = None,
) -> list[tuple[float, bool]]:
    """Log-likelihood of each continuation given its context, lm-evaluation-harness style.

    Args:
        model: a :class:`zipcal_jax.models.llama.Llama`.
        tokenizer: a ``TextTokenizer`` or a raw ``tokenizers.Tokenizer`` / HF fast tokenizer.
        requests: ``(context, continuation)`` string pairs.
        batch_size: rows per batch (a row holds one request, or several sharing a context).
        max_length: model context length; default ``model.cfg.max_position_embeddings``.
        add_bos: prepend BOS to every context (the harness's ``add_bos_token=True``, and its
            default since PR #3347 for tokenizers that add BOS; see the module docstring).
        prefix_token_id: the token an empty context is replaced with (default BOS, else EOS).
        pack: share rows between requests with the same context: None = when it saves padded
            tokens, True = whenever it fits, False = never. Results agree either way.
        max_batch_tokens: cap on ``rows * row length`` per batch (default ``batch_size * 256``).
        progress: show a tqdm bar (requests).
        mesh: a ``jax.sharding.Mesh`` with a ``data`` axis (``zipcal_jax.distributed.make_mesh``):
            each batch's rows are sharded over ``data`` (a batch is a multiple of its size,
            padding rows included) and the parameters replicated over the mesh unless already
            placed on it (e.g. by ``llama.shard``). Results equal the unsharded ones; in a
            multi-host run every process passes the same requests and gets every result.

    Returns:
        ``[(sum of the continuation's token log-probs, all tokens greedy), ...]`` in input order.

    Raises:
        TypeError: a request is not two strings. ValueError: a continuation is empty after
        tokenization or longer than ``max_length`` (the message names the request).
    """
    if not _check_requests(requests):
        return []
    max_length = int(max_length or model.cfg.max_position_embeddings)
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size} and {max_length}")
    encoded = encode_requests(tokenizer, requests, add_bos=add_bos, prefix_token_id=prefix_token_id)

    key_of: list[int] = []  # request index → de-duplicated key
    unique: dict[tuple[Tokens, Tokens], int] = {}
    for ctx, cont in encoded:
        key_of.append(unique.setdefault((tuple(ctx), tuple(cont)), len(unique)))
    multiplicity = np.bincount(key_of, minlength=len(unique))
    for i, (_, cont) in enumerate(encoded):
        if len(cont) > max_length:
            raise ValueError(
                f"{_describe(i, requests[i])}: the continuation has {len(cont)} tokens, more than max_length={max_length}"
            )
    rows = plan_rows(list(unique), max_length, pack)

    graphdef, state = nnx.split(model)
    vocab = int(model.cfg.vocab_size)
    budget = max_batch_tokens or batch_size * 256
    shards, put, extra = 1, (lambda a: a), ()
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec

        from zipcal_jax.distributed import place_replicated

        if "data" not in mesh.axis_names:
            raise ValueError(
                f"mesh needs a 'data' axis to shard batches over, has {mesh.axis_names}; build it with "
                "zipcal_jax.distributed.make_mesh()"
            )
        shards, rows_sharding = int(mesh.shape["data"]), NamedSharding(mesh, PartitionSpec("data", None))
        state = place_replicated(state, mesh)
        extra = (NamedSharding(mesh, PartitionSpec()),)

        def put(a: np.ndarray) -> Array:
            return jax.device_put(a, rows_sharding)

    results: list[tuple[float, bool] | None] = [None] * len(unique)

    def collect(pending) -> int:
        (logp, greedy), spans = pending
        logp, greedy = np.asarray(logp), np.asarray(greedy)
        for key, b, start, stop in spans:
            results[key] = (
                float(logp[b, start:stop].sum(dtype=np.float64)),
                bool(greedy[b, start:stop].all()),
            )
        return int(sum(multiplicity[key] for key, *_ in spans))

    pending = None
    with tqdm(total=len(requests), desc="loglikelihood", unit="req", disable=not progress) as bar:
        for B, T, P, batch in _batches(rows, batch_size, budget, vocab, shards):
            arrays, spans = _row_arrays(batch, B, T, P)
            out = _score_batch(graphdef, state, *(put(arrays[k]) for k in _INPUTS), *extra)  # asynchronous
            if pending is not None:  # fetch the previous batch while this one runs
                bar.update(collect(pending))
            pending = (out, spans)
        if pending is not None:
            bar.update(collect(pending))
    return [results[k] for k in key_of]  # type: ignore[misc]


# ----------------------------------------------------------------------------- metrics


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean, ``std(ddof=1) / sqrt(n)`` (the harness's ``mean_stderr``);
    NaN for fewer than two values."""
    x = np.asarray(values, np.float64)
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def choice_scores(
    lls: Sequence[float], choices: Sequence[str], gold: int, greedy: Sequence[bool] | None = None
) -> dict[str, float]:
    """One item's metrics from its choices' log-likelihoods.

    ``acc``: ``argmax(lls) == gold``; ``acc_norm``: ``argmax(lls / len(choice)) == gold`` with the
    length in characters (code points, ``len(str)``); ``greedy`` (when ``greedy`` flags are given):
    the gold continuation is the greedy decode. Ties go to the first index (``np.argmax``)."""
    lls = np.asarray(lls, np.float64)
    lengths = np.asarray([len(c) for c in choices], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        normed = lls / lengths
    out = {"acc": float(np.argmax(lls) == gold), "acc_norm": float(np.argmax(normed) == gold)}
    if greedy is not None:
        out["greedy"] = float(bool(greedy[gold]))
    return out


def doc_predictions(doc: Doc, outcomes: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    """Everything scored for one :class:`Doc`: ``gold``, ``lls``, ``greedy`` flags, predictions
    ``pred`` / ``pred_norm`` and the metrics of :func:`choice_scores` (for debugging)."""
    lls = [float(ll) for ll, _ in outcomes]
    flags = [bool(g) for _, g in outcomes]
    lengths = np.asarray([len(c) for c in doc.choices], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pred_norm = int(np.argmax(np.asarray(lls) / lengths))
    return {
        "gold": doc.gold,
        "lls": lls,
        "greedy": flags,
        "pred": int(np.argmax(lls)),
        "pred_norm": pred_norm,
        **choice_scores(lls, doc.choices, doc.gold, flags),
    }


def _resolve_tasks(tasks: Any, *, seed: int, limit: Any, skipped: dict) -> list[Task]:
    """Task objects pass through; with any name/spec among them, the whole list goes through the
    registry's ``resolve`` (which keeps the order and passes Task objects through)."""
    items = [tasks] if isinstance(tasks, (str, Task)) else list(tasks)
    for i, item in enumerate(items):
        if not isinstance(item, (str, Task)):
            raise TypeError(
                f"tasks[{i}] must be a Task or a task name/spec string, got {type(item).__name__}"
            )
    if any(isinstance(item, str) for item in items):
        from zipcal_jax.evals import tasks as T

        resolve = getattr(T, "resolve", None)
        if resolve is None:
            raise ValueError(
                f"task names need zipcal_jax.evals.tasks.resolve, which is missing; pass Task objects ({items})"
            )
        items = list(resolve(items, seed=seed, limit=limit, skipped=skipped))
    names = [t.name for t in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"tasks named more than once: {dupes}")
    return items


def _limit_docs(docs: Sequence[Doc], limit: Any) -> list[Doc]:
    """The first ``limit`` docs (a float below 1: that fraction, rounded up — the harness's rule)."""
    docs = list(docs)
    if limit is None:
        return docs
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    n = math.ceil(len(docs) * limit) if limit < 1 else int(limit)
    return docs[:n]


def _model_info(model: Any) -> dict[str, Any]:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return {}
    info = {k: getattr(cfg, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers") if hasattr(cfg, k)}
    if hasattr(model, "dtype"):
        info["dtype"] = str(jnp.dtype(model.dtype))
    return {"class": type(model).__name__, **info}


def evaluate(
    model: Any,
    tokenizer: Any,
    tasks: Any,
    limit: int | float | None = None,
    seed: int = 0,
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    add_bos: bool = False,
    progress: bool = True,
    per_doc: bool = False,
    mesh: Any = None,
) -> dict[str, Any]:
    """Zero-shot accuracy of ``model`` on ``tasks``.

    Args:
        tasks: :class:`Task` objects and/or task names/specs (a string may list several, comma-
            separated), resolved by ``zipcal_jax.evals.tasks.resolve(spec, seed=, limit=,
            skipped=)``.
        limit: score the first ``limit`` docs of each task (a float below 1: that fraction).
        seed: passed to task resolution (shuffled or sampled sources).
        batch_size, max_length, add_bos: see :func:`loglikelihood`; all requests of all tasks go
            through one call (one progress bar).
        per_doc: also return every doc's log-likelihoods and predictions under ``"per_doc"``.
        mesh: shard the scoring batches over the mesh's ``data`` axis (see :func:`loglikelihood`);
            the results are the unsharded ones.

    Returns:
        ``{"tasks": {name: {metric, metric_stderr, ..., "n", "source", "config"}}, "mean": {metric:
        mean over the tasks that report it}, "skipped": {name: reason}, "config": {...},
        "seconds": float}`` (plus ``"per_doc"``). Metrics are those of ``task.metrics``; see
        :func:`choice_scores`; stderr is :func:`mean_stderr`.
    """
    start = time.perf_counter()
    skipped: dict[str, str] = {}
    resolved = _resolve_tasks(tasks, seed=seed, limit=limit, skipped=skipped)
    docs = {t.name: _limit_docs(t.docs, limit) for t in resolved}
    requests = [r for t in resolved for d in docs[t.name] for r in d.requests]
    outcomes = loglikelihood(
        model,
        tokenizer,
        requests,
        batch_size=batch_size,
        max_length=max_length,
        add_bos=add_bos,
        progress=progress,
        mesh=mesh,
    )

    task_results: dict[str, dict[str, Any]] = {}
    details: dict[str, list[dict[str, Any]]] = {}
    i = 0
    for task in resolved:
        preds = []
        for doc in docs[task.name]:
            preds.append(doc_predictions(doc, outcomes[i : i + len(doc.requests)]))
            i += len(doc.requests)
        row: dict[str, Any] = {}
        for metric in task.metrics:
            values = [p[metric] for p in preds]
            row[metric] = float(np.mean(values))
            row[f"{metric}_stderr"] = mean_stderr(values)
        task_results[task.name] = {**row, "n": len(preds), "source": task.source, "config": dict(task.config)}
        details[task.name] = preds

    mean = {}
    for metric in METRICS:
        values = [r[metric] for r in task_results.values() if metric in r]
        if values:
            mean[metric] = float(np.mean(values))
    out = {
        "tasks": task_results,
        "mean": mean,
        "skipped": skipped,
        "config": {
            "limit": limit,
            "seed": seed,
            "batch_size": batch_size,
            "max_length": int(max_length or model.cfg.max_position_embeddings),
            "add_bos": add_bos,
            "requests": len(requests),
            "model": _model_info(model),
        },
        "seconds": time.perf_counter() - start,
    }
    if per_doc:
        out["per_doc"] = details
    return out


# ----------------------------------------------------------------------------- reports


def _cell(row: dict[str, Any], metric: str) -> str:
    if metric not in row:
        return "–"
    err = row.get(f"{metric}_stderr")
    return f"{row[metric]:.4f}" + ("" if err is None or math.isnan(err) else f" ± {err:.4f}")


def to_markdown(results: dict[str, Any]) -> str:
    """A Markdown table ``task | n | acc | acc_norm | greedy`` (value ± stderr), the mean over
    tasks, then the skipped tasks and the run's settings."""
    lines = ["| task | n | acc | acc_norm | greedy |", "|---|---:|---|---|---|"]
    for name, row in results["tasks"].items():
        lines.append(f"| {name} | {row['n']} | " + " | ".join(_cell(row, m) for m in METRICS) + " |")
    mean = results.get("mean", {})
    if len(results["tasks"]) > 1 and mean:
        cells = " | ".join(f"{mean[m]:.4f}" if m in mean else "–" for m in METRICS)
        lines.append(f"| **mean** | | {cells} |")
    for name, reason in results.get("skipped", {}).items():
        lines.append(f"\nSkipped {name}: {str(reason).splitlines()[0]}")  # the JSON keeps it whole
    cfg = results.get("config", {})
    settings = ", ".join(f"{k}={cfg[k]}" for k in ("limit", "seed", "max_length", "add_bos") if k in cfg)
    if "seconds" in results:
        settings += f"; {results['seconds']:.1f} s"
    lines.append(f"\n{settings}")
    return "\n".join(lines) + "\n"


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return _json_safe(x.item())
    return x


def save_results(results: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``zeroshot.json`` (NaN/inf as null) and ``zeroshot.md`` into ``out_dir`` (created);
    returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "zeroshot.json", out / "zeroshot.md"
    json_path.write_text(json.dumps(_json_safe(results), indent=2, default=str) + "\n")
    md_path.write_text(to_markdown(results))
    return json_path, md_path
