"""The experiment grid: models × calibration pools × selection methods × compressors × nsamples × seeds.

One call (``run_experiment(ExperimentConfig.from_file("grid.yaml"))``, or ``zipcal run --config
grid.yaml``) selects calibration sets, compresses, evaluates, and writes:

* ``OUT/config.json`` — the resolved configuration;
* ``OUT/cells/<cell-id>.json`` — one file per cell: its configuration, the selection (seconds,
  samples, tokens, set statistics), the compression report's totals, perplexities and zero-shot
  accuracies; plus one ``dense`` cell per model (the uncompressed model, evaluated once);
* ``OUT/summary.md`` / ``OUT/summary.json`` — the paper-style table (mean zero-shot accuracy,
  geometric mean over tasks of compressed/dense accuracy in %, perplexity per source, each
  ± std over seeds) and ``OUT/accuracy.png``, ``OUT/selection_seconds.png`` (built by
  :mod:`zipcal_jax.summary`).

Resumable: a cell whose JSON exists and holds the same cell configuration is skipped, and each
cell's JSON is written atomically, so a crash loses at most the running cell. Work is shared: a
model is loaded once (its dense weights are restored before each cell), each pool is tokenized
once per model tokenizer, each selection (pool, method, k, seed) is reused across compressors, and
the model forward of ``least_perplexity``/``cola`` runs once per pool (its seconds still count in
every selection that reuses it). Seed-independent methods (``zipcal``, ``zipf``,
``least_perplexity``) run for the first seed only.

Config file (YAML or JSON; every key optional)::

    out: runs/grid
    models: [smollm2-135m]                 # model specs (llama.load)
    calibration:                           # named pools: name -> list of data specs
      pydoc: ["builtin:pydoc?min_chars=40"]  # (or a list of spec lists: named pool0, pool1, ...)
    seqlen: 256                            # tokens per calibration candidate
    windows: false                         # cut documents into seqlen windows
    methods: [zipcal, random]              # zipcal random random_tokens zipf words least_perplexity cola
    compressors:                           # named entries, or a list of preset names (PRESETS)
      wanda50: {method: wanda, sparsity: 0.5}
      gptq4g128: {method: gptq, bits: 4, group_size: 128}
    nsamples: [32, 128]
    seeds: [0, 1, 2]
    evaluation: {ppl: [pydoc], seqlen: 1024, max_windows: 8, tasks: [offline], limit: 100}
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zipcal_jax.summary import _slug, geometric_mean_ratio, plot_summary, summarize, summary_markdown

__all__ = [
    "PRESETS",
    "EvalSettings",
    "ExperimentConfig",
    "ExperimentResult",
    "demo_config",
    "geometric_mean_ratio",
    "plan_cells",
    "run_experiment",
    "summarize",
    "summary_markdown",
]

#: Compressor presets usable by name in ``compressors: [wanda50, gptq4g128]``.
PRESETS: dict[str, dict[str, Any]] = {
    "wanda50": {"method": "wanda", "sparsity": 0.5},
    "wanda24": {"method": "wanda", "nm": [2, 4]},
    "sparsegpt50": {"method": "sparsegpt", "sparsity": 0.5},
    "sparsegpt24": {"method": "sparsegpt", "nm": [2, 4]},
    "gptq4g128": {"method": "gptq", "bits": 4, "group_size": 128},
    "magnitude50": {"method": "magnitude", "sparsity": 0.5},
    "rtn4g128": {"method": "rtn", "bits": 4, "group_size": 128},
}
#: The four cloze tasks of the ``offline`` suite that need no download (its BIG-bench task is
#: skipped where the sdist cannot be fetched, which would change the mean between machines).
OFFLINE_TASKS = ("continuation/pydoc", "continuation/kjv", "last_word/pydoc", "last_word/kjv")
_MODEL_BASED = ("least_perplexity", "cola")
#: Methods whose selection does not depend on the seed (exact ZipCal, Zipf rarity, least
#: perplexity): the grid runs them for the first seed only, and the table shows them with 1 seed.
SEEDLESS = ("zipcal", "zipf", "least_perplexity")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_keys(cls, values: Mapping[str, Any], where: str) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} in {where}; valid keys: {sorted(names)}")


def _tuple(value: Any, what: str, kind: type = str) -> tuple:
    values = [value] if isinstance(value, (str, int)) else list(value)
    for v in values:
        if not isinstance(v, kind) or isinstance(v, bool):
            raise ValueError(f"{what} must hold {kind.__name__} values, got {v!r}")
    return tuple(values)


@dataclass(frozen=True)
class EvalSettings:
    """What each cell is evaluated on: perplexity (``ppl`` sources, ``seqlen``-token windows, the
    first ``max_windows``) and zero-shot accuracy (``tasks``, the first ``limit`` docs each)."""

    ppl: tuple[str, ...] = ("pydoc",)
    seqlen: int = 2048
    max_windows: int | None = None
    tasks: tuple[str, ...] = ("offline",)
    limit: int | None = None
    seed: int = 0
    batch_size: int = 8

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EvalSettings:
        _check_keys(cls, values, "evaluation")
        v = dict(values)
        for key in ("ppl", "tasks"):
            if key in v:
                v[key] = _tuple(v[key] or (), f"evaluation.{key}")
        if v.get("limit") is not None and int(v["limit"]) < 1:
            raise ValueError(f"evaluation.limit must be a positive number of docs, got {v['limit']}")
        return cls(**v)


@dataclass(frozen=True)
class ExperimentConfig:
    """The grid (see the module docstring for the file format)."""

    models: tuple[str, ...] = ("smollm2-135m",)
    calibration: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"pydoc": ("builtin:pydoc?min_chars=40",)}
    )
    seqlen: int = 128
    windows: bool = False
    methods: tuple[str, ...] = ("zipcal", "random")
    compressors: dict[str, dict[str, Any]] = field(default_factory=lambda: {"wanda50": PRESETS["wanda50"]})
    nsamples: tuple[int, ...] = (128,)
    seeds: tuple[int, ...] = (0,)
    evaluation: EvalSettings = EvalSettings()
    out: str = "runs/experiment"
    dtype: str = "float32"
    batch_size: int = 8
    progress: bool = True

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ExperimentConfig:
        """Validate and normalize plain values (a parsed YAML/JSON file)."""
        from zipcal_jax.compress.pipeline import resolve_options
        from zipcal_jax.select import METHODS

        if not isinstance(values, Mapping):
            raise ValueError(f"an experiment config is a mapping of settings, got {type(values).__name__}")
        _check_keys(cls, values, "the experiment config")
        v = dict(values)
        for key in ("models", "methods"):
            if key in v:
                v[key] = _tuple(v[key], key)
        for key in ("nsamples", "seeds"):
            if key in v:
                v[key] = _tuple(v[key], key, int)
        if "calibration" in v:
            cal = v["calibration"]
            if isinstance(cal, str) or (isinstance(cal, Sequence) and cal and isinstance(cal[0], str)):
                cal = [cal]  # one pool given as a spec or a list of specs
            if not isinstance(cal, Mapping):
                cal = {f"pool{i}": specs for i, specs in enumerate(cal)}
            v["calibration"] = {str(k): _tuple(s, f"calibration.{k}") for k, s in cal.items()}
        if "compressors" in v:
            comp = v["compressors"]
            if isinstance(comp, str) or not isinstance(comp, Mapping):
                names = _tuple(comp, "compressors")
                unknown = [n for n in names if n not in PRESETS]
                if unknown:
                    raise ValueError(f"unknown compressor presets {unknown}; presets: {sorted(PRESETS)} "
                                     "(or give a mapping name: {method: ..., options})")  # fmt: skip
                comp = {n: PRESETS[n] for n in names}
            out = {}
            for name, entry in comp.items():
                if not isinstance(entry, Mapping) or "method" not in entry:
                    raise ValueError(f"compressor {name!r} needs a mapping with 'method', got {entry!r}")
                options = {k: val for k, val in entry.items() if k != "method"}
                resolve_options(entry["method"], options)  # unknown method/option → ValueError
                out[str(name)] = {"method": entry["method"], **options}
            v["compressors"] = out
        if "evaluation" in v:
            v["evaluation"] = EvalSettings.from_dict(v["evaluation"] or {})
        cfg = cls(**v)
        bad = [m for m in cfg.methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown selection methods {bad}; choose from {list(METHODS)}")
        for key in ("models", "methods", "nsamples", "seeds", "calibration", "compressors"):
            if not getattr(cfg, key):
                raise ValueError(f"{key} is empty: give at least one")
        if cfg.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {cfg.dtype!r}")
        if not cfg.evaluation.ppl and not cfg.evaluation.tasks:
            raise ValueError("evaluation has neither ppl sources nor tasks: nothing to compare")
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> ExperimentConfig:
        """Load a YAML (``.yaml``/``.yml``) or JSON file."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"experiment config {path} not found")
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return cls.from_dict(values or {})

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def demo_config(
    out: str = "runs/demo",
    nsamples: int = 32,
    seqlen: int = 256,
    limit: int = 50,
    max_windows: int = 8,
    ppl_seqlen: int = 512,
    compressors: Sequence[str] = ("wanda50",),
    progress: bool = True,
    tasks: Sequence[str] | None = None,
) -> ExperimentConfig:
    """``zipcal demo``: SmolLM2-135M, ZipCal vs random on the built-in pydoc pool (train split),
    evaluated on held-out pydoc perplexity and the four offline cloze tasks (``tasks`` overrides
    them). Where the KJV text cannot be fetched (no ``apt-get`` or no Debian mirror), its two
    tasks are dropped with a message instead of failing the demo."""
    if tasks is None:
        tasks = list(OFFLINE_TASKS)
        from zipcal_jax.cache import DownloadError
        from zipcal_jax.data import builtins

        try:
            builtins.debian_text_path("kjv")
        except (DownloadError, OSError, ValueError) as err:
            _say(f"demo: builtin:kjv unavailable ({str(err).splitlines()[0]}); using the pydoc tasks only")
            tasks = [t for t in tasks if not t.endswith("/kjv")]
    return ExperimentConfig.from_dict(
        {
            "models": ["smollm2-135m"],
            "calibration": {"pydoc": ["builtin:pydoc?min_chars=40"]},
            "seqlen": seqlen,
            "methods": ["zipcal", "random"],
            "compressors": list(compressors),
            "nsamples": [nsamples],
            "seeds": [0],
            "evaluation": {
                "ppl": ["pydoc"],
                "seqlen": ppl_seqlen,
                "max_windows": max_windows,
                "tasks": list(tasks),
                "limit": limit,
            },
            "out": out,
            "progress": progress,
        }
    )


