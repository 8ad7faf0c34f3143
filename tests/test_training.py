"""Training with optax (``zipcal_jax.compress.training``, ``Llama(..., remat=...)``) on tiny random
LLaMAs. References: plain optax on the unmasked parameters, NumPy for the loss and the grid."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from zipcal_jax.compress import gptq, quant, training
from zipcal_jax.models import llama

pytestmark = pytest.mark.usefixtures("highest_precision")

VOCAB = 64
# Every linear is (32, 32) (kv heads = heads, F = D), so GPTQ compiles once for all of them.
CFG = llama.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0)  # fmt: skip


# One compiled loss-and-gradient program shared by the tests (same model structure and shapes).
value_and_grad = nnx.jit(nnx.value_and_grad(training.lm_loss), static_argnums=3)
apply_update = nnx.jit(lambda optimizer, model, grads: optimizer.update(model, grads))


def tiny_model(seed: int = 0) -> llama.Llama:
    return llama.Llama(CFG, rngs=nnx.Rngs(seed))


def batch(seed: int = 1, B: int = 4, T: int = 16) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (B, T)).astype(np.int32)
    mask = np.ones((B, T), bool)
    mask[1, 11:] = False  # right padding
    mask[2, :5] = False  # left padding
    return jnp.asarray(ids), jnp.asarray(mask)


def prune_randomly(model: llama.Llama, sparsity: float = 0.5, seed: int = 0) -> dict[str, np.ndarray]:
    """Zero a random ``sparsity`` of every linear; returns {name: mask (d_out, d_in)}."""
    rng = np.random.default_rng(seed)
    masks = {}
    for name in llama.linear_names(model):
        W = llama.get_linear_weight(model, name)
        masks[name] = rng.random(W.shape) < sparsity
        llama.set_linear_weight(model, name, np.where(masks[name], 0, W))
    return masks


def masked_pairs(masks, tree) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mask, leaf) for every leaf of ``tree`` that ``masks`` (None = not pruned) marks."""
    pairs = []
    jax.tree.map(lambda m, x: m is None or pairs.append((np.asarray(m), np.asarray(x))), masks, tree,
                 is_leaf=lambda x: x is None)  # fmt: skip
    return pairs


def kernels(model: llama.Llama) -> dict[str, np.ndarray]:
    return {n: llama.get_linear_weight(model, n) for n in llama.linear_names(model)}


# ----------------------------------------------------------------------------- loss and remat


def test_lm_loss_matches_numpy():
    model = tiny_model()
    ids, mask = batch()
    logits = np.asarray(llama.forward(model, ids, mask), np.float64)[:, :-1]
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    ids_np, mask_np = np.asarray(ids), np.asarray(mask)
    nll = -np.take_along_axis(logp, ids_np[:, 1:, None], axis=-1)[..., 0]
    keep = mask_np[:, :-1] & mask_np[:, 1:]
    expected = nll[keep].mean()
    np.testing.assert_allclose(float(value_and_grad(model, ids, mask, False)[0]), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="attention_mask"):
        training.lm_loss(model, ids, mask[:, :5])


def test_remat_gives_same_loss_and_gradients():
    model = tiny_model()
    ids, mask = batch()
    plain = value_and_grad(model, ids, mask, False)
    remat = value_and_grad(model, ids, mask, True)
    np.testing.assert_allclose(float(remat[0]), float(plain[0]), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), remat[1], plain[1])
    # the remat program really checkpoints the layers; a checkpoint policy is accepted too
    graphdef, state = nnx.split(model)

    def jaxpr(remat):
        return str(jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(ids, mask, remat=remat))(state))

    assert jaxpr(True).count("remat") == CFG.num_hidden_layers
    assert jaxpr(False).count("remat") == 0
    assert (
        jaxpr(jax.checkpoint_policies.dots_with_no_batch_dims_saveable).count("remat")
        == CFG.num_hidden_layers
    )
    with pytest.raises(ValueError, match="remat"):
        model(ids, mask, remat="yes")


