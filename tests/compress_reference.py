"""NumPy references for the compression solvers, written from the papers' equations and the
reference code as the anchors note describes it (§1.2 Wanda, §2.2-2.5 SparseGPT, §3.1-3.4 GPTQ,
quantizer and packing): plain loops, literal slicing, float64 by default. They share no code
with ``zipcal_jax.compress``.

Tie-breaking where the reference leaves it open: stable (lower index first) everywhere — sorting
by ``(score, index)`` — and act-order by descending ``diag(H)``, ties to the lower index.
"""

from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------- masks (§1.2)


def _lowest(values, indices, count):
    """The ``count`` indices with the lowest values, ties to the lower index (a stable sort)."""
    return sorted(indices, key=lambda j: (values[j], j))[:count]


def row_mask(score, sparsity, nm=None):
    """Per output row: prune ``int(d_in * sparsity)`` lowest, or ``n`` lowest of every ``m``."""
    d_out, d_in = score.shape
    mask = np.zeros(score.shape, bool)
    for r in range(d_out):
        if nm is None:
            mask[r, _lowest(score[r], range(d_in), int(d_in * sparsity))] = True
        else:
            n, m = nm
            for s in range(0, d_in, m):
                mask[r, _lowest(score[r], range(s, s + m), n)] = True
    return mask


def wanda_mask(W, col_norms_sq, sparsity=0.5, nm=None):
    """S_ij = |W_ij| * sqrt(scaler_row_j), in float32 as the reference (fp16 |W| x fp32 sqrt)."""
    score = np.abs(W).astype(np.float32) * np.sqrt(np.asarray(col_norms_sq, np.float32))[None, :]
    return row_mask(score, sparsity, nm)


def magnitude_mask_matrix(W, sparsity):
    """The Wanda repo's ``prune_magnitude``: one threshold over the matrix, ties included."""
    score = np.abs(W).astype(np.float32)
    thresh = np.sort(score.ravel())[int(W.size * sparsity)]
    return score <= thresh


# ----------------------------------------------------------------------------- quantizer (§3.2)


def quantize(x, scale, zero, maxq):
    return scale * (np.clip(np.round(x / scale) + zero, 0, maxq) - zero)


def find_params(x, bits, sym=False, mse=False, norm=2.4, grid=100, maxshrink=0.8):
    """Per row of ``x`` (rows, cols): (scale, zero) arrays in ``x``'s dtype."""
    dt = x.dtype.type
    maxq = 2**bits - 1
    scales, zeros = np.zeros(x.shape[0], x.dtype), np.zeros(x.shape[0], x.dtype)
    for r in range(x.shape[0]):
        xmin, xmax = min(x[r].min(), dt(0)), max(x[r].max(), dt(0))
        if sym:
            xmax = max(abs(xmin), xmax)
            if xmin < 0:
                xmin = -xmax
        if xmin == 0 and xmax == 0:
            xmin, xmax = dt(-1), dt(1)
        scale = dt((xmax - xmin) / dt(maxq))
        zero = dt((maxq + 1) / 2) if sym else np.round(-xmin / scale)
        if mse:
            best = np.inf
            zero_sym = zero
            for i in range(int(maxshrink * grid)):
                p = dt(1 - i / grid)
                xmin1, xmax1 = p * xmin, p * xmax
                scale1 = dt((xmax1 - xmin1) / dt(maxq))
                zero1 = zero_sym if sym else np.round(-xmin1 / scale1)
                err = np.sum(np.abs(quantize(x[r], scale1, zero1, maxq) - x[r]) ** dt(norm))
                if err < best:
                    best, scale, zero = err, scale1, zero1
        scales[r], zeros[r] = scale, zero
    return scales, zeros


def rtn(W, bits, group_size=-1, sym=False, mse=False):
    """Round to nearest per group of ``group_size`` consecutive inputs (-1: the whole row)."""
    Q = np.zeros_like(W)
    g = W.shape[1] if group_size == -1 else group_size
    for c in range(0, W.shape[1], g):
        scale, zero = find_params(W[:, c : c + g], bits, sym, mse)
        Q[:, c : c + g] = quantize(W[:, c : c + g], scale[:, None], zero[:, None], 2**bits - 1)
    return Q


# ----------------------------------------------------------------------------- OBS solvers


def _prepare(W, H, dtype):
    W, H = np.array(W, dtype=dtype), np.array(H, dtype=dtype)
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    return W, H


def _hinv_upper(H, percdamp):
    """damp = percdamp * mean(diag H); Hinv = cholesky(cholesky_inverse(cholesky(H)), upper)."""
    H = H.copy()
    H[np.diag_indices_from(H)] += percdamp * np.mean(np.diag(H))
    L = np.linalg.cholesky(H)
    Linv = np.linalg.inv(L)
    return np.linalg.cholesky(Linv.T @ Linv).T  # upper U with U^T U = H^-1