# ----------------------------------------------------------------------------- the grid


def _plain(x: Any) -> Any:
    """JSON-comparable plain values (tuples → lists, NumPy scalars → Python)."""
    return json.loads(json.dumps(x, default=_json_default))


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


@dataclass(frozen=True)
class Cell:
    """One unit of work: ``config`` (plain JSON values) decides whether a saved result still holds."""

    id: str
    model: str
    config: dict[str, Any]
    pool: str | None = None
    method: str | None = None
    compressor: str | None = None
    nsamples: int | None = None
    seed: int | None = None

    @property
    def dense(self) -> bool:
        return self.method is None


def plan_cells(cfg: ExperimentConfig) -> list[Cell]:
    """Every cell of the grid in run order: per model its dense cell, then pools × nsamples × seeds
    × methods × compressors (so a selection is computed right before the compressors that share it).
    Methods in :data:`SEEDLESS` get cells for the first seed only."""
    ev = _plain(dataclasses.asdict(cfg.evaluation))
    cells = []
    for model in cfg.models:
        m = _slug(model)
        cells.append(Cell(f"{m}__dense", model, {"kind": "dense", "model": model, "dtype": cfg.dtype,
                                                 "evaluation": ev}))  # fmt: skip
        for pool, specs in cfg.calibration.items():
            for k in cfg.nsamples:
                for seed in cfg.seeds:
                    for method in cfg.methods:
                        if method in SEEDLESS and seed != cfg.seeds[0]:
                            continue  # the same selection for every seed: run it once
                        for comp, entry in cfg.compressors.items():
                            config = {
                                "kind": "compressed", "model": model, "dtype": cfg.dtype,
                                "calibration": {"pool": pool, "specs": list(specs), "seqlen": cfg.seqlen,
                                                "windows": cfg.windows},
                                "method": method, "nsamples": k, "seed": seed,
                                "compressor": {"name": comp, **entry}, "batch_size": cfg.batch_size,
                                "evaluation": ev,
                            }  # fmt: skip
                            cid = f"{m}__{_slug(pool)}__{_slug(comp)}__{method}__k{k}__s{seed}"
                            cells.append(Cell(cid, model, _plain(config), pool, method, comp, k, seed))
    return cells


