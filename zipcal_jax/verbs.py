"""What each ``zipcal`` verb does, as Python calls: its settings and the function that runs it.

:class:`SelectConfig` / :func:`run_select`, :class:`PlotConfig` / :func:`run_plot`,
:class:`EvalConfig` / :func:`run_eval`, :class:`CompressConfig` / :func:`run_compress`,
:func:`run_experiment_file` (``zipcal run``) and :func:`run_demo` (``zipcal demo``).
:mod:`zipcal_jax.cli` parses the flags into these settings and calls these functions; each
returns its result and the text the command prints. With several processes every process
computes, and process 0 alone writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TOKENIZER = "smollm2-135m"
DEFAULT_MODEL = "smollm2-135m"
DEMO_DATA = ("builtin:pydoc?min_chars=40",)


@dataclass
class SelectConfig:
    """Settings of ``zipcal select`` (also the keys of a ``--config`` JSON file)."""

    data: list[str] = field(default_factory=list)
    tokenizer: str = DEFAULT_TOKENIZER
    nsamples: int = 128
    seqlen: int = 128
    method: str = "zipcal"
    seed: int = 0
    pool_size: int | None = None
    windows: bool = False
    out: str | None = None
    progress: bool = True


@dataclass
class PlotConfig:
    """Settings of ``zipcal plot-zipf``."""

    data: list[str] = field(default_factory=list)
    tokenizer: str = DEFAULT_TOKENIZER
    methods: list[str] = field(default_factory=lambda: ["zipcal", "random", "zipf"])
    nsamples: int = 128
    seqlen: int = 128
    seed: int = 0
    windows: bool = False
    out: str = "zipf.png"
    progress: bool = True


@dataclass
class EvalConfig:
    """Settings of ``zipcal eval``."""

    model: str = DEFAULT_MODEL
    ppl: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    limit: int | None = None
    seqlen: int = 2048
    max_windows: int | None = None
    batch_size: int = 8
    dtype: str = "float32"
    seed: int = 0
    out: str | None = None
    progress: bool = True


@dataclass
class CompressConfig:
    """Settings of ``zipcal compress`` (method options not used by ``method`` are ignored)."""

    model: str = DEFAULT_MODEL
    calib: str | None = None
    method: str = "wanda"
    sparsity: float = 0.5
    nm: str | None = None
    bits: int | None = None  # None: the method's default (4 for gptq/rtn; sparsegpt prunes only)
    group_size: int = 128
    sym: bool = False
    act_order: bool = False
    static_groups: bool = False
    mse: bool = False
    blocksize: int = 128
    percdamp: float = 0.01
    propagate: str = "compressed"
    true_sequential: bool = False
    batch_size: int = 8
    checkpoint_dir: str | None = None
    offload: str | None = None  # None: off; "auto", "pinned_host" or "numpy" (see --offload)
    solve_axis: str | None = None  # a mesh axis that splits the Hessians and solves by rows
    dtype: str = "float32"
    out: str | None = None
    progress: bool = True


def _markdown(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    fmt = {float: lambda v: f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"}
    cells = [[fmt.get(type(r[k]), str)(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(keys), line(["-" * w for w in widths]), *(line(c) for c in cells)])


@dataclass
class _Pool:
    """What every selection on the same data shares: tokenizer, concepts, candidates, timing."""

    tokenizer: Any
    concepts: Any
    candidates: Any
    timing: dict[str, float]


def _pool(cfg) -> _Pool:
    from zipcal_jax.concepts import concept_table
    from zipcal_jax.data import build_candidates
    from zipcal_jax.models.tokenizers import load_tokenizer

    if not cfg.data:
        raise ValueError("give at least one --data SPEC (e.g. --data builtin:pydoc)")
    start = time.perf_counter()
    tokenizer = load_tokenizer(cfg.tokenizer)
    concepts = concept_table(tokenizer)
    loaded = time.perf_counter()
    cands = build_candidates(cfg.data, tokenizer, cfg.seqlen, windows=cfg.windows, progress=cfg.progress)
    timing = {"tokenizer": loaded - start, "candidates": time.perf_counter() - loaded}
    return _Pool(tokenizer, concepts, cands, timing)


def _choose(cands, tokenizer, concepts, method, k, seed, pool_size=None, mesh=None):
    from zipcal_jax.select import select

    return select(
        cands.ids,
        k,
        method=method,
        mask=cands.mask,
        concepts=concepts,
        seed=seed,
        pool_size=pool_size,
        texts=cands.texts,
        tokenizer=tokenizer,
        mesh=mesh,
    )


def _is_writer() -> bool:
    """Whether this process writes files (process 0; always True in a single process)."""
    from zipcal_jax.distributed import is_writer

    return is_writer()


def run_select(cfg: SelectConfig, pool: _Pool | None = None, mesh: Any = None) -> tuple[Any, str]:
    """Build candidates (unless ``pool`` holds them already), select (candidates sharded over
    ``mesh``'s ``data`` axis when given), save from process 0; returns the :class:`CalibrationSet`
    and the table."""
    from zipcal_jax.calibration import CalibrationSet

    pool = pool or _pool(cfg)
    cands = pool.candidates
    sel = _choose(cands, pool.tokenizer, pool.concepts, cfg.method, cfg.nsamples, cfg.seed, cfg.pool_size,
                  mesh)  # fmt: skip
    calib = CalibrationSet.from_selection(
        cands, sel, concepts=pool.concepts, seed=cfg.seed, timing=pool.timing, config=dataclasses.asdict(cfg)
    )
    s = calib.stats
    row = {
        "method": cfg.method,
        "pool": s["pool_size"],
        "samples": s["samples"],
        "concepts": f"{s['concepts_covered']}/{s['concepts_in_pool']}",
        "coverage": s["coverage"],
        "TTR": s["type_token_ratio"],
        "zipf s": s["zipf_exponent"],
        "tokenize s": pool.timing["candidates"],
        "select s": sel.seconds,
    }
    out = Path(cfg.out or f"runs/select-{cfg.method}-k{cfg.nsamples}-seed{cfg.seed}")
    table = _markdown([row])
    if _is_writer():
        calib.save(out)
        calib.to_jsonl(out / "samples.jsonl")
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
        (out / "summary.md").write_text(table + "\n")
    return calib, table + f"\n\nwrote {out}/ (ids.npy, mask.npy, manifest.json, samples.jsonl)"


def run_plot(cfg: PlotConfig, mesh: Any = None) -> tuple[Path, str]:
    """Rank-frequency curves of the pool and of each method's set, log-log, as PNG (written by
    process 0); ``mesh`` shards the selections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zipcal_jax.calibration import CalibrationSet, rank_frequency

    pool = _pool(cfg)
    tokenizer, concepts, cands = pool.tokenizer, pool.concepts, pool.candidates
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    pool = rank_frequency(cands.ids, cands.mask, concepts)
    ax.loglog(range(1, len(pool) + 1), pool / pool.sum(), color="black", lw=2, label=f"pool (n={len(cands)})")
    rows = []
    for method in cfg.methods:
        sel = _choose(cands, tokenizer, concepts, method, cfg.nsamples, cfg.seed, mesh=mesh)
        calib = CalibrationSet.from_selection(cands, sel, concepts=concepts, seed=cfg.seed)
        counts = rank_frequency(calib.ids, calib.mask, concepts)
        s = calib.stats
        ax.loglog(
            range(1, len(counts) + 1),
            counts / counts.sum(),
            lw=1.2,
            label=f"{method} ({len(counts)} concepts)",
        )
        rows.append(
            {
                "method": method,
                "concepts": s["concepts_covered"],
                "coverage": s["coverage"],
                "zipf s": s["zipf_exponent"],
                "TTR": s["type_token_ratio"],
            }
        )
    ax.set_xlabel("rank")
    ax.set_ylabel("relative frequency")
    ax.set_title(f"Concept rank-frequency, k={cfg.nsamples}, L={cfg.seqlen}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(cfg.out)
    if _is_writer():
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
        out.with_suffix(".json").write_text(
            json.dumps({"config": dataclasses.asdict(cfg), "rows": rows}, indent=1)
        )
    plt.close(fig)
    return out, _markdown(rows) + f"\n\nwrote {out}"


def _split_list(values: list[str] | str) -> list[str]:
    """``["a,b", "c"]`` or ``"a,b"`` → ``["a", "b", "c"]``."""
    values = [values] if isinstance(values, str) else values
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def run_eval(cfg: EvalConfig, mesh: Any = None) -> tuple[dict[str, Any], str]:
    """Load ``cfg.model``, measure perplexity on each ``cfg.ppl`` source and zero-shot accuracy on
    ``cfg.tasks``; write ``eval.json``, ``eval.md`` and ``config.json`` to the output folder (from
    process 0). ``mesh``: parameters placed on it (split over ``model``), batches over ``data``."""
    import jax.numpy as jnp

    from zipcal_jax.evals import perplexity, zeroshot
    from zipcal_jax.models import llama

    ppl_sources = [cfg.ppl] if isinstance(cfg.ppl, str) else list(cfg.ppl)
    tasks = _split_list(cfg.tasks)
    if not ppl_sources and not tasks:
        raise ValueError(
            "nothing to evaluate: give --ppl SOURCE (e.g. pydoc) and/or --tasks NAMES (e.g. offline)"
        )
    if cfg.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"--dtype must be float32 or bfloat16, got {cfg.dtype!r}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ValueError(f"--limit must be a positive number of examples per task, got {cfg.limit}")
    out = Path(cfg.out or f"runs/eval-{Path(cfg.model).name}")
    start = time.perf_counter()
    model, tokenizer = llama.load(
        cfg.model, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.dtype), mesh=mesh
    )
    if tokenizer is None:
        raise ValueError(
            f"model {cfg.model!r} carries no tokenizer; save one next to its weights (tokenizer.json)"
        )
    results: dict[str, Any] = {"model": cfg.model, "dtype": cfg.dtype, "perplexity": {}, "zeroshot": None}
    lines = []
    for source in ppl_sources:
        r = perplexity.evaluate(model, tokenizer, source, seqlen=cfg.seqlen, max_windows=cfg.max_windows,
                                batch_size=cfg.batch_size, progress=cfg.progress, mesh=mesh)  # fmt: skip
        results["perplexity"][source] = r
        lines.append({"source": source, "ppl": r["ppl"], "windows": r["windows"], "seqlen": r["seqlen"],
                      "tokens": r["tokens"], "seconds": r["seconds"]})  # fmt: skip
    text = []
    if lines:
        text += ["Perplexity", "", _markdown(lines), ""]
    if tasks:
        zs = zeroshot.evaluate(model, tokenizer, tasks, limit=cfg.limit, seed=cfg.seed,
                               batch_size=cfg.batch_size, progress=cfg.progress, mesh=mesh)  # fmt: skip
        results["zeroshot"] = zs
        text += ["Zero-shot", "", zeroshot.to_markdown(zs), ""]
    results["seconds"] = time.perf_counter() - start
    if _is_writer():
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "eval.md").write_text("\n".join(text))
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    return results, "\n".join(text) + f"\nwrote {out}/ (eval.json, eval.md, config.json)"


