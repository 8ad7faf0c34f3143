"""The summary of an experiment grid: the paper-style table and its plots, built from cell results.

:func:`summarize` groups the cells of :mod:`zipcal_jax.experiment` (one dense row per model, then
one row per compressor, nsamples, pool and method) with mean and std over seeds;
:func:`summary_markdown` writes the table and :func:`plot_summary` the figures.
:func:`zipcal_jax.experiment.run_experiment` calls all three.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _slug(text: str) -> str:
    """A short file-safe name of a model spec, pool or compressor (cell ids, table cells, titles)."""
    name = Path(text.rstrip("/")).name or text
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:60] or "x"


def geometric_mean_ratio(acc: Mapping[str, float], dense: Mapping[str, float]) -> float:
    """``100 · (∏_t acc_t / dense_t)^(1/T)`` over the tasks both hold with a nonzero dense accuracy
    (the paper's "relative to dense" column); 0 if a task's accuracy is 0, NaN without tasks."""
    tasks = [t for t in acc if t in dense and dense[t] > 0]
    if not tasks:
        return float("nan")
    ratios = np.array([acc[t] / dense[t] for t in tasks], np.float64)
    if np.any(ratios <= 0):
        return 0.0
    return float(100.0 * np.exp(np.mean(np.log(ratios))))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray([v for v in values if v is not None], np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def summarize(cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the summary table from cell results: per model its dense row, then one row per
    (compressor, nsamples, pool, method) with mean and std over seeds of: ``acc`` (mean zero-shot
    accuracy over tasks, %), ``rel`` (:func:`geometric_mean_ratio` against the dense row), ``ppl``
    per source, and ``select_s`` (selection seconds)."""
    dense_acc: dict[str, dict[str, float]] = {}
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for c in cells:
        cfg = c["config"]
        if cfg["kind"] == "dense":
            dense_acc[cfg["model"]] = {t: r["acc"] for t, r in c["evaluation"]["zeroshot"].items()}
            key = (cfg["model"], "", -1, "", "dense")
        else:
            key = (cfg["model"], cfg["compressor"]["name"], cfg["nsamples"], cfg["calibration"]["pool"],
                   cfg["method"])  # fmt: skip
        groups.setdefault(key, []).append(c)
    rows = []
    for (model, comp, k, pool, method), group in groups.items():
        accs = [{t: r["acc"] for t, r in c["evaluation"]["zeroshot"].items()} for c in group]
        row: dict[str, Any] = {
            "model": model,
            "compressor": comp or "dense",
            "nsamples": None if k < 0 else k,
            "pool": pool or None,
            "method": method,
            "seeds": sorted(c["config"].get("seed", 0) for c in group),
        }
        row["acc"], row["acc_std"] = _mean_std([100 * np.mean(list(a.values())) if a else None for a in accs])
        dense = dense_acc.get(model, {})
        rel = [geometric_mean_ratio(a, dense) if dense else None for a in accs]
        row["rel"], row["rel_std"] = _mean_std(rel)
        row["ppl"] = {}
        sources = group[0]["evaluation"]["perplexity"]
        for src in sources:
            row["ppl"][src] = _mean_std([c["evaluation"]["perplexity"][src]["ppl"] for c in group])
        if method != "dense":
            row["select_s"], row["select_s_std"] = _mean_std([c["selection"]["seconds"] for c in group])
            row["tokens"] = _mean_std([c["selection"]["tokens"] for c in group])[0]
            sizes = [c["selection"].get("pool_size") for c in group]
            row["pool_size"] = sizes[0] if None not in sizes else None
        rows.append(row)
    return rows


def _pm(mean: float, std: float, digits: int = 2) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std and not math.isnan(std) else "")


def summary_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The paper-style table: ``model | compressor | pool | k | method | seeds | acc % | rel. to
    dense % | ppl SOURCE ... | tokens | select s``."""
    sources = list(dict.fromkeys(s for r in rows for s in r["ppl"]))
    head = ["model", "compressor", "pool", "k", "method", "seeds", "acc %", "rel. to dense %",
            *(f"ppl {s}" for s in sources), "tokens", "select s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [_slug(r["model"]), r["compressor"], r["pool"] or "–",
                 "–" if r["nsamples"] is None else str(r["nsamples"]), r["method"], str(len(r["seeds"])),
                 _pm(r["acc"], r["acc_std"]), _pm(r["rel"], r["rel_std"], 1),
                 *(_pm(*r["ppl"][s]) if s in r["ppl"] else "–" for s in sources),
                 f"{r['tokens']:.0f}" if "tokens" in r else "–",
                 _pm(r["select_s"], r["select_s_std"], 3) if "select_s" in r else "–"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_summary(rows: Sequence[Mapping[str, Any]], out: Path) -> list[Path]:
    """``accuracy.png`` (bars per method, one panel per model × compressor, dense as a dashed line)
    and ``selection_seconds.png`` (mean selection seconds against pool size per method, log-log;
    cells from before pool sizes were recorded are left out of it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comp_rows = [r for r in rows if r["method"] != "dense"]
    if not comp_rows:
        return []
    panels = list(dict.fromkeys((r["model"], r["compressor"]) for r in comp_rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4), squeeze=False)
    for ax, (model, comp) in zip(axes[0], panels):
        sub = [r for r in comp_rows if (r["model"], r["compressor"]) == (model, comp)]
        multi = len({(r["pool"], r["nsamples"]) for r in sub}) > 1
        labels = [r["method"] + (f"\n{r['pool']} k={r['nsamples']}" if multi else "") for r in sub]
        ax.bar(range(len(sub)), [r["acc"] for r in sub], yerr=[r["acc_std"] for r in sub], capsize=3,
               color=[f"C{i % 10}" for i in range(len(sub))])  # fmt: skip
        for d in (r for r in rows if r["method"] == "dense" and r["model"] == model):
            ax.axhline(d["acc"], color="black", ls="--", lw=1, label="dense")
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(sub)), labels, fontsize=8, rotation=25, ha="right")
        ax.set_ylabel("mean zero-shot accuracy (%)")
        ax.set_title(f"{_slug(model)} · {comp}")
    fig.tight_layout()
    paths = [out / "accuracy.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, method in enumerate(dict.fromkeys(r["method"] for r in comp_rows)):
        per_size: dict[int, list[float]] = {}
        for r in comp_rows:
            if r["method"] == method and r.get("pool_size"):
                per_size.setdefault(int(r["pool_size"]), []).append(r["select_s"])
        if per_size:
            xs = sorted(per_size)
            ys = [max(float(np.mean(per_size[x])), 1e-6) for x in xs]
            ax.plot(xs, ys, marker="o", color=f"C{i % 10}", label=method)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pool size (candidates, log)")
    ax.set_ylabel("selection time (s, log)")
    ax.set_title("Selection time vs. pool size")
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "selection_seconds.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
