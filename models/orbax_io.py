"""Orbax checkpoints of a :class:`~zipcal_jax.models.llama.Llama`: the ``params/`` folder of a save.

:func:`_write_orbax` writes the NNX ``Param`` state as a nested dict (layer indices as strings) with
``ocp.StandardCheckpointer``; :func:`_load_orbax` restores it into a model built from the marker's
config, each array placed on one device or with its
:func:`~zipcal_jax.models.sharding.param_sharding` on a mesh, after :func:`_check_stored_shapes` has
compared the stored shapes with the config. The folder layout, the marker and the loading and
saving around these are :mod:`zipcal_jax.models.persist`'s, which imports this module when it
loads or saves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
from flax import nnx
from jax.sharding import SingleDeviceSharding

from zipcal_jax.models.llama import Llama, LlamaConfig
from zipcal_jax.models.persist import MARKER, _Options
from zipcal_jax.models.sharding import param_sharding

_PARAMS = "params"


def _load_orbax(folder: Path, info: dict[str, Any], opts: _Options) -> Llama:
    import orbax.checkpoint as ocp

    try:
        cfg = LlamaConfig.from_hf_config(info["config"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{folder / MARKER}: invalid model config ({err})") from err
    params_dir = folder / _PARAMS
    if not params_dir.is_dir():
        raise ValueError(f"{folder} has {MARKER} but no {_PARAMS}/ folder; the checkpoint is incomplete")
    abstract = nnx.eval_shape(
        lambda: Llama(cfg, dtype=opts.dtype, param_dtype=opts.param_dtype, rngs=nnx.Rngs(0))
    )
    graphdef, state = nnx.split(abstract)
    flat = nnx.to_flat_state(state)
    device = SingleDeviceSharding(jax.local_devices()[0])
    target: dict[str, Any] = {}
    for path, var in flat:
        sharding = device if opts.mesh is None else param_sharding(opts.mesh, path, var.shape)
        _nest(target, path, jax.ShapeDtypeStruct(var.shape, var.dtype, sharding=sharding))
    try:
        with ocp.StandardCheckpointer() as ckptr:
            _check_stored_shapes(ckptr, params_dir, {".".join(map(str, p)): v.shape for p, v in flat})
            restored = ckptr.restore(params_dir.resolve(), target)
    except _Mismatch:
        raise
    except Exception as err:  # orbax/tensorstore raise many types for missing, cut or mismatched data
        raise _restore_error(params_dir, err) from err
    for path, var in flat:
        value = restored
        for key in path:
            value = value[str(key)]
        var.set_value(value)
    return nnx.merge(graphdef, state)


class _Mismatch(ValueError):
    """The stored arrays disagree with the marker's config (already a complete message)."""


def _restore_error(params_dir: Path, err: Exception) -> ValueError:
    return ValueError(
        f"cannot restore the Orbax checkpoint {params_dir}: it is truncated, corrupt, or does not match "
        f"the config in {MARKER} ({type(err).__name__}: {str(err)[:500]}); save the model again"
    )


def _check_stored_shapes(ckptr: Any, params_dir: Path, expected: dict[str, tuple[int, ...]]) -> None:
    """Compare the checkpoint's metadata with the parameters the config implies; one ValueError
    lists every missing, unexpected or wrongly shaped array (before any data is read)."""
    tree = ckptr.metadata(params_dir.resolve()).item_metadata
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0] if tree is not None else []
    if not leaves:  # orbax logs and returns nothing when its metadata files are unreadable
        raise ValueError("its array metadata is missing or unreadable")
    stored = {".".join(str(getattr(k, "key", k)) for k in path): tuple(m.shape) for path, m in leaves}
    problems = [f"missing array {n}" for n in sorted(expected.keys() - stored.keys())]
    problems += [f"unexpected array {n}" for n in sorted(stored.keys() - expected.keys())]
    problems += [
        f"array {n} has shape {stored[n]}, the config implies {tuple(expected[n])}"
        for n in sorted(expected.keys() & stored.keys())
        if stored[n] != tuple(expected[n])
    ]
    if problems:
        listing = "".join(f"\n  - {p}" for p in problems[:20])
        more = f"\n  - … ({len(problems) - 20} more)" if len(problems) > 20 else ""
        raise _Mismatch(
            f"the Orbax checkpoint {params_dir} does not match the config in {MARKER}:{listing}{more}\n"
            "The folder was edited after llama.save; save the model again."
        )


def _nest(tree: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(str(key), {})
    tree[str(path[-1])] = value


def _write_orbax(model: Llama, folder: Path) -> None:
    import orbax.checkpoint as ocp

    tree: dict[str, Any] = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        _nest(tree, path, var.get_value())
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save((folder / _PARAMS).resolve(), tree)
