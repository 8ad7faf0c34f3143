"""Multi-host helpers (:mod:`zipcal_jax.distributed`) and sharded evaluation.

* single process: ``initialize`` is a no-op, process 0 writes, ``process_slice`` covers every row;
* launcher detection from environment dictionaries;
* 8 fake CPU devices (subprocess): perplexity and zero-shot scores on a data mesh, and on a
  (data 4, model 2) mesh with tensor-parallel parameters, equal the one-device scores;
* two real processes on this machine (``jax.distributed`` over localhost, gloo collectives):
  selection on a mesh spanning both processes equals the one-process picks, per-process rows
  assemble into one global array, and the transfer helpers (``put_global``, ``local_value``,
  ``from_writer``) behave; compression on that mesh (row-split solves, host offload, a resumed
  shared checkpoint) gives both processes the one-process model; (slow) ``zipcal select`` /
  ``eval`` / ``compress`` / ``run`` write and print from process 0 only, with the one-process
  results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from multidevice import LAUNCHER_VARS, run_on_8_devices, run_two_processes

from zipcal_jax import distributed as D

REPO = Path(__file__).parents[1]
TINY = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip


@pytest.fixture
def no_launcher(monkeypatch):
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)


# ----------------------------------------------------------------------------- one process


def test_single_process_is_a_no_op(no_launcher):
    import jax

    assert D.initialize() is False
    assert D.initialize() is False  # idempotent
    assert not jax.distributed.is_initialized()
    assert D.process_index() == 0 and D.process_count() == 1 and D.is_writer()
    assert D.process_slice(10) == slice(0, 10)


def test_explicit_off_wins_over_a_launcher(no_launcher, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    for var in ("SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID"):
        monkeypatch.setenv(var, "0")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    assert D.detect_launcher() == "slurm"
    assert D.initialize(False) is False
    monkeypatch.setenv(D.ENV_FLAG, "0")
    assert D.initialize() is False
    monkeypatch.setenv(D.ENV_FLAG, "maybe")
    with pytest.raises(ValueError, match="ZIPCAL_DISTRIBUTED='maybe'"):
        D.initialize()


def test_requested_after_the_backend_started_says_so(no_launcher):
    import jax

    jax.devices()  # the backend is running in this test process
    with pytest.raises(RuntimeError, match="before any other JAX use"):
        D.initialize(True)


SRUN_STEP = {"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}


def test_requested_without_a_launcher_says_what_to_set():
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and k != "XLA_FLAGS"}
    argv = [sys.executable, "-m", "zipcal_jax.cli", "select", "--data", "x"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={**env, D.ENV_FLAG: "1", "JAX_PLATFORMS": "cpu"})  # fmt: skip
    assert proc.returncode == 2
    assert "cannot start" in proc.stderr and "JAX_COORDINATOR_ADDRESS=host:port" in proc.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}, "jax"),
        ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "1"}, None),
        ({**SRUN_STEP, "SLURM_STEP_NUM_TASKS": "8"}, "slurm"),
        ({**SRUN_STEP, "SLURM_STEP_NUM_TASKS": "1"}, None),
        ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "8"}, None),  # a batch script, not an srun step
        ({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "4"}, "mpi"),
        ({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "1"}, None),
        ({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, "tpu"),
        ({"TPU_WORKER_HOSTNAMES": "t0"}, None),
        ({"MEGASCALE_COORDINATOR_ADDRESS": "c:8080"}, "tpu"),
    ],
)
def test_detect_launcher(env, expected):
    assert D.detect_launcher(env) == expected


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("multiple", [1, 2, 4])
def test_process_slices_cover_every_row_once(count, multiple):
    for n in range(0, 30):
        per = D.rows_per_process(n, multiple, count=count)
        assert per % multiple == 0 and per * count >= n
        slices = [D.process_slice(n, multiple, index=i, count=count) for i in range(count)]
        rows = [r for s in slices for r in range(n)[s]]
        assert rows == list(range(n)), (n, slices)  # contiguous, in process order, no overlap
        assert all(s.stop - s.start <= per for s in slices)
    with pytest.raises(ValueError, match="outside"):
        D.process_slice(5, index=2, count=2)


def test_single_device_mesh_and_its_errors():
    from jax.sharding import AxisType

    mesh = D.make_mesh()
    assert mesh.axis_names == ("data", "model") and mesh.devices.shape == (1, 1)
    assert set(mesh.axis_types) == {AxisType.Auto}
    assert D.sharding_mesh(mesh) is None and D.sharding_mesh(None) is None
    with pytest.raises(ValueError, match="--model-parallel 2 must divide"):
        D.make_mesh(1, model=2)
    with pytest.raises(ValueError, match="there are 1 devices"):
        D.make_mesh(2)
    args = SimpleNamespace(devices=None, model_parallel="two")
    with pytest.raises(ValueError, match="'auto'"):
        D.mesh_from_args(args)


def test_auto_model_parallel(monkeypatch):
    import jax

    assert D.auto_model_parallel(10**15, 8) == 1  # CPU reports no memory limit: replicate
    fake = SimpleNamespace(memory_stats=lambda: {"bytes_limit": 100})
    monkeypatch.setattr(jax, "local_devices", lambda: [fake])
    assert D.auto_model_parallel(40, 8) == 1  # fits in half of 100 bytes
    assert D.auto_model_parallel(180, 8) == 4  # 180 / 4 = 45 <= 50
    assert D.auto_model_parallel(10**6, 8) == 8  # never more than the devices
    assert D.auto_model_parallel(180, 6) == 2  # 4 does not divide 6


def test_cli_flags_before_or_after_the_verb():
    from zipcal_jax.cli import _parser

    a = _parser().parse_args(["--devices", "4", "select", "--data", "x"])
    b = _parser().parse_args(["select", "--data", "x", "--devices", "4", "--distributed"])
    c = _parser().parse_args(["eval", "--model-parallel", "2"])
    assert (a.devices, a.distributed, a.model_parallel) == (4, None, "auto")
    assert (b.devices, b.distributed) == (4, True)
    assert (c.devices, c.model_parallel) == (None, "2")


# ----------------------------------------------------------------------------- 8 fake devices

EVAL_SCRIPT = textwrap.dedent(
    """
    import json, sys, jax, numpy as np
    from flax import nnx
    from tokenizers import Tokenizer
    from zipcal_jax.distributed import make_mesh, place_replicated
    from zipcal_jax.evals import perplexity, zeroshot
    from zipcal_jax.evals.tasks.base import Doc, Task
    from zipcal_jax.models import llama
    from zipcal_jax.models.sharding import shard
    assert jax.device_count() == 8
    tok = Tokenizer.from_str(open(sys.argv[1]).read())
    cfg = llama.LlamaConfig(**json.loads(sys.argv[2]))
    text = open(sys.argv[3]).read()
    reqs = [("The quick brown fox", " jumps over"), ("The quick brown fox", " sleeps"),
            ("", "Calibration data"), ("Numbers such as 0, 1", ", 2, 3"),
            ("In the beginning", " God created the heaven")]
    tasks = [Task("mini", [Doc((("The quick brown", " fox"), ("The quick brown", " dog")), 0, ("fox", "dog")),
                           Doc((("In the", " beginning"), ("In the", " end")), 1, ("beginning", "end"))])]
    def run(model, mesh):
        ppl = perplexity.evaluate(model, tok, [text], seqlen=16, max_windows=21, batch_size=3, progress=False,
                                  mesh=mesh)
        zs = zeroshot.evaluate(model, tok, tasks, batch_size=4, progress=False, mesh=mesh)
        ll = zeroshot.loglikelihood(model, tok, reqs, batch_size=4, progress=False, mesh=mesh, pack=False)
        return dict(nll=ppl["nll"], windows=ppl["windows"], batch=ppl["batch_size"], ll=ll,
                    acc=zs["tasks"]["mini"]["acc"], acc_norm=zs["tasks"]["mini"]["acc_norm"])
    out = {"one": run(llama.Llama(cfg, rngs=nnx.Rngs(0)), None)}
    if sys.argv[4] == "data":
        mesh = make_mesh()
        out["mesh"] = [list(mesh.axis_names), list(mesh.devices.shape)]
        out["sharded"] = run(llama.Llama(cfg, rngs=nnx.Rngs(0)), mesh)
        sub = make_mesh(4)
        out["sub"] = [len(sub.devices.flat), str(place_replicated(np.ones(3), sub).sharding.spec)]
    else:
        mesh = make_mesh(8, model=2)
        out["mesh"] = [list(mesh.axis_names), list(mesh.devices.shape)]
        model = shard(llama.Llama(cfg, rngs=nnx.Rngs(0)), mesh)
        out["spec"] = str(model.layers[0].mlp.up_proj.kernel[...].sharding.spec)
        out["sharded"] = run(model, mesh)
        placed = place_replicated(nnx.state(model), mesh)  # what the evaluators run on
        out["spec_after"] = str(placed["layers"][0]["mlp"]["up_proj"]["kernel"][...].sharding.spec)
    print(json.dumps(out))
    """
)


def _sharded_vs_one_device(tiny_tokenizer, tmp_path, mode: str) -> dict:
    tok = tmp_path / "tok.json"
    tiny_tokenizer.save(str(tok))
    text = tmp_path / "text.txt"
    text.write_text((REPO / "tests" / "conftest.py").read_text())
    r = run_on_8_devices(EVAL_SCRIPT, str(tok), json.dumps(TINY), str(text), mode)
    one, got = r["one"], r["sharded"]
    assert one["windows"] == got["windows"] == 21
    assert got["batch"] % r["mesh"][1][0] == 0  # a multiple of the data axis
    # Equal up to float32 rounding: a device's slice of the batch has another shape than the
    # one-device batch, and XLA:CPU may sum in another order; every decision is identical.
    assert got["nll"] == pytest.approx(one["nll"], rel=1e-6)
    np.testing.assert_allclose([x for x, _ in got["ll"]], [x for x, _ in one["ll"]], rtol=1e-6)
    assert [g for _, g in got["ll"]] == [g for _, g in one["ll"]]
    assert (got["acc"], got["acc_norm"]) == (one["acc"], one["acc_norm"])
    return r


def test_data_sharded_evaluation_equals_one_device(tiny_tokenizer, tmp_path):
    r = _sharded_vs_one_device(tiny_tokenizer, tmp_path, "data")
    assert r["mesh"] == [["data", "model"], [8, 1]]
    assert r["sub"] == [4, "P()"]


def test_tensor_parallel_evaluation_equals_one_device(tiny_tokenizer, tmp_path):
    r = _sharded_vs_one_device(tiny_tokenizer, tmp_path, "tp")
    assert r["mesh"] == [["data", "model"], [4, 2]]
    assert r["spec"] == r["spec_after"] == "P(None, 'model')"  # evaluators keep the model's sharding


def test_evaluation_mesh_needs_a_data_axis(tiny_tokenizer):
    import jax
    from flax import nnx
    from jax.sharding import AxisType

    from zipcal_jax.evals import perplexity, zeroshot
    from zipcal_jax.models import llama

    mesh = jax.make_mesh((1,), ("batch",), axis_types=(AxisType.Auto,))
    model = llama.Llama(llama.LlamaConfig(**TINY), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="'data' axis"):
        perplexity.score_windows(model, np.ones((2, 8), np.int32), mesh=mesh, progress=False)
    with pytest.raises(ValueError, match="'data' axis"):
        zeroshot.loglikelihood(model, tiny_tokenizer, [("The quick", " fox")], mesh=mesh, progress=False)


# ----------------------------------------------------------------------------- two processes

TWO_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json
    from zipcal_jax import distributed as D
    assert D.initialize(timeout_s=60)  # detected from JAX_COORDINATOR_ADDRESS / _NUM_PROCESSES / _ID
    assert D.initialize()  # idempotent
    import jax, numpy as np
    from zipcal_jax.select import select
    mesh = D.make_mesh()
    rng = np.random.default_rng(0)
    ids = (rng.zipf(1.3, (203, 24)) % 700).astype(np.int32)
    mask = rng.random((203, 24)) > 0.2
    picks = select(ids, 30, mask=mask, mesh=mesh).indices.tolist()
    n = 11
    share = D.process_slice(n, multiple=jax.local_device_count())
    rows = D.rows_per_process(n, jax.local_device_count())
    g = D.global_rows(np.arange(n)[share], mesh, rows=rows, fill=-1)
    rows_sharding = jax.sharding.NamedSharding(mesh, jax.P("data"))
    committed = jax.device_put(np.arange(6.0), jax.local_devices()[0])  # this process's own copy
    placed = D.put_global(committed, rows_sharding)
    print(json.dumps(dict(index=D.process_index(), count=D.process_count(), writer=D.is_writer(),
                          devices=jax.device_count(), mesh=list(mesh.devices.shape), picks=picks,
                          share=[share.start, share.stop], global_shape=list(g.shape),
                          global_sum=int(jax.jit(lambda x: (x * (x >= 0)).sum())(g)),
                          gathered=np.asarray(D.local_value(g)).tolist(),
                          placed=[len(placed.addressable_shards), np.asarray(D.local_value(placed)).tolist()],
                          from_writer=D.from_writer([D.process_index() + 5, D.is_writer()]).tolist(),
                          local_devices=len(D.local_devices_of(mesh)))))
    """
)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("two-proc")
    tok = root / "tok.json"
    tiny_tokenizer.save(str(tok))
    text = root / "text.txt"
    text.write_text((REPO / "tests" / "conftest.py").read_text())
    return SimpleNamespace(root=root, tok=str(tok), text=str(text))


