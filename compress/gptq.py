"""GPTQ (Frantar, Ashkboos, Hoefler, Alistarh, arXiv 2210.17323; IST-DASLab/gptq ``fasterquant``)
and the blocked OBS engine it shares with SparseGPT.

Problem. For a linear layer ``W: (d_out, d_in)`` with calibration inputs ``X: (N, d_in)`` and
``H = 2/N · XᵀX`` (the Hessian of ``||WXᵀ - ŴXᵀ||²``), find ``Ŵ`` on a quantization grid (GPTQ)
or with a sparsity mask (SparseGPT) that keeps the layer output. Rows are independent given H.

Optimal Brain Surgeon, one input column at a time (anchors note §2.3, §3.1). When column ``j``
is fixed to ``q_j`` (quantized, or 0 if pruned), the remaining columns ``F = {j+1, …}`` absorb
the error optimally::

    δ_F = -(w_j - q_j) / [H_F⁻¹]_jj · [H_F⁻¹]_{j,F}        loss_j = (w_j - q_j)² / (2 [H_F⁻¹]_jj)

where ``H_F⁻¹`` is the inverse Hessian restricted to the columns not yet processed. The
Cholesky reformulation avoids updating ``H⁻¹``: with ``Hinv = U`` upper-triangular and
``UᵀU = H⁻¹``, row ``j`` of ``U`` equals ``[H_F⁻¹]_{j,j:} / sqrt([H_F⁻¹]_jj)``, so with
``d = U_jj`` and ``err = (w_j - q_j) / d``::

    W[:, j:] -= err ⊗ U[j, j:]          Losses[:, j] = (w_j - q_j)² / d² / 2

Lazy batch updates: columns are processed in blocks of ``blocksize``; inside a block the update
touches the block only (``W1``), and after the block the rest of the matrix gets the whole
block's error at once, ``W[:, i2:] -= Err1 @ U[i1:i2, i2:]``.

Preparation, in the reference's order (§3.1): the per-row quantizer is fitted on the original W
(``groupsize=-1``); dead inputs (``H_ii == 0``) get ``H_ii = 1`` and ``W[:, i] = 0``; static
groups are fitted on that W; act-order permutes W and H by ``argsort(diag(H), descending)``;
``damp = percdamp · mean(diag(H))`` is added to the diagonal; ``U`` is factored.

Implementation (JAX). One ``jit`` program per shape and option set: the block loop is a
``lax.fori_loop`` with ``dynamic_slice`` (``d_in`` is padded to a multiple of ``blocksize``; the
padding columns are dead inputs, decoupled from the rest, and stripped); the column loop inside a
block is a ``lax.fori_loop`` too, and it updates the full block width (``U[j, :j] = 0``, so this
equals the sliced update) — compile time does not grow with ``d_in``. ``U`` is computed as
``P · L⁻¹ · P`` with ``L = cholesky(P H P)`` and ``P`` the index reversal: the unique upper
Cholesky factor of ``H⁻¹``, the reference's ``cholesky(cholesky_inverse(cholesky(H)), upper)``
with one factorization and one triangular inverse instead of three O(d³) steps.

Robustness: a failed factorization (NaN/inf in ``U``) or a non-finite result is retried with the
damping raised ×10 per step (``damping_schedule``; up to ``MAX_PERCDAMP``), all inside the same
compiled program; as a last resort the identity is used as ``U``, which turns GPTQ into RTN with
the same groups and SparseGPT into magnitude pruning in the same block order, and the info says
``fallback=True``. The solver never raises on a bad Hessian.

Numerics: float32 (float64 when given float64 arrays under ``jax_enable_x64``); ``jnp.round`` is
round-half-even like ``torch.round``; matmuls at ``Precision.HIGHEST``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec

from zipcal_jax.compress.quant import (
    Quantizer,
    QuantParams,
    exact_div,
    find_params,
    group_params,
    pack,
    unpack,
)
from zipcal_jax.compress.wanda import kth_smallest, nm_ranks

__all__ = [
    "MAX_PERCDAMP",
    "ObsSpec",
    "SolverInfo",
    "damping_schedule",
    "obs_solve",
    "obs_solve_rows",
    "pack",
    "quantize",
    "run_obs_solve",
    "unpack",
]

MAX_PERCDAMP = 10.0  # the highest relative damping tried before the identity fallback
_SLOTS = 8  # fixed length of the damping schedule (no recompilation per percdamp)
_HIGHEST = lax.Precision.HIGHEST


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class SolverInfo:
    """What a SparseGPT/GPTQ solve did (a pytree of arrays; scalars are 0-d arrays).

    * ``loss``: the summed OBS reconstruction error ``Σ_ij (w_ij - q_ij)² / (2 U_jj²)`` (the
      reference prints ``torch.sum(Losses)``);
    * ``percdamp`` / ``damp``: the relative and absolute damping of the factorization that was
      used (the last one tried when ``fallback``);
    * ``attempts``: factorizations tried, the fallback included (1 when nothing went wrong);
    * ``fallback``: True when every damping failed and the identity factor was used (RTN for
      GPTQ, magnitude-in-block-order for SparseGPT);
    * ``mask``: SparseGPT's prune mask ``(d_out, d_in)``, True where pruned (None for GPTQ);
    * ``params``: the ``QuantParams`` when a quantizer was applied (GPTQ, joint SparseGPT).
    """

    loss: jax.Array
    percdamp: jax.Array
    damp: jax.Array
    attempts: jax.Array
    fallback: jax.Array
    mask: jax.Array | None = None
    params: QuantParams | None = None


@dataclass(frozen=True)
class ObsSpec:
    """Static options of one blocked OBS solve (hashable; one compiled program per spec and shape).

    ``prune``: None, ``"unstructured"`` (adaptive per-block mask) or ``"nm"`` (with ``nm=(n, m)``).
    ``quantizer``: None or a ``Quantizer``; ``groups``: ``"row"`` (one set per row, fitted on the
    original W), ``"static"`` (fitted up front per ``group_size`` columns in original order) or
    ``"dynamic"`` (fitted when a group starts, on the current W, in processing order).
    """

    blocksize: int = 128
    prune: str | None = None
    nm: tuple[int, int] | None = None
    quantizer: Quantizer | None = None
    groups: str = "row"
    group_size: int = -1
    act_order: bool = False


def damping_schedule(percdamp: float, max_percdamp: float = MAX_PERCDAMP) -> tuple[np.ndarray, int]:
    """Relative dampings to try, in order: ``percdamp``, then ×10 per step up to ``max_percdamp``
    (from 1e-4 when ``percdamp`` is 0). Returns a fixed-length array and the number of levels."""
    levels = [float(percdamp)]
    p = levels[0] if levels[0] > 0 else 1e-4
    while len(levels) < _SLOTS and p * 10 <= max_percdamp * (1 + 1e-9):
        p *= 10
        levels.append(p)
    return np.array(levels + levels[-1:] * (_SLOTS - len(levels))), len(levels)


def inverse_cholesky_upper(H: jax.Array) -> jax.Array:
    """Upper-triangular ``U`` with ``Uᵀ U = H⁻¹``: ``P L⁻¹ P``, ``L = cholesky(P H P)``, ``P`` the
    index reversal. NaNs when ``H`` is not (numerically) positive definite."""
    n = H.shape[0]
    L = jnp.linalg.cholesky(H[::-1, ::-1])
    Linv = jax.scipy.linalg.solve_triangular(L, jnp.eye(n, dtype=H.dtype), lower=True)
    return jnp.triu(Linv[::-1, ::-1])


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def _with_diagonal(H: jax.Array, diag: jax.Array) -> jax.Array:
    i = jnp.arange(H.shape[0])
    return H.at[i, i].set(diag)


@functools.partial(jax.jit, static_argnames=("spec",))
def obs_solve(
    W: jax.Array, H: jax.Array, percdamps: jax.Array, n_levels: jax.Array, kblock: jax.Array, spec: ObsSpec
) -> tuple[jax.Array, SolverInfo]:
    """The blocked OBS solve shared by GPTQ and SparseGPT. ``W: (d_out, d_in)``, ``H: (d_in, d_in)``.

    ``percdamps, n_levels``: from ``damping_schedule``. ``kblock: (n_blocks,)`` int: for
    ``prune="unstructured"``, the index of the threshold in each block's sorted scores
    (``int(d_out · count · sparsity)``); ignored otherwise. Returns ``(W_new, SolverInfo)`` with
    ``W_new`` in the compute dtype (float32, or float64 for float64 inputs under x64).
    """
    return _obs_solve(W, H, percdamps, n_levels, kblock, spec)


@functools.partial(jax.jit, static_argnames=("spec", "mesh", "axis"))
def obs_solve_rows(
    W: jax.Array,
    H: jax.Array,
    percdamps: jax.Array,
    n_levels: jax.Array,
    kblock: jax.Array,
    spec: ObsSpec,
    mesh: jax.sharding.Mesh,
    axis: str,
) -> tuple[jax.Array, SolverInfo]:
    """:func:`obs_solve` with the rows of ``W`` split over the mesh axis ``axis`` (``shard_map``).

    Rows are independent given ``H``: every device factors the same (replicated) ``H`` and sweeps
    the columns of its ``d_out / n`` rows. What couples rows is reduced over ``axis``: SparseGPT's
    unstructured block threshold (a global k-th smallest, exact integer counts), the retry
    decision (a non-finite row anywhere retries everywhere) and the loss; act-order's permutation
    comes from ``diag(H)`` and the quantization grids are per row, so neither couples rows.
    ``d_out`` is padded with zero rows to a multiple of the axis size (excluded from the threshold,
    stripped from the result). Outputs with a row axis come back sharded over ``axis``.
    """
    d_out = W.shape[0]
    pad = -d_out % mesh.shape[axis]
    row, rep = PartitionSpec(axis), PartitionSpec()
    qz = spec.quantizer
    params = None
    if qz is not None:
        params = QuantParams(codes=row, scales=row, zeros=row, g_idx=rep, perm=rep if spec.act_order else None,
                             bits=qz.bits, group_size=spec.group_size, sym=qz.sym)  # fmt: skip
    info = SolverInfo(loss=rep, percdamp=rep, damp=rep, attempts=rep, fallback=rep,
                      mask=row if spec.prune else None, params=params)  # fmt: skip
    local = functools.partial(_obs_solve, spec=spec, axis=axis, n_rows=d_out)
    # check_vma=False: the retry loop carries values that vary over ``axis`` next to reduced ones
    solve = jax.shard_map(local, mesh=mesh, in_specs=(row, rep, rep, rep, rep), out_specs=(row, info),
                          check_vma=False)  # fmt: skip
    W_new, info = solve(jnp.pad(W, ((0, pad), (0, 0))), H, percdamps, n_levels, kblock)
    if pad:
        W_new = W_new[:d_out]
        mask = info.mask[:d_out] if info.mask is not None else None
        p = info.params
        if p is not None:
            p = dataclasses.replace(p, codes=p.codes[:d_out], scales=p.scales[:d_out], zeros=p.zeros[:d_out])
        info = dataclasses.replace(info, mask=mask, params=p)
    return W_new, info


def run_obs_solve(
    W: jax.Array,
    H: jax.Array,
    percdamps: np.ndarray,
    n_levels: int,
    kblock: np.ndarray,
    spec: ObsSpec,
    mesh: jax.sharding.Mesh | None = None,
    row_axis: str | None = None,
) -> tuple[jax.Array, SolverInfo]:
    """:func:`obs_solve` on one device, or :func:`obs_solve_rows` when ``mesh`` and ``row_axis``
    (the mesh axis that splits the rows of ``W``) are given; checks the pair."""
    if mesh is None and row_axis is None:
        return obs_solve(W, H, percdamps, n_levels, kblock, spec)
    if mesh is None or row_axis not in mesh.axis_names:
        names = None if mesh is None else tuple(mesh.axis_names)
        raise ValueError(
            f"row_axis={row_axis!r} needs a mesh with that axis (mesh axes: {names}); pass both "
            "mesh= and row_axis=, or neither for a single-device solve"
        )
    return obs_solve_rows(W, H, percdamps, n_levels, kblock, spec, mesh, row_axis)


def _obs_solve(
    W: jax.Array,
    H: jax.Array,
    percdamps: jax.Array,
    n_levels: jax.Array,
    kblock: jax.Array,
    spec: ObsSpec,
    axis: str | None = None,
    n_rows: int | None = None,
) -> tuple[jax.Array, SolverInfo]:
    """The traced body of :func:`obs_solve`; with ``axis`` (inside ``shard_map``) ``W`` holds this
    device's rows of a ``(n_rows, d_in)`` problem (trailing padding rows beyond ``n_rows``)."""
    d_out, d_in = W.shape
    B, g, qz = spec.blocksize, spec.group_size, spec.quantizer
    dtype = jnp.result_type(W.dtype, H.dtype, jnp.float32)
    W, H = W.astype(dtype), H.astype(dtype)
    dynamic = qz is not None and spec.groups == "dynamic"
    d_pad = _round_up(_round_up(d_in, g) if dynamic else d_in, B)

    row_scale = row_zero = tables = col_group = None
    if qz is not None:  # fitted on the original W, before dead inputs are zeroed (gptq.py L72-73)
        row_scale, row_zero = find_params(W, qz)
    diag = jnp.diagonal(H)
    dead = diag == 0
    H = _with_diagonal(H, jnp.where(dead, 1, diag))
    W = jnp.where(dead[None, :], 0, W)
    if qz is not None and spec.groups == "static":
        tables = tuple(t.T for t in group_params(W, qz, g))  # (n_groups, d_out) scale, zero
    perm = None
    if spec.act_order:
        perm = jnp.argsort(-jnp.diagonal(H), stable=True)  # descending, ties to the lower index
        W, H = W[:, perm], H[perm][:, perm]
    if tables is not None:
        original = perm if perm is not None else jnp.arange(d_in)
        col_group = jnp.pad(original // g, (0, d_pad - d_in))
    mean_diag = jnp.mean(jnp.diagonal(H))
    W = jnp.pad(W, ((0, 0), (0, d_pad - d_in)))
    H = jnp.pad(H, ((0, d_pad - d_in), (0, d_pad - d_in)))
    H = _with_diagonal(H, jnp.where(jnp.arange(d_pad) < d_in, jnp.diagonal(H), 1))  # padding: dead

    def sweep(W, Hinv):
        """Blocks of columns with lazy batch updates (``Hinv`` = the upper factor U); returns the
        final W (= Q), codes, mask, dynamic group params and the per-row ``Losses``."""
        C = jnp.zeros((d_out, d_pad), jnp.uint8) if qz is not None else None
        M = jnp.zeros((d_out, d_pad), bool) if spec.prune else None
        S = Z = None
        if dynamic:
            S = Z = jnp.zeros((-(-d_pad // g), d_out), dtype)
        Losses = jnp.zeros(d_out, dtype)

        def block(b, carry):
            W, C, M, S, Z, scale, zero, Losses = carry
            i1 = b * B
            W1 = lax.dynamic_slice_in_dim(W, i1, B, axis=1)  # (d_out, B)
            Hinv1 = lax.dynamic_slice(Hinv, (i1, i1), (B, B))
            dHinv1 = jnp.diagonal(Hinv1)
            mask1 = None
            if spec.prune == "unstructured":  # adaptive mask: OBS saliency w²/[H⁻¹]_jj over the block
                valid = ((i1 + jnp.arange(B)) < d_in)[None, :]
                if axis is not None:  # padding rows take no part in the threshold
                    valid = valid & ((lax.axis_index(axis) * d_out + jnp.arange(d_out)) < n_rows)[:, None]
                tmp = jnp.where(valid, exact_div(W1**2, dHinv1[None, :] ** 2), jnp.inf)
                thresh = kth_smallest(tmp, kblock[b], axis)  # = sort(tmp.flat)[k] over all rows
                mask1 = (tmp <= thresh) & valid
            elif spec.prune == "nm":
                mask1 = jnp.zeros((d_out, B), bool)
            W_outer = W  # dynamic groups are fitted on W without this block's in-block updates

            def column(i, c):
                W1, Q1, C1, Err1, mask1, S, Z, scale, zero, Losses = c
                w = lax.dynamic_index_in_dim(W1, i, axis=1, keepdims=False)  # (d_out,)
                d = Hinv1[i, i]
                if spec.prune == "nm":
                    n, m = spec.nm

                    def select(mask1):  # the n lowest w²/[H⁻¹]_jj of the next m columns, per row
                        tmp = lax.dynamic_slice_in_dim(W1, i, m, axis=1) ** 2
                        tmp = exact_div(tmp, lax.dynamic_slice_in_dim(dHinv1, i, m)[None, :] ** 2)
                        return lax.dynamic_update_slice_in_dim(mask1, nm_ranks(tmp, m) < n, i, axis=1)

                    mask1 = lax.cond(i % m == 0, select, lambda x: x, mask1)
                q = w
                if mask1 is not None:
                    q = jnp.where(lax.dynamic_index_in_dim(mask1, i, axis=1, keepdims=False), 0, w)
                if qz is not None:
                    j = i1 + i
                    if dynamic:
                        scale, zero = lax.cond(
                            j % g == 0,
                            lambda: find_params(lax.dynamic_slice_in_dim(W_outer, j, g, axis=1), qz),
                            lambda: (scale, zero),
                        )
                        S, Z = S.at[j // g].set(scale), Z.at[j // g].set(zero)
                    elif tables is not None:
                        scale, zero = tables[0][col_group[j]], tables[1][col_group[j]]
                    code = jnp.clip(jnp.round(q / scale) + zero, 0, qz.maxq)  # same shapes: exact
                    q = scale * (code - zero)
                    C1 = C1.at[:, i].set(code.astype(jnp.uint8))
                Q1 = Q1.at[:, i].set(q)
                Losses = Losses + exact_div((w - q) ** 2, d**2)
                err1 = exact_div(w - q, d)
                W1 = W1 - err1[:, None] * Hinv1[i][None, :]  # = W1[:, i:] -= err1 ⊗ Hinv1[i, i:]
                Err1 = Err1.at[:, i].set(err1)
                return W1, Q1, C1, Err1, mask1, S, Z, scale, zero, Losses

            C1 = jnp.zeros((d_out, B), jnp.uint8) if C is not None else None
            zeros1 = jnp.zeros_like(W1)
            init = (W1, zeros1, C1, zeros1, mask1, S, Z, scale, zero, Losses)
            _, Q1, C1, Err1, mask1, S, Z, scale, zero, Losses = lax.fori_loop(0, B, column, init)
            # lazy batch update of the later columns (earlier ones meet Hinv[i1:i2, :i1] = 0)
            W = W - jnp.matmul(Err1, lax.dynamic_slice_in_dim(Hinv, i1, B, axis=0), precision=_HIGHEST)
            W = lax.dynamic_update_slice_in_dim(W, Q1, i1, axis=1)
            if C is not None:
                C = lax.dynamic_update_slice_in_dim(C, C1, i1, axis=1)
            if M is not None:
                M = lax.dynamic_update_slice_in_dim(M, mask1, i1, axis=1)
            return W, C, M, S, Z, scale, zero, Losses

        carry = (W, C, M, S, Z, row_scale, row_zero, Losses)
        W, C, M, S, Z, _, _, Losses = lax.fori_loop(0, d_pad // B, block, carry)
        return W, C, M, S, Z, Losses

    eye = jnp.eye(d_pad, dtype=dtype)
    failed = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(sweep, W, eye))

    def attempt(state):
        k = state[0]
        percdamp = percdamps[jnp.minimum(k, percdamps.shape[0] - 1)]
        damp = (percdamp * mean_diag).astype(dtype)
        Hinv = lax.cond(k >= n_levels, lambda: eye, lambda: inverse_cholesky_upper(H + damp * eye))
        factored = jnp.all(jnp.isfinite(Hinv))  # H is replicated: the same on every device
        out = lax.cond(factored, lambda: sweep(W, Hinv), lambda: failed)
        finite = jnp.all(jnp.isfinite(out[0]))
        if axis is not None:  # every device retries when any row went non-finite
            finite = lax.psum((~finite).astype(jnp.int32), axis) == 0
        return k + 1, out, factored & finite, percdamp.astype(dtype), damp

    init = (jnp.int32(0), failed, jnp.bool_(False), jnp.zeros((), dtype), jnp.zeros((), dtype))
    k, out, _, percdamp, damp = lax.while_loop(lambda s: (~s[2]) & (s[0] <= n_levels), attempt, init)
    Wq, C, M, S, Z, Losses = out

    invperm = jnp.argsort(perm) if perm is not None else None

    def restore(a):  # strip the padding, undo act-order
        a = a[:, :d_in]
        return a[:, invperm] if invperm is not None else a

    params = None
    if qz is not None:
        n_groups = 1 if g == -1 else -(-d_in // g)
        g_idx = jnp.arange(d_in, dtype=jnp.int32) // (d_in if g == -1 else g)
        if g == -1:
            scales, zeros = row_scale[:, None], row_zero[:, None]
        elif tables is not None:
            scales, zeros = tables[0].T, tables[1].T
        else:
            scales, zeros = S[:n_groups].T, Z[:n_groups].T
            if invperm is not None:
                g_idx = (invperm // g).astype(jnp.int32)
        params = QuantParams(
            codes=restore(C),
            scales=scales,
            zeros=zeros.astype(jnp.int32),
            g_idx=g_idx,
            perm=perm.astype(jnp.int32) if perm is not None else None,
            bits=qz.bits,
            group_size=g,
            sym=qz.sym,
        )
    loss = jnp.sum(Losses)
    if axis is not None:
        loss = lax.psum(loss, axis)
    info = SolverInfo(
        loss=loss / 2,
        percdamp=percdamp,
        damp=damp,
        attempts=k,
        fallback=k - 1 >= n_levels,
        mask=restore(M) if M is not None else None,
        params=params,
    )
    return restore(Wq), info


def check_problem(W, H, blocksize: int, percdamp: float) -> tuple[jax.Array, jax.Array]:
    """Boundary checks shared by GPTQ and SparseGPT; returns ``W, H`` as arrays of the compute
    dtype (float32, or float64 under x64), so a bfloat16 model reuses the float32 program."""
    W, H = jnp.asarray(W), jnp.asarray(H)
    if W.ndim != 2 or H.shape != (W.shape[1], W.shape[1]):
        raise ValueError(f"need W (d_out, d_in) and H (d_in, d_in), got {W.shape} and {H.shape}")
    if int(blocksize) != blocksize or blocksize < 1:
        raise ValueError(f"blocksize={blocksize} must be a positive integer (the reference uses 128)")
    if not percdamp >= 0:
        raise ValueError(f"percdamp={percdamp} must be >= 0 (the reference uses 0.01)")
    dtype = jnp.result_type(W.dtype, H.dtype, jnp.float32)
    return W.astype(dtype), H.astype(dtype)


def quantize(
    W: jax.Array,
    H: jax.Array,
    bits: int = 4,
    group_size: int = 128,
    sym: bool = False,
    act_order: bool = False,
    static_groups: bool = False,
    blocksize: int = 128,
    percdamp: float = 0.01,
    *,
    mse: bool = False,
    return_info: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    row_axis: str | None = None,
):
    """GPTQ-quantize ``W: (d_out, d_in)`` with the Hessian ``H: (d_in, d_in)`` (= 2/N · XᵀX).

    * ``bits`` in {2, 3, 4, 8}; ``sym`` symmetric grid; ``mse`` the reference's grid search;
    * ``group_size``: inputs per quantization group (-1: one group per row, the reference default);
    * ``act_order``: process columns by descending ``diag(H)``; groups are then contiguous in that
      order (``g_idx`` records them) unless ``static_groups``, which fits the groups up front in
      the original order (inference needs no reordering);
    * ``blocksize``, ``percdamp``: lazy-batch width and relative damping (reference 128, 0.01);
    * ``mesh``, ``row_axis``: split the rows of ``W`` over that mesh axis (:func:`obs_solve_rows`;
      the same codes as one device, weights and loss up to float summation order).

    Returns ``(W_dequant, QuantParams)`` with ``W_dequant`` in ``W``'s dtype (in float32 it equals
    ``params.dequantize()`` exactly); with ``return_info=True``, ``(W_dequant, params, SolverInfo)``.
    """
    dtype = jnp.asarray(W).dtype
    W, H = check_problem(W, H, blocksize, percdamp)
    if group_size != -1 and (int(group_size) != group_size or group_size < 1):
        raise ValueError(f"group_size={group_size} must be -1 (one group per row) or a positive integer")
    groups = "row" if group_size == -1 else ("static" if static_groups else "dynamic")
    spec = ObsSpec(
        blocksize=int(blocksize),
        quantizer=Quantizer(bits=bits, sym=sym, mse=mse),
        groups=groups,
        group_size=int(group_size),
        act_order=bool(act_order),
    )
    levels, n_levels = damping_schedule(percdamp)
    kblock = np.zeros(_round_up(W.shape[1], blocksize) // blocksize, np.int32)  # unused without pruning
    W_q, info = run_obs_solve(W, H, levels, n_levels, kblock, spec, mesh, row_axis)
    W_q = W_q.astype(dtype)
    if return_info:
        return W_q, info.params, info
    return W_q, info.params
