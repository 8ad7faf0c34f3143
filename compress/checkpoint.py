"""Per-layer checkpoints of :func:`zipcal_jax.compress.pipeline.compress` (its docstring's
"Resume" paragraph): after layer ``i``, ``layer_{i:04d}/`` (the seven compressed weights, Orbax),
``inputs_{i+1:04d}/`` (the next layer's inputs, one array per batch, saved shard by shard) and
``state.json`` (format, settings fingerprint, report so far, ``next_layer``; written last and
atomically, by process 0 alone when several processes share the folder).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zipcal_jax.compress import capture

STATE = "state.json"
FORMAT = "zipcal-compress-checkpoint/orbax"
LAYER = "layer_{:04d}"  # Orbax: {"weights": {"self_attn": {"q_proj": W, ...}, "mlp": {...}}}
INPUTS = "inputs_{:04d}"  # Orbax: {"inputs": {"batch_00000": h, ...}}, that layer's inputs
ORBAX_TMP = ".orbax-checkpoint-tmp"  # Orbax's temporary folder suffix (renamed away when complete)


def fingerprint(model, ids, mask, method, options, propagate, true_sequential, batch_size) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ids).tobytes())
    h.update(np.ascontiguousarray(mask).tobytes())
    cfg = dataclasses.asdict(model.cfg)
    settings = [cfg, method, options, propagate, true_sequential, batch_size, str(model.dtype)]
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _atomic_json(path: Path, obj: Any) -> None:
    from zipcal_jax.cache import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())


def resume(ckpt: Path, model, fingerprint_: str, place=None) -> tuple[int, dict[str, Any] | None]:
    """Restore the finished layers' weights of the run ``fingerprint_`` from ``ckpt`` into ``model``
    (through device memory and back to host memory with offload, ``place``). Returns
    ``(next_layer, {"modules": ..., "seconds": ...})`` of the saved report, or ``(0, None)``
    when the folder holds no state yet; another run's or format's checkpoint raises ValueError, and
    so does a folder that several processes do not see alike (it must be on a shared filesystem)."""
    from zipcal_jax.distributed import each_process
    from zipcal_jax.models import llama

    state = json.loads((ckpt / STATE).read_text()) if (ckpt / STATE).is_file() else None
    found = each_process(int(state.get("next_layer", 0)) if state else 0).tolist()
    if len(set(found)) > 1:  # every process raises alike, before any other collective could hang
        raise ValueError(
            f"the processes find {found} finished layers in {ckpt} (process 0 first): with several "
            "processes checkpoint_dir must be a folder every process sees (a shared filesystem)"
        )
    if state is None:
        return 0, None
    if state.get("format") != FORMAT:
        raise ValueError(
            f"{ckpt} holds a compression checkpoint in another format ({state.get('format')!r}, "
            f"expected {FORMAT!r}: written by another zipcal version); use a fresh --checkpoint-dir "
            "or delete it"
        )
    if state.get("fingerprint") != fingerprint_:
        raise ValueError(
            f"{ckpt} holds a checkpoint of another compression run (model, calibration set or "
            "settings differ); use a fresh --checkpoint-dir or delete it"
        )
    next_layer = int(state["next_layer"])
    clean(ckpt, next_layer)
    for i in range(next_layer):
        saved = orbax_restore(ckpt / LAYER.format(i))["weights"]
        if place is not None:
            place.module_to_device(model.layers[i])
        for rel in llama.LINEAR_MODULES:
            W = saved
            for key in rel.split("."):
                W = W[key]
            llama.set_linear_weight(model, f"layers.{i}.{rel}", W)
        if place is not None:
            place.module_to_host(model.layers[i])
    return next_layer, state["report"]


def save_progress(ckpt: Path, model, i: int, inps, report, seconds, fingerprint) -> None:
    """Layer ``i`` is done: its weights, the inputs of layer ``i + 1`` (both Orbax, complete on
    return), then the state file (atomic); then layer ``i``'s inputs are superseded."""
    import orbax.checkpoint as ocp

    from zipcal_jax.distributed import barrier, is_writer
    from zipcal_jax.models import llama

    ckpt.mkdir(parents=True, exist_ok=True)
    weights: dict[str, Any] = {}
    for rel in llama.LINEAR_MODULES:
        W = llama.get_linear_weight(model, f"layers.{i}.{rel}")
        _nest(weights, rel.split("."), np.ascontiguousarray(W))
    last = i + 1 >= len(model.layers)
    # force=True: a folder of layer i (or inputs i + 1) can only be left by a run that crashed
    # before its state file counted it; Orbax writes <name>.orbax-checkpoint-tmp and renames it.
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save((ckpt / LAYER.format(i)).resolve(), {"weights": weights}, force=True)
        if not last:
            batches = {f"batch_{k:05d}": capture.savable(h) for k, h in enumerate(inps)}
            ckptr.save((ckpt / INPUTS.format(i + 1)).resolve(), {"inputs": batches}, force=True)
        ckptr.wait_until_finished()
    state = {"format": FORMAT, "fingerprint": fingerprint, "next_layer": i + 1,
             "report": {"modules": report["modules"], "seconds": seconds}}  # fmt: skip
    if is_writer():  # one process writes the shared folder's bookkeeping; every process waits for it
        _atomic_json(ckpt / STATE, state)
        shutil.rmtree(ckpt / INPUTS.format(i), ignore_errors=True)  # superseded
    barrier(f"zipcal-compress-layer-{i}")