def _model_based(cell: Cell, model, cands, forwards: dict, progress: bool, mesh=None):
    """``least_perplexity``/``cola`` with the model forward over the pool done once per (pool, method)
    and reused across seeds and ``k``. The reported seconds always include the forward's seconds
    (measured when it ran), so a reused forward does not make the method look cheaper."""
    from zipcal_jax import model_select
    from zipcal_jax.select import Selection

    key = (cell.pool, cell.method)
    reused = key in forwards
    if not reused:
        t0 = time.perf_counter()
        if cell.method == "least_perplexity":
            data = model_select.perplexity_scores(model, cands.ids, cands.mask, mesh=mesh, progress=progress)
        else:
            data = model_select.activation_features(
                model, cands.ids, cands.mask, mesh=mesh, progress=progress
            )
        forwards[key] = (data, time.perf_counter() - t0)
    data, forward_s = forwards[key]
    t0 = time.perf_counter()
    k = min(cell.nsamples, len(cands.ids))
    if cell.method == "least_perplexity":
        indices, scores = model_select.least_perplexity(model, cands.ids, k, cands.mask, scores=data)
        info = {"nll": scores[indices]}
    else:
        indices, _ = model_select.cola(model, cands.ids, k, cands.mask, seed=cell.seed, features=data)
        info = {"dim": 64, "n_init": 4}
    info.update(forward_seconds=forward_s, forward_reused=reused)
    return Selection(indices, None, cell.method, forward_s + time.perf_counter() - t0, info=info)


