"""Strong and weak scaling of ZipCal selection and of calibration statistics over 1, 2, 4, 8 devices.

Two workloads, each on a ``("data", "model")`` mesh of D devices (``zipcal_jax.distributed.make_mesh``,
model axis 1):

* ``select`` — :func:`zipcal_jax.select` (exact greedy) of ``k`` samples from ``n`` synthetic
  Zipfian candidates of ``L`` tokens, the candidates sharded over ``data`` (set building included);
* ``statistics`` — the calibration statistics of one decoder layer as the compression pipeline
  gathers them: :func:`zipcal_jax.compress.capture.accumulate` runs the layer on batches of
  ``(B, T, hidden)`` inputs sharded over ``data`` and adds ``Σ x xᵀ`` of its four input sites to
  replicated float32 accumulators (XLA reduces the per-device partial sums), over ``N`` samples.

**Strong scaling** keeps the problem fixed (``n`` candidates, ``N`` samples) as D grows: speedup
``t_1 / t_D``, efficiency ``speedup / D`` (``N`` is rounded up so that every device count splits
the same batches evenly). **Weak scaling** grows it with D (``n_per_device * D``
candidates; ``N_per_device * D`` samples in as many batches as on one device): efficiency
``t_1 / t_D`` (1 = perfect), speedup ``D * t_1 / t_D`` (scaled speedup). Times are the best of
``--repeats`` runs after a compiling run.

Every sharded result is checked against the same problem on the first device count (1 by
default) in the same run: selection must pick the identical candidates in the identical order;
statistics must agree to ``rtol=1e-5`` (float32 sums in another order). The ``matches`` column
shows it; any mismatch makes the script exit with status 1.

Devices: with no accelerator, the script asks XLA for 8 fake CPU devices
(``--xla_force_host_platform_device_count``, set before JAX starts unless ``XLA_FLAGS`` already
sets it). **Fake CPU devices share this machine's cores**, so their efficiency figures measure the
overhead of sharding (partitioned programs, collectives, padding), not a speedup; run on a multi-
GPU host or a TPU slice for real scaling (``docs/pods.md``). ``--distributed`` runs one process per
host (device counts that are not a multiple of the process count are skipped; process 0 prints).

    python benchmarks/scaling.py                               # defaults, about a minute on 2 cores
    python benchmarks/scaling.py --devices 1,2,4,8 --n 65536 --samples 256 --json scaling.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

import numpy as np

_FAKE_DEVICES = "--xla_force_host_platform_device_count"
STATS_RTOL = 1e-5


def _ask_for_fake_cpu_devices(count: int) -> None:
    """Give the CPU backend ``count`` devices unless ``XLA_FLAGS`` already chooses (before JAX starts)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _FAKE_DEVICES not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_FAKE_DEVICES}={count}".strip()


def best_time(fn, repeats: int) -> tuple[Any, float]:
    """``(result of the first call, best seconds of `repeats` further calls)`` (NaN for none)."""
    import jax

    out = jax.block_until_ready(fn())  # compiles
    times = [math.nan]
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return out, min(times[1:], default=math.nan)


# ----------------------------------------------------------------------------- workloads