def test_adam_steps_with_nnx_optimizer_lower_the_loss():
    model = tiny_model()
    ids, mask = batch()
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    def step(model, optimizer):
        loss, grads = value_and_grad(model, ids, mask, False)
        apply_update(optimizer, model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(8)]
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(b < a for a, b in itertools.pairwise(losses)), losses


# ----------------------------------------------------------------------------- keep_sparsity

OPTIMIZERS = {
    "adam": lambda: optax.adam(1e-2),
    "adamw": lambda: optax.adamw(1e-2, weight_decay=0.1),
    "sgd_momentum": lambda: optax.sgd(1e-2, momentum=0.9),
}


def test_sparsity_masks_mark_the_zeros_and_match_the_param_state():
    model = tiny_model()
    pruned = prune_randomly(model)
    masks = training.sparsity_masks(model)
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    # same structure as the parameters, None where nothing is pruned
    assert jax.tree.structure(masks, is_leaf=lambda x: x is None) == jax.tree.structure(params)
    for name, m in pruned.items():
        i, mod, lin = name.split(".")[1:]
        got = np.asarray(masks["layers"][int(i)][mod][lin]["kernel"])
        np.testing.assert_array_equal(got, m.T)  # kernel layout (d_in, d_out)
    assert masks["embed"]["embedding"] is None and masks["lm_head"]["kernel"] is None
    # explicit masks (the pipeline's, (d_out, d_in)) give the same tree
    explicit = training.sparsity_masks(model, pruned=pruned)
    jax.tree.map(np.testing.assert_array_equal, explicit, masks)
    with pytest.raises(ValueError, match="shape"):
        training.sparsity_masks(model, pruned={"layers.0.mlp.up_proj": pruned["layers.0.mlp.up_proj"].T[:3]})
    with pytest.raises(ValueError, match="no linear named"):
        training.sparsity_masks(model, pruned={"layers.9.mlp.up_proj": pruned["layers.0.mlp.up_proj"]})


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_pruned_weights_stay_exactly_zero_for_50_steps(opt):
    model = tiny_model()
    prune_randomly(model)
    masks = training.sparsity_masks(model)
    optimizer = nnx.Optimizer(model, training.keep_sparsity(OPTIMIZERS[opt](), masks), wrt=nnx.Param)
    ids, mask = batch()
    before = kernels(model)

    def step(model, optimizer):
        loss, grads = value_and_grad(model, ids, mask, False)
        apply_update(optimizer, model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(50)]
    assert losses[-1] < losses[0]
    after = kernels(model)
    for name, W in after.items():
        zero = before[name] == 0
        assert (W[zero] == 0).all(), name  # exactly zero, for every pruned entry
        assert (W[~zero] != before[name][~zero]).mean() > 0.9, name  # the kept weights did train
    assert training.sparsity_violations(model, masks) == 0


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_masked_update_equals_dense_update_on_kept_weights(opt):
    """Same optimizer, same gradients: plain optax on the unmasked parameters is the reference."""
    model = tiny_model()
    prune_randomly(model)
    masks = training.sparsity_masks(model)
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    dense_tx, masked_tx = OPTIMIZERS[opt](), training.keep_sparsity(OPTIMIZERS[opt](), masks)
    dense_p, masked_p = params, params
    dense_s, masked_s = dense_tx.init(params), masked_tx.init(params)
    rng = np.random.default_rng(0)
    is_none = lambda x: x is None  # noqa: E731
    for _ in range(5):
        grads = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), params)
        dense_u, dense_s = dense_tx.update(grads, dense_s, dense_p)
        masked_u, masked_s = masked_tx.update(grads, masked_s, masked_p)

        def check(m, du, mu):
            du, mu = np.asarray(du), np.asarray(mu)
            if m is None:  # not pruned: the dense update
                np.testing.assert_allclose(mu, du, rtol=1e-6, atol=1e-9)
            else:
                m = np.asarray(m)
                np.testing.assert_allclose(mu[~m], du[~m], rtol=1e-6, atol=1e-9)
                assert (mu[m] == 0).all()

        jax.tree.map(check, masks, dense_u, masked_u, is_leaf=is_none)
        dense_p, masked_p = optax.apply_updates(dense_p, dense_u), optax.apply_updates(masked_p, masked_u)
    pairs = masked_pairs(masks, dense_p)
    assert len(pairs) == 7 * CFG.num_hidden_layers
    # the reference really moves the pruned entries: the masking is not vacuous
    assert all((p[m] != 0).all() for m, p in pairs)