def _cell_path(out: Path, cell: Cell) -> Path:
    return out / "cells" / f"{cell.id}.json"


def _finished(out: Path, cell: Cell) -> dict[str, Any] | None:
    path = _cell_path(out, cell)
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return saved if saved.get("config") == cell.config else None


def _evaluate(model, tokenizer, ev: EvalSettings, progress: bool, mesh=None) -> dict[str, Any]:
    from zipcal_jax.evals import perplexity, zeroshot

    start = time.perf_counter()
    out: dict[str, Any] = {"perplexity": {}, "zeroshot": {}, "zeroshot_mean": {}, "skipped": {}}
    for source in ev.ppl:
        r = perplexity.evaluate(model, tokenizer, source, seqlen=ev.seqlen, max_windows=ev.max_windows,
                                progress=progress, mesh=mesh)  # fmt: skip
        out["perplexity"][source] = {k: r[k] for k in ("ppl", "nll", "windows", "tokens", "seconds")}
    if ev.tasks:
        zs = zeroshot.evaluate(model, tokenizer, list(ev.tasks), limit=ev.limit, seed=ev.seed,
                               batch_size=ev.batch_size, progress=progress, mesh=mesh)  # fmt: skip
        keep = ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n")
        out["zeroshot"] = {name: {k: r[k] for k in keep if k in r} for name, r in zs["tasks"].items()}
        out["zeroshot_mean"] = zs["mean"]
        out["skipped"] = {k: str(v).splitlines()[0] for k, v in zs["skipped"].items()}
    out["seconds"] = time.perf_counter() - start
    return out


def _restore(model, dense: dict[str, Any]) -> None:
    """Put the dense weights (``nnx.to_pure_dict`` of the loaded model) back into ``model``."""
    from flax import nnx

    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, dense)
    nnx.update(model, state)


