"""Sharding of :class:`~zipcal_jax.models.llama.Llama` parameters on a device mesh.

Every parameter has *logical* axes (``vocab``, ``embed``, ``heads``, ``kv_heads``, ``mlp``) looked
up from its last two path names; ``rules`` map logical axes to mesh axes. The default rules give
tensor parallelism over a ``model`` mesh axis and batch parallelism over ``data``. A dimension that
a mesh axis does not divide stays replicated, so any mesh works with any model size.

The names are re-exported from :mod:`zipcal_jax.models.llama` (``llama.shard``, ``llama.param_sharding``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

if TYPE_CHECKING:
    from zipcal_jax.models.llama import Llama

__all__ = ["DEFAULT_RULES", "batch_sharding", "logical_axes", "param_sharding", "shard"]

# Logical axes of each parameter, keyed by its last two path names (module, variable).
_AXES: dict[tuple[str, str], tuple[str | None, ...]] = {
    ("embed", "embedding"): ("vocab", "embed"),
    ("lm_head", "kernel"): ("embed", "vocab"),
}
for _name, (_in, _out) in {
    "q_proj": ("embed", "heads"), "k_proj": ("embed", "kv_heads"), "v_proj": ("embed", "kv_heads"),
    "o_proj": ("heads", "embed"), "gate_proj": ("embed", "mlp"), "up_proj": ("embed", "mlp"),
    "down_proj": ("mlp", "embed"),
}.items():  # fmt: skip
    _AXES[(_name, "kernel")], _AXES[(_name, "bias")] = (_in, _out), (_out,)

# Logical axis → mesh axis: tensor parallelism over "model", batch over "data".
DEFAULT_RULES: dict[str, str | None] = {
    "batch": "data", "vocab": "model", "heads": "model", "kv_heads": "model", "mlp": "model", "embed": None,
}  # fmt: skip


def logical_axes(path: tuple[Any, ...]) -> tuple[str | None, ...]:
    """Logical axis names of the parameter at ``path`` (e.g. ``('layers', 0, 'mlp', 'up_proj', 'kernel')``);
    norms → ``("embed",)``."""
    return _AXES.get((str(path[-2]), str(path[-1])), ("embed",))


def param_sharding(
    mesh: Mesh, path: tuple[Any, ...], shape: tuple[int, ...], rules: Mapping[str, str | None] = DEFAULT_RULES
) -> NamedSharding:
    """``NamedSharding`` of the parameter at ``path`` from its logical axes and ``rules``; an axis
    stays replicated when its mesh axis is absent or does not divide the dimension."""
    spec = []
    for name, dim in zip(logical_axes(path), shape):
        m = rules.get(name) if name is not None else None
        spec.append(m if m in mesh.shape and dim % mesh.shape[m] == 0 else None)
    return NamedSharding(mesh, P(*spec))


def shard(model: Llama, mesh: Mesh, rules: Mapping[str, str | None] = DEFAULT_RULES) -> Llama:
    """Place every parameter with a ``NamedSharding`` from its logical axes and ``rules`` (in place;
    returns ``model``). The mesh must use ``AxisType.Auto`` axes; put inputs on
    ``batch_sharding(mesh)`` and XLA propagates the rest."""
    explicit = [n for n, t in zip(mesh.axis_names, mesh.axis_types) if t == AxisType.Explicit]
    if explicit:
        raise ValueError(
            f"mesh axes {explicit} are Explicit; build the mesh with "
            f"jax.make_mesh(..., axis_types=(AxisType.Auto,) * {len(mesh.axis_names)})"
        )
    state = nnx.state(model, nnx.Param)
    for path, var in nnx.to_flat_state(state):
        value = var.get_value()
        var.set_value(jax.device_put(value, param_sharding(mesh, path, value.shape, rules)))
    nnx.update(model, state)
    return model


def batch_sharding(mesh: Mesh, rules: Mapping[str, str | None] = DEFAULT_RULES) -> NamedSharding:
    """Sharding for (B, T) inputs: batch over the ``batch`` rule's mesh axis."""
    return NamedSharding(mesh, P(rules.get("batch") if rules.get("batch") in mesh.shape else None, None))