def test_stale_momentum_and_nonzero_pruned_entries_are_projected_to_zero():
    """Gradient masking alone fails here: the momentum state was filled before pruning, and the
    pruned entries are not zero yet. The wrapped optimizer zeroes them at the first step."""
    model = tiny_model()
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    rng = np.random.default_rng(3)
    pruned = {n: rng.random(llama.get_linear_weight(model, n).shape) < 0.5 for n in llama.linear_names(model)}
    masks = training.sparsity_masks(model, pruned=pruned)  # the weights themselves are still dense
    inner = optax.sgd(1e-2, momentum=0.9)
    stale = inner.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(3):
        _, stale = inner.update(grads, stale, params)
    tx = training.keep_sparsity(inner, masks)
    state = training.KeepSparsityState(stale, masks)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    naive_u, _ = inner.update(jax.tree.map(jnp.zeros_like, params), stale, params)
    p = params
    for _ in range(3):
        u, state = tx.update(zero_grads, state, p)
        p = optax.apply_updates(p, u)
        pairs = masked_pairs(masks, p)
        assert len(pairs) == 7 * CFG.num_hidden_layers
        assert all((x[m] == 0).all() and (x[~m] != 0).all() for m, x in pairs)
    # without the projection the stale momentum would have moved the pruned entries
    assert any(float(jnp.abs(u).max()) > 0 for u in jax.tree.leaves(naive_u))


def test_keep_sparsity_rejects_masks_of_another_model():
    masks = training.sparsity_masks(tiny_model())
    other = llama.Llama(
        llama.LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=16, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4),
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    with pytest.raises(ValueError, match="sparsity_masks"):
        nnx.Optimizer(other, training.keep_sparsity(optax.adam(1e-3), masks), wrt=nnx.Param)
    with pytest.raises(ValueError, match="do not match the parameter tree"):
        nnx.Optimizer(other, training.keep_sparsity(optax.adam(1e-3), {"embed": None}), wrt=nnx.Param)


# ----------------------------------------------------------------------------- fake quantization


def numpy_grid(W: np.ndarray, p) -> np.ndarray:
    """Round W (d_out, d_in) onto p's grid, written from the formula with NumPy (float64)."""
    scale = np.asarray(p.scales, np.float64)[:, np.asarray(p.g_idx)]
    zero = np.asarray(p.zeros, np.float64)[:, np.asarray(p.g_idx)]
    codes = np.clip(np.round(W / scale) + zero, 0, 2**p.bits - 1)
    return scale * (codes - zero)


@pytest.fixture(scope="module")
def quantized():
    """A tiny model, GPTQ parameters (act-order, groups of 8) of every linear, and a copy of the
    model whose weights were moved off the grid (as fine-tuning does)."""
    model = tiny_model()
    rng = np.random.default_rng(5)
    X = rng.standard_normal((128, 32)).astype(np.float32)
    H = jnp.asarray(2 / len(X) * X.T @ X)
    qparams = {}
    for name in llama.linear_names(model):
        W_q, qparams[name] = gptq.quantize(llama.get_linear_weight(model, name), H, 4, 8, act_order=True)
        llama.set_linear_weight(model, name, W_q)
    moved = nnx.clone(model)
    for name, p in qparams.items():
        W = llama.get_linear_weight(moved, name)
        step = np.asarray(p.scales)[:, np.asarray(p.g_idx)]
        llama.set_linear_weight(moved, name, W + 0.3 * step * rng.standard_normal(W.shape).astype(np.float32))
    return model, moved, qparams


