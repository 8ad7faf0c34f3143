"""Perplexity over non-overlapping windows of a joined text (the Wanda/SparseGPT/GPTQ convention).

The reference projects (``wanda/lib/eval.py``, ``sparsegpt/llama.py``, ``gptq/llama.py``) compute
WikiText-2 and C4 perplexity the same way, and :func:`evaluate` reproduces it:

1. join the documents with ``"\\n\\n"`` (C4 "c4-new": ``" "``) and tokenize the result **once**, as a
   single string, with the tokenizer's default special tokens (a LLaMA tokenizer adds one BOS at
   the very start, so only the first window starts with BOS; SmolLM2's adds none);
2. cut the ids into ``numel // seqlen`` non-overlapping windows of ``seqlen`` tokens (the tail is
   dropped; C4 keeps the first 256 windows);
3. per window, the mean cross-entropy ``l_w`` over its ``seqlen - 1`` shifted positions;
4. ``ppl = exp(mean_w l_w)``. The reference writes ``exp(sum_w(l_w * seqlen) / (windows * seqlen))``,
   which is the same number.

This is not lm-eval's ``wikitext`` task (document-level rolling log-likelihood reported as word
perplexity); the two are not interchangeable.

The scoring is one jitted program: a fixed batch of windows goes through the layers, and the head
plus log-softmax run over chunks of the sequence (``jax.lax.map``), so the ``(B, T, V)`` float32
logits are never materialised whole and never leave the device; only the ``(B,)`` window means
come back. The last partial batch is padded with dummy windows whose results are discarded, so a
run compiles once. Model compute is in the model's dtype; log-softmax in float32.

Sources (``source=``):

* a named source (:data:`NAMED_SOURCES`): ``wikitext2`` and ``c4`` from the Hugging Face hub
  (online), ``pydoc``, ``kjv`` and ``devil`` offline (the held-out ``split=test`` part of the
  built-in running text, so it never overlaps a calibration set drawn from the default
  ``split=train``);
* any source spec accepted by :func:`zipcal_jax.data.load_texts` (its texts joined with ``"\\n\\n"``),
  e.g. ``"builtin:kjv?split=all"`` or ``"notes.jsonl?field=body"``;
* a path to a ``.txt`` file (read whole, as one string);
* a list of strings (joined with ``"\\n\\n"``).

Example::

    from zipcal_jax.evals import perplexity
    from zipcal_jax.models import llama

    model, tok = llama.load("smollm2-135m")
    perplexity.evaluate(model, tok, "pydoc", seqlen=2048)   # {'ppl': ..., 'nll': ..., ...}
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from zipcal_jax.models.tokenizers import plain_backend

__all__ = ["NAMED_SOURCES", "NamedSource", "evaluate", "named_sources", "resolve_source", "score_windows",
           "token_windows"]  # fmt: skip

# Windows per batch when batch_size is None: this many tokens per batch (2 windows at 2048).
_TOKENS_PER_BATCH = 4096
# Elements of one chunk of float32 logits (B, C, V) in the head: 2**24 floats = 64 MiB.
_LOGITS_PER_CHUNK = 1 << 24
# What to use instead of a hub source when the hub cannot be reached.
_OFFLINE_HINT = (
    "Offline, use an offline source: 'pydoc', 'kjv' or 'devil', any zipcal_jax.data source spec "
    "(e.g. 'builtin:pydoc?split=test'), a local .txt file, or a list of strings."
)


# ----------------------------------------------------------------------------- sources


def _wikitext2_text() -> str:
    """WikiText-2 raw test split joined with ``"\\n\\n"`` (``wanda/lib/data.py`` ``get_wikitext2``)."""
    import datasets

    test = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split="test")
    return "\n\n".join(test["text"])


def _c4_text() -> str:
    """C4 "c4-new": the first 1100 documents of validation shard 0 joined with ``" "``
    (``sparsegpt/datautils.py`` ``get_c4_new``)."""
    import datasets

    val = datasets.load_dataset(
        "allenai/c4", data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"}, split="validation"
    )
    return " ".join(val[:1100]["text"])


@dataclasses.dataclass(frozen=True)
class NamedSource:
    """A perplexity corpus known by name.

    Attributes:
        description: one line for listings and results.
        spec: offline sources: the :mod:`zipcal_jax.data` spec whose texts are joined with ``"\\n\\n"``.
        hub: online sources: a function returning the joined text (``datasets.load_dataset``).
        max_windows: the convention's cap on windows (c4-new: 256, i.e. ``256 * seqlen`` tokens).
    """

    description: str
    spec: str | None = None
    hub: Callable[[], str] | None = None
    max_windows: int | None = None


NAMED_SOURCES: dict[str, NamedSource] = {
    "wikitext2": NamedSource(
        "WikiText-2 raw test split joined with '\\n\\n' (hub: wikitext/wikitext-2-raw-v1)",
        hub=_wikitext2_text,
    ),
    "c4": NamedSource(
        "C4 'c4-new': the first 1100 documents of en/c4-validation.00000-of-00008 joined with ' ', "
        "first 256 windows (hub: allenai/c4)",
        hub=_c4_text,
        max_windows=256,
    ),
    "pydoc": NamedSource(
        "Python reference prose (pydoc_data.topics), the held-out last 10%",
        "builtin:pydoc?split=test&unit=document",
    ),
    "kjv": NamedSource(
        "King James Bible (Debian bible-kjv-text), the held-out last 10%",
        "builtin:kjv?split=test&unit=document",
    ),
    "devil": NamedSource(
        "Bierce's Devil's Dictionary (Debian dict-devil), the held-out last 10%",
        "builtin:devil?split=test&unit=document",
    ),
}


def named_sources() -> dict[str, str]:
    """Name → description of every named source (see :data:`NAMED_SOURCES`)."""
    return {name: src.description for name, src in NAMED_SOURCES.items()}


def _load_hub(name: str, entry: NamedSource) -> str:
    assert entry.hub is not None
    flags = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    offline = [v for v in flags if os.environ.get(v, "").lower() in ("1", "true", "yes", "on")]
    try:
        return entry.hub()
    except (OSError, ImportError) as err:  # ConnectionError, DatasetNotFoundError, no `datasets`
        why = f" ({' and '.join(offline)} set)" if offline else ""
        raise ConnectionError(
            f"could not load the {name!r} perplexity source from the Hugging Face hub{why}: "
            f"{type(err).__name__}: {err}. {_OFFLINE_HINT}"
        ) from err


def _read_txt(path: Path) -> str:
    """A whole UTF-8 text file (a BOM skipped, CRLF read as LF), as the ``.txt`` readers do."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: bytes at offset {err.start} are not valid UTF-8 ({err.reason}); re-encode the file "
            f"to UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}`"
        ) from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def resolve_source(source: Any) -> tuple[str, str, int | None]:
    """``(text, description, max_windows)`` of a perplexity source (see the module docstring)."""
    from zipcal_jax.data import TextSource, load_texts

    if isinstance(source, TextSource):
        return "\n\n".join(source.texts), source.spec, None
    if isinstance(source, (list, tuple)):
        if not source or not all(isinstance(t, str) for t in source):
            raise ValueError("a list source must be a non-empty list of strings")
        return "\n\n".join(source), f"{len(source)} text(s)", None
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a name, a source spec, a .txt path or a list of strings, not {type(source).__name__}"
        )
    text = os.fspath(source)
    entry = NAMED_SOURCES.get(text.lower()) if isinstance(source, str) else None
    if entry is not None:
        name = text.lower()
        if entry.hub is not None:
            return _load_hub(name, entry), name, entry.max_windows
        src = load_texts(entry.spec)
        return "\n\n".join(src.texts), f"{name} ({src.spec})", entry.max_windows
    path = Path(text).expanduser()
    if "?" not in text and path.suffix.lower() == ".txt" and path.is_file():
        return _read_txt(path), str(path), None
    src = load_texts(text)
    return "\n\n".join(src.texts), src.spec, None


