"""Calibration capture: the inputs every linear of a decoder layer sees, and their statistics.

A LLaMA decoder layer has four *input sites*; the seven linears read them as follows::

    attn_in = input_layernorm(h)                       -> q_proj, k_proj, v_proj   (B, T, D)
    o_in    = attention(rope(q), rope(k), v)           -> o_proj                   (B, T, N*H)
    mlp_in  = post_attention_layernorm(h + o_proj(o_in)) -> gate_proj, up_proj     (B, T, D)
    down_in = silu(gate_proj(mlp_in)) * up_proj(mlp_in) -> down_proj               (B, T, F)

:func:`layer_sites` re-implements ``DecoderLayer.__call__`` from its submodules and returns these
activations next to the layer output (bit-identical to ``layer(h, positions, mask)``).
:func:`accumulate` adds ``Σ_t x_t x_tᵀ`` over the real (unmasked) tokens of a batch to a running
float32 sum per site, under ``jit``: one H per site, shared by the linears that read it (anchors
note §8.2). ``H = 2/N · Σ`` with ``N`` the real tokens (:func:`hessian`); Wanda's ``scaler_row``
is ``diag(Σ) / N_seq`` (note §1.1, sequences, not tokens; a per-column constant either way).

Sharding: a batch whose sample axis is sharded over a mesh axis (``data``) gives the same jitted
program a sharded contraction; XLA reduces the partial sums across devices (a psum) and the
sums come back replicated, or, when the accumulators were created with their rows split over a
mesh axis (:func:`zero_sums`), reduce-scattered: each device then holds ``d / n`` rows of each H.

Host offload (:class:`HostOffload`): the pipeline's streaming mode keeps every decoder layer's
weights and the calibration activations in host memory and moves one layer, and one batch of
activations at a time, onto the device(s) — a jax ``pinned_host`` memory kind where the backend
has one (GPU, TPU and the CPU backend do: on CPU it is the same RAM, but the code path is the
same), or NumPy arrays in process memory.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zipcal_jax.models.llama import apply_rope, attention, positions_from_mask, rope_frequencies

# Input site -> the linears (relative names, LINEAR_MODULES order) that read it.
SITES: dict[str, tuple[str, ...]] = {
    "attn_in": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "o_in": ("self_attn.o_proj",),
    "mlp_in": ("mlp.gate_proj", "mlp.up_proj"),
    "down_in": ("mlp.down_proj",),
}
SITE_OF = {linear: site for site, linears in SITES.items() for linear in linears}
# The true-sequential groups, in forward order (SparseGPT/GPTQ ``--true-sequential``, note §2.4).
GROUPS: tuple[str, ...] = ("attn_in", "o_in", "mlp_in", "down_in")

_HIGHEST = jax.lax.Precision.HIGHEST


def layer_sites(layer, h: jax.Array, positions: jax.Array, mask: jax.Array) -> tuple[jax.Array, dict]:
    """``DecoderLayer`` forward that also returns the four input sites.

    h: (B, T, D); positions: (B, T) int32; mask: (B, T, T) bool (as ``Llama.prepare_inputs``).
    Returns ``(out (B, T, D), {"attn_in", "o_in", "mlp_in", "down_in"})``.
    """
    attn, mlp = layer.self_attn, layer.mlp
    cfg = attn.cfg
    B, T, _ = h.shape
    N, K, H = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    inv_freq = rope_frequencies(cfg)
    attn_in = layer.input_layernorm(h)  # (B, T, D)
    q = apply_rope(attn.q_proj(attn_in).reshape(B, T, N, H), positions, inv_freq)
    k = apply_rope(attn.k_proj(attn_in).reshape(B, T, K, H), positions, inv_freq)
    v = attn.v_proj(attn_in).reshape(B, T, K, H)
    o_in = attention(q, k, v, mask)  # (B, T, N*H)
    h = h + attn.o_proj(o_in)
    mlp_in = layer.post_attention_layernorm(h)  # (B, T, D)
    down_in = jax.nn.silu(mlp.gate_proj(mlp_in)) * mlp.up_proj(mlp_in)  # (B, T, F)
    out = h + mlp.down_proj(down_in)
    return out, {"attn_in": attn_in, "o_in": o_in, "mlp_in": mlp_in, "down_in": down_in}


def positions_and_mask(token_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B, T) bool real-token mask → positions (B, T) and the causal key mask (B, T, T), exactly
    as ``Llama.prepare_inputs`` builds them."""
    T = token_mask.shape[1]
    mask = jnp.tril(jnp.ones((T, T), bool)) & token_mask[:, None, :]
    return positions_from_mask(token_mask), mask