def _write(path: Path, obj: dict[str, Any]) -> None:
    from zipcal_jax.cache import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=_json_default))


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` did: cell ids computed and skipped (already finished), the
    summary rows, the Markdown table and the files written."""

    computed: list[str]
    skipped: list[str]
    rows: list[dict[str, Any]]
    markdown: str
    files: list[Path]


def run_experiment(cfg: ExperimentConfig, mesh: Any = None) -> ExperimentResult:
    """Run every unfinished cell of ``cfg``'s grid, then write the summary (see the module docstring).

    ``mesh``: a ``jax.sharding.Mesh`` with a ``data`` axis (``zipcal_jax.distributed.make_mesh``):
    the model is loaded onto it (a ``model`` axis shards its weights), and selection, the
    model-based methods' forwards, calibration statistics and evaluation split their batches over
    ``data``. Under several ``jax.distributed`` processes the mesh spans all of them and every
    process runs every cell; process 0 alone reads and writes ``out`` (which cells are finished is
    its decision, sent to the others), and only its result carries the summary (the others return
    empty ``rows``, ``markdown`` and ``files``).
    """
    from zipcal_jax.distributed import from_writer, is_writer

    if mesh is not None and mesh.devices.size == 1:
        mesh = None  # one device: the unsharded code path
    import jax.numpy as jnp
    from flax import nnx

    from zipcal_jax.calibration import CalibrationSet
    from zipcal_jax.compress.pipeline import compress
    from zipcal_jax.concepts import concept_table
    from zipcal_jax.data import build_candidates
    from zipcal_jax.models import llama
    from zipcal_jax.select import select

    out, writer = Path(cfg.out), is_writer()
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        _write(out / "config.json", cfg.to_dict())
    cells = plan_cells(cfg)
    finished = from_writer([writer and _finished(out, c) is not None for c in cells])
    computed, skipped = [], []
    for model_spec in cfg.models:
        todo = []
        for cell, done in zip(cells, finished):
            if cell.model == model_spec and done:
                skipped.append(cell.id)
            elif cell.model == model_spec:
                todo.append(cell)
        if not todo:
            continue
        t0 = time.perf_counter()
        dtype = jnp.dtype(cfg.dtype)
        model, tokenizer = llama.load(model_spec, dtype=dtype, param_dtype=dtype, mesh=mesh)
        if tokenizer is None:
            raise ValueError(f"model {model_spec!r} carries no tokenizer; save tokenizer.json next to it")
        dense = nnx.to_pure_dict(nnx.state(model))
        _say(f"loaded {model_spec} in {time.perf_counter() - t0:.1f} s; {len(todo)} cells to run")

        concepts, pools, selections, forwards = None, {}, {}, {}
        for n, cell in enumerate(todo, 1):
            _say(f"[{n}/{len(todo)}] {cell.id}")
            start = time.perf_counter()
            result: dict[str, Any] = {"id": cell.id, "config": cell.config}
            if cell.dense:
                result["evaluation"] = _evaluate(model, tokenizer, cfg.evaluation, cfg.progress, mesh)
            else:
                if cell.pool not in pools:
                    t1 = time.perf_counter()
                    concepts = concept_table(tokenizer) if concepts is None else concepts
                    pools[cell.pool] = build_candidates(list(cfg.calibration[cell.pool]), tokenizer, cfg.seqlen,
                                                        windows=cfg.windows, progress=cfg.progress)  # fmt: skip
                    _say(f"  pool {cell.pool}: {len(pools[cell.pool].ids)} candidates, "
                         f"{time.perf_counter() - t1:.1f} s")  # fmt: skip
                cands = pools[cell.pool]
                key = (cell.pool, cell.method, cell.nsamples, cell.seed)
                if key not in selections:
                    if cell.method in _MODEL_BASED:
                        sel = _model_based(cell, model, cands, forwards, cfg.progress, mesh)
                    else:
                        sel = select(cands.ids, cell.nsamples, method=cell.method, mask=cands.mask,
                                     concepts=concepts, seed=cell.seed, texts=cands.texts,
                                     tokenizer=tokenizer, mesh=mesh)  # fmt: skip
                    calib = CalibrationSet.from_selection(cands, sel, concepts=concepts, seed=cell.seed)
                    selections[key] = (calib, sel.info)
                calib, info = selections[key]
                result["selection"] = {
                    "seconds": calib.timing["select"],
                    "pool_size": len(cands.ids),
                    "samples": len(calib),
                    "tokens": int(calib.mask.sum()),
                    "stats": calib.stats,
                    "indices": [int(i) for i in calib.indices],
                }
                if "forward_seconds" in info:
                    result["selection"]["forward"] = {"seconds": info["forward_seconds"],
                                                      "reused": info["forward_reused"]}  # fmt: skip
                entry = dict(cfg.compressors[cell.compressor])
                method = entry.pop("method")
                try:
                    _, report = compress(model, calib, method, batch_size=cfg.batch_size,
                                         progress=cfg.progress, mesh=mesh, **entry)  # fmt: skip
                    result["compression"] = {**report["totals"], "options": report["options"]}
                    result["evaluation"] = _evaluate(model, tokenizer, cfg.evaluation, cfg.progress, mesh)
                finally:
                    _restore(model, dense)
            result["seconds"] = time.perf_counter() - start
            if writer:
                _write(_cell_path(out, cell), result)
            computed.append(cell.id)
    if not writer:
        return ExperimentResult(computed, skipped, [], "", [])
    results = [_finished(out, c) for c in cells]
    rows = summarize([r for r in results if r is not None])
    markdown = summary_markdown(rows)
    files = [out / "summary.md", out / "summary.json"]
    (out / "summary.md").write_text(markdown + "\n")
    _write(out / "summary.json", {"rows": rows, "config": cfg.to_dict()})
    files += plot_summary(rows, out)
    return ExperimentResult(computed, skipped, rows, markdown, files)
