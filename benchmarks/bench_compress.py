"""How fast are the compression solvers? Seconds per linear layer against the NumPy reference.

For three layer shapes (d_out x d_in) — SmolLM2-135M ``q_proj`` (576 x 576) and ``down_proj``
(576 x 1536), and a Llama-2-7B ``q_proj`` (4096 x 4096) — with a Hessian ``H = 2/N XᵀX`` from
``N`` synthetic activations (columns with spread-out scales), it times:

* ``sparsegpt`` — ``zipcal_jax.compress.sparsegpt.prune``, 50% unstructured;
* ``gptq``      — ``zipcal_jax.compress.gptq.quantize``, 4 bit, group 128, asymmetric;
* ``reference`` — the same algorithm as the PyTorch reference code, ported line by line to NumPy
  in float32 (``tests/compress_reference.py``: column loop in Python, BLAS for the block update).

JAX times are the best of ``--repeats`` calls after a first call; ``first - steady`` is about the
compile time, which must not grow with ``d_in`` (the column and block loops are ``fori_loop``s,
not unrolled). ``--threads 1`` pins XLA and OpenBLAS to one thread each (steadier figures on a
shared machine). Default run: about 1-2 minutes on 2 CPU cores.

    python benchmarks/bench_compress.py
    python benchmarks/bench_compress.py --threads 1
    python benchmarks/bench_compress.py --shapes 576x576 --no-reference
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="576x576,576x1536,4096x4096", help="d_out x d_in, comma-separated")
    p.add_argument("--samples", type=int, default=1024, help="synthetic activation rows for H")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-reference", dest="reference", action="store_false")
    p.add_argument("--threads", default=None, help="threads for XLA and BLAS (default: theirs)")
    args = p.parse_args(argv)

    threads = args.threads or "default"
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, {threads} threads; H from {args.samples} samples\n"
    )
    print("| layer (d_out x d_in) | solver | JAX s | first call s | ~compile s | NumPy reference s | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for shape in args.shapes.split(","):
        d_out, d_in = (int(v) for v in shape.split("x"))
        W, H = layer(d_out, d_in, args.samples)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
