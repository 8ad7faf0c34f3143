"""Calibration-free baselines: magnitude pruning and round-to-nearest (RTN) quantization.

* ``magnitude_prune``: score ``|W_ij|``. The default comparison group is one output row, the
  same as Wanda's (so the two differ only in the activation factor). ``scope="matrix"`` is the
  Wanda repository's ``prune_magnitude`` for unstructured pruning (note §1.2): one threshold over
  the whole matrix, ``|W| <= sort(|W|.flat)[int(numel * sparsity)]``, ties included. N:M is per
  row in both.
* ``rtn_quantize``: each group of ``group_size`` consecutive inputs of a row (the whole row for
  ``group_size=-1``, the GPTQ reference's ``--nearest``: per-channel asymmetric min-max, §3.2)
  is quantized on its own min-max grid; no Hessian, so no dead-input zeroing. It is GPTQ with the
  identity as inverse-Hessian factor, and the solvers' last-resort fallback.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from zipcal_jax.compress import quant, wanda


def magnitude_prune(
    W: jax.Array, sparsity: float = 0.5, nm: tuple[int, int] | None = None, *, scope: str = "row"
) -> jax.Array:
    """Magnitude prune mask of ``W: (d_out, d_in)``, True where pruned.

    ``scope="row"`` (default): exactly ``int(d_in * sparsity)`` per row, ties to the lower index.
    ``scope="matrix"``: the reference's global threshold (at least ``int(numel * sparsity) + 1``
    pruned, more on ties). ``nm=(n, m)``: ``n`` of every ``m`` consecutive inputs per row.
    """
    W = jnp.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"need W (d_out, d_in), got shape {W.shape}")
    if scope not in ("row", "matrix"):
        raise ValueError(f"scope={scope!r} must be 'row' or 'matrix'")
    nm = wanda.check_nm(nm, W.shape[1])
    sparsity = wanda.check_sparsity(sparsity)
    score = jnp.abs(W).astype(jnp.promote_types(W.dtype, jnp.float32))
    if scope == "matrix" and nm is None:
        return _global_threshold_mask(score, int(W.size * sparsity))
    return wanda.mask_from_scores(score, int(W.shape[1] * sparsity), nm)


@jax.jit
def _global_threshold_mask(score: jax.Array, k: jax.Array) -> jax.Array:
    return score <= wanda.kth_smallest(score, k)  # sort(score.flat)[k], ties included


def rtn_quantize(
    W: jax.Array, bits: int = 4, group_size: int = 128, sym: bool = False, *, mse: bool = False
) -> tuple[jax.Array, quant.QuantParams]:
    """Round-to-nearest quantization of ``W: (d_out, d_in)``.

    Returns ``(W_dequant, QuantParams)``; ``W_dequant`` has ``W``'s dtype, the params are exact
    (``params.dequantize()`` equals ``W_dequant`` in float32). ``group_size=-1``: one group per row.
    """
    W = jnp.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"need W (d_out, d_in), got shape {W.shape}")
    if group_size != -1 and group_size < 1:
        raise ValueError(f"group_size={group_size} must be -1 (one group per row) or >= 1")
    quantizer = quant.Quantizer(bits=bits, sym=sym, mse=mse)
    W_q, params = _rtn(W, quantizer, group_size)
    return W_q.astype(W.dtype), params


@functools.partial(jax.jit, static_argnames=("quantizer", "group_size"))
def _rtn(W: jax.Array, quantizer: quant.Quantizer, group_size: int):
    d_in = W.shape[1]
    W = W.astype(jnp.promote_types(W.dtype, jnp.float32))
    g = d_in if group_size == -1 else group_size
    scales, zeros = quant.group_params(W, quantizer, g)  # (d_out, n_groups)
    g_idx = jnp.arange(d_in, dtype=jnp.int32) // g
    scale, zero = scales[:, g_idx], zeros[:, g_idx]
    codes = quant.to_codes(W, scale, zero, quantizer.maxq)
    W_q = quant.quantize(W, scale, zero, quantizer.maxq)
    params = quant.QuantParams(
        codes=codes,
        scales=scales,
        zeros=zeros.astype(jnp.int32),
        g_idx=g_idx,
        perm=None,
        bits=quantizer.bits,
        group_size=group_size,
        sym=quantizer.sym,
    )
    return W_q, params