@functools.partial(jax.jit, static_argnums=0)
def embed(graphdef: nnx.GraphDef, state: nnx.State, ids: jax.Array) -> jax.Array:
    """Layer-0 inputs of a batch: the embedding of ``ids`` (B, T) → (B, T, D). ``graphdef/state``
    of the model's ``embed`` module only (``Llama.embed_tokens`` calls it), so the rest of the
    model stays where it is."""
    return nnx.merge(graphdef, state)(ids)


@functools.partial(jax.jit, static_argnums=0)
def forward(graphdef: nnx.GraphDef, state: nnx.State, h: jax.Array, token_mask: jax.Array) -> jax.Array:
    """One decoder layer (graphdef/state of a ``DecoderLayer``) on a batch: (B, T, D) → (B, T, D)."""
    positions, mask = positions_and_mask(token_mask)
    return nnx.merge(graphdef, state)(h, positions, mask)


@functools.partial(jax.jit, static_argnums=(0, 5), donate_argnums=4)
def accumulate(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    h: jax.Array,
    token_mask: jax.Array,
    sums: dict[str, jax.Array],
    sites: tuple[str, ...],
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Run one decoder layer on a batch and add ``Σ x xᵀ`` over its real tokens to ``sums``.

    h: (B, T, D) layer inputs; token_mask: (B, T) bool; sums: {site: float32 (d, d)} for every
    site in ``sites`` (donated). Returns ``(layer output (B, T, D), updated sums)``.
    """
    positions, mask = positions_and_mask(token_mask)
    out, acts = layer_sites(nnx.merge(graphdef, state), h, positions, mask)
    w = token_mask.astype(jnp.float32)[..., None]  # padding contributes nothing
    new = {}
    for site in sites:
        x = acts[site].astype(jnp.float32)  # (B, T, d)
        new[site] = sums[site] + jnp.einsum("BTi,BTj->ij", x * w, x, precision=_HIGHEST)
    return out, new


def site_dims(layer) -> dict[str, int]:
    """Input width of each site of a ``DecoderLayer``."""
    cfg = layer.self_attn.cfg
    return {
        "attn_in": cfg.hidden_size,
        "o_in": cfg.num_attention_heads * cfg.head_dim,
        "mlp_in": cfg.hidden_size,
        "down_in": cfg.intermediate_size,
    }


def zero_sums(layer, sites: tuple[str, ...], sharding=None) -> dict[str, jax.Array]:
    """Zeroed float32 ``(d, d)`` accumulators for ``sites``, created with ``sharding`` if given: one
    sharding for all, or a function ``d -> sharding`` (e.g. rows split over a mesh axis when ``d``
    divides evenly). :func:`accumulate` keeps each sum's sharding."""
    dims = site_dims(layer)
    pick = sharding if callable(sharding) else (lambda d: sharding)
    return {s: jnp.zeros((dims[s], dims[s]), jnp.float32, device=pick(dims[s])) for s in sites}


def hessian(xtx: jax.Array, n_tokens: int) -> jax.Array:
    """``H = 2/N · XᵀX`` (the SparseGPT/GPTQ Hessian) from the running sum and the real-token count."""
    return xtx * (2.0 / n_tokens)


def wanda_scaler_row(xtx: jax.Array, n_sequences: int) -> jax.Array:
    """Wanda's ``scaler_row = ||X_j||² / N_seq`` (note §1.1): the diagonal of the sum over the
    number of calibration *sequences*."""
    return jnp.diagonal(xtx) / n_sequences


# ----------------------------------------------------------------------------- host offload

OFFLOAD_KINDS = ("pinned_host", "numpy")


def resolve_offload(offload: bool | str | None, device: jax.Device) -> str | None:
    """``False``/``None`` → None (everything stays on device); ``True`` → ``"pinned_host"`` where
    ``device`` has that memory, else ``"numpy"``; ``"pinned_host"`` or ``"numpy"`` as given."""
    if offload is None or offload is False:
        return None
    kinds = {m.kind for m in device.addressable_memories()}
    if offload is True:
        return "pinned_host" if "pinned_host" in kinds else "numpy"
    if offload not in OFFLOAD_KINDS:
        raise ValueError(f"offload={offload!r} must be False, True or one of {OFFLOAD_KINDS}")
    if offload == "pinned_host" and "pinned_host" not in kinds:
        raise ValueError(
            f"offload='pinned_host': {device} has no pinned_host memory (it has {sorted(kinds)}); "
            "use offload='numpy' (host arrays in process memory) or offload=True (picks one)"
        )
    return offload


@dataclasses.dataclass(frozen=True)
class HostOffload:
    """Where weights and activations wait while another layer is on the device(s).

    ``kind``: ``"pinned_host"`` (jax arrays in the host memory kind of ``host_device``: one copy,
    transfers are asynchronous DMA on GPU/TPU) or ``"numpy"`` (``jax.device_get``).
    ``layer_device``: the sharding a layer computes with (replicated over the mesh, or one device);
    ``batch_device``: the sharding of a batch of activations (samples over the ``data`` axis).
    Batches keep their sample sharding in host memory, so each device's shard moves by itself.
    """

    kind: str
    layer_device: jax.sharding.Sharding
    batch_device: jax.sharding.Sharding
    host_device: jax.Device

    def to_host(self, tree: Any, batch: bool = False) -> Any:
        if self.kind == "numpy":
            return jax.tree.map(_to_numpy, tree)
        if batch:
            return jax.device_put(tree, self.batch_device.with_memory_kind("pinned_host"))
        one = jax.sharding.SingleDeviceSharding(self.host_device, memory_kind="pinned_host")
        return jax.tree.map(lambda x: jax.device_put(self._one_copy(x), one), tree)

    def _one_copy(self, x: Any) -> Any:
        """``x`` on ``host_device`` alone (weights keep one host copy, not one per device): the
        local shard of a replicated array, else the array gathered there (device memory kinds
        cannot be changed together with the device set in one ``device_put``)."""
        if not isinstance(x, jax.Array) or len(x.sharding.device_set) == 1:
            return x  # NumPy, or one device's buffer: moves in one device_put
        if not x.is_fully_addressable:  # split over several processes' devices: this process's copy
            from zipcal_jax.distributed import local_value

            return local_value(x, self.host_device)
        return on_device(x, self.host_device)

    def to_device(self, tree: Any, batch: bool = False) -> Any:
        target = self.batch_device if batch else self.layer_device
        if target.is_fully_addressable:  # one process: every transfer is local
            return jax.device_put(tree, target)
        # Several processes: a batch's shards go back onto their own devices; a weight (the same
        # values in every process's host memory) is placed part by part from each process's copy.
        from zipcal_jax.distributed import put_global

        def put(x: Any) -> Any:
            return _assemble(x) if _is_shards(x) else put_global(x, target)

        return jax.tree.map(put, tree, is_leaf=_is_shards)

    def module_to_host(self, module: nnx.Module) -> None:
        """Replace ``module``'s variables with host copies (the device buffers are then free)."""
        nnx.update(module, self.to_host(nnx.state(module)))

    def module_to_device(self, module: nnx.Module) -> None:
        nnx.update(module, self.to_device(nnx.state(module)))

    def model_to_host(self, model) -> None:
        """Every weight of a ``Llama`` to host memory, one submodule at a time (so a model that
        starts in device or NumPy memory never needs a second full copy)."""
        for module in (model.embed, *model.layers, model.final_norm, model.lm_head):
            if module is not None:
                self.module_to_host(module)


@dataclasses.dataclass(frozen=True)
class LocalShards:
    """A ``numpy`` offload of an array that spans several processes: this process's shards as NumPy
    arrays next to their devices (each process keeps only its own part of the batch)."""

    shape: tuple[int, ...]
    sharding: jax.sharding.Sharding
    shards: tuple[tuple[jax.Device, Any], ...]


def _is_shards(x: Any) -> bool:
    return isinstance(x, LocalShards)


def _to_numpy(x: Any) -> Any:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:  # a weight: this process's copy
            return np.asarray(x.addressable_shards[0].data)
        shards = tuple((s.device, np.asarray(s.data)) for s in x.addressable_shards)
        return LocalShards(x.shape, x.sharding, shards)
    return jax.device_get(x)


def _assemble(x: LocalShards, memory_kind: str | None = None) -> jax.Array:
    """The global array again from this process's shards (in ``memory_kind`` of its devices)."""
    sharding = x.sharding if memory_kind is None else x.sharding.with_memory_kind(memory_kind)
    one = jax.sharding.SingleDeviceSharding
    arrays = [jax.device_put(data, one(d, memory_kind=memory_kind)) for d, data in x.shards]
    return jax.make_array_from_single_device_arrays(x.shape, sharding, arrays)


def savable(x: Any) -> Any:
    """A batch as Orbax can save it: a ``numpy`` offload of an array spanning processes
    (:class:`LocalShards`) becomes a global array again, in the ``pinned_host`` memory of its devices
    where they have one (no device memory), else on the devices; everything else is unchanged."""
    if not _is_shards(x):
        return x
    kinds = {m.kind for m in x.shards[0][0].addressable_memories()}
    return _assemble(x, "pinned_host" if "pinned_host" in kinds else None)


def on_device(x: jax.Array, device: jax.Device) -> jax.Array:
    """``x`` on ``device`` alone: its shard there when replicated (no copy), else a transfer."""
    if x.is_fully_replicated and device in x.sharding.device_set:
        return next(s.data for s in x.addressable_shards if s.device == device)
    return jax.device_put(x, device)
