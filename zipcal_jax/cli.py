"""The ``zipcal`` command line: each verb composes the library's Python calls.

Verbs:
  zipcal select     choose a calibration set and write it to a folder
  zipcal plot-zipf  rank-frequency curves (log-log) of the pool and of chosen sets
  zipcal eval       perplexity and zero-shot accuracy of a model
  zipcal compress   prune or quantize a model layer by layer with a calibration set
  zipcal run        an experiment grid from a YAML/JSON config (resumable), summary table + plots
  zipcal demo       the main job offline: ZipCal vs random for Wanda on SmolLM2-135M, evaluated

Every run writes its resolved configuration (``config.json``) next to its results.

Devices and hosts (before or after the verb): ``--devices N`` shards selection, calibration
statistics and evaluation over N devices (default: every visible device; one device runs the
unsharded code), ``--model-parallel M`` splits the model's parameters over M of them (default
``auto``), ``--distributed`` starts ``jax.distributed`` for one process per host (also started by
``ZIPCAL_DISTRIBUTED=1`` or a detected launcher, see :mod:`zipcal_jax.distributed` and
``docs/pods.md``). With several processes every process reads the inputs and computes, and
process 0 alone writes files and prints the result.
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

from zipcal_jax.distributed import add_mesh_arguments

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


def _parser() -> argparse.ArgumentParser:
    """The argument parser. Settings of ``select``/``plot-zipf`` default to SUPPRESS, so the
    namespace holds only the flags typed: dataclass default < ``--config`` file < flag."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="zipcal", description=__doc__.split("\n")[0])
    add_mesh_arguments(p)  # also on each verb below, so they may come before or after it
    verbs = p.add_subparsers(dest="verb", required=True)
    unset = argparse.SUPPRESS

    def common(sp, d):
        sp.add_argument(
            "--data",
            action="append",
            metavar="SPEC",
            default=unset,
            help="text source spec (repeatable); see `python -m pydoc zipcal_jax.data`",
        )
        sp.add_argument(
            "--tokenizer",
            default=unset,
            help=f"tokenizer.json, HF folder, .gguf, hub id or named default (default: {d.tokenizer})",
        )
        sp.add_argument(
            "--nsamples", type=int, default=unset, help=f"samples to choose, k (default: {d.nsamples})"
        )
        sp.add_argument(
            "--seqlen", type=int, default=unset, help=f"tokens per candidate, L (default: {d.seqlen})"
        )
        sp.add_argument(
            "--seed", type=int, default=unset, help=f"seeds every random choice (default: {d.seed})"
        )
        sp.add_argument(
            "--windows",
            action="store_true",
            default=unset,
            help="cut documents into seqlen windows instead of one candidate per example",
        )
        sp.add_argument(
            "--no-progress", dest="progress", action="store_false", default=unset, help="hide progress bars"
        )
        sp.add_argument(
            "--config", default=None, help="JSON file with any of these settings (flags override it)"
        )

    sel = verbs.add_parser("select", help="choose a calibration set")
    d = SelectConfig()
    common(sel, d)
    sel.add_argument(
        "--method",
        default=unset,
        choices=["zipcal", "random", "zipf", "words"],
        help=f"selection method (default: {d.method})",
    )
    sel.add_argument(
        "--pool-size",
        type=int,
        default=unset,
        help="score a fresh random pool of P candidates per step, the reference code's "
        "variant (default: exact greedy)",
    )
    sel.add_argument("--out", default=unset, help="output folder (default: runs/select-METHOD-kK-seedS)")

    plot = verbs.add_parser("plot-zipf", help="rank-frequency plot of pool vs chosen sets")
    d = PlotConfig()
    common(plot, d)
    plot.add_argument(
        "--methods", default=unset, help=f"comma-separated methods (default: {','.join(d.methods)})"
    )
    plot.add_argument("--out", default=unset, help=f"PNG path (default: {d.out})")

    ev = verbs.add_parser("eval", help="perplexity and zero-shot accuracy of a model")
    d = EvalConfig()
    ev.add_argument(
        "--model",
        default=unset,
        help=f"model spec: folder, .gguf, hub id or named default (default: {d.model})",
    )
    ev.add_argument(
        "--ppl",
        action="append",
        metavar="SOURCE",
        default=unset,
        help="perplexity source (repeat the flag for several): pydoc, kjv, devil, wikitext2, c4, "
        "a .txt file or any data spec",
    )
    ev.add_argument(
        "--tasks",
        action="append",
        metavar="NAMES",
        default=unset,
        help="zero-shot tasks or suites, comma-separated (e.g. offline, piqa@file.jsonl)",
    )
    ev.add_argument("--limit", type=int, default=unset, help="first N examples of each task (default: all)")
    ev.add_argument(
        "--seqlen", type=int, default=unset, help=f"perplexity window length (default: {d.seqlen})"
    )
    ev.add_argument(
        "--max-windows", type=int, default=unset, help="first N perplexity windows (default: all)"
    )
    ev.add_argument(
        "--batch-size", type=int, default=unset, help=f"rows per forward (default: {d.batch_size})"
    )
    ev.add_argument(
        "--dtype", default=unset, choices=["float32", "bfloat16"], help=f"model dtype (default: {d.dtype})"
    )
    ev.add_argument("--seed", type=int, default=unset, help=f"seeds the cloze tasks (default: {d.seed})")
    ev.add_argument("--out", default=unset, help="output folder (default: runs/eval-MODEL)")
    ev.add_argument(
        "--no-progress", dest="progress", action="store_false", default=unset, help="hide progress bars"
    )
    ev.add_argument("--config", default=None, help="JSON file with any of these settings (flags override it)")

    cp = verbs.add_parser("compress", help="prune or quantize a model with a calibration set")
    d = CompressConfig()
    cp.add_argument("--model", default=unset, help=f"model spec (default: {d.model})")
    cp.add_argument("--calib", default=unset, help="calibration-set folder written by `zipcal select`")
    cp.add_argument("--method", default=unset, choices=["wanda", "sparsegpt", "gptq", "magnitude", "rtn"],
                    help=f"compression method (default: {d.method})")  # fmt: skip
    cp.add_argument("--sparsity", type=float, default=unset, help=f"pruned fraction (default: {d.sparsity})")
    cp.add_argument("--nm", default=unset, help="N:M pattern, n zeros in every m inputs, e.g. 2:4")
    cp.add_argument("--bits", type=int, default=unset,
                    help="quantization bits: gptq/rtn (default 4); with sparsegpt, joint sparse + N-bit")  # fmt: skip
    cp.add_argument("--group-size", type=int, default=unset,
                    help=f"inputs per quantization group, -1 = per row (default: {d.group_size})")  # fmt: skip
    cp.add_argument("--sym", action="store_true", default=unset, help="symmetric quantization grid")
    cp.add_argument("--act-order", action="store_true", default=unset, help="GPTQ: descending diag(H) order")
    cp.add_argument(
        "--static-groups", action="store_true", default=unset, help="GPTQ: groups fitted up front"
    )
    cp.add_argument(
        "--mse", action="store_true", default=unset, help="GPTQ/RTN: MSE grid search for the scales"
    )
    cp.add_argument("--blocksize", type=int, default=unset, help=f"OBS block width (default: {d.blocksize})")
    cp.add_argument("--percdamp", type=float, default=unset, help=f"relative damping (default: {d.percdamp})")
    cp.add_argument("--propagate", default=unset, choices=["compressed", "dense"],
                    help=f"next layer's inputs from the compressed or dense layer (default: {d.propagate})")  # fmt: skip
    cp.add_argument("--true-sequential", action="store_true", default=unset,
                    help="recollect inputs after q/k/v, o, gate/up in turn")  # fmt: skip
    cp.add_argument(
        "--batch-size", type=int, default=unset, help=f"samples per forward (default: {d.batch_size})"
    )
    cp.add_argument("--checkpoint-dir", default=unset, help="save progress per layer there; resume from it")
    cp.add_argument("--offload", default=unset, choices=["auto", "pinned_host", "numpy"],
                    help="keep weights and activations in host memory, one layer on the device at a time "
                         "(auto: pinned host memory where the backend has it; docs/memory.md)")  # fmt: skip
    cp.add_argument("--solve-axis", default=unset, choices=["data", "model"],
                    help="split each layer's Hessians and solves by rows over this mesh axis (needs --devices > 1)")  # fmt: skip
    cp.add_argument(
        "--dtype", default=unset, choices=["float32", "bfloat16"], help=f"model dtype (default: {d.dtype})"
    )
    cp.add_argument("--out", default=unset, help="output folder (default: runs/compress-MODEL-METHOD)")
    cp.add_argument(
        "--no-progress", dest="progress", action="store_false", default=unset, help="hide progress bars"
    )
    cp.add_argument("--config", default=None, help="JSON file with any of these settings (flags override it)")

    run = verbs.add_parser("run", help="run an experiment grid from a YAML/JSON config (resumable)")
    run.add_argument(
        "--config", required=True, help="YAML or JSON experiment config (see zipcal_jax.experiment)"
    )
    run.add_argument("--out", default=None, help="output folder (default: the config's `out`)")
    run.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                     help="hide progress bars")  # fmt: skip

    demo = verbs.add_parser(
        "demo",
        help="ZipCal vs random calibration for Wanda on SmolLM2-135M, offline, evaluated (<= 10 min on 2 cores)",
        formatter_class=fmt,
    )
    demo.add_argument("--nsamples", type=int, default=32, help="calibration samples per method")
    demo.add_argument("--seqlen", type=int, default=256, help="tokens per calibration sample")
    demo.add_argument("--limit", type=int, default=50, help="docs per zero-shot task")
    demo.add_argument("--max-windows", type=int, default=8, help="perplexity windows (held-out pydoc)")
    demo.add_argument("--ppl-seqlen", type=int, default=512, help="tokens per perplexity window")
    demo.add_argument(
        "--tasks", default=None, help="zero-shot tasks, comma-separated (default: the four cloze tasks)"
    )
    demo.add_argument("--gptq", action="store_true", help="also GPTQ 4-bit g128 (about doubles the time)")
    demo.add_argument("--out", default="runs/demo", help="output folder (finished cells are reused)")
    demo.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    for verb in (sel, plot, ev, cp):
        add_mesh_arguments(verb, suppress=True)
    return p


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