# ----------------------------------------------------------------------------- tokens


def _encode(tokenizer: Any, text: str) -> np.ndarray:
    """All ids of ``text`` tokenized once, with the tokenizer's default special tokens. (numel,) int32."""
    return np.asarray(plain_backend(tokenizer).encode(text, add_special_tokens=True).ids, np.int32)


def _cut(ids: np.ndarray, seqlen: int, max_windows: int | None, what: str) -> np.ndarray:
    """``(windows, seqlen)``: the first ``numel // seqlen`` windows (at most ``max_windows``)."""
    if seqlen < 2:
        raise ValueError(f"seqlen must be >= 2 (a window scores seqlen - 1 next tokens), got {seqlen}")
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows must be >= 1 or None, got {max_windows}")
    numel = len(ids)
    if numel < seqlen:
        fit = 1 << (numel.bit_length() - 1) if numel >= 2 else None
        hint = (
            f"use seqlen <= {numel} (e.g. seqlen={fit}) or a longer source" if fit else "use a longer source"
        )
        raise ValueError(f"{what} has only {numel} tokens, fewer than one window of seqlen={seqlen}; {hint}")
    windows = numel // seqlen
    if max_windows is not None:
        windows = min(windows, max_windows)
    return ids[: windows * seqlen].reshape(windows, seqlen)