def test_two_processes_share_one_mesh():
    outs = run_two_processes([sys.executable, "-c", TWO_PROCESS_SCRIPT])
    r0, r1 = (json.loads(o.stdout.strip().splitlines()[-1]) for o in outs)
    from zipcal_jax.select import select

    rng = np.random.default_rng(0)  # the script's candidates, selected in this one-device process
    ids = (rng.zipf(1.3, (203, 24)) % 700).astype(np.int32)
    mask = rng.random((203, 24)) > 0.2
    assert (r0["index"], r1["index"]) == (0, 1) and r0["count"] == r1["count"] == 2
    assert (r0["writer"], r1["writer"]) == (True, False)
    assert r0["devices"] == 2 and r0["mesh"] == [2, 1]
    assert r0["picks"] == r1["picks"] == select(ids, 30, mask=mask).indices.tolist()
    assert (r0["share"], r1["share"]) == ([0, 6], [6, 11])  # 11 rows: 6 + 5 (padded to 6)
    assert r0["global_shape"] == [12] and r0["global_sum"] == r1["global_sum"] == sum(range(11))
    assert r0["gathered"] == r1["gathered"] == [*range(6), *range(6, 11), -1]  # allgathered rows
    assert r0["placed"] == r1["placed"] == [1, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]
    assert r0["from_writer"] == r1["from_writer"] == [5, 1]  # process 0's values everywhere
    assert r0["local_devices"] == r1["local_devices"] == 1


