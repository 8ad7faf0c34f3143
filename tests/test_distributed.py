"""Multi-host helpers (:mod:`zipcal_jax.distributed`) and sharded evaluation.

* single process: ``initialize`` is a no-op, process 0 writes, ``process_slice`` covers every row;
* launcher detection from environment dictionaries;
* 8 fake CPU devices (subprocess): perplexity and zero-shot scores on a data mesh, and on a
  (data 4, model 2) mesh with tensor-parallel parameters, equal the one-device scores;
* two real processes on this machine (``jax.distributed`` over localhost, gloo collectives):
  selection on a mesh spanning both processes equals the one-process picks and per-process rows
  assemble into one global array; (slow) ``zipcal select`` / ``zipcal eval`` write and print from
  process 0 only, with the one-process perplexity.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from multidevice import run_on_8_devices

from zipcal_jax import distributed as D

REPO = Path(__file__).parents[1]
LAUNCHER_VARS = ["JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID",
                 "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_NUM_TASKS",
                 "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "TPU_PROCESS_ADDRESSES",
                 "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", D.ENV_FLAG]  # fmt: skip

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
    print(json.dumps(dict(index=D.process_index(), count=D.process_count(), writer=D.is_writer(),
                          devices=jax.device_count(), mesh=list(mesh.devices.shape), picks=picks,
                          share=[share.start, share.stop], global_shape=list(g.shape),
                          global_sum=int(jax.jit(lambda x: (x * (x >= 0)).sum())(g)))))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_two_processes(argv: list[str], timeout: float = 240) -> list[subprocess.CompletedProcess]:
    """Run ``argv`` as processes 0 and 1 of a ``jax.distributed`` job on localhost (one CPU device
    each); returns both results in process order. Both are killed if either overruns."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and k != "XLA_FLAGS"}
    env |= {"JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2"}
    pipe = subprocess.PIPE
    procs = [
        subprocess.Popen(argv, env={**env, "JAX_PROCESS_ID": str(i)}, stdout=pipe, stderr=pipe, text=True)
        for i in range(2)
    ]
    deadline = time.monotonic() + timeout
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outs.append(subprocess.CompletedProcess(argv, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()  # SIGKILL: JAX's preemption notifier catches SIGTERM
                p.wait()
    for i, r in enumerate(outs):
        assert r.returncode == 0, f"process {i}:\n{r.stderr[-3000:]}"
    return outs


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


@pytest.mark.slow
def test_two_process_cli_writes_from_process_zero(tiny_files):
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