def token_windows(
    tokenizer: Any, texts: str | Sequence[str], seqlen: int, max_windows: int | None = None
) -> np.ndarray:
    """The perplexity windows of ``texts``: joined with ``"\\n\\n"`` (a single string is used as is),
    tokenized once with the default special tokens, cut into ``numel // seqlen`` non-overlapping
    windows (tail dropped), the first ``max_windows`` kept. Returns int32 ``(windows, seqlen)``.

    Raises:
        ValueError: fewer than ``seqlen`` tokens (the message says how many there are).
    """
    text = texts if isinstance(texts, str) else "\n\n".join(texts)
    return _cut(_encode(tokenizer, text), seqlen, max_windows, "the text")


# ----------------------------------------------------------------------------- scoring


def _chunking(T: int, batch: int, vocab: int) -> tuple[int, int]:
    """``(n_chunks, chunk)`` covering the ``T - 1`` scored positions with (batch, chunk, vocab)
    float32 logits of at most ``_LOGITS_PER_CHUNK`` elements and the least padding."""
    positions = T - 1
    widest = max(1, _LOGITS_PER_CHUNK // (batch * vocab))
    n_chunks = -(-positions // widest)
    return n_chunks, -(-positions // n_chunks)


def next_token_nll(model: Any, ids: jax.Array, attention_mask: jax.Array | None, n_chunks: int) -> jax.Array:
    """Per-position next-token NLL, ``(B, T) → (B, T - 1)`` float32 (position ``t`` predicts token
    ``t + 1``); call it inside ``jit``.

    Layers in the model's dtype; the head (final norm + LM head) and the float32 log-softmax run
    over ``n_chunks`` slices of the ``T - 1`` scored positions, so at most one (B, C, V) chunk of
    logits is live at a time. Shared by :func:`evaluate` and the ``least_perplexity`` selection.
    """
    B, T = ids.shape
    h, positions, mask = model.prepare_inputs(ids, attention_mask)
    for layer in model.layers:
        h = layer(h, positions, mask)  # (B, T, D)
    C = -(-(T - 1) // n_chunks)
    pad = n_chunks * C - (T - 1)
    h = jnp.pad(h[:, :-1], ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(ids[:, 1:], ((0, 0), (0, pad)))
    h = h.reshape(B, n_chunks, C, -1).swapaxes(0, 1)  # (n, B, C, D)
    targets = targets.reshape(B, n_chunks, C).swapaxes(0, 1)  # (n, B, C)

    def chunk_nll(args: tuple[jax.Array, jax.Array]) -> jax.Array:
        h_chunk, t_chunk = args
        logits = model.head(h_chunk).astype(jnp.float32)  # (B, C, V)
        picked = jnp.take_along_axis(logits, t_chunk[..., None], axis=-1)[..., 0]
        return jax.nn.logsumexp(logits, axis=-1) - picked  # (B, C)

    return jax.lax.map(chunk_nll, (h, targets)).swapaxes(0, 1).reshape(B, n_chunks * C)[:, : T - 1]


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _window_nll(
    graphdef: nnx.GraphDef, state: nnx.State, ids: jax.Array, n_chunks: int, out_sharding: Any = None
) -> jax.Array:
    """Mean next-token NLL of each window. ids: (B, T) int32 → (B,) float32 (on ``out_sharding``
    when given: replicated, so every process of a multi-host run can read it)."""
    nll = next_token_nll(nnx.merge(graphdef, state), ids, None, n_chunks).mean(axis=-1)
    return nll if out_sharding is None else jax.lax.with_sharding_constraint(nll, out_sharding)


def _mesh_shardings(mesh: Any) -> tuple[Any, Any, int]:
    """``(rows, replicated, data size)`` of a mesh with a ``data`` axis: (B, ...) inputs sharded
    over ``data``, outputs replicated."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    if "data" not in mesh.axis_names:
        raise ValueError(
            f"mesh needs a 'data' axis to shard batches over, has {mesh.axis_names}; build it with "
            "zipcal_jax.distributed.make_mesh()"
        )
    return NamedSharding(mesh, P("data", None)), NamedSharding(mesh, P()), int(mesh.shape["data"])


def _default_batch(seqlen: int, windows: int) -> int:
    return max(1, min(windows, _TOKENS_PER_BATCH // seqlen))


def score_windows(
    model: Any, windows: Any, *, batch_size: int | None = None, progress: bool = True, mesh: Any = None
) -> np.ndarray:
    """Mean next-token NLL (nats) of each window: ``(windows, seqlen)`` int ids → ``(windows,)`` float64.

    One jitted program for a fixed ``batch_size`` (default: ``4096 // seqlen`` windows, at most the
    window count); the last partial batch is padded with dummy windows whose results are dropped.
    The next batch is dispatched before the previous result is read back, so reading overlaps the
    next batch's compute.

    ``mesh``: a ``jax.sharding.Mesh`` with a ``data`` axis (``zipcal_jax.distributed.make_mesh``);
    each batch's windows are sharded over ``data`` (``batch_size`` rounded up to a multiple of its
    size) and the parameters are replicated over the mesh unless already placed on it (e.g. by
    ``llama.shard`` over ``model``). The scores equal the unsharded ones. In a multi-host run every
    process passes the same windows and gets every score.
    """
    windows = np.asarray(windows, np.int32)
    if windows.ndim != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise ValueError(f"windows must be (windows >= 1, seqlen >= 2) ids, got shape {windows.shape}")
    n, T = windows.shape
    vocab = model.cfg.vocab_size
    if windows.min() < 0 or windows.max() >= vocab:
        raise ValueError(
            f"token ids range over [{windows.min()}, {windows.max()}] but the model's vocabulary has {vocab} "
            "ids; the tokenizer does not belong to this model"
        )
    B = _default_batch(T, n) if batch_size is None else int(batch_size)
    if B < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = replicated = None
    if mesh is not None:
        from zipcal_jax.distributed import place_replicated

        rows, replicated, shards = _mesh_shardings(mesh)
        B = -(-B // shards) * shards
    n_chunks, _ = _chunking(T, B, vocab)
    padded = np.zeros((-(-n // B) * B, T), np.int32)  # dummy windows: token 0
    padded[:n] = windows
    graphdef, state = nnx.split(model)
    if mesh is not None:
        state = place_replicated(state, mesh)
    out = np.empty(n, np.float64)
    with tqdm(total=n, desc=f"perplexity (seqlen {T})", unit="window", disable=not progress) as bar:

        def collect(start: int, result: jax.Array) -> None:
            count = min(B, n - start)
            out[start : start + count] = np.asarray(result, np.float64)[:count]
            bar.update(count)
            bar.set_postfix(ppl=f"{math.exp(out[: start + count].mean()):.3f}", refresh=False)

        pending: tuple[int, jax.Array] | None = None
        for start in range(0, n, B):
            batch = padded[start : start + B]
            if mesh is None:
                result = _window_nll(graphdef, state, jnp.asarray(batch), n_chunks)
            else:
                result = _window_nll(graphdef, state, jax.device_put(batch, rows), n_chunks, replicated)
            if pending is not None:
                collect(*pending)
            pending = (start, result)
        collect(*pending)
    return out


def _dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name


def evaluate(
    model: Any,
    tokenizer: Any,
    source: Any,
    seqlen: int = 2048,
    max_windows: int | None = None,
    *,
    batch_size: int | None = None,
    progress: bool = True,
    mesh: Any = None,
) -> dict[str, Any]:
    """Perplexity of ``model`` on ``source`` over non-overlapping ``seqlen`` windows (see the module
    docstring for the convention and the accepted sources).

    Args:
        model: a :class:`~zipcal_jax.models.llama.Llama` (its dtype is used as is).
        tokenizer: a :class:`~zipcal_jax.models.tokenizers.TextTokenizer`, a ``tokenizers.Tokenizer``
            or a ``transformers`` fast tokenizer.
        source: a named source (:func:`named_sources`), a :mod:`zipcal_jax.data` source spec, a
            ``.txt`` path or a list of strings.
        seqlen: tokens per window.
        max_windows: score only the first N windows (None: all; c4 keeps at most 256).
        batch_size: windows per jitted call (default ``4096 // seqlen``, at most the window count).
        progress: show a tqdm bar over windows.
        mesh: shard each batch's windows over the mesh's ``data`` axis (see :func:`score_windows`);
            the result is the unsharded one. ``batch_size`` is then rounded up to a multiple of
            the ``data`` size.

    Returns:
        ``{"ppl", "nll" (mean token NLL in nats, = log ppl), "tokens" (windows * seqlen), "windows",
        "seqlen", "seconds" (wall time, tokenization and compilation included), "source" (resolved
        description), "dtype" (compute dtype), "param_dtype", "batch_size"}``.

    Raises:
        ValueError: the source has fewer than ``seqlen`` tokens (the message says how many, and
            which seqlen would fit), or the tokenizer's ids do not fit the model's vocabulary.
        ConnectionError: a hub source (``wikitext2``, ``c4``) cannot be loaded (offline).
    """
    start = time.perf_counter()
    text, description, cap = resolve_source(source)
    if cap is not None:
        max_windows = cap if max_windows is None else min(max_windows, cap)
    windows = _cut(_encode(tokenizer, text), seqlen, max_windows, f"source {description!r}")
    if seqlen > model.cfg.max_position_embeddings:
        warnings.warn(
            f"seqlen={seqlen} exceeds the model's max_position_embeddings={model.cfg.max_position_embeddings}",
            stacklevel=2,
        )
    n = len(windows)
    B = _default_batch(seqlen, n) if batch_size is None else batch_size
    if mesh is not None:  # the reported batch size is the one run
        shards = _mesh_shardings(mesh)[2]
        B = -(-B // shards) * shards
    per_window = score_windows(model, windows, batch_size=B, progress=progress, mesh=mesh)
    nll = float(per_window.mean())
    return {
        "ppl": math.exp(nll),
        "nll": nll,
        "tokens": n * seqlen,
        "windows": n,
        "seqlen": seqlen,
        "seconds": time.perf_counter() - start,
        "source": description,
        "dtype": _dtype_name(model.dtype),
        "param_dtype": _dtype_name(model.embed.embedding[...].dtype),
        "batch_size": B,
    }