COMPRESS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from zipcal_jax import distributed as D
    multi = sys.argv[1] == "multi"
    if multi:
        assert D.initialize(timeout_s=60)
    import jax, numpy as np
    from flax import nnx
    from zipcal_jax.compress.pipeline import StopAfterLayer, compress
    from zipcal_jax.models import llama
    cfg = llama.LlamaConfig(**json.loads(sys.argv[2]))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (6, 16)).astype(np.int32)
    mask = rng.random((6, 16)) > 0.2
    mesh = D.make_mesh() if multi else None
    runs = {  # name: (options, resume from a checkpoint stopped after layer 0)
        "wanda": (dict(method="wanda"), False),
        "sparsegpt_rows_numpy": (dict(method="sparsegpt", solve_axis="data", offload="numpy"), True),
        "gptq_pinned": (dict(method="gptq", bits=4, group_size=16, offload="pinned_host"), True),
    }
    out = {}
    for name in sys.argv[4].split(","):
        kw, resume = runs[name]
        if not multi:
            kw.pop("solve_axis", None)
        ckpt = f"{sys.argv[3]}/{name}" if resume else None
        if resume:
            try:
                compress(llama.Llama(cfg, rngs=nnx.Rngs(0)), (ids, mask), mesh=mesh, progress=False,
                         checkpoint_dir=ckpt, stop_after=0, **kw)
            except StopAfterLayer:
                pass
        seen = []  # the callback reads every mask and integer code array in every process
        def callback(name, W, extras):
            leaves = [np.asarray(x) for x in jax.tree.leaves({k: v for k, v in extras.items() if k != "record"})]
            seen.append(sum(int(x.astype(np.int64).sum()) for x in leaves if x.dtype.kind in "biu"))
        model, rep = compress(llama.Llama(cfg, rngs=nnx.Rngs(0)), (ids, mask), mesh=mesh,
                              progress=False, checkpoint_dir=ckpt, callback=callback, **kw)
        np.savez(f"{sys.argv[3]}/{name}-{D.process_index()}.npz",
                 **{n: llama.get_linear_weight(model, n) for n in llama.linear_names(model)})
        out[name] = dict(resumed=rep["layers_resumed"], devices=rep["devices"], solve_shards=rep["solve_shards"],
                         loss=rep["totals"]["loss"], error=rep["totals"]["output_error"], seen=seen)
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize(
    "runs",
    ["sparsegpt_rows_numpy", pytest.param("wanda,gptq_pinned", marks=pytest.mark.slow)],
)
def test_two_processes_compress_like_one(tmp_path, runs):
    """Compression on a mesh spanning two processes (samples split across them, Hessians reduced
    between hosts, rows of the solves split across hosts, layers streamed through host memory,
    a run resumed from a shared checkpoint folder) gives both processes the one-process model."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    script = [sys.executable, "-c", COMPRESS_SCRIPT]
    cfg = json.dumps({**TINY, "num_hidden_layers": 3})
    one = subprocess.run([*script, "one", cfg, str(tmp_path / "one"), runs], capture_output=True, text=True,
                         timeout=240, env={**os.environ, "JAX_PLATFORMS": "cpu"})  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    ref = json.loads(one.stdout.strip().splitlines()[-1])
    outs = run_two_processes([*script, "multi", cfg, str(tmp_path / "two"), runs])
    r0, r1 = (json.loads(o.stdout.strip().splitlines()[-1]) for o in outs)
    assert r0 == r1  # every process holds the same report
    for name, want in ref.items():
        got = r0[name]
        assert got["devices"] == 2 and want["devices"] == 1
        assert got["solve_shards"] == (2 if "rows" in name else 1)
        assert got["resumed"] == want["resumed"] == (0 if name == "wanda" else 1)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["error"] == pytest.approx(want["error"], rel=1e-5)
        assert got["seen"] == want["seen"] and len(want["seen"]) == 7 * (3 - want["resumed"])
        w1 = np.load(tmp_path / "one" / f"{name}-0.npz")
        for rank in (0, 1):
            w2 = np.load(tmp_path / "two" / f"{name}-{rank}.npz")
            assert set(w1.files) == set(w2.files) and len(w1.files) == 21
            for key in w1.files:
                np.testing.assert_array_equal(w2[key] == 0, w1[key] == 0, err_msg=f"{name} {key} zeros")
                np.testing.assert_allclose(w2[key], w1[key], rtol=1e-4, atol=1e-5, err_msg=f"{name} {key}")
    assert set(ref) == set(runs.split(","))
    for name in (n for n in ref if n != "wanda"):  # one shared checkpoint folder, complete
        assert sorted(p.name for p in (tmp_path / "two" / name).iterdir()) == [
            "layer_0000", "layer_0001", "layer_0002", "state.json"]  # fmt: skip


UNSHARED_CHECKPOINT_SCRIPT = textwrap.dedent(
    """
    import sys
    from zipcal_jax import distributed as D
    assert D.initialize(timeout_s=60)
    import numpy as np
    from flax import nnx
    from zipcal_jax.compress.pipeline import StopAfterLayer, compress
    from zipcal_jax.models import llama
    cfg = llama.LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2)
    ids = np.random.default_rng(0).integers(0, 300, (4, 8))
    calib, mesh = (ids, np.ones((4, 8), bool)), D.make_mesh()
    try:
        compress(llama.Llama(cfg, rngs=nnx.Rngs(0)), calib, mesh=mesh, progress=False,
                 checkpoint_dir=sys.argv[1], stop_after=0)
    except StopAfterLayer:
        pass
    own = sys.argv[1] + ("-copy" if D.process_index() else "")  # process 1 sees another folder
    try:
        compress(llama.Llama(cfg, rngs=nnx.Rngs(0)), calib, mesh=mesh, progress=False, checkpoint_dir=own)
    except ValueError as err:
        print(err)
    """
)


def test_two_processes_refuse_a_checkpoint_they_do_not_share(tmp_path):
    """A resume whose folder differs between processes stops every process with the same clear
    error (instead of one process waiting forever for the others)."""
    outs = run_two_processes([sys.executable, "-c", UNSHARED_CHECKPOINT_SCRIPT, str(tmp_path / "ckpt")])
    for out in outs:
        assert "the processes find [1, 0] finished layers" in out.stdout and "shared filesystem" in out.stdout


@pytest.mark.slow
def test_two_process_cli_writes_from_process_zero(tiny_files):
    """``zipcal select``, ``eval``, ``compress`` and ``run`` as two processes: process 0 alone prints
    and writes, with the one-process results."""
    from zipcal_jax.models import llama

    model_dir = tiny_files.root / "model"
    if not model_dir.exists():
        from flax import nnx
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(tiny_files.tok)
        llama.save(llama.Llama(llama.LlamaConfig(**TINY), rngs=nnx.Rngs(0)), model_dir, format="hf",
                   tokenizer=tok)  # fmt: skip
    cli = [sys.executable, "-m", "zipcal_jax.cli"]
    sel = tiny_files.root / "sel"
    outs = run_two_processes([*cli, "select", "--data", tiny_files.text, "--tokenizer", tiny_files.tok,
                              "--seqlen", "16", "--nsamples", "8", "--no-progress", "--out", str(sel)])  # fmt: skip
    assert "| method" in outs[0].stdout and "| method" not in outs[1].stdout  # (gloo logs to stdout)
    assert (sel / "manifest.json").is_file() and (sel / "summary.md").is_file()
    ev = tiny_files.root / "eval"
    flags = ["--model", str(model_dir), "--ppl", tiny_files.text, "--seqlen", "16", "--no-progress"]
    outs = run_two_processes([*cli, "eval", *flags, "--out", str(ev)])
    assert "Perplexity" in outs[0].stdout and "Perplexity" not in outs[1].stdout
    two = json.loads((ev / "eval.json").read_text())["perplexity"][tiny_files.text]
    one_dir = tiny_files.root / "eval-one"
    subprocess.run([*cli, "eval", *flags, "--out", str(one_dir)], check=True, capture_output=True, timeout=120,
                   env={**os.environ, "JAX_PLATFORMS": "cpu"})  # fmt: skip
    one = json.loads((one_dir / "eval.json").read_text())["perplexity"][tiny_files.text]
    assert two["windows"] == one["windows"] and two["ppl"] == pytest.approx(one["ppl"], rel=1e-6)
    # compression over both processes (rows of the solves split between them, a shared checkpoint
    # folder), process 0 saves: the one-process report, and a model that loads
    flags = ["--model", str(model_dir), "--calib", str(sel), "--method", "sparsegpt", "--no-progress"]
    comp = tiny_files.root / "comp"
    outs = run_two_processes([*cli, "compress", *flags, "--solve-axis", "data", "--checkpoint-dir",
                              str(tiny_files.root / "ckpt"), "--out", str(comp)])  # fmt: skip
    assert "| sparsegpt" in outs[0].stdout and "| sparsegpt" not in outs[1].stdout
    two = json.loads((comp / "report.json").read_text())
    assert two["devices"] == 2 and two["solve_shards"] == 2
    one_dir = tiny_files.root / "comp-one"
    subprocess.run([*cli, "compress", *flags, "--out", str(one_dir)], check=True, capture_output=True,
                   timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})  # fmt: skip
    one = json.loads((one_dir / "report.json").read_text())
    assert two["totals"]["loss"] == pytest.approx(one["totals"]["loss"], rel=1e-5)
    assert two["totals"]["mean_sparsity"] == one["totals"]["mean_sparsity"]
    model, _ = llama.load(str(comp / "model"))
    ref, _ = llama.load(str(one_dir / "model"))
    for name in llama.linear_names(model):
        np.testing.assert_allclose(llama.get_linear_weight(model, name), llama.get_linear_weight(ref, name),
                                   rtol=1e-4, atol=1e-5, err_msg=name)  # fmt: skip
    # a grid over both processes: process 0 prints and writes the one-process table
    grid = tiny_files.root / "grid.json"
    grid.write_text(json.dumps({
        "models": [str(model_dir)], "calibration": {"text": [tiny_files.text]}, "seqlen": 16,
        "methods": ["zipcal", "random"], "compressors": {"sgpt": {"method": "sparsegpt"}}, "nsamples": [4],
        "evaluation": {"ppl": [tiny_files.text], "seqlen": 16, "max_windows": 4, "tasks": []},
        "batch_size": 4, "progress": False}))  # fmt: skip
    outs = run_two_processes([*cli, "run", "--config", str(grid), "--out", str(tiny_files.root / "grid")])
    assert "| sgpt" in outs[0].stdout and "| sgpt" not in outs[1].stdout
    assert "3 cells computed" in outs[0].stdout
    subprocess.run([*cli, "run", "--config", str(grid), "--out", str(tiny_files.root / "grid-one")], check=True,
                   capture_output=True, timeout=180, env={**os.environ, "JAX_PLATFORMS": "cpu"})  # fmt: skip
    two, one = (
        json.loads((tiny_files.root / d / "summary.json").read_text())["rows"] for d in ("grid", "grid-one")
    )
    assert [r["method"] for r in two] == [r["method"] for r in one] == ["dense", "zipcal", "random"]
    for a, b in zip(one, two):
        assert b["ppl"][tiny_files.text][0] == pytest.approx(a["ppl"][tiny_files.text][0], rel=1e-4)