def zipfian_candidates(n: int, L: int, vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` candidates of ``L`` token ids drawn from a Zipf law over ``vocab`` ids, ~10% padding."""
    rng = np.random.default_rng(seed)
    ids = (rng.zipf(1.2, (n, L)) % vocab).astype(np.int32)
    mask = rng.random((n, L)) > 0.1
    return ids, mask


def run_select(ids: np.ndarray, mask: np.ndarray, k: int, mesh, repeats: int) -> tuple[np.ndarray, float]:
    from zipcal_jax.select import select

    sel, seconds = best_time(lambda: select(ids, k, mask=mask, mesh=mesh), repeats)
    return sel.indices, seconds


def decoder_layer(hidden: int, seed: int = 0):
    """A random LLaMA decoder layer (4 heads, 2 KV heads, MLP 2.75 x hidden) and its config."""
    from flax import nnx

    from zipcal_jax.models import llama

    cfg = llama.LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                            num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    return llama.DecoderLayer(cfg, dtype=np.float32, param_dtype=np.float32, rngs=nnx.Rngs(seed))


def layer_inputs(samples: int, T: int, hidden: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(samples, T, hidden)`` float32 layer inputs and a ``(samples, T)`` token mask (a ragged tail)."""
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((samples, T, hidden), np.float32)
    lengths = rng.integers(T // 2, T + 1, samples)
    return h, np.arange(T)[None, :] < lengths[:, None]


def run_statistics(layer, h: np.ndarray, token_mask: np.ndarray, batch: int, mesh, repeats: int):
    """``Σ x xᵀ`` per input site over all samples, in batches of ``batch`` sharded over ``data``;
    returns ``({site: (d, d) float64}, best seconds)``."""
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from zipcal_jax.compress import capture
    from zipcal_jax.distributed import put_global

    rows, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    graphdef, state = nnx.split(layer)
    state = put_global(state, replicated)  # every process holds the same layer and samples
    batches = [
        (put_global(h[s : s + batch], rows), put_global(token_mask[s : s + batch], rows))
        for s in range(0, len(h), batch)
    ]

    def statistics():
        sums = capture.zero_sums(layer, capture.GROUPS, replicated)
        for x, m in batches:
            _, sums = capture.accumulate(graphdef, state, x, m, sums, capture.GROUPS)
        return sums

    sums, seconds = best_time(statistics, repeats)
    return {site: np.asarray(v, np.float64) for site, v in sums.items()}, seconds


def stats_match(a: dict[str, np.ndarray], b: dict[str, np.ndarray], rtol: float = STATS_RTOL) -> bool:
    """Whether two sets of per-site sums agree (``rtol`` of each sum's largest entry)."""
    return a.keys() == b.keys() and all(
        np.allclose(a[s], b[s], rtol=0, atol=rtol * float(np.abs(b[s]).max())) for s in a
    )


# ----------------------------------------------------------------------------- table


def scaling_rows(task: str, mode: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add speedup and efficiency to ``results`` (``devices``, ``size``, ``seconds``, ``matches``;
    the first entry is the baseline)."""
    base = results[0]
    rows = []
    for r in results:
        ratio = base["seconds"] / r["seconds"]
        factor = r["devices"] / base["devices"]
        speedup = ratio if mode == "strong" else factor * ratio
        rows.append({"task": task, "scaling": mode, **r, "speedup": speedup, "efficiency": speedup / factor})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| task | scaling | devices | size | seconds | speedup | efficiency | matches |",
             "|---|---|---:|---|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['scaling']} | {r['devices']} | {r['size']} | {r['seconds']:.4f} | "
            f"{r['speedup']:.2f} | {r['efficiency']:.2f} | {'yes' if r['matches'] else 'NO'} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--devices", default="1,2,4,8", help="device counts, comma-separated (default: %(default)s)"
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="timed runs after the compiling one (default: %(default)s)"
    )
    p.add_argument(
        "--distributed", action="store_true", default=None, help="one process per host (docs/pods.md)"
    )
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    s = p.add_argument_group("select")
    s.add_argument("--n", type=int, default=16384, help="strong scaling: candidates (default: %(default)s)")
    s.add_argument("--n-per-device", type=int, default=4096, help="weak scaling (default: %(default)s)")
    s.add_argument("--seqlen", type=int, default=64, help="tokens per candidate (default: %(default)s)")
    s.add_argument("--vocab", type=int, default=32000, help="token ids (default: %(default)s)")
    s.add_argument("--k", type=int, default=64, help="samples to select (default: %(default)s)")
    t = p.add_argument_group("statistics")
    t.add_argument("--samples", type=int, default=64, help="strong scaling: samples (default: %(default)s)")
    t.add_argument("--samples-per-device", type=int, default=8, help="weak scaling (default: %(default)s)")
    t.add_argument(
        "--batches", type=int, default=2, help="batches the samples come in (default: %(default)s)"
    )
    t.add_argument("--tokens", type=int, default=128, help="tokens per sample, T (default: %(default)s)")
    t.add_argument("--hidden", type=int, default=256, help="layer width (default: %(default)s)")
    p.add_argument("--tasks", default="select,statistics", help="workloads to run (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    counts = sorted({int(c) for c in args.devices.split(",") if c.strip()})
    if not counts or counts[0] < 1:
        raise SystemExit(f"--devices needs positive device counts, got {args.devices!r}")
    _ask_for_fake_cpu_devices(max(8, counts[-1]))

    import jax

    from zipcal_jax import distributed

    distributed.initialize(args.distributed)
    distributed.quiet_unless_writer()
    available, procs = jax.device_count(), jax.process_count()
    skipped = [c for c in counts if c > available or c % procs]
    counts = [c for c in counts if c not in skipped]
    if not counts:
        raise SystemExit(f"none of --devices {args.devices} fits {available} devices in {procs} process(es)")
    backend = jax.default_backend()
    print(f"jax {jax.__version__}, {available} {backend} device(s) in {procs} process(es); device counts {counts}"
          + (f" (skipped {skipped})" if skipped else ""))  # fmt: skip
    if backend == "cpu":
        print("fake CPU devices share this machine's cores: efficiency shows sharding overhead, not speedup")
    meshes = {c: distributed.make_mesh(c) for c in counts}
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = set(tasks) - {"select", "statistics"}
    if unknown:
        raise SystemExit(f"unknown --tasks {sorted(unknown)}; choose from select, statistics")
    rows: list[dict[str, Any]] = []
    base = counts[0]

    if "select" in tasks:
        for mode in ("strong", "weak"):
            results, reference = [], {}
            for c in counts:
                n = args.n if mode == "strong" else args.n_per_device * c
                ids, mask = zipfian_candidates(n, args.seqlen, args.vocab)
                picks, seconds = run_select(ids, mask, args.k, meshes[c], args.repeats)
                if n not in reference:  # the same pool on the baseline device count
                    reference[n] = picks if c == base else run_select(ids, mask, args.k, meshes[base], 0)[0]
                same = bool(np.array_equal(picks, reference[n]))
                results.append({"devices": c, "size": f"n={n}", "seconds": seconds, "matches": same})
                print(
                    f"select {mode} {c} device(s): {seconds:.4f} s, identical picks: {same}", file=sys.stderr
                )
            rows += scaling_rows("select", mode, results)

    if "statistics" in tasks:
        layer = decoder_layer(args.hidden)
        for mode in ("strong", "weak"):
            results, reference = [], {}
            for c in counts:
                samples = args.samples if mode == "strong" else args.samples_per_device * c
                step = math.lcm(*counts) if mode == "strong" else c  # the same problem for every count
                batch = -(-samples // args.batches)
                batch = -(-batch // step) * step  # a multiple of the data axis
                h, token_mask = layer_inputs(batch * args.batches, args.tokens, args.hidden)
                sums, seconds = run_statistics(layer, h, token_mask, batch, meshes[c], args.repeats)
                key = len(h)
                if key not in reference:
                    reference[key] = sums if c == base else run_statistics(
                        layer, h, token_mask, batch, meshes[base], 0)[0]  # fmt: skip
                same = stats_match(sums, reference[key])
                size = f"{len(h)} x {args.tokens} tokens, d={args.hidden}"
                results.append({"devices": c, "size": size, "seconds": seconds, "matches": same})
                print(f"statistics {mode} {c} device(s): {seconds:.4f} s, allclose: {same}", file=sys.stderr)
            rows += scaling_rows("statistics", mode, results)

    print(markdown(rows))
    failed = [r for r in rows if not r["matches"]]
    if args.json and distributed.is_writer():
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "backend": backend, "rows": rows}, f, indent=1)
    if failed:
        print(f"{len(failed)} sharded result(s) differ from the {base}-device result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
