"""Low-level compression solvers against NumPy references written from the equations
(``compress_reference.py``), plus properties, packing, and the failure paths.

Parity runs twice: under ``jax.enable_x64`` with float64 inputs against the float64 reference
(the same algorithm, so codes must match exactly and weights to ~1e-9), and in float32 on
ill-conditioned layers against the float64 reference (float32 tolerance).
"""

from __future__ import annotations

import compress_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zipcal_jax.compress import baselines, gptq, quant, sparsegpt, wanda

pytestmark = pytest.mark.usefixtures("highest_precision")
FAST = settings(max_examples=25, deadline=None)


def make_layer(d_out, d_in, n_samples, *, dead=(), tiny=False, seed=0, dtype=np.float32):
    """A random linear layer and its Hessian H = 2/N XᵀX from ``n_samples`` inputs whose columns
    have spread-out scales; ``dead`` columns never fire; ``tiny`` makes columns 0 and 1 nearly
    collinear (one eigenvalue ~1e-8 of the largest). ``n_samples < d_in`` makes H singular."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, d_in)) * rng.uniform(0.1, 3.0, d_in)
    if tiny:
        X[:, 1] = X[:, 0] + 1e-4 * rng.standard_normal(n_samples)
    X[:, list(dead)] = 0
    H = 2 / n_samples * X.T @ X
    W = rng.standard_normal((d_out, d_in)) * 0.05
    return W.astype(dtype), H.astype(dtype)


# ----------------------------------------------------------------------------- Wanda, magnitude


def tied_problem(d_out, d_in, seed):
    """Weights and column norms from a handful of values: many exactly tied scores, dead inputs."""
    rng = np.random.default_rng(seed)
    W = rng.choice(np.array([-2, -1, -0.5, 0, 0.5, 1, 2], np.float32), size=(d_out, d_in))
    norms = rng.choice(np.array([0, 1, 4, 9], np.float32), size=d_in)
    return W, norms


@pytest.mark.parametrize("nm", [None, (2, 4), (4, 8)])
def test_wanda_mask_matches_reference_with_ties(nm):
    W, norms = tied_problem(16, 64, seed=1)
    for sparsity in (0.5, 0.3):
        mask = np.asarray(wanda.prune(W, norms, sparsity, nm))
        np.testing.assert_array_equal(mask, ref.wanda_mask(W, norms, sparsity, nm))
    W, norms = make_layer(64, 256, 512)[0], np.random.default_rng(2).uniform(0, 2, 256)
    np.testing.assert_array_equal(
        np.asarray(wanda.prune(W, norms, 0.5, nm)), ref.wanda_mask(W, norms, 0.5, nm)
    )


@FAST
@given(
    shape=st.sampled_from([(4, 16), (8, 48)]),
    sparsity=st.floats(0, 0.95),
    nm=st.sampled_from([None, (2, 4), (1, 4), (4, 8)]),
    seed=st.integers(0, 2**16),
)
def test_wanda_exact_row_sparsity_and_nm(shape, sparsity, nm, seed):
    W, norms = tied_problem(*shape, seed)
    mask = np.asarray(wanda.prune(W, norms, sparsity, nm))
    assert mask.dtype == bool and mask.shape == shape
    if nm is None:
        assert (mask.sum(1) == int(shape[1] * sparsity)).all()
    else:
        assert (mask.reshape(shape[0], -1, nm[1]).sum(-1) == nm[0]).all()
    np.testing.assert_array_equal(mask, ref.wanda_mask(W, norms, sparsity, nm))


def test_magnitude_prune_row_and_matrix_scope():
    W, _ = tied_problem(16, 64, seed=3)
    ones = np.ones(64, np.float32)
    for nm in (None, (2, 4)):
        np.testing.assert_array_equal(
            np.asarray(baselines.magnitude_prune(W, 0.5, nm)), ref.wanda_mask(W, ones, 0.5, nm)
        )
    np.testing.assert_array_equal(
        np.asarray(baselines.magnitude_prune(W, 0.4, scope="matrix")), ref.magnitude_mask_matrix(W, 0.4)
    )


def test_mask_input_checks():
    W = np.ones((4, 10), np.float32)
    with pytest.raises(ValueError, match="multiple of m"):
        wanda.prune(W, np.ones(10), nm=(2, 4))
    with pytest.raises(ValueError, match="sparsity"):
        baselines.magnitude_prune(W, 1.0)
    with pytest.raises(ValueError, match="col_norms_sq"):
        wanda.prune(W, np.ones(9))
    with pytest.raises(ValueError, match="0 < n < m"):
        wanda.prune(np.ones((4, 8)), np.ones(8), nm=(4, 4))


# ----------------------------------------------------------------------------- quantizer, RTN


def quant_rows(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 40)).astype(np.float32)
    x[0] = 0  # all-zero row: grid [-1, 1]
    x[1] = np.abs(x[1])  # all >= 0: asym zero 0, sym keeps xmin = 0
    x[2] = -np.abs(x[2])
    x[3, :] = 0.25  # constant row
    return x


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sym", [False, True])
def test_find_params_matches_reference(bits, sym):
    x = quant_rows(bits)
    scale, zero = quant.find_params(jnp.asarray(x), quant.Quantizer(bits, sym))
    r_scale, r_zero = ref.find_params(x, bits, sym)
    np.testing.assert_array_equal(np.asarray(scale), r_scale)
    np.testing.assert_array_equal(np.asarray(zero), r_zero)


def test_find_params_mse_matches_reference():
    x = quant_rows(7).astype(np.float64)
    with jax.enable_x64(True):
        for bits, sym in [(4, False), (3, True), (2, False)]:
            scale, zero = quant.find_params(jnp.asarray(x), quant.Quantizer(bits, sym, mse=True))
            r_scale, r_zero = ref.find_params(x, bits, sym, mse=True)
            np.testing.assert_array_equal(np.asarray(zero), r_zero)
            np.testing.assert_allclose(np.asarray(scale), r_scale, rtol=1e-12)
    scale, zero = quant.find_params(jnp.asarray(x, jnp.float32), quant.Quantizer(4, mse=True))
    r_scale, _ = ref.find_params(x.astype(np.float32), 4, False, mse=True)
    np.testing.assert_allclose(np.asarray(scale), r_scale, rtol=1e-6)


@pytest.mark.parametrize(
    ("bits", "group_size", "sym"), [(4, -1, False), (3, 32, True), (8, 64, False), (2, 128, True)]
)
def test_rtn_matches_reference(bits, group_size, sym):
    W = make_layer(16, 200, 8)[0]
    W[:, 5] = 0
    W_q, params = baselines.rtn_quantize(W, bits, group_size, sym)
    np.testing.assert_array_equal(np.asarray(W_q), ref.rtn(W, bits, group_size, sym))
    np.testing.assert_array_equal(np.asarray(params.dequantize()), np.asarray(W_q))
    assert int(params.codes.max()) <= 2**bits - 1


@FAST
@given(
    bits=st.sampled_from([2, 3, 4, 8]),
    sym=st.booleans(),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_quantized_values_lie_on_the_grid(bits, sym, scale, seed):
    x = quant_rows(seed) * np.float32(scale)
    q = quant.Quantizer(bits, sym)
    s, z = quant.find_params(jnp.asarray(x), q)
    codes = np.asarray(quant.to_codes(jnp.asarray(x), s[:, None], z[:, None], q.maxq)).astype(np.float32)
    deq = np.asarray(quant.quantize(jnp.asarray(x), s[:, None], z[:, None], q.maxq))
    assert codes.min() >= 0 and codes.max() <= q.maxq
    np.testing.assert_array_equal(deq, np.asarray(s)[:, None] * (codes - np.asarray(z)[:, None]))
    assert (np.asarray(z) >= 0).all() and (np.asarray(z) <= q.maxq).all()
    assert (quant.quantize(jnp.zeros_like(x), s[:, None], z[:, None], q.maxq) == 0).all()  # 0 on the grid


# ----------------------------------------------------------------------------- GPTQ parity

GPTQ_CASES = [
    dict(bits=4, group_size=-1),
    dict(bits=3, group_size=32, sym=True),
    dict(bits=2, group_size=64, act_order=True),
    dict(bits=4, group_size=32, act_order=True, static_groups=True),
    dict(bits=8, group_size=128, act_order=True),  # groups wider than blocks
    dict(bits=4, group_size=48, sym=True, mse=True),  # groups start mid-block
]


def _gptq_ref(W, H, *, bits, group_size, sym=False, act_order=False, static_groups=False, mse=False, **kw):
    return ref.gptq(
        W,
        H,
        bits,
        group_size,
        sym,
        act_order,
        static_groups,
        mse=mse,
        dtype=kw.pop("dtype", np.float64),
        **kw,
    )


@pytest.mark.parametrize("case", GPTQ_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_gptq_matches_reference_float64(case):
    """Same algorithm in float64: identical grids for every weight, weights to 1e-9."""
    W, H = make_layer(24, 200, 150, dead=(3, 77), dtype=np.float64)
    Q_ref, loss_ref, S_ref, Z_ref = _gptq_ref(W, H, blocksize=64, **case)
    with jax.enable_x64(True):
        W_q, params, info = gptq.quantize(W, H, blocksize=64, return_info=True, **case)
        assert W_q.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(W_q), Q_ref, rtol=0, atol=1e-9)
        g = np.asarray(params.g_idx)
        np.testing.assert_array_equal(np.asarray(params.zeros)[:, g], Z_ref)
        np.testing.assert_allclose(np.asarray(params.scales)[:, g], S_ref, rtol=1e-9)
        np.testing.assert_array_equal(np.asarray(params.dequantize(jnp.float64)), np.asarray(W_q))
        np.testing.assert_allclose(float(info.loss), loss_ref, rtol=1e-9)
    assert not bool(info.fallback) and int(info.attempts) == 1
    assert (np.asarray(W_q)[:, [3, 77]] == 0).all()  # dead inputs are zeroed


F32_GPTQ = [
    ((96, 384), dict(bits=4, group_size=128, act_order=True)),
    ((64, 256), dict(bits=3, group_size=-1, sym=True)),
]


@pytest.mark.parametrize(("shape", "case"), F32_GPTQ)
def test_gptq_float32_on_singular_hessian(shape, case):
    """float32 against the float64 reference: H from d_in/2 samples (singular), two dead inputs, a
    near-collinear pair; the reference damping leaves cond(H) ~ 1e3. A rounding decision at a grid
    midpoint may flip (none does on CPU), so up to 0.1% of the weights may differ."""
    W, H = make_layer(*shape, n_samples=shape[1] // 2, dead=(0, 9), tiny=True, seed=4)
    Q_ref, loss_ref, _, _ = _gptq_ref(W, H, **case)
    W_q, params, info = gptq.quantize(W, H, return_info=True, **case)
    W_q = np.asarray(W_q)
    assert W_q.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(params.dequantize()), W_q)  # bitwise in float32
    assert np.mean(np.abs(W_q - Q_ref) > 1e-5) <= 1e-3
    assert float(info.loss) == pytest.approx(loss_ref, rel=1e-4)


def test_float32_on_severely_ill_conditioned_hessian():
    """percdamp=1e-5 leaves cond(H) ~ 1e6: in float32 (NumPy's as well as ours) a quarter of the
    GPTQ grid decisions and some SparseGPT mask decisions differ from float64, but the result is
    finite and its reconstruction loss as good as the float64 reference's."""
    shape, case = F32_GPTQ[0]
    W, H = make_layer(*shape, n_samples=shape[1] // 2, dead=(0, 9), tiny=True, seed=4)
    _, loss_ref, _, _ = _gptq_ref(W, H, percdamp=1e-5, **case)
    W_q, _, info = gptq.quantize(W, H, percdamp=1e-5, return_info=True, **case)
    assert np.isfinite(np.asarray(W_q)).all() and int(info.attempts) == 1
    assert float(info.loss) < 1.05 * loss_ref
    W, H = make_layer(64, 256, 128, dead=(0, 9), tiny=True, seed=5)
    _, loss_ref, _ = _sparsegpt_ref(W, H, percdamp=1e-5)
    W_new, info = _sparsegpt(W, H, percdamp=1e-5)
    assert np.isfinite(np.asarray(W_new)).all() and float(info.loss) < 1.05 * loss_ref


def test_gptq_params_layout_and_groups():
    W, H = make_layer(24, 200, 150, dead=(3,))
    for static in (False, True):
        W_q, p = gptq.quantize(
            W, H, bits=4, group_size=32, act_order=True, static_groups=static, blocksize=64
        )
        assert p.codes.shape == (24, 200) and p.codes.dtype == jnp.uint8
        assert p.scales.shape == p.zeros.shape == (24, 7) and p.g_idx.shape == (200,)
        assert sorted(np.asarray(p.perm).tolist()) == list(range(200))
        g = np.asarray(p.g_idx)
        if static:  # groups contiguous in the original order: no reordering at inference
            np.testing.assert_array_equal(g, np.arange(200) // 32)
        else:  # contiguous in act-order: group k holds perm[32k : 32k + 32]
            np.testing.assert_array_equal(g[np.asarray(p.perm)], np.arange(200) // 32)
        assert int(p.codes.max()) <= 15
        np.testing.assert_array_equal(np.asarray(p.dequantize()), np.asarray(W_q))
    W_bf16, _ = gptq.quantize(
        jnp.asarray(W, jnp.bfloat16), H, bits=4, group_size=32, act_order=True, blocksize=64
    )
    assert W_bf16.dtype == jnp.bfloat16


# ----------------------------------------------------------------------------- SparseGPT parity

SPARSEGPT_CASES = [dict(sparsity=0.5), dict(nm=(2, 4)), dict(nm=(4, 8)), dict(sparsity=0.6, bits=4)]


def _sparsegpt_ref(W, H, *, sparsity=0.5, nm=None, bits=None, **kw):
    n, m = nm or (0, 0)
    return ref.sparsegpt(W, H, sparsity, n, m, bits=bits, **kw)


def _sparsegpt(W, H, *, bits=None, **kw):
    quantizer = quant.Quantizer(bits) if bits else None
    return sparsegpt.prune(W, H, quantizer=quantizer, return_info=True, **kw)


@pytest.mark.parametrize("case", SPARSEGPT_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_sparsegpt_matches_reference_float64(case):
    W, H = make_layer(24, 200, 150, dead=(3, 77), dtype=np.float64)
    W_ref, loss_ref, mask_ref = _sparsegpt_ref(W, H, blocksize=64, **case)
    with jax.enable_x64(True):
        W_new, info = _sparsegpt(W, H, blocksize=64, **case)
        np.testing.assert_allclose(np.asarray(W_new), W_ref, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(np.asarray(info.mask), mask_ref)
        np.testing.assert_allclose(float(info.loss), loss_ref, rtol=1e-9)
        if "bits" in case:  # joint mode: every weight on its row's grid
            np.testing.assert_array_equal(np.asarray(info.params.dequantize(jnp.float64)), np.asarray(W_new))
    W_new, mask = np.asarray(W_new), np.asarray(info.mask)
    assert (W_new[mask] == 0).all()  # pruned weights are exactly zero, also after quantization
    if "nm" in case:
        n, m = case["nm"]
        assert (mask.reshape(24, -1, m).sum(-1) == n).all()


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_float32_on_singular_hessian(nm):
    W, H = make_layer(64, 256, 128, dead=(0, 9), tiny=True, seed=5)
    W_ref, loss_ref, mask_ref = _sparsegpt_ref(W, H, nm=nm)
    W_new, info = _sparsegpt(W, H, nm=nm)
    W_new, mask = np.asarray(W_new), np.asarray(info.mask)
    assert (W_new[mask] == 0).all() and (W_new[:, [0, 9]] == 0).all()
    assert np.mean(mask != mask_ref) <= 1e-3  # a score within float32 error of the threshold may flip
    agree = (mask == mask_ref).all(1)  # rows whose mask agrees follow the reference to float32 accuracy
    assert agree.mean() > 0.9
    np.testing.assert_allclose(W_new[agree], W_ref[agree], rtol=0, atol=1e-5 * np.abs(W_ref).max())
    assert float(info.loss) == pytest.approx(loss_ref, rel=1e-4)
    if nm is None:  # the reference's block threshold: at least int(numel * sparsity) + 1 per block
        assert (mask.reshape(64, 2, 128).sum((0, 2)) >= 64 * 128 // 2 + 1).all()


def test_sparsegpt_zero_sparsity_prunes_nothing():
    W, H = make_layer(8, 64, 100)
    W_new, info = sparsegpt.prune(W, H, sparsity=0.0, blocksize=32, return_info=True)
    assert info.mask is None and np.count_nonzero(np.asarray(W_new)) == W.size


# ----------------------------------------------------------------------------- failure paths


def test_singular_hessian_escalates_damping():
    """percdamp=0 on an exactly singular H (two identical inputs): the first factorization fails,
    1e-3 (the first step from 0) succeeds, and the info says so."""
    W, H = make_layer(8, 64, 100)
    H[1, :], H[:, 1] = H[0, :], H[:, 0]
    H[1, 1] = H[0, 0]
    W_q, _, info = gptq.quantize(W, H, group_size=32, percdamp=0.0, blocksize=32, return_info=True)
    assert int(info.attempts) == 2 and float(info.percdamp) == pytest.approx(1e-3)
    assert not bool(info.fallback) and np.isfinite(np.asarray(W_q)).all()


def test_indefinite_hessian_escalates_to_large_damping():
    """Eigenvalue -2 of [[1, 3], [3, 1]]: dampings 0.01, 0.1 and 1 (times mean diag 1) fail, 10 works."""
    H = np.eye(64, dtype=np.float32)
    H[0, 1] = H[1, 0] = 3
    W = make_layer(8, 64, 100)[0]
    W_new, info = sparsegpt.prune(W, H, 0.5, blocksize=32, return_info=True)
    assert int(info.attempts) == 4 and float(info.percdamp) == pytest.approx(10.0)
    assert float(info.damp) == pytest.approx(10 * np.mean(np.diag(H)), rel=1e-6)
    assert not bool(info.fallback) and np.isfinite(np.asarray(W_new)).all()


@pytest.mark.parametrize("bad", ["negative_definite", "nan"])
def test_hopeless_hessian_falls_back(bad):
    """No damping helps: GPTQ falls back to round-to-nearest with the same groups, SparseGPT to
    magnitude pruning in block order (the reference run with U = I); never NaN, never a raise."""
    W = make_layer(8, 64, 100)[0]
    H = -np.eye(64, dtype=np.float32) if bad == "negative_definite" else np.full((64, 64), np.nan, np.float32)
    W_q, params, info = gptq.quantize(W, H, group_size=32, blocksize=32, return_info=True)
    assert bool(info.fallback) and int(info.attempts) == 5  # 0.01, 0.1, 1, 10, then the identity
    W_rtn, p_rtn = baselines.rtn_quantize(W, group_size=32)
    np.testing.assert_array_equal(np.asarray(W_q), np.asarray(W_rtn))
    np.testing.assert_array_equal(np.asarray(params.codes), np.asarray(p_rtn.codes))
    W_new, info = sparsegpt.prune(W, H, 0.5, blocksize=32, return_info=True)
    W_mag, _, _ = ref.sparsegpt(W, np.eye(64), 0.5, blocksize=32, percdamp=0.0)
    assert bool(info.fallback) and np.isfinite(np.asarray(W_new)).all()
    np.testing.assert_array_equal(np.asarray(W_new), W_mag.astype(np.float32))


def test_solver_input_checks():
    W, H = make_layer(8, 64, 100)
    with pytest.raises(ValueError, match=r"H \(d_in, d_in\)"):
        gptq.quantize(W, H[:32, :32])
    with pytest.raises(ValueError, match="bits"):
        gptq.quantize(W, H, bits=5)
    with pytest.raises(ValueError, match="group_size"):
        gptq.quantize(W, H, group_size=0)
    with pytest.raises(ValueError, match="blocksize"):
        sparsegpt.prune(W, H, nm=(2, 4), blocksize=30)
    with pytest.raises(ValueError, match="percdamp"):
        sparsegpt.prune(W, H, percdamp=-0.1)


# ----------------------------------------------------------------------------- packing


def random_params(rng, bits, d_out, d_in, group_size, sym=False):
    g = d_in if group_size == -1 else group_size
    n_groups = -(-d_in // g)
    zeros = (
        np.full((d_out, n_groups), 2 ** (bits - 1)) if sym else rng.integers(1, 2**bits, (d_out, n_groups))
    )
    return quant.QuantParams(
        codes=rng.integers(0, 2**bits, (d_out, d_in)).astype(np.uint8),
        scales=rng.uniform(1e-3, 1, (d_out, n_groups)).astype(np.float32),
        zeros=zeros.astype(np.int32),
        g_idx=(np.arange(d_in) // g).astype(np.int32),
        perm=None,
        bits=bits,
        group_size=group_size,
        sym=sym,
    )


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_matches_autogptq_layout(bits):
    rng = np.random.default_rng(bits)
    p = random_params(rng, bits, 64, 128, 32)
    packed = quant.pack(p)  # v1: zero - 1 stored
    qweight, qzeros = ref.pack_autogptq(p.codes, np.asarray(p.zeros) - 1, bits)
    assert packed["qweight"].shape == (128 * bits // 32, 64) and packed["qweight"].dtype == np.int32
    np.testing.assert_array_equal(packed["qweight"], qweight)
    np.testing.assert_array_equal(packed["qzeros"], qzeros)
    assert packed["scales"].dtype == np.float16 and packed["scales"].shape == (4, 64)
    np.testing.assert_array_equal(
        quant.pack(p, "gptq_v2")["qzeros"], ref.pack_autogptq(p.codes, p.zeros, bits)[1]
    )


@settings(max_examples=60, deadline=None)
@given(
    bits=st.sampled_from([2, 3, 4, 8]),
    d_out=st.integers(1, 70),
    d_in=st.integers(1, 90),
    group_size=st.sampled_from([-1, 8, 32, 128]),
    fmt=st.sampled_from(["gptq", "gptq_v2"]),
    seed=st.integers(0, 2**16),
)
def test_pack_unpack_round_trip(bits, d_out, d_in, group_size, fmt, seed):
    p = random_params(np.random.default_rng(seed), bits, d_out, d_in, group_size)
    packed = quant.pack(p, fmt)
    assert packed["qweight"].shape == (-(-d_in * bits // 32), d_out)
    codes, scales, zeros, g_idx = quant.unpack(packed, bits, fmt)
    np.testing.assert_array_equal(codes, p.codes)
    np.testing.assert_array_equal(zeros, p.zeros)
    np.testing.assert_array_equal(g_idx, p.g_idx)
    np.testing.assert_array_equal(scales, p.scales.astype(np.float16).astype(np.float32))


def test_pack_gptq_output_and_v1_zero_guard():
    W, H = make_layer(24, 200, 150, dead=(3,))
    _, p = gptq.quantize(W, H, bits=4, group_size=32, act_order=True, blocksize=64)
    codes, scales, zeros, g_idx = quant.unpack(quant.pack(p), 4)
    np.testing.assert_array_equal(codes, np.asarray(p.codes))
    np.testing.assert_array_equal(g_idx, np.asarray(p.g_idx))
    deq = scales[:, g_idx] * (codes.astype(np.float32) - zeros[:, g_idx])  # fp16-rounded scales
    np.testing.assert_allclose(deq, np.asarray(p.dequantize()), rtol=1e-3, atol=1e-6)
    _, p = baselines.rtn_quantize(np.abs(W), group_size=32)  # all >= 0: asymmetric zero point 0
    assert (np.asarray(p.zeros) == 0).any()
    with pytest.raises(ValueError, match="gptq_v2"):
        quant.pack(p)
    np.testing.assert_array_equal(
        quant.unpack(quant.pack(p, "gptq_v2"), 4, "gptq_v2")[2], np.asarray(p.zeros)
    )
    with pytest.raises(ValueError, match="check bits"):
        quant.unpack(quant.pack(p, "gptq_v2"), 8, "gptq_v2")
