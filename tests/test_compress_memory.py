"""The memory plan of ``compress()``: host offload (one layer on device at a time) is bit-identical
to the default path; row-sharded solves and Hessian accumulators (``solve_axis``) on 8 fake CPU
devices equal one device; ``benchmarks/bench_memory.py`` runs at tiny sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from multidevice import run_on_8_devices

from zipcal_jax.compress import gptq
from zipcal_jax.compress.pipeline import compress
from zipcal_jax.models import llama

pytestmark = pytest.mark.usefixtures("highest_precision")

ROOT = Path(__file__).resolve().parents[1]
CFG = llama.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2)  # fmt: skip


@pytest.fixture(scope="module")
def calib():
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 128, (6, 24)).astype(np.int32)
    mask = np.ones(ids.shape, bool)
    mask[2, 15:] = False
    return ids, mask


def weights(model) -> dict[str, np.ndarray]:
    return {n: llama.get_linear_weight(model, n) for n in llama.linear_names(model)}


def where(x) -> str:
    """``"numpy"``, or the memory kind of a jax array."""
    return "numpy" if isinstance(x, np.ndarray) else x.sharding.memory_kind


@pytest.mark.parametrize(
    "method, kind, options",
    [
        ("wanda", "pinned_host", {}),
        ("sparsegpt", "numpy", {"blocksize": 32}),
        pytest.param(
            "gptq",
            "pinned_host",
            {"group_size": 16, "act_order": True, "blocksize": 32},
            marks=pytest.mark.slow,
        ),
    ],
)
def test_offload_is_bit_identical_and_streams_one_layer(calib, method, kind, options):
    ref, ref_report = compress(llama.Llama(CFG, rngs=nnx.Rngs(0)), calib, method, batch_size=4,
                               progress=False, **options)  # fmt: skip
    seen: list[tuple[str, list[str]]] = []

    def placement(name, _W, _extras):  # where every layer's q_proj kernel is while `name` is solved
        seen.append((name, [where(layer.self_attn.q_proj.kernel[...]) for layer in streamed.layers]))

    streamed = llama.Llama(CFG, rngs=nnx.Rngs(0))
    _, report = compress(streamed, calib, method, batch_size=4, progress=False, offload=kind,
                         callback=placement, **options)  # fmt: skip
    assert report["offload"] == kind and ref_report["offload"] is None
    got, want = weights(streamed), weights(ref)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert report["totals"]["loss"] == ref_report["totals"]["loss"]
    assert len(seen) == 7 * CFG.num_hidden_layers
    for name, kinds in seen:
        i = int(name.split(".")[1])
        assert kinds[i] == "device", (name, kinds)
        assert all(k == kind for j, k in enumerate(kinds) if j != i), (name, kinds)
    state = jax.tree.leaves(nnx.state(streamed))
    assert {where(x) for x in state} == {kind}  # on return every weight is in host memory


@pytest.mark.slow
def test_offload_resumes_identically(calib, tmp_path):
    """A streamed run stopped after layer 0 resumes from its checkpoint (inputs restored into host
    memory) to the uninterrupted result."""
    from zipcal_jax.compress.pipeline import StopAfterLayer

    kw = dict(batch_size=4, progress=False, offload="pinned_host", group_size=16)
    full, _ = compress(llama.Llama(CFG, rngs=nnx.Rngs(0)), calib, "gptq", **kw)
    with pytest.raises(StopAfterLayer):
        compress(
            llama.Llama(CFG, rngs=nnx.Rngs(0)), calib, "gptq", checkpoint_dir=tmp_path, stop_after=0, **kw
        )
    resumed, report = compress(
        llama.Llama(CFG, rngs=nnx.Rngs(0)), calib, "gptq", checkpoint_dir=tmp_path, **kw
    )
    assert report["layers_resumed"] == 1
    got, want = weights(resumed), weights(full)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_memory_options_are_checked(calib):
    model = llama.Llama(CFG, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="offload="):
        compress(model, calib, "wanda", offload="disk", progress=False)
    with pytest.raises(ValueError, match="solve_axis='model' needs a mesh"):
        compress(model, calib, "wanda", solve_axis="model", progress=False)
    W, H = np.ones((4, 8), np.float32), np.eye(8, dtype=np.float32)
    with pytest.raises(ValueError, match="row_axis='data' needs a mesh"):
        gptq.quantize(W, H, row_axis="data")


_SOLVES = r"""
import json, numpy as np, jax, jax.numpy as jnp
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from zipcal_jax.compress import capture, gptq, quant, sparsegpt
from zipcal_jax.models import llama
jax.config.update("jax_default_matmul_precision", "highest")
mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
rows = NamedSharding(mesh, P("data", None))
rng = np.random.default_rng(0)
d_in = 96
X = (rng.standard_normal((300, d_in)) * rng.uniform(0.1, 3, d_in)).astype(np.float32)
H = (2 / 300 * X.T @ X).astype(np.float32)
H[5, :] = H[:, 5] = 0  # a dead input
cases = {
    "sparsegpt 50%": (60, lambda W, **k: sparsegpt.prune(W, H, 0.5, blocksize=32, return_info=True, **k)),
    "sparsegpt 2:4 + 4 bit": (64, lambda W, **k: sparsegpt.prune(
        W, H, nm=(2, 4), blocksize=32, quantizer=quant.Quantizer(4), return_info=True, **k)),
    "gptq 3 bit g32 act-order": (60, lambda W, **k: gptq.quantize(
        W, H, 3, 32, act_order=True, blocksize=32, return_info=True, **k)),
}
out = {}
for name, (d_out, fn) in cases.items():
    W = (0.05 * rng.standard_normal((d_out, d_in))).astype(np.float32)
    one, many = fn(W), fn(W, mesh=mesh, row_axis="data")
    r = {"rows_split": many[0].sharding.is_equivalent_to(rows, 2) if d_out % 8 == 0 else None,
         "loss": [float(one[-1].loss), float(many[-1].loss)]}
    info1, info8 = one[-1], many[-1]
    r["w_diff"] = float(np.abs(np.asarray(one[0]) - np.asarray(many[0])).max())
    if info1.mask is not None:
        r["mask_equal"] = bool(np.array_equal(np.asarray(info1.mask), np.asarray(info8.mask)))
    if info1.params is not None:
        r["codes_equal"] = bool(np.array_equal(np.asarray(info1.params.codes), np.asarray(info8.params.codes)))
        r["scale_diff"] = float(np.abs(np.asarray(info1.params.scales) - np.asarray(info8.params.scales)).max())
    r["same_attempts"] = int(info1.attempts) == int(info8.attempts)
    out[name] = r
