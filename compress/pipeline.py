"""``compress(model, calibration, method=..., **options) -> (model, report)``: the layer-sequential
calibration pipeline of Wanda, SparseGPT and GPTQ (anchors note §1.3, §2.4).

Flow (the references' ``Catcher`` → per-layer statistics → compress → re-forward pattern):

1. The layer-0 inputs of every calibration sample are captured (the embeddings), in batches of
   ``batch_size`` samples (the sample count is padded with empty samples to whole batches).
2. For each decoder layer: all samples run through the layer under ``jit`` while the float32
   sums ``Σ x xᵀ`` of its four input sites accumulate over the real tokens (:mod:`.capture`);
   every linear is compressed from its site's statistics; then the samples run through the
   *compressed* layer and its outputs become the next layer's inputs (``propagate="compressed"``,
   the reference behaviour; ``"dense"`` keeps the outputs of the dense layer instead, i.e. every
   layer is calibrated on the uncompressed model's activations).
3. ``true_sequential=False`` (default) calibrates all seven linears of a layer on the dense layer's
   activations: Wanda has no other mode (§1.3) and SparseGPT's and GPTQ's ``--true-sequential``
   flags are off by default (§2.4, §3.2). ``True`` runs the groups q/k/v → o → gate/up → down in
   turn, re-collecting each group's inputs after the earlier groups were compressed.

Statistics: ``H = 2/N · XᵀX`` with ``N`` the real tokens (the references normalise by sequences;
damping is relative to ``mean(diag H)``, so the solvers' choices are the same), one H per site,
shared by the linears that read it. Wanda ranks with ``scaler_row = ||X_j||² / N_seq`` (§1.1).
Memory: one layer's activations for all samples (inputs and outputs) plus its four Hessians.
``offload=True`` streams the model through device memory: every weight and the activations
between layers wait in host memory (a ``pinned_host`` memory kind, or NumPy), and only the layer
being compressed, one batch of activations and its Hessians are on the device(s) (bit-identical
results; budget and measurements in ``docs/memory.md``).

Sharding: ``mesh=`` with a ``data`` axis shards every batch's samples over it; the layer's
parameters are replicated; the sums are reduced across devices inside the jitted contraction.
``solve_axis=`` (a mesh axis, or ``data`` again) splits the rows of the Hessian accumulators and
of every weight across devices: each device solves ``d_out / n`` rows with ``H`` replicated
(``gptq.obs_solve_rows``; same masks and codes as one device, weights up to float summation order).
A mesh may span several ``jax.distributed`` processes: each process keeps its own copy of the
model, the layer is placed on the mesh from every process's copy (``distributed.put_global``),
unsplit solves run on each process's first mesh device, and row-split results are gathered back
into every copy (``distributed.local_value``); checkpoints then need a folder every process sees.

Resume (:mod:`.checkpoint`): with ``checkpoint_dir`` every finished layer ``i`` writes two Orbax checkpoints,
``layer_{i:04d}/`` (its seven compressed weights, ``{"weights": {...}}``, kept for good) and
``inputs_{i+1:04d}/`` (the next layer's inputs, one array per batch, saved shard by shard), then
``state.json`` (settings fingerprint, report so far, ``next_layer``), atomically and last. Only
the state file makes a folder count: Orbax writes into ``<name>.orbax-checkpoint-tmp`` and renames
it onto ``<name>`` once complete, a folder of a layer the state file does not count yet (a crash
before the state file was written) is overwritten, and leftover temporary folders are removed on
resume. The inputs of layer ``i`` are deleted once layer ``i``'s state is written (only the latest
are needed), so the folder holds the compressed weights plus one layer's activations. A rerun with
the same settings restores the weights and the inputs (onto the same ``mesh`` sharding),
continues after the last finished layer and gives the identical result.

Report (JSON): per module ``sparsity`` (fraction of exact zeros), ``loss`` (the solver's summed
OBS loss for SparseGPT/GPTQ; for Wanda, magnitude and RTN the output error below, see
``loss_kind``), ``output_error`` = ``trace(ΔW H ΔWᵀ)/2 = ||ΔW Xᵀ||²/N`` on the layer's
calibration inputs (every method, comparable across methods), ``percdamp``/``damp``/
``attempts``/``fallback`` (GPTQ/SparseGPT damping escalation), ``seconds``; ``totals``;
``method``, ``options``; ``calibration`` samples and tokens.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zipcal_jax.compress import capture, checkpoint

METHODS: dict[str, dict[str, Any]] = {
    "wanda": {"sparsity": 0.5, "nm": None},
    # bits: None = prune only; 2/3/4/8 = the joint sparse + quantized mode (per-row grid, §2.5).
    "sparsegpt": {
        "sparsity": 0.5,
        "nm": None,
        "blocksize": 128,
        "percdamp": 0.01,
        "bits": None,
        "sym": False,
    },
    "gptq": {
        "bits": 4,
        "group_size": 128,
        "sym": False,
        "act_order": False,
        "static_groups": False,
        "blocksize": 128,
        "percdamp": 0.01,
        "mse": False,
    },
    "magnitude": {"sparsity": 0.5, "nm": None},
    "rtn": {"bits": 4, "group_size": 128, "sym": False},
}


class StopAfterLayer(RuntimeError):
    """Raised by the ``stop_after`` test hook (a simulated crash)."""


def parse_nm(nm: Any) -> tuple[int, int] | None:
    """``None``, ``"2:4"`` or ``(2, 4)`` → ``(n, m)`` (n zeros in every m inputs)."""
    if nm is None or nm == "":
        return None
    if isinstance(nm, str):
        try:
            n, m = (int(v) for v in nm.split(":"))
        except ValueError as e:
            raise ValueError(f"nm={nm!r} must look like '2:4' (n zeros in every m inputs)") from e
        return n, m
    n, m = nm
    return int(n), int(m)


def resolve_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The method's defaults updated with ``options``; unknown names raise ValueError."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    unknown = set(options) - set(METHODS[method])
    if unknown:
        raise ValueError(f"{method} does not take {sorted(unknown)}; its options: {sorted(METHODS[method])}")
    resolved = {**METHODS[method], **options}
    if "nm" in resolved:
        resolved["nm"] = parse_nm(resolved["nm"])
    return resolved


def _calibration_arrays(calibration: Any, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(calibration, "ids") and hasattr(calibration, "mask"):
        ids, mask = calibration.ids, calibration.mask
    else:
        try:
            ids, mask = calibration
        except (TypeError, ValueError) as e:
            raise ValueError("calibration must be a CalibrationSet or an (ids, mask) pair of arrays") from e
    ids, mask = np.asarray(ids), np.asarray(mask).astype(bool)
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise ValueError(f"calibration ids {ids.shape} and mask {mask.shape} must both be (samples, seqlen)")
    if not mask.any():
        raise ValueError(
            "the calibration set has no real tokens (its mask is all False); select a non-empty set"
        )
    real = ids[mask]
    if real.min() < 0 or real.max() >= vocab_size:
        raise ValueError(
            f"calibration token ids span [{real.min()}, {real.max()}] but the model's vocabulary has "
            f"{vocab_size} ids: the set was tokenized for another model; select it with this model's tokenizer"
        )
    return np.where(mask, ids, 0).astype(np.int32), mask


def _compress_linear(
    W: jax.Array, scaler: jax.Array | None, H: jax.Array, method: str, opts: dict, rows=None
):
    """Compress ``W: (d_out, d_in)`` (float32) given its site's ``H = 2/N · Σ x xᵀ`` and, for Wanda,
    ``scaler = diag(Σ x xᵀ) / N_seq``. Returns ``(W_new, record, extras)``; ``extras`` holds
    ``mask``/``params`` for callbacks.

    ``rows=(mesh, axis)``: the rows of ``W`` are split over that mesh axis. SparseGPT and GPTQ run
    ``gptq.obs_solve_rows`` (``shard_map``, ``H`` replicated); Wanda, magnitude and RTN are
    row-local, so ``jit`` keeps a row-sharded ``W`` (from ``_Run.weight``) sharded."""
    from zipcal_jax.compress import baselines, gptq, quant, sparsegpt, wanda

    record: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    on_rows = {} if rows is None else {"mesh": rows[0], "row_axis": rows[1]}
    if method == "wanda":
        if rows is not None:  # the (d_in,) scaler next to every row block
            scaler = jax.device_put(scaler, jax.sharding.NamedSharding(rows[0], jax.P()))
        mask = wanda.prune(W, scaler, opts["sparsity"], opts["nm"])
        W_new, extras["mask"] = jnp.where(mask, 0, W), mask
    elif method == "magnitude":
        mask = baselines.magnitude_prune(W, opts["sparsity"], opts["nm"])
        W_new, extras["mask"] = jnp.where(mask, 0, W), mask
    elif method == "rtn":
        W_new, extras["params"] = baselines.rtn_quantize(W, opts["bits"], opts["group_size"], opts["sym"])
    else:
        if method == "sparsegpt":
            quantizer = (
                None if opts["bits"] is None else quant.Quantizer(bits=int(opts["bits"]), sym=opts["sym"])
            )
            W_new, info = sparsegpt.prune(W, H, opts["sparsity"], opts["nm"], opts["blocksize"],
                                          opts["percdamp"], quantizer=quantizer, return_info=True,
                                          **on_rows)  # fmt: skip
            extras["mask"] = info.mask
            if info.params is not None:
                extras["params"] = info.params
        else:
            W_new, params, info = gptq.quantize(
                W, H, opts["bits"], opts["group_size"], opts["sym"], opts["act_order"],
                opts["static_groups"], opts["blocksize"], opts["percdamp"], mse=opts["mse"],
                return_info=True, **on_rows,
            )  # fmt: skip
            extras["params"] = params
        record.update(loss=float(info.loss), loss_kind="obs", percdamp=float(info.percdamp),
                      damp=float(info.damp), attempts=int(info.attempts), fallback=bool(info.fallback))  # fmt: skip
    dW = W_new - W
    out_err = float(jnp.sum(jnp.matmul(dW, H, precision=jax.lax.Precision.HIGHEST) * dW) / 2)
    record["output_error"] = out_err
    if "loss" not in record:
        record.update(
            loss=out_err, loss_kind="output_error", percdamp=None, damp=None, attempts=1, fallback=False
        )
    record["sparsity"] = float(jnp.mean(W_new == 0))
    return W_new, record, extras


def _put(x: np.ndarray, sharding) -> jax.Array:
    from zipcal_jax.distributed import put_global

    return put_global(x, sharding) if sharding is not None else jnp.asarray(x)


@dataclasses.dataclass
class _Run:
    """The settings one ``compress`` call threads through its layers."""

    method: str
    opts: dict[str, Any]
    n_seq: int
    n_tokens: int
    propagate: str
    true_sequential: bool
    mesh: jax.sharding.Mesh | None
    device: jax.Device  # where unsplit solves run: this process's first device of the mesh
    replicated: Any  # NamedSharding(mesh, P()) or None
    solve_axis: str | None
    place: capture.HostOffload | None
    callback: Callable[[str, jax.Array, dict], None] | None
    report: dict[str, Any]
    seconds: dict[str, float]

    def sums_sharding(self, d: int):
        """Accumulators: rows over ``solve_axis`` when ``d`` divides evenly, else replicated."""
        from jax.sharding import NamedSharding, PartitionSpec

        if self.solve_axis is not None and d % self.mesh.shape[self.solve_axis] == 0:
            return NamedSharding(self.mesh, PartitionSpec(self.solve_axis, None))
        return self.replicated

    def weight(self, W: np.ndarray) -> jax.Array:
        """``W (d_out, d_in)`` as float32 on device: rows over ``solve_axis`` when they divide
        evenly (the OBS solvers pad otherwise), else on ``device``."""
        from jax.sharding import NamedSharding, PartitionSpec

        from zipcal_jax.distributed import put_global

        if self.solve_axis is not None and W.shape[0] % self.mesh.shape[self.solve_axis] == 0:
            return put_global(W.astype(np.float32), NamedSharding(self.mesh, PartitionSpec(self.solve_axis)))
        return jax.device_put(W.astype(np.float32), self.device)

    def to_device(self, h):  # a batch of activations
        return self.place.to_device(h, batch=True) if self.place is not None else h

    def to_host(self, h):
        return self.place.to_host(h, batch=True) if self.place is not None else h


def compress(
    model,
    calibration: Any,
    method: str = "wanda",
    *,
    propagate: str = "compressed",
    true_sequential: bool = False,
    batch_size: int = 8,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    data_axis: str = "data",
    solve_axis: str | None = None,
    offload: bool | str = False,
    callback: Callable[[str, jax.Array, dict], None] | None = None,
    stop_after: int | None = None,
    **options: Any,
):
    """Compress every decoder-layer linear of ``model`` in place, layer by layer.

    Args:
      model: a ``zipcal_jax.models.llama.Llama`` (its linears are replaced; ``lm_head`` and the
        embedding are kept, as in the references).
      calibration: a ``CalibrationSet`` or an ``(ids, mask)`` pair of ``(samples, seqlen)`` arrays.
      method: ``"wanda"`` (options ``sparsity``, ``nm``), ``"sparsegpt"`` (+ ``blocksize``,
        ``percdamp``), ``"gptq"`` (``bits``, ``group_size``, ``sym``, ``act_order``,
        ``static_groups``, ``blocksize``, ``percdamp``, ``mse``), ``"magnitude"`` (``sparsity``,
        ``nm``) or ``"rtn"`` (``bits``, ``group_size``, ``sym``). Defaults: the low-level
        functions' (``METHODS``); ``nm`` may be ``"2:4"`` or ``(2, 4)``.
      propagate: ``"compressed"`` (next layer's inputs from the compressed layer, the references)
        or ``"dense"`` (from the dense layer).
      true_sequential: recollect inputs after each group q/k/v → o → gate/up → down.
      batch_size: samples per forward (rounded up to a multiple of the ``data`` axis size).
      checkpoint_dir: save progress per layer there and resume from it.
      progress: tqdm bar over layers.
      mesh, data_axis: shard samples over ``mesh.shape[data_axis]`` devices.
      solve_axis: a mesh axis (``"model"``, or ``data_axis`` to reuse it) that splits each
        linear's rows (output channels) across devices for the solve, with ``H`` replicated, and
        the rows of the Hessian accumulators (reduce-scattered instead of replicated). Same
        masks and codes as one device; weights equal up to float summation order (see
        ``gptq.obs_solve_rows``). None (default): solves run on the first device.
      offload: stream layers through device memory: ``True`` (``"pinned_host"`` where the backend
        has that memory kind, else ``"numpy"``), ``"pinned_host"`` or ``"numpy"``. Every weight
        of the model and the activations between layers wait in host memory; the layer being
        compressed (and one batch of activations at a time) moves onto the device(s) and back.
        On return the model's weights are in host memory (``docs/memory.md``). The result is
        bit-identical to ``offload=False`` (default: everything stays where it is).
      callback: ``callback(name, W_new, extras)`` after each linear (``extras``: ``mask`` and/or
        ``params`` (``QuantParams``), and the module's report record).
      stop_after: test hook: raise :class:`StopAfterLayer` once layer ``stop_after`` is saved.

    Returns ``(model, report)`` (the same model object, compressed).
    """
    from tqdm.auto import tqdm

    from zipcal_jax.distributed import local_devices_of, put_global

    opts = resolve_options(method, options)
    if propagate not in ("compressed", "dense"):
        raise ValueError(f"propagate={propagate!r} must be 'compressed' or 'dense'")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive number of samples")
    if mesh is not None and data_axis not in mesh.axis_names:
        raise ValueError(f"data_axis={data_axis!r} is not an axis of the mesh {tuple(mesh.axis_names)}")
    if solve_axis is not None and (mesh is None or solve_axis not in mesh.axis_names):
        names = None if mesh is None else tuple(mesh.axis_names)
        raise ValueError(
            f"solve_axis={solve_axis!r} needs a mesh= with that axis (mesh axes: {names}), e.g. "
            f"jax.make_mesh((n,), ('{data_axis}',), axis_types=(AxisType.Auto,)) and solve_axis='{data_axis}'"
        )
    ids, tmask = _calibration_arrays(calibration, model.cfg.vocab_size)
    n_seq, T = ids.shape
    n_tokens = int(tmask.sum())
    batch_sharding = replicated = None
    batch_size = int(batch_size)
    first_device = jax.local_devices()[0]
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec

        n_dev = mesh.shape[data_axis]
        batch_size = -(-batch_size // n_dev) * n_dev
        batch_sharding = NamedSharding(mesh, PartitionSpec(data_axis))
        replicated = NamedSharding(mesh, PartitionSpec())
        first_device = local_devices_of(mesh)[0]  # (process 0's first device is not ours to use)
    kind = capture.resolve_offload(offload, first_device)
    place = None
    if kind is not None:
        one = jax.sharding.SingleDeviceSharding(first_device)
        place = capture.HostOffload(kind, replicated or one, batch_sharding or one, first_device)
        place.model_to_host(model)  # every weight waits in host memory; one layer at a time moves in
    batch_size = min(batch_size, n_seq) if mesh is None else batch_size
    n_pad = -(-n_seq // batch_size) * batch_size
    ids = np.pad(ids, ((0, n_pad - n_seq), (0, 0)))
    tmask = np.pad(tmask, ((0, n_pad - n_seq), (0, 0)))
    starts = range(0, n_pad, batch_size)
    masks = [_put(tmask[s : s + batch_size], batch_sharding) for s in starts]

    report: dict[str, Any] = {
        "method": method,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
        "propagate": propagate,
        "true_sequential": bool(true_sequential),
        "batch_size": batch_size,
        "devices": 1 if mesh is None else int(mesh.shape[data_axis]),
        "solve_shards": 1 if solve_axis is None else int(mesh.shape[solve_axis]),
        "offload": kind,
        "calibration": {"samples": n_seq, "seqlen": T, "tokens": n_tokens},
        "modules": {},
        "layers_resumed": 0,
    }
    seconds = {"forward": 0.0, "solve": 0.0}
    start_layer, inps = 0, None
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fingerprint = checkpoint.fingerprint(model, ids, tmask, method, report["options"], propagate,
                                         bool(true_sequential), batch_size)  # fmt: skip
    if ckpt is not None:
        start_layer, saved = checkpoint.resume(ckpt, model, fingerprint, place)
        if saved is not None:
            report["modules"], seconds = saved["modules"], saved["seconds"]
            report["layers_resumed"] = start_layer
            if start_layer < len(model.layers):
                inps = checkpoint.restore_inputs(ckpt, start_layer, batch_sharding, len(starts), place)

    run = _Run(method, opts, n_seq, n_tokens, propagate, bool(true_sequential), mesh, first_device,
               replicated, solve_axis, place, callback, report, seconds)  # fmt: skip
    t0 = time.perf_counter()
    if inps is None:
        gd, st = nnx.split(model.embed)  # only the embedding: the layers stay where they are
        if place is not None:
            st = place.to_device(st)
        elif replicated is not None:
            st = put_global(st, replicated)
        inps = [
            run.to_host(capture.embed(gd, st, _put(ids[s : s + batch_size], batch_sharding))) for s in starts
        ]
        del st
    seconds["forward"] += time.perf_counter() - t0

    layers = range(start_layer, len(model.layers))
    for i in tqdm(layers, desc=f"compress ({method})", unit="layer", disable=not progress):
        if place is not None:
            place.module_to_device(model.layers[i])
        inps = _compress_layer(model, i, inps, masks, run)
        if place is not None:
            place.module_to_host(model.layers[i])
        if ckpt is not None:
            checkpoint.save_progress(ckpt, model, i, inps, report, seconds, fingerprint)
        if stop_after is not None and i >= stop_after:
            raise StopAfterLayer(f"stopped after layer {i} (stop_after={stop_after})")

    report["seconds"] = seconds
    report["totals"] = _totals(report["modules"], seconds)
    return model, report


def _compress_layer(model, i: int, inps: list, masks: list, run: _Run) -> list:
    """Statistics, solves and re-forward of decoder layer ``i`` (on device); returns the next
    layer's inputs (in host memory with offload). Device buffers die with this frame."""
    from zipcal_jax.distributed import local_value, put_global
    from zipcal_jax.models import llama

    layer, seconds, mesh = model.layers[i], run.seconds, run.mesh
    dense_outs = None
    groups = [capture.GROUPS] if not run.true_sequential else [(g,) for g in capture.GROUPS]
    for group in groups:
        t0 = time.perf_counter()
        gd, st = nnx.split(layer)
        if run.replicated is not None:
            st = put_global(st, run.replicated)
        sums = capture.zero_sums(layer, group, run.sums_sharding)
        keep = run.propagate == "dense" and dense_outs is None  # the first pass runs the dense layer
        outs = []
        for h, m in zip(inps, masks):
            out, sums = capture.accumulate(gd, st, run.to_device(h), m, sums, group)
            if keep:
                outs.append(run.to_host(out))
        if keep:
            dense_outs = outs
        jax.block_until_ready(sums)
        del st  # the dense weights of the forward: the solves replace them one by one
        seconds["forward"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        for site in group:
            xtx = sums.pop(site)
            if mesh is not None and run.solve_axis is None:
                xtx = capture.on_device(xtx, run.device)
            scaler = capture.wanda_scaler_row(xtx, run.n_seq) if run.method == "wanda" else None
            H = capture.hessian(xtx, run.n_tokens)  # shared by the site's linears (q/k/v, gate/up)
            del xtx  # one (d, d) buffer per site from here on
            for rel in capture.SITES[site]:
                name = f"layers.{i}.{rel}"
                t1 = time.perf_counter()
                W = run.weight(llama.get_linear_weight(model, name))
                rows = None if run.solve_axis is None else (mesh, run.solve_axis)
                W_new, record, extras = _compress_linear(W, scaler, H, run.method, run.opts, rows)
                if not W_new.is_fully_addressable:  # rows solved on other processes' devices too
                    W_new, extras = jax.tree.map(local_value, (W_new, extras))
                llama.set_linear_weight(model, name, W_new)
                record["seconds"] = time.perf_counter() - t1
                run.report["modules"][name] = record
                if run.callback is not None:
                    run.callback(name, W_new, {**extras, "record": record})
            del H, scaler
        seconds["solve"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    if run.propagate == "dense":
        inps = dense_outs
    else:
        gd, st = nnx.split(layer)
        if run.replicated is not None:
            st = put_global(st, run.replicated)
        inps = [run.to_host(capture.forward(gd, st, run.to_device(h), m)) for h, m in zip(inps, masks)]
    jax.block_until_ready(inps)
    seconds["forward"] += time.perf_counter() - t0
    return inps


def _totals(modules: dict[str, dict], seconds: dict[str, float]) -> dict[str, Any]:
    recs = list(modules.values())
    return {
        "modules": len(recs),
        "loss": float(sum(r["loss"] for r in recs)),
        "output_error": float(sum(r["output_error"] for r in recs)),
        "mean_sparsity": float(np.mean([r["sparsity"] for r in recs])) if recs else 0.0,
        "fallbacks": int(sum(bool(r["fallback"]) for r in recs)),
        "max_attempts": int(max((r["attempts"] for r in recs), default=0)),
        "seconds_forward": float(seconds["forward"]),
        "seconds_solve": float(seconds["solve"]),
    }


def dense_statistics(model, calibration: Any, batch_size: int = 8) -> tuple[dict[str, np.ndarray], int]:
    """``{"layers.i.SITE": Σ x xᵀ}`` (float32 NumPy) of every site of the *uncompressed* model over
    the real tokens, and that token count (``H = 2/N · Σ``). One capture for many compressors."""
    ids, tmask = _calibration_arrays(calibration, model.cfg.vocab_size)
    out: dict[str, np.ndarray] = {}
    bs = min(int(batch_size), len(ids))
    n_pad = -(-len(ids) // bs) * bs
    ids = np.pad(ids, ((0, n_pad - len(ids)), (0, 0)))
    tmask_p = np.pad(tmask, ((0, n_pad - len(tmask)), (0, 0)))
    starts = range(0, n_pad, bs)
    gd, st = nnx.split(model.embed)
    inps = [capture.embed(gd, st, jnp.asarray(ids[s : s + bs])) for s in starts]
    masks = [jnp.asarray(tmask_p[s : s + bs]) for s in starts]
    for i, layer in enumerate(model.layers):
        gd, st = nnx.split(layer)
        sums = capture.zero_sums(layer, capture.GROUPS)
        outs = []
        for h, m in zip(inps, masks):
            o, sums = capture.accumulate(gd, st, h, m, sums, capture.GROUPS)
            outs.append(o)
        out.update({f"layers.{i}.{s}": np.asarray(v) for s, v in sums.items()})
        inps = outs
    return out, int(tmask.sum())
