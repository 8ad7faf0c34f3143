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
from pathlib import Path
from typing import Any

from zipcal_jax.distributed import add_mesh_arguments
from zipcal_jax.verbs import (
    DEFAULT_MODEL,
    DEFAULT_TOKENIZER,
    DEMO_DATA,
    CompressConfig,
    EvalConfig,
    PlotConfig,
    SelectConfig,
    _is_writer,
    _split_list,
    run_compress,
    run_demo,
    run_eval,
    run_experiment_file,
    run_plot,
    run_select,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TOKENIZER",
    "DEMO_DATA",
    "CompressConfig",
    "EvalConfig",
    "PlotConfig",
    "SelectConfig",
    "main",
    "run_compress",
    "run_demo",
    "run_eval",
    "run_experiment_file",
    "run_plot",
    "run_select",
]


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