# Hessian accumulators with rows over `data`: reduce-scattered, equal to the replicated sums
cfg = llama.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=2)
layer = llama.Llama(cfg, rngs=nnx.Rngs(0)).layers[0]
gd, st = nnx.split(layer)
st = jax.device_put(st, NamedSharding(mesh, P()))
h = jax.device_put(rng.standard_normal((8, 16, 64)).astype(np.float32), NamedSharding(mesh, P("data")))
m = jax.device_put(np.ones((8, 16), bool), NamedSharding(mesh, P("data")))
_, rep = capture.accumulate(gd, st, h, m, capture.zero_sums(layer, capture.GROUPS, NamedSharding(mesh, P())), capture.GROUPS)
_, split = capture.accumulate(gd, st, h, m, capture.zero_sums(layer, capture.GROUPS, rows), capture.GROUPS)
out["sums"] = {s: [split[s].sharding.is_equivalent_to(rows, 2), float(np.abs(np.asarray(split[s]) - np.asarray(rep[s])).max()),
                   float(np.abs(np.asarray(rep[s])).max())] for s in capture.GROUPS}
print(json.dumps(out))
"""


def test_row_sharded_solves_equal_one_device():
    """SparseGPT (unstructured: the block threshold is global over rows; N:M + joint quantization)
    and GPTQ (act-order, dynamic groups) with rows split over 8 devices, d_out 60 (padded) or 64:
    the same masks and codes, weights within float rounding; accumulators split by rows."""
    out = run_on_8_devices(_SOLVES)
    sums = out.pop("sums")
    for name, r in out.items():
        assert r["w_diff"] <= 1e-6, (name, r)
        assert r.get("mask_equal", True) and r.get("codes_equal", True), (name, r)
        assert r.get("scale_diff", 0.0) <= 1e-6, (name, r)
        assert r["same_attempts"], (name, r)
        assert r["loss"][1] == pytest.approx(r["loss"][0], rel=1e-5), (name, r)
        assert r["rows_split"] in (True, None), (name, r)  # d_out = 64: W_new comes back split by rows
    for site, (rows_split, diff, scale) in sums.items():
        assert rows_split, site
        assert diff <= 1e-6 * scale, (site, diff, scale)


_PIPELINE = r"""
import json, numpy as np, jax
from flax import nnx
from jax.sharding import AxisType
from zipcal_jax.models import llama
from zipcal_jax.compress.pipeline import compress
jax.config.update("jax_default_matmul_precision", "highest")
cfg = llama.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2)
rng = np.random.default_rng(1)
ids = rng.integers(0, 128, (12, 24)); mask = np.ones((12, 24), bool); mask[3, 10:] = False
mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
rows = jax.sharding.NamedSharding(mesh, jax.P("data", None))
W = lambda m: {n: llama.get_linear_weight(m, n) for n in llama.linear_names(m)}
out = {}
for method, opts in (("wanda", {}), ("sparsegpt", {"blocksize": 32}), ("gptq", {"group_size": 32, "blocksize": 32})):
    one = W(compress(llama.Llama(cfg, rngs=nnx.Rngs(0)), (ids, mask), method, batch_size=8, progress=False, **opts)[0])
    mesh_only = W(compress(llama.Llama(cfg, rngs=nnx.Rngs(0)), (ids, mask), method, batch_size=8, mesh=mesh,
                           progress=False, **opts)[0])
    specs = []
    model = llama.Llama(cfg, rngs=nnx.Rngs(0))
    _, r = compress(model, (ids, mask), method, batch_size=8, mesh=mesh, solve_axis="data", offload=True,
                    progress=False, callback=lambda n, w, e: specs.append(w.sharding.is_equivalent_to(rows, 2)), **opts)
    both = W(model)
    out[method] = {
        "vs_mesh": max(float(np.abs(both[n] - mesh_only[n]).max()) for n in one),
        "vs_one": max(float(np.abs(both[n] - one[n]).max()) for n in one),
        "zeros_vs_one": max(float(np.mean((both[n] == 0) != (one[n] == 0))) for n in one),
        "rows_split": all(specs) and len(specs) == 14, "solve_shards": r["solve_shards"], "offload": r["offload"],
    }