def sparsegpt(
    W, H, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=0.01, bits=None, sym=False, dtype=np.float64
):
    """``SparseGPT.fasterprune`` (§2.2-2.5). Returns (W, total loss, mask).

    ``bits``: joint mode, a per-row quantizer fitted on the dense W before anything else.
    ``sparsity=0`` without N:M prunes nothing (the library's documented choice).
    """
    rows, columns = W.shape
    if bits is not None:
        scale, zero = find_params(np.array(W, dtype=dtype), bits, sym)
    W, H = _prepare(W, H, dtype)
    Hinv = _hinv_upper(H, percdamp)
    Losses = np.zeros(rows, dtype)
    mask = np.zeros(W.shape, bool)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].copy()
        Q1, Err1, Losses1 = np.zeros_like(W1), np.zeros_like(W1), np.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if prunen == 0 and sparsity > 0:
            tmp = W1**2 / np.diag(Hinv1)[None, :] ** 2
            thresh = np.sort(tmp.ravel())[int(tmp.size * sparsity)]
            mask1 = tmp <= thresh
        else:
            mask1 = np.zeros(W1.shape, bool)
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i : i + prunem] ** 2 / np.diag(Hinv1)[i : i + prunem][None, :] ** 2
                for r in range(rows):
                    mask1[r, [i + j for j in _lowest(tmp[r], range(prunem), prunen)]] = True
            q = w.copy()
            q[mask1[:, i]] = 0
            if bits is not None:
                q = quantize(q, scale, zero, 2**bits - 1)
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d**2
            err1 = (w - q) / d
            W1[:, i:] -= np.outer(err1, Hinv1[i, i:])
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        mask[:, i1:i2] = mask1
        Losses += np.sum(Losses1, 1) / 2
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W, Losses.sum(), mask


def gptq(
    W,
    H,
    bits=4,
    groupsize=-1,
    sym=False,
    actorder=False,
    static_groups=False,
    blocksize=128,
    percdamp=0.01,
    mse=False,
    dtype=np.float64,
):
    """``GPTQ.fasterquant`` (§3.1). Returns (Q, total loss, scale, zero) with ``scale``/``zero``
    the grid of every weight, (d_out, d_in), in the original column order."""
    columns = W.shape[1]
    maxq = 2**bits - 1
    scale, zero = find_params(np.array(W, dtype=dtype), bits, sym, mse)
    W, H = _prepare(W, H, dtype)
    if static_groups and groupsize != -1:
        groups = [find_params(W[:, i : i + groupsize], bits, sym, mse) for i in range(0, columns, groupsize)]
    perm = np.arange(columns)
    if actorder:
        perm = np.array(sorted(range(columns), key=lambda j: (-np.diag(H)[j], j)))
        W, H = W[:, perm], H[perm][:, perm]
    Hinv = _hinv_upper(H, percdamp)
    Q, Losses = np.zeros_like(W), np.zeros_like(W)
    S, Z = np.zeros_like(W), np.zeros_like(W)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].copy()
        Q1, Err1, Losses1 = np.zeros_like(W1), np.zeros_like(W1), np.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1:
                if not static_groups:
                    if (i1 + i) % groupsize == 0:
                        scale, zero = find_params(W[:, i1 + i : i1 + i + groupsize], bits, sym, mse)
                else:
                    scale, zero = groups[perm[i1 + i] // groupsize]
            q = quantize(w, scale, zero, maxq)
            S[:, i1 + i], Z[:, i1 + i] = scale, zero
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d**2
            err1 = (w - q) / d
            W1[:, i:] -= np.outer(err1, Hinv1[i, i:])
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        Losses[:, i1:i2] = Losses1 / 2
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    invperm = np.argsort(perm)
    return Q[:, invperm], Losses.sum(), S[:, invperm], Z[:, invperm]


# ----------------------------------------------------------------------------- packing (§3.4)


def pack_autogptq(codes, zeros, bits):
    """AutoGPTQ ``QuantLinear.pack`` word loops: ``codes`` (d_out, d_in), ``zeros`` (d_out,
    n_groups) already in the stored convention; d_in and d_out multiples of 32."""

    def pack_rows(intw):  # pack along axis 0 of (n, cols) uint32
        out = np.zeros((intw.shape[0] // 32 * bits, intw.shape[1]), np.uint32)
        i = row = 0
        while row < out.shape[0]:
            if bits in (2, 4, 8):
                for j in range(i, i + 32 // bits):
                    out[row] |= intw[j] << (bits * (j - i))
                i += 32 // bits
                row += 1
            else:  # 3 bits: 32 values in 3 words, values 10 and 21 straddle two words
                for j in range(i, i + 10):
                    out[row] |= intw[j] << (3 * (j - i))
                i += 10
                out[row] |= intw[i] << 30
                row += 1
                out[row] |= (intw[i] >> 2) & 1
                i += 1
                for j in range(i, i + 10):
                    out[row] |= intw[j] << (3 * (j - i) + 1)
                i += 10
                out[row] |= intw[i] << 31
                row += 1
                out[row] |= (intw[i] >> 1) & 0x3
                i += 1
                for j in range(i, i + 10):
                    out[row] |= intw[j] << (3 * (j - i) + 2)
                i += 10
                row += 1
        return out.view(np.int32)

    qweight = pack_rows(np.asarray(codes, np.uint32).T.copy())
    qzeros = pack_rows(np.asarray(zeros, np.uint32).copy()).T.copy()  # along d_out
    return qweight, qzeros
