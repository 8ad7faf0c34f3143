"""SparseGPT (Frantar & Alistarh, arXiv 2301.00774; IST-DASLab/sparsegpt ``fasterprune``).

The GPTQ solver with a prune mask instead of (or before) a quantization grid: each input column
``j`` is set to ``q_j = w_j`` masked to 0 (and optionally quantized), and the OBS update
``W[:, j:] -= (w_j - q_j)/U_jj · U[j, j:]`` lets the later columns absorb the error (derivation
and engine: ``gptq`` module docstring; dead inputs, damping and ``Hinv = U`` as there, §2.2).

Adaptive mask selection (note §2.3), per block of ``blocksize`` columns ``[i1, i2)``, on the
current (already updated) weights ``W1``:

* unstructured: ``tmp = W1² / diag(Hinv1)²`` (OBS saliency ``w²/[H⁻¹]_jj``) over the whole block
  (all rows × the block's columns); ``thresh = sort(tmp.flat)[int(numel · sparsity)]`` and
  ``mask1 = tmp <= thresh`` — exactly the reference, so a block prunes ``int(numel·sparsity) + 1``
  weights (more on ties) and per-row sparsity varies;
* N:M (``nm=(n, m)``, n zeros in every m consecutive inputs): at every column ``i`` with
  ``i % m == 0`` the ``n`` lowest ``W1[:, i:i+m]² / diag(Hinv1)[i:i+m]²`` of each row are masked,
  using the in-block-updated ``W1``; ``sparsity`` is ignored.

Joint sparse + quantized (§2.5, ``quantizer=Quantizer(bits, sym, ...)``): a per-row grid is
fitted once on the dense W before pruning, and each column is masked and then quantized inside
the same OBS loop. The grid always holds 0, so pruned weights stay exactly zero.

Deviations from the reference, on purpose: ``sparsity=0`` without ``nm`` prunes nothing (the
reference's ``tmp <= sort(tmp)[0]`` still prunes the smallest weight of every block); the N:M
ranking breaks ties by the lower index (``torch.topk`` leaves ties to the implementation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from zipcal_jax.compress.gptq import ObsSpec, SolverInfo, check_problem, damping_schedule, run_obs_solve
from zipcal_jax.compress.quant import Quantizer
from zipcal_jax.compress.wanda import check_nm, check_sparsity

__all__ = ["SolverInfo", "block_thresholds", "prune"]


def block_thresholds(d_out: int, d_in: int, sparsity: float, blocksize: int) -> np.ndarray:
    """Per block, the index of the threshold in its sorted scores: ``int(d_out · count · sparsity)``
    with ``count`` the block's real columns (the last block may be narrower), as the reference's
    ``int(tmp.numel() * sparsity)`` computes it in double precision."""
    starts = range(0, -(-d_in // blocksize) * blocksize, blocksize)
    return np.array([int(d_out * min(blocksize, d_in - i1) * sparsity) for i1 in starts], np.int32)


def prune(
    W: jax.Array,
    H: jax.Array,
    sparsity: float = 0.5,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    *,
    quantizer: Quantizer | None = None,
    return_info: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    row_axis: str | None = None,
):
    """SparseGPT-prune ``W: (d_out, d_in)`` with the Hessian ``H: (d_in, d_in)`` (= 2/N · XᵀX).

    ``sparsity`` in [0, 1) (unstructured, adaptive per-block mask); ``nm=(n, m)`` for N:M
    (``d_in`` and ``blocksize`` multiples of ``m``); ``blocksize``, ``percdamp`` as the reference
    (128, 0.01). ``quantizer``: the joint sparse + quantized mode (per-row grid). ``mesh``,
    ``row_axis``: split the rows of ``W`` over that mesh axis (``gptq.obs_solve_rows``; the block
    thresholds are reduced across devices, so the mask is the single-device one).

    Returns ``W_new`` in ``W``'s dtype (pruned weights exactly 0, dead inputs zeroed); with
    ``return_info=True``, ``(W_new, SolverInfo)``: reconstruction loss, damping used, fallback,
    the prune ``mask`` (True = pruned) and, with a quantizer, the ``QuantParams``.
    """
    dtype = jnp.asarray(W).dtype
    W, H = check_problem(W, H, blocksize, percdamp)
    d_out, d_in = W.shape
    nm = check_nm(nm, d_in)
    sparsity = check_sparsity(sparsity)
    if nm is not None and blocksize % nm[1]:
        raise ValueError(f"blocksize={blocksize} must be a multiple of m={nm[1]} for N:M pruning")
    if quantizer is not None and not isinstance(quantizer, Quantizer):
        raise ValueError(f"quantizer must be a zipcal_jax.compress.quant.Quantizer, got {type(quantizer)}")
    mode = "nm" if nm is not None else ("unstructured" if sparsity > 0 else None)
    spec = ObsSpec(blocksize=int(blocksize), prune=mode, nm=nm, quantizer=quantizer)
    levels, n_levels = damping_schedule(percdamp)
    kblock = block_thresholds(d_out, d_in, sparsity, int(blocksize))
    W_new, info = run_obs_solve(W, H, levels, n_levels, kblock, spec, mesh, row_axis)
    W_new = W_new.astype(dtype)
    return (W_new, info) if return_info else W_new