print(json.dumps(out))
"""


@pytest.mark.slow
def test_sharded_solves_and_offload_through_compress():
    """``compress(mesh=8 devices, solve_axis="data", offload=True)`` against the same mesh without
    them and against one device, for Wanda, SparseGPT and GPTQ; every compressed weight comes back
    split by rows."""
    out = run_on_8_devices(_PIPELINE)
    for method, r in out.items():
        assert r["solve_shards"] == 8 and r["offload"] == "pinned_host", (method, r)
        assert r["rows_split"], (method, r)
        assert r["vs_mesh"] <= 1e-6, (method, r)
        assert r["vs_one"] <= 1e-5 and r["zeros_vs_one"] == 0.0, (method, r)


def test_benchmark_runs_tiny(tmp_path):
    """The memory benchmark at toy sizes: both runs, its table, and less device-resident memory
    when streaming (two layers, one of them on device at a time)."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_memory.py"), "--hidden", "64", "--intermediate", "128",
           "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--vocab", "128", "--layers", "2",
           "--nsamples", "4", "--seqlen", "16", "--batch-size", "2", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| default |" in proc.stdout and "| streaming | pinned_host |" in proc.stdout, proc.stdout
    assert "streaming / default" in proc.stdout
    results = json.loads(out.read_text())["results"]
    d, s = results["default"], results["streaming"]
    key = "peak_bytes_in_use" if d["peak_bytes_in_use"] is not None else "peak_live_array_bytes"
    assert 0 < max(s[key]) < max(d[key]), (d, s)
    assert d["modules"] == s["modules"] == 14 and d["mean_sparsity"] == s["mean_sparsity"]