def run_compress(cfg: CompressConfig, mesh: Any = None) -> tuple[dict[str, Any], str]:
    """Load ``cfg.model`` and the calibration set ``cfg.calib``, compress layer by layer (samples
    sharded over ``mesh``'s ``data`` axis when given), save the model (Orbax, with its tokenizer)
    and write ``report.json`` and ``config.json`` to ``cfg.out``, from process 0.

    With several processes (``--distributed``) the mesh spans every process's devices: each
    process loads the model onto its first device, the calibration samples are split over all
    devices, the statistics are reduced across hosts, and every process keeps the compressed
    layers (``--solve-axis`` splits the solves across hosts too). Process 0 saves the model in the
    HF safetensors layout; ``--checkpoint-dir`` must then be a folder every process sees (a shared
    filesystem)."""
    import jax.numpy as jnp

    from zipcal_jax.calibration import CalibrationSet
    from zipcal_jax.compress.pipeline import METHODS, compress
    from zipcal_jax.distributed import from_writer, process_count
    from zipcal_jax.models import llama

    if not cfg.calib:
        raise ValueError("give --calib DIR: a calibration set written by `zipcal select`")
    if cfg.method not in METHODS:
        raise ValueError(f"--method must be one of {sorted(METHODS)}, got {cfg.method!r}")
    if cfg.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"--dtype must be float32 or bfloat16, got {cfg.dtype!r}")
    out = Path(cfg.out or f"runs/compress-{Path(cfg.model).name}-{cfg.method}")
    used = _is_writer() and out.exists() and any(out.iterdir())
    if from_writer([used])[0]:  # process 0 writes there: its answer stops every process alike
        raise ValueError(f"output folder {out} is not empty; choose a fresh --out")
    load_mesh, fmt = None, "orbax"
    if process_count() > 1:  # each process holds the model; the pipeline places layers on the mesh
        load_mesh, fmt = _first_local_device_mesh(), "hf"
    calib = CalibrationSet.load(cfg.calib)
    model, tokenizer = llama.load(
        cfg.model, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.dtype), mesh=load_mesh
    )
    # Settings left at None take the method's default (e.g. --bits: 4 for gptq/rtn; with
    # sparsegpt, --bits N turns on the joint sparse + quantized mode).
    options = {k: getattr(cfg, k) for k in METHODS[cfg.method] if getattr(cfg, k) is not None}
    model, report = compress(model, calib, cfg.method, propagate=cfg.propagate,
                             true_sequential=cfg.true_sequential, batch_size=cfg.batch_size,
                             checkpoint_dir=cfg.checkpoint_dir, progress=cfg.progress, mesh=mesh,
                             offload={None: False, "auto": True}.get(cfg.offload, cfg.offload),
                             solve_axis=cfg.solve_axis if mesh is not None else None, **options)  # fmt: skip
    report["model"], report["calib"] = cfg.model, cfg.calib
    if _is_writer():
        llama.save(model, out / "model", format=fmt, tokenizer=tokenizer)
        (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    t = report["totals"]
    rows = [{"method": cfg.method, "modules": t["modules"], "sparsity": t["mean_sparsity"],
             "loss": t["loss"], "output_error": t["output_error"], "fallbacks": t["fallbacks"],
             "forward_s": t["seconds_forward"], "solve_s": t["seconds_solve"]}]  # fmt: skip
    return report, _markdown(rows) + f"\n\nwrote {out}/ (model/, report.json, config.json)"


def _first_local_device_mesh() -> Any:
    """A one-device ``("data", "model")`` mesh on this process's first device (loads a model onto it)."""
    import jax
    import numpy as np
    from jax.sharding import AxisType, Mesh

    devices = np.asarray(jax.local_devices()[:1], dtype=object).reshape(1, 1)
    return Mesh(devices, ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))


