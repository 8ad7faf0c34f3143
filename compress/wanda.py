"""Wanda: pruning by weights and activations (Sun et al., arXiv 2306.11695; locuslab/wanda).

For a linear layer ``W: (d_out, d_in)`` and its calibration inputs ``X: (N, d_in)`` the score of
a weight is its magnitude times the norm of the input channel it reads (note §1.2)::

    S_ij = |W_ij| * ||X_{:, j}||_2

The comparison group is one output row: each row loses exactly its ``int(d_in * sparsity)``
lowest-scored weights. ``col_norms_sq`` is the reference's ``scaler_row`` = ``||X_j||² / N_seq``,
i.e. ``diag(H) / 2`` of the SparseGPT/GPTQ Hessian; constant factors change no ranking.

Tie-breaking follows the reference's ``torch.sort(W_metric, dim=-1, stable=True)``: among equal
scores the lower input index is pruned first. N:M (``nm=(2, 4)``: in every ``m`` consecutive
inputs of a row the ``n`` lowest scores are pruned, 2:4 and 4:8 in the papers) uses the same
order; the reference's ``torch.topk(largest=False)`` leaves ties to the implementation (on CPU it
does not pick the lower index), so only tied N:M groups can differ from a given torch build.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def check_nm(nm, d_in: int) -> tuple[int, int] | None:
    """Validate an ``nm=(n, m)`` pattern for ``d_in`` inputs; returns it as a tuple of ints."""
    if nm is None:
        return None
    n, m = (int(v) for v in nm)
    if not 0 < n < m:
        raise ValueError(f"nm={nm} must be (n, m) with 0 < n < m, e.g. (2, 4): n zeros in every m inputs")
    if d_in % m:
        raise ValueError(f"d_in={d_in} is not a multiple of m={m}; N:M needs whole groups of m inputs")
    return n, m


def check_sparsity(sparsity: float) -> float:
    sparsity = float(sparsity)
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity={sparsity} must be in [0, 1)")
    return sparsity


def nm_ranks(score: jax.Array, m: int) -> jax.Array:
    """Rank (0 = lowest) of each score within its run of ``m`` consecutive entries of the last
    axis; ties rank the lower index first (a stable sort). ``score``: (..., k * m)."""
    *lead, cols = score.shape
    g = score.reshape(*lead, cols // m, m)
    a, b = g[..., :, None], g[..., None, :]  # (..., groups, m, m): entry i against entry j
    idx = jnp.arange(m)
    before = (b < a) | ((b == a) & (idx[None, :] < idx[:, None]))
    return before.sum(-1).reshape(*lead, cols)


def _row_kth_bits(bits: jax.Array, k: jax.Array, axis_name: str | None = None) -> jax.Array:
    """Each row's k-th smallest (0-based) of ``bits: (R, C)``, non-negative floats bitcast to ints
    (they order like the floats): a binary search over the bit patterns, one counting pass per bit.
    XLA's comparator sort on CPU is many times slower. ``axis_name`` (inside ``shard_map``): each
    device holds a slice of every row's columns; maxima and counts are reduced over that axis."""
    lo = jnp.full(bits.shape[:1], -1, bits.dtype)
    hi = bits.max(axis=1)  # per row: count(bits <= lo) <= k < count(bits <= hi)
    if axis_name is not None:
        hi = jax.lax.pmax(hi, axis_name)

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        count = jnp.sum(bits <= mid[:, None], axis=1)
        if axis_name is not None:
            count = jax.lax.psum(count, axis_name)
        enough = count > k
        return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

    return jax.lax.fori_loop(0, 8 * bits.dtype.itemsize, halve, (lo, hi))[1]


def _as_bits(x: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(x, jnp.int32 if x.dtype.itemsize == 4 else jnp.int64)


def kth_smallest(x: jax.Array, k: jax.Array, axis_name: str | None = None) -> jax.Array:
    """``sort(x.ravel())[k]`` for non-negative ``x`` without sorting: non-negative IEEE floats
    order like their bit patterns read as integers (:func:`_row_kth_bits`). NaN sorts last.
    ``axis_name`` (inside ``shard_map``): ``x`` is this device's part of an array split over that
    mesh axis, and ``k`` and the result refer to the whole array (exact: integer counts)."""
    bits = _as_bits(x).reshape(1, -1)
    return jax.lax.bitcast_convert_type(_row_kth_bits(bits, k, axis_name)[0], x.dtype)


@functools.partial(jax.jit, static_argnames=("nm",))
def mask_from_scores(score: jax.Array, k: jax.Array, nm: tuple[int, int] | None = None) -> jax.Array:
    """Prune mask (True = pruned) of ``score: (d_out, d_in)`` compared within each row: the ``k``
    lowest of every row, or with ``nm=(n, m)`` the ``n`` lowest of every ``m`` consecutive
    entries; ties go to the lower column index."""
    if nm is not None:
        return nm_ranks(score, nm[1]) < nm[0]
    # The k lowest of each row in stable-sort order, without sorting (XLA:CPU's sort made this the
    # slowest step of a Wanda run): t = each row's k-th smallest score, then everything below t,
    # and the first k - count(< t) of the entries equal to t in column order.
    bits = _as_bits(score)  # (d_out, d_in), ordered like the scores
    t = _row_kth_bits(bits, k)
    below = bits < t[:, None]
    tied = bits == t[:, None]
    need = k - below.sum(axis=1, keepdims=True)
    return below | (tied & (jnp.cumsum(tied, axis=1) <= need))


def prune(
    W: jax.Array,
    col_norms_sq: jax.Array,
    sparsity: float = 0.5,
    nm: tuple[int, int] | None = None,
) -> jax.Array:
    """Wanda prune mask for ``W: (d_out, d_in)``; True where the weight is pruned.

    ``col_norms_sq: (d_in,)``, non-negative, proportional to ``||X_j||²`` (e.g. ``diag(H)``).
    Unstructured: every row gets exactly ``int(d_in * sparsity)`` pruned weights. ``nm=(n, m)``:
    ``n`` pruned in every ``m`` consecutive inputs of each row (``sparsity`` is then ignored;
    ``d_in`` must be a multiple of ``m``). The score is computed in float32, as the reference
    does (fp16 ``|W|`` times the fp32 ``sqrt(scaler_row)``).
    """
    W = jnp.asarray(W)
    col_norms_sq = jnp.asarray(col_norms_sq)
    if W.ndim != 2 or col_norms_sq.shape != (W.shape[1],):
        raise ValueError(
            f"need W (d_out, d_in) and col_norms_sq (d_in,), got {W.shape} and {col_norms_sq.shape}"
        )
    nm = check_nm(nm, W.shape[1])
    k = int(W.shape[1] * check_sparsity(sparsity))
    dtype = jnp.promote_types(W.dtype, jnp.float32)
    score = jnp.abs(W).astype(dtype) * jnp.sqrt(col_norms_sq.astype(dtype))[None, :]
    return mask_from_scores(score, k, nm)