def _nest(tree: dict[str, Any], keys, value: Any) -> None:
    keys = list(keys)
    for key in keys[:-1]:
        tree = tree.setdefault(str(key), {})
    tree[str(keys[-1])] = value


def orbax_restore(path: Path, sharding=None) -> dict[str, Any]:
    """The Orbax checkpoint at ``path`` as stored (nested dicts): NumPy arrays, or ``jax.Array``s
    placed with ``sharding`` when given. A missing or unreadable folder raises ValueError."""
    import orbax.checkpoint as ocp

    try:
        with ocp.StandardCheckpointer() as ckptr:
            meta = ckptr.metadata(path.resolve()).item_metadata
            leaves = jax.tree_util.tree_flatten_with_path(meta)[0] if meta is not None else []
            if not leaves:  # Orbax logs and returns nothing when its metadata files are unreadable
                raise ValueError("its array metadata is missing or unreadable")
            target: dict[str, Any] = {}
            for keypath, m in leaves:
                keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in keypath]
                _nest(target, keys, jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding))
            return ckptr.restore(path.resolve(), target)
    except Exception as err:  # orbax/tensorstore raise many types for missing, cut or corrupt data
        raise ValueError(
            f"cannot restore the compression checkpoint {path}, which {path.parent / STATE} counts as "
            f"complete ({type(err).__name__}: {str(err)[:300]}); the folder was damaged after it was "
            "written: delete the checkpoint folder and compress again"
        ) from err


def restore_inputs(ckpt: Path, layer: int, batch_sharding, n_batches: int, place=None) -> list:
    """The inputs of ``layer`` saved by :func:`save_progress` (one array per batch), on ``batch_sharding`` (a ``mesh=``
    run: each device reads its own shards) or on the default device; with offload (``place``)
    read as NumPy and moved to its host memory, never all onto the device(s)."""
    path = ckpt / INPUTS.format(layer)
    batches = orbax_restore(path, batch_sharding if place is None else None)["inputs"]
    if len(batches) != n_batches:
        raise ValueError(f"{path} holds {len(batches)} batches of inputs, expected {n_batches}")
    if place is not None:
        return [place.to_host(batches[k], batch=True) for k in sorted(batches)]
    return [jnp.asarray(batches[k]) if batch_sharding is None else batches[k] for k in sorted(batches)]


def clean(ckpt: Path, next_layer: int) -> None:
    """Before resuming at ``next_layer``: remove Orbax temporary folders (a crash during a save)
    and inputs of other layers (a crash between the state file and the deletion, or before the
    state file counted them); they are never read. One process cleans, every process waits."""
    from zipcal_jax.distributed import barrier, is_writer

    for entry in ckpt.iterdir() if is_writer() else ():
        stale_inputs = entry.name.startswith("inputs_") and entry.name != INPUTS.format(next_layer)
        if ORBAX_TMP in entry.name or stale_inputs:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    barrier("zipcal-compress-clean")