def run_experiment_file(
    config: str, out: str | None = None, progress: bool | None = None, mesh: Any = None
) -> tuple[Any, str]:
    """``zipcal run``: the grid of ``config`` (YAML/JSON), optionally with another output folder,
    sharded over ``mesh`` (see :func:`zipcal_jax.experiment.run_experiment`)."""
    from zipcal_jax.experiment import ExperimentConfig, run_experiment

    cfg = ExperimentConfig.from_file(config)
    changes = {k: v for k, v in (("out", out), ("progress", progress)) if v is not None}
    result = run_experiment(dataclasses.replace(cfg, **changes), mesh=mesh)
    files = ", ".join(p.name for p in result.files)
    return result, (
        f"{result.markdown}\n\n{len(result.computed)} cells computed, {len(result.skipped)} reused; "
        f"wrote {Path(changes.get('out', cfg.out))}/ (cells/, {files})"
    )


def run_demo(args: argparse.Namespace, mesh: Any = None) -> str:
    """ZipCal vs random selection for Wanda 50% (and GPTQ 4-bit with ``--gptq``) on SmolLM2-135M and
    the built-in pydoc pool; held-out pydoc perplexity and the offline cloze tasks, dense included."""
    from zipcal_jax.experiment import demo_config, run_experiment

    comps = ("wanda50", "gptq4g128") if args.gptq else ("wanda50",)
    cfg = demo_config(out=args.out, nsamples=args.nsamples, seqlen=args.seqlen, limit=args.limit,
                      max_windows=args.max_windows, ppl_seqlen=args.ppl_seqlen, compressors=comps,
                      progress=args.progress, tasks=args.tasks.split(",") if args.tasks else None)  # fmt: skip
    ev = cfg.evaluation
    pool = cfg.calibration["pydoc"][0]
    sizes = (f"sizes: calibration {args.nsamples} x {args.seqlen} tokens from {pool} (train split); "
             f"{', '.join(comps)}; perplexity on held-out pydoc, {ev.max_windows} x {ev.seqlen} tokens; "
             f"zero-shot {', '.join(ev.tasks)} (limit {ev.limit})")  # fmt: skip
    print(sizes, file=sys.stderr, flush=True)
    start = time.perf_counter()
    result = run_experiment(cfg, mesh=mesh)
    wall = time.perf_counter() - start
    return (f"{result.markdown}\n\n{sizes}\nwall time {wall:.0f} s ({len(result.computed)} cells computed, "
            f"{len(result.skipped)} reused); wrote {args.out}/ (cells/, summary.md, summary.json, accuracy.png, "
            "selection_seconds.png)")  # fmt: skip
