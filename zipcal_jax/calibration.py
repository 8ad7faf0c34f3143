"""Calibration sets: the chosen samples, where they came from, and what they cover.

A :class:`CalibrationSet` is what compression consumes: ``ids``/``mask`` of ``k``
samples, their provenance, the method and seed that chose them, timings and statistics.
It saves to a folder (NumPy arrays + a JSON manifest) and exports to JSONL text.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zipcal_jax.cache import atomic_path
from zipcal_jax.greedy import token_histogram

__all__ = ["CalibrationSet", "fit_zipf_exponent", "rank_frequency", "set_statistics"]

FORMAT_VERSION = 1
_ARRAYS = ("ids", "mask", "indices", "gains")


def rank_frequency(ids: np.ndarray, mask: np.ndarray, concepts: np.ndarray | None = None) -> np.ndarray:
    """Occurrence counts of each concept (or token id) present, largest first: a
    jit-compiled histogram (:func:`zipcal_jax.greedy.token_histogram`), sorted."""
    ids, mask = np.asarray(ids, np.int32), np.asarray(mask, bool)
    if not mask.any():
        return np.zeros(0, np.int64)
    table = None if concepts is None else np.asarray(concepts, np.int32)
    C = int(table.max()) + 1 if table is not None else int(ids[mask].max()) + 1
    counts = np.asarray(token_histogram(ids, mask, table, max(C, 1)))
    return np.sort(counts[counts > 0])[::-1].astype(np.int64)


def fit_zipf_exponent(counts: np.ndarray) -> float:
    """Zipf exponent ``s`` of a rank-frequency curve ``f(r) ~ r**-s``: the negated slope of
    a least-squares line through ``(log r, log f)`` over all ranks. NaN below 2 types."""
    counts = np.asarray(counts, float)
    counts = counts[counts > 0]
    if len(counts) < 2:
        return float("nan")
    ranks = np.arange(1, len(counts) + 1)
    slope, _ = np.polyfit(np.log(ranks), np.log(np.sort(counts)[::-1]), 1)
    return float(-slope)


def set_statistics(
    ids: np.ndarray,
    mask: np.ndarray,
    concepts: np.ndarray | None = None,
    pool_ids: np.ndarray | None = None,
    pool_mask: np.ndarray | None = None,
) -> dict[str, Any]:
    """Coverage and lexical statistics of a set of samples (and of its pool, if given).

    Returns a dict with ``samples``, ``tokens`` (real tokens), ``distinct_tokens``,
    ``type_token_ratio``, ``concepts_covered``, ``zipf_exponent`` (of the concept
    rank-frequency curve) and, with a pool, ``concepts_in_pool``, ``coverage`` (covered /
    in pool), ``pool_size`` and ``pool_zipf_exponent``.
    """
    ids, mask = np.asarray(ids), np.asarray(mask, bool)
    toks = ids[mask]
    distinct = len(np.unique(toks))
    counts = rank_frequency(ids, mask, concepts)
    stats: dict[str, Any] = {
        "samples": int(ids.shape[0]),
        "tokens": int(toks.size),
        "distinct_tokens": distinct,
        "type_token_ratio": distinct / toks.size if toks.size else float("nan"),
        "concepts_covered": len(counts),
        "zipf_exponent": fit_zipf_exponent(counts),
    }
    if pool_ids is not None:
        pool_mask = np.ones(np.shape(pool_ids), bool) if pool_mask is None else pool_mask
        pool_counts = rank_frequency(pool_ids, pool_mask, concepts)
        stats.update(
            pool_size=int(np.shape(pool_ids)[0]),
            concepts_in_pool=len(pool_counts),
            coverage=len(counts) / len(pool_counts) if len(pool_counts) else float("nan"),
            pool_zipf_exponent=fit_zipf_exponent(pool_counts),
        )
    return stats


@dataclass
class CalibrationSet:
    """``k`` calibration samples and their record.

    Attributes:
      ids: ``int32 (k, L)`` token ids.
      mask: ``bool (k, L)``, True where a real token stands.
      provenance: one dict per sample: ``source`` (spec string), ``row`` (index within
        the source; -1 for synthetic samples) and ``text``.
      method, seed: how the set was chosen.
      indices: ``int64 (k,)`` candidate indices in the pool (-1: synthetic).
      gains: ``int64 (k,)`` new concepts per pick (ZipCal), else None.
      timing: seconds per stage, e.g. ``{"candidates": ..., "select": ...}``.
      stats: :func:`set_statistics` of the set against its pool.
      config: the resolved settings that produced it (for the record).
    """

    ids: np.ndarray
    mask: np.ndarray
    provenance: list[dict[str, Any]]
    method: str
    seed: int
    indices: np.ndarray
    gains: np.ndarray | None = None
    timing: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if np.shape(self.ids) != np.shape(self.mask):
            raise ValueError(f"ids {np.shape(self.ids)} and mask {np.shape(self.mask)} must have one shape")
        if len(self.provenance) != len(self.ids):
            raise ValueError(f"{len(self.provenance)} provenance entries for {len(self.ids)} samples")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def texts(self) -> list[str]:
        return [p["text"] for p in self.provenance]

    @classmethod
    def from_selection(
        cls,
        candidates: Any,
        selection: Any,
        *,
        concepts: np.ndarray | None = None,
        seed: int = 0,
        timing: dict[str, float] | None = None,
        config: dict[str, Any] | None = None,
    ) -> CalibrationSet:
        """Gather the chosen candidates (or the synthetic samples of ``words``)."""
        if selection.ids is not None:  # synthetic samples
            ids, mask = selection.ids, selection.mask
            provenance = [
                {"source": "synthetic:" + selection.method, "row": -1, "text": t} for t in selection.texts
            ]
        else:
            ids, mask = candidates.ids[selection.indices], candidates.mask[selection.indices]
            provenance = [candidates.provenance(int(i)) for i in selection.indices]
        timing = {**(timing or {}), "select": selection.seconds}
        stats = set_statistics(ids, mask, concepts, candidates.ids, candidates.mask)
        return cls(
            ids=np.asarray(ids, np.int32),
            mask=np.asarray(mask, bool),
            provenance=provenance,
            method=selection.method,
            seed=seed,
            indices=np.asarray(selection.indices, np.int64),
            gains=None if selection.gains is None else np.asarray(selection.gains, np.int64),
            timing=timing,
            stats=stats,
            config=dict(config or {}),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``ids.npy``, ``mask.npy``, ``indices.npy``, [``gains.npy``] and
        ``manifest.json`` into the folder ``path`` (created; files replaced atomically)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name in _ARRAYS:
            value = getattr(self, name)
            if value is not None:
                _atomic(path / f"{name}.npy", lambda f, v=value: np.save(f, v))
            else:  # a set saved here before may have left one
                (path / f"{name}.npy").unlink(missing_ok=True)
        manifest = {
            "format": "zipcal-calibration-set",
            "version": FORMAT_VERSION,
            "method": self.method,
            "seed": self.seed,
            "samples": len(self),
            "seqlen": int(self.ids.shape[1]) if self.ids.ndim == 2 else 0,
            "timing": self.timing,
            "stats": self.stats,
            "config": self.config,
            "provenance": self.provenance,
        }
        text = json.dumps(manifest, indent=1, ensure_ascii=False, default=_json_default)
        _atomic(path / "manifest.json", lambda f: f.write(text.encode()))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationSet:
        """Read a folder written by :meth:`save`."""
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{manifest_path} not found: is {path} a folder written by CalibrationSet.save?"
            )
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != "zipcal-calibration-set":
            raise ValueError(f"{manifest_path} is not a zipcal calibration-set manifest")
        if manifest.get("version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{path} was written by a newer zipcal-jax (format {manifest['version']}); upgrade"
            )
        arrays = {n: np.load(path / f"{n}.npy") for n in _ARRAYS if (path / f"{n}.npy").is_file()}
        return cls(
            ids=arrays["ids"],
            mask=arrays["mask"],
            provenance=manifest["provenance"],
            method=manifest["method"],
            seed=manifest["seed"],
            indices=arrays["indices"],
            gains=arrays.get("gains"),
            timing=manifest.get("timing", {}),
            stats=manifest.get("stats", {}),
            config=manifest.get("config", {}),
        )

    def to_jsonl(self, path: str | os.PathLike) -> Path:
        """One JSON object per sample: ``text``, ``source``, ``row``, ``index``."""
        lines = [
            json.dumps({**p, "index": int(i)}, ensure_ascii=False)
            for p, i in zip(self.provenance, self.indices)
        ]
        path = Path(path)
        _atomic(path, lambda f: f.write(("\n".join(lines) + "\n").encode()))
        return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
