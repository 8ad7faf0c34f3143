"""How fast is compression? Per-layer solver seconds against NumPy, and whole SmolLM2 runs.

Two sections (``--sections``, default both):

``solvers`` — for three layer shapes (d_out x d_in) — SmolLM2-135M ``q_proj`` (576 x 576) and ``down_proj``
(576 x 1536), and a Llama-2-7B ``q_proj`` (4096 x 4096) — with a Hessian ``H = 2/N XᵀX`` from
``N`` synthetic activations (columns with spread-out scales), it times:

* ``sparsegpt`` — ``zipcal_jax.compress.sparsegpt.prune``, 50% unstructured;
* ``gptq``      — ``zipcal_jax.compress.gptq.quantize``, 4 bit, group 128, asymmetric;
* ``reference`` — the same algorithm as the PyTorch reference code, ported line by line to NumPy
  in float32 (``tests/compress_reference.py``: column loop in Python, BLAS for the block update).

JAX times are the best of ``--repeats`` calls after a first call; ``first - steady`` is about the
compile time, which must not grow with ``d_in`` (the column and block loops are ``fori_loop``s,
not unrolled). ``--threads 1`` pins XLA and OpenBLAS to one thread each (steadier figures on a
shared machine). About 1-2 minutes on 2 CPU cores.

``pipeline`` — :func:`zipcal_jax.compress.compress` on the whole SmolLM2-135M (``llama.load``,
offline cache; 30 layers x 7 linears) with ``--calib-samples`` windows of ``--seqlen`` tokens of
``builtin:pydoc`` (the first windows, every token real), for Wanda 50%, SparseGPT 50% and GPTQ
4 bit g128 (``--methods``), split as the report's ``totals`` do: ``calibration forward``
(``seconds_forward``: embedding, the statistics passes and the re-forward of each layer),
``solver`` (``seconds_solve``: the seven linears of every layer, including the report's error
terms) and ``other`` (the wall time left: weight reads and writes, the Orbax checkpoints with
``--checkpoint``). Each method first runs layer 0 alone (``stop_after=0``) on its own model copy,
which compiles every jitted function (all layers share shapes), so the timed run excludes
compilation; that warm-up's seconds are shown too. With the defaults (32 x 256 tokens) on 2 CPU
cores: about 2 minutes for Wanda, 3-4 for SparseGPT and GPTQ each (``--methods`` to pick).

    python benchmarks/bench_compress.py
    python benchmarks/bench_compress.py --sections solvers --threads 1
    python benchmarks/bench_compress.py --shapes 576x576 --no-reference
    python benchmarks/bench_compress.py --sections pipeline --calib-samples 64 --seqlen 512 --checkpoint

``--devices N`` / ``--distributed``: the pipeline's calibration samples are sharded over N devices
(``compress(mesh=...)``, ``docs/pods.md``); the solvers section runs on one device; process 0 prints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

if "--threads" in sys.argv:  # must be set before numpy and jax load their thread pools
    _n = sys.argv[sys.argv.index("--threads") + 1]
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={_n}"
    )
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _n

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import compress_reference as ref

from zipcal_jax import distributed
from zipcal_jax.compress import gptq, sparsegpt


def layer(d_out: int, d_in: int, n_samples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n_samples, d_in)) * rng.uniform(0.1, 3.0, d_in)).astype(np.float32)
    H = 2 / n_samples * (X.T @ X)
    W = (0.05 * rng.standard_normal((d_out, d_in))).astype(np.float32)
    return W, H


def timed(fn):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return out, time.perf_counter() - start


def bench(name, jax_fn, ref_fn, repeats, reference):
    _, first = timed(jax_fn)
    steady = min(timed(jax_fn)[1] for _ in range(repeats))
    row = {"solver": name, "jax_s": steady, "first_s": first, "compile_s": max(first - steady, 0.0)}
    if reference:
        _, row["reference_s"] = timed(ref_fn)
        row["ratio"] = row["reference_s"] / steady
    return row


def bench_solvers(args) -> list[dict]:
    """Seconds per linear layer: JAX solvers against the NumPy reference; prints a table."""
    threads = args.threads or "default"
    print(
        f"\n## solvers — jax {jax.__version__} on {jax.devices()[0].platform}, {threads} threads; "
        f"H from {args.samples_h} samples\n"
    )
    print("| layer (d_out x d_in) | solver | JAX s | first call s | ~compile s | NumPy reference s | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    out = []
    for shape in args.shapes.split(","):
        d_out, d_in = (int(v) for v in shape.split("x"))
        W, H = layer(d_out, d_in, args.samples_h)
        solvers = [
            (
                "sparsegpt 50%",
                partial(sparsegpt.prune, W, H, 0.5),
                partial(ref.sparsegpt, W, H, 0.5, dtype=np.float32),
            ),
            (
                "gptq 4b g128",
                partial(gptq.quantize, W, H, bits=4, group_size=128),
                partial(ref.gptq, W, H, 4, 128, dtype=np.float32),
            ),
        ]
        rows = [bench(name, ours, theirs, args.repeats, args.reference) for name, ours, theirs in solvers]
        for r in rows:
            reference = f"{r['reference_s']:.2f} | {r['ratio']:.1f}x" if "ratio" in r else "— | —"
            print(
                f"| {d_out}x{d_in} | {r['solver']} | {r['jax_s']:.2f} | {r['first_s']:.2f} "
                f"| {r['compile_s']:.2f} | {reference} |",
                flush=True,
            )
        out += [{"shape": shape, **r} for r in rows]
    return out


PIPELINE_METHODS = {
    "wanda": ("wanda 50%", {"sparsity": 0.5}),
    "sparsegpt": ("sparsegpt 50%", {"sparsity": 0.5}),
    "gptq": ("gptq 4b g128", {"bits": 4, "group_size": 128}),
}


def bench_pipeline(args) -> list[dict]:
    """Whole-model ``compress`` on SmolLM2-135M: total vs calibration forward vs solvers."""
    import shutil
    import tempfile

    from zipcal_jax.compress.pipeline import StopAfterLayer, compress
    from zipcal_jax.data import build_candidates
    from zipcal_jax.models import llama

    (_, tok), t_load = timed(lambda: llama.load(args.model))
    cands = build_candidates(["builtin:pydoc"], tok, seqlen=args.seqlen, windows=True, progress=False)
    if len(cands.ids) < args.samples:
        raise SystemExit(f"builtin:pydoc has only {len(cands.ids)} windows of {args.seqlen} tokens")
    calib = (cands.ids[: args.samples], cands.mask[: args.samples])
    n_tokens = int(calib[1].sum())
    print(
        f"\n## pipeline — {args.model} (loaded in {t_load:.1f} s), {args.samples} x {args.seqlen} = "
        f"{n_tokens} calibration tokens of builtin:pydoc, batch {args.batch_size}, "
        f"{1 if args.mesh is None else args.mesh.size} {jax.default_backend()} device(s), checkpoints "
        f"{'on (Orbax, per layer)' if args.checkpoint else 'off'}\n"
    )
    print("| method | total s | calibration forward s | solver s | other s | layer-0 warm-up s (compiles) |")
    print("|---|---:|---:|---:|---:|---:|")
    out = []
    for method in args.methods:
        label, opts = PIPELINE_METHODS[method]
        kw = dict(batch_size=args.batch_size, progress=False, mesh=args.mesh, **opts)
        warm = llama.load(args.model)[0]
        start = time.perf_counter()
        try:
            compress(warm, calib, method, stop_after=0, **kw)
        except StopAfterLayer:
            pass
        t_warm = time.perf_counter() - start
        model = llama.load(args.model)[0]
        ckpt = tempfile.mkdtemp(prefix="bench-compress-") if args.checkpoint else None
        start = time.perf_counter()
        try:
            _, report = compress(model, calib, method, checkpoint_dir=ckpt, **kw)
            total = time.perf_counter() - start
        finally:
            if ckpt is not None:
                shutil.rmtree(ckpt, ignore_errors=True)
        fwd, solve = report["totals"]["seconds_forward"], report["totals"]["seconds_solve"]
        print(
            f"| {label} | {total:.1f} | {fwd:.1f} | {solve:.1f} | {total - fwd - solve:.1f} | {t_warm:.1f} |",
            flush=True,
        )
        out.append(
            {"method": method, "total_s": total, "forward_s": fwd, "solve_s": solve, "warmup_s": t_warm}
        )
    return out


SECTIONS = {"solvers": bench_solvers, "pipeline": bench_pipeline}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=["solvers", "pipeline"])
    p.add_argument("--threads", default=None, help="threads for XLA and BLAS (default: theirs)")
    s = p.add_argument_group("solvers")
    s.add_argument("--shapes", default="576x576,576x1536,4096x4096", help="d_out x d_in, comma-separated")
    s.add_argument(
        "--samples", dest="samples_h", type=int, default=1024, help="synthetic activation rows for H"
    )
    s.add_argument("--repeats", type=int, default=2)
    s.add_argument("--no-reference", dest="reference", action="store_false")
    q = p.add_argument_group("pipeline")
    q.add_argument("--model", default="smollm2-135m", help="any llama.load spec (default: %(default)s)")
    q.add_argument(
        "--calib-samples",
        dest="samples",
        type=int,
        default=32,
        help="calibration windows (default: %(default)s)",
    )
    q.add_argument("--seqlen", type=int, default=256, help="tokens per window (default: %(default)s)")
    q.add_argument("--batch-size", type=int, default=8, help="samples per forward (default: %(default)s)")
    q.add_argument("--methods", nargs="+", choices=list(PIPELINE_METHODS), default=list(PIPELINE_METHODS))
    q.add_argument(
        "--checkpoint", action="store_true", help="write per-layer Orbax checkpoints (timed as other)"
    )
    distributed.add_mesh_arguments(p)
    args = p.parse_args(argv)
    distributed.initialize_from_args(args)
    args.mesh = distributed.sharding_mesh(distributed.mesh_from_args(args))

    for name in args.sections:
        SECTIONS[name](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