def _bytes_on_disk(spec: str) -> int:
    """Size of a model spec's files (a folder or a file; 0 for names and hub ids): the estimate of
    its parameter bytes that ``--model-parallel auto`` uses."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return 0


def _mesh(args: argparse.Namespace, model_spec: str | None = None) -> Any:
    """The verb's mesh from ``--devices``/``--model-parallel``, or None when it has one device."""
    from zipcal_jax.distributed import mesh_from_args, sharding_mesh

    param_bytes = _bytes_on_disk(model_spec) if model_spec else 0
    return sharding_mesh(mesh_from_args(args, param_bytes))


def _config(cls, args: argparse.Namespace):
    """The verb's config: dataclass defaults, then the ``--config`` file, then typed flags."""
    values: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"--config file {path} not found")
        values.update(json.loads(path.read_text()))
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)} in --config; valid: {sorted(names)}")
    values.update({k: v for k, v in vars(args).items() if k in names})
    for key in ("methods", "tasks"):  # --ppl specs may hold commas: repeat the flag
        if key in values:
            values[key] = _split_list(values[key])
    return cls(**values)


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


def _persistent_compilation_cache() -> None:
    """Keep compiled XLA programs in the cache folder, so a rerun skips recompiling."""
    import jax

    from zipcal_jax.cache import cache_dir

    try:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)
    except (ValueError, OSError):  # an unwritable or refused cache only costs compile time
        pass


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from zipcal_jax.distributed import initialize

        initialize(args.distributed)  # before anything starts a JAX backend
        _persistent_compilation_cache()
        if args.verb == "select":
            _, text = run_select(_config(SelectConfig, args), mesh=_mesh(args))
        elif args.verb == "plot-zipf":
            _, text = run_plot(_config(PlotConfig, args), mesh=_mesh(args))
        elif args.verb == "eval":
            cfg = _config(EvalConfig, args)
            _, text = run_eval(cfg, mesh=_mesh(args, cfg.model))
        elif args.verb == "compress":
            cfg = _config(CompressConfig, args)
            _, text = run_compress(cfg, mesh=_mesh(args, cfg.model))
        elif args.verb == "run":
            _, text = run_experiment_file(args.config, args.out, args.progress, mesh=_mesh(args))
        else:
            text = run_demo(args, mesh=_mesh(args))
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        print(f"zipcal {args.verb}: error: {err}", file=sys.stderr)
        return 2
    if _is_writer():
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