def test_fake_quant_is_the_grid_and_keeps_grid_weights(quantized):
    model, moved, qparams = quantized
    for name, p in qparams.items():
        W_grid = llama.get_linear_weight(model, name)
        np.testing.assert_array_equal(np.asarray(training.fake_quant(W_grid, p)), np.asarray(p.dequantize()))
        W = llama.get_linear_weight(moved, name)
        np.testing.assert_allclose(
            np.asarray(training.fake_quant(W, p)), numpy_grid(W, p), rtol=1e-6, atol=1e-7
        )
    p = qparams["layers.0.mlp.up_proj"]
    with pytest.raises(ValueError, match=r"\(d_out, d_in\)"):
        training.fake_quant(np.zeros((32, 16), np.float32), p)


def grid_reference(model, qparams):
    """A copy of ``model`` with the listed linears set to their NumPy-rounded grid weights."""
    reference = nnx.clone(model)
    for name, p in qparams.items():
        llama.set_linear_weight(reference, name, numpy_grid(llama.get_linear_weight(model, name), p))
    return reference


def test_fake_quant_model_forward_equals_model_with_dequantized_weights(quantized):
    _, moved, qparams = quantized
    ids, mask = batch()
    reference = grid_reference(moved, qparams)
    fq = training.fake_quant_model(moved, qparams)
    np.testing.assert_allclose(
        llama.forward(fq, ids, mask), llama.forward(reference, ids, mask), rtol=1e-5, atol=1e-6
    )
    # the source model is untouched
    for name in qparams:
        assert not np.array_equal(llama.get_linear_weight(moved, name), llama.get_linear_weight(fq, name))
    with pytest.raises(ValueError, match="no linear named"):
        training.fake_quant_model(moved, {"layers.7.mlp.up_proj": qparams["layers.0.mlp.up_proj"]})


def test_straight_through_gradient_equals_gradient_at_the_grid_weights(quantized):
    _, moved, qparams = quantized
    ids, mask = batch()
    reference = grid_reference(moved, qparams)

    @nnx.jit
    def fq_value_and_grad(m):
        return nnx.value_and_grad(
            lambda m: training.lm_loss(training.fake_quant_model(m, qparams), ids, mask)
        )(m)

    loss, grads = fq_value_and_grad(moved)
    ref_loss, ref_grads = value_and_grad(reference, ids, mask, False)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, ref_grads)
    # and at the level of one weight: d/dW sum(c * fake_quant(W)) = c
    W = llama.get_linear_weight(moved, "layers.1.mlp.down_proj")
    c = np.random.default_rng(0).standard_normal(W.shape).astype(np.float32)
    g = jax.grad(lambda w: jnp.sum(c * training.fake_quant(w, qparams["layers.1.mlp.down_proj"])))(W)
    np.testing.assert_array_equal(np.asarray(g), c)


def test_snap_to_grid_returns_codes_of_the_rounded_weights(quantized):
    _, moved, qparams = quantized
    model = nnx.clone(moved)
    before = kernels(model)
    new = training.snap_to_grid(model, qparams)
    for name, p in new.items():
        W = llama.get_linear_weight(model, name)
        np.testing.assert_allclose(W, numpy_grid(before[name], p), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(W, np.asarray(p.dequantize()))
        np.testing.assert_array_equal(np.asarray(p.scales), np.asarray(qparams[name].scales))
        assert int(np.asarray(p.codes).max()) <= 15


def test_compression_collector_keeps_params_and_masks():
    collector = training.CompressionCollector()
    W = jnp.ones((4, 8))
    params = quant.QuantParams(
        codes=jnp.zeros((4, 8), jnp.uint8), scales=jnp.ones((4, 1)), zeros=jnp.zeros((4, 1), jnp.int32),
        g_idx=jnp.zeros((8,), jnp.int32), perm=None, bits=4, group_size=8, sym=False,
    )  # fmt: skip
    collector("layers.0.mlp.up_proj", W, {"params": params, "record": {}})
    collector("layers.0.mlp.down_proj", W, {"mask": jnp.eye(4, 8, dtype=bool), "record": {}})
    assert collector.params == {"layers.0.mlp.up_proj": params}
    assert list(collector.masks) == ["layers.0.mlp.down_proj"]
    np.testing.assert_array_equal(collector.masks["layers.0.mlp.down_proj"], np.eye(4, 8, dtype=bool))
