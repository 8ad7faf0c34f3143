"""Peak memory per device of ``compress()`` on Llama-3.1-8B-sized layers: streaming against the default.

A model of ``--layers`` random decoder layers with Llama-3.1-8B's shapes (hidden 4096, intermediate
14336, 32 heads, 8 KV heads, head_dim 128; one 8B layer is 218M parameters, 0.87 GB in float32)
and a small vocabulary (``--vocab``, default 1024: the embedding is not what this measures) is
compressed with ``--method`` on ``--nsamples`` random sequences of ``--seqlen`` tokens, twice, each
run in its own subprocess (a fresh allocator and a fresh peak):

* ``default``   — ``compress(model_on_device, ...)``: the whole model on the first device, all
  calibration activations on device, solves on the first device (the library default);
* ``streaming`` — ``compress(model_in_host_memory, ..., offload=True)``, and with more than one
  device ``solve_axis="data"`` (Hessian accumulators and every solve split by rows).

Both runs use a ``data`` mesh over ``--devices`` devices when there are more than one.

Peak per device: ``device.memory_stats()["peak_bytes_in_use"]`` where the backend reports it (GPU,
TPU). The CPU backend reports nothing; there the table shows (a) ``live arrays``: the largest sum
of device-memory ``jax.Array`` bytes on one device, sampled after every compressed linear (a lower
bound: XLA temporaries inside a running program are not live arrays), and (b) the process peak
RSS (``ru_maxrss``) — host memory, where on CPU "device" and host memory are the same RAM, so
streaming cannot lower it there. Beside them: the per-device budget of the streaming plan,
``one layer's weights + the Hessian accumulators of its four input sites (/ n when split) + one
batch of activations in and out`` (``docs/memory.md``), and of the default.

    python benchmarks/bench_memory.py                              # wanda, 2 layers, 8 x 128 tokens
    python benchmarks/bench_memory.py --method sparsegpt --layers 1
    python benchmarks/bench_memory.py --devices 8 --hidden 256 --intermediate 512 --heads 4 --kv-heads 2 --head-dim 64

On CPU, ``--devices N`` above the real count starts the runs with N fake host devices
(``--xla_force_host_platform_device_count``); each fake device then holds its own replica of the
layer, so keep the sizes small. Measured on 2 shared CPU cores: Wanda with the defaults, about
2 minutes and 5 GB RSS per run; SparseGPT with ``--layers 1``, about 3 minutes and 7.6 GB RSS per
run (the 14336² factorization of ``down_proj``). Figures and the budget formula: docs/memory.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

MODES = ("default", "streaming")
GB = 1e9


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--method", default="wanda", choices=("wanda", "sparsegpt", "gptq"))
    p.add_argument("--layers", type=int, default=2, help="decoder layers (default 2)")
    p.add_argument("--nsamples", type=int, default=8, help="calibration sequences (default 8)")
    p.add_argument("--seqlen", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward (default 8)")
    p.add_argument("--devices", type=int, default=None, help="mesh over this many devices (default: all)")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=14336)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of default,streaming")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--child", default=None, choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - set(MODES):
        p.error(f"--modes takes a comma-separated subset of {MODES}")
    args.modes = modes
    for name in ("layers", "nsamples", "seqlen", "batch_size", "hidden", "intermediate", "heads", "kv_heads",
                 "head_dim", "vocab"):  # fmt: skip
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if args.devices is not None and args.devices < 1:
        p.error("--devices must be a positive integer")
    return args


# ----------------------------------------------------------------------------- budget


def budget(args, n_dev: int) -> dict[str, dict[str, float]]:
    """Per-device bytes of the two plans (float32 weights and statistics)."""
    D, F, N, K, Hd = args.hidden, args.intermediate, args.heads, args.kv_heads, args.head_dim
    layer = 4 * (D * N * Hd + 2 * D * K * Hd + N * Hd * D + 3 * D * F + 2 * D)
    sites = [D, N * Hd, D, F]  # attn_in, o_in, mlp_in, down_in
    hess = 4 * sum(d * d for d in sites)
    hess_split = 4 * sum(d * d // n_dev if d % n_dev == 0 else d * d for d in sites)
    bs = -(-args.batch_size // n_dev) * n_dev if n_dev > 1 else min(args.batch_size, args.nsamples)
    n_pad = -(-args.nsamples // bs) * bs
    act = 4 * args.seqlen * D  # one sequence's hidden states
    other = 4 * args.vocab * D + 4 * D  # embedding (tied head) + final norm

    # The solve of the largest linear (gate/up/down: D x F): Wanda holds W, W_new, the score and
    # XLA's temporaries of the mask search (3 x W, jax's memory_analysis) ~ 6 float32 copies;
    # SparseGPT/GPTQ add XLA's temporaries of obs_solve, ~5.3 d_in² float32 (memory_analysis at
    # d_in = d_out = 1024; factor, inverse, identity, damped H), d_in = F, replicated on each device.
    def solve(n_rows: int) -> float:
        w = 4 * D * F / n_rows
        return 6 * w if args.method == "wanda" else 2 * w + 5.3 * 4 * F * F

    return {
        "default": {"weights": args.layers * layer + other, "hessians": hess,
                    "activations": 2 * n_pad * act // n_dev, "solve": solve(1)},
        "streaming": {"weights": layer, "hessians": hess_split if n_dev > 1 else hess,
                      "activations": 2 * bs * act // n_dev, "solve": solve(n_dev)},
    }  # fmt: skip


# ----------------------------------------------------------------------------- one run (child)


def device_bytes() -> dict[int, int]:
    """Bytes of live device-memory jax.Arrays per device id."""
    import jax

    per: dict[int, int] = {}
    for a in jax.live_arrays():
        if a.is_deleted() or a.sharding.memory_kind not in (None, "device"):
            continue
        # from the sharding, not a.addressable_shards: their per-shard arrays would stay alive
        # with ``a`` and be counted again by the next call
        shard = math.prod(a.sharding.shard_shape(a.shape)) * a.dtype.itemsize
        for d in a.sharding.device_set:
            per[d.id] = per.get(d.id, 0) + shard
    return per


def host_model(cfg, seed: int = 0):
    """A ``Llama`` whose weights are NumPy arrays (host memory), drawn without touching a device."""
    import jax
    import numpy as np
    from flax import nnx

    from zipcal_jax.models import llama

    abstract = nnx.eval_shape(lambda: llama.Llama(cfg, rngs=nnx.Rngs(0)))
    graphdef, shapes = nnx.split(abstract)
    rng = np.random.default_rng(seed)

    def draw(x):
        if len(x.shape) == 1:
            return np.ones(x.shape, np.float32)  # RMSNorm weights
        return rng.standard_normal(x.shape, dtype=np.float32) * np.float32(x.shape[0] ** -0.5)

    return nnx.merge(graphdef, jax.tree.map(draw, shapes))


def child(args) -> dict:
    import jax
    import numpy as np
    from flax import nnx
    from jax.sharding import AxisType

    from zipcal_jax.compress.pipeline import compress
    from zipcal_jax.models import llama

    devices = jax.devices()
    n_dev = len(devices) if args.devices is None else args.devices
    if n_dev > len(devices):
        raise SystemExit(f"--devices {n_dev}: only {len(devices)} {devices[0].platform} devices here")
    devices = devices[:n_dev]
    mesh = None
    if n_dev > 1:
        mesh = jax.make_mesh((n_dev,), ("data",), axis_types=(AxisType.Auto,), devices=devices)
    cfg = llama.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                            num_hidden_layers=args.layers, num_attention_heads=args.heads,
                            num_key_value_heads=args.kv_heads, head_dim=args.head_dim, rope_theta=500000.0,
                            tie_word_embeddings=True)  # fmt: skip
    model = host_model(cfg)
    streaming = args.child == "streaming"
    if not streaming:  # the usual setting: the loaded model lives on the (first) device
        for module in (model.embed, *model.layers, model.final_norm):  # one at a time: no 2nd full copy
            nnx.update(module, jax.device_put(nnx.state(module), devices[0]))
    rng = np.random.default_rng(1)
    ids = rng.integers(0, args.vocab, (args.nsamples, args.seqlen)).astype(np.int32)
    mask = np.ones(ids.shape, bool)
    peak_live: dict[int, int] = {}

    def sample(*_):
        for d, b in device_bytes().items():
            peak_live[d] = max(peak_live.get(d, 0), b)

    sample()
    kw = dict(mesh=mesh, batch_size=args.batch_size, progress=False, callback=sample)
    if streaming:
        kw.update(offload=True, solve_axis="data" if mesh is not None else None)
    t0 = time.perf_counter()
    _, report = compress(model, (ids, mask), args.method, **kw)
    seconds = time.perf_counter() - t0
    stats = [d.memory_stats() for d in devices]
    peak = [s.get("peak_bytes_in_use") if s else None for s in stats]
    return {
        "mode": args.child,
        "platform": devices[0].platform,
        "devices": n_dev,
        "offload": report["offload"],
        "solve_shards": report["solve_shards"],
        "peak_bytes_in_use": peak if all(p is not None for p in peak) else None,
        "peak_live_array_bytes": [peak_live.get(d.id, 0) for d in devices],
        "host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "seconds": seconds,
        "modules": report["totals"]["modules"],
        "mean_sparsity": report["totals"]["mean_sparsity"],
    }


# ----------------------------------------------------------------------------- parent


def run_mode(mode: str, argv: list[str], devices: int | None) -> dict:
    env = dict(os.environ)
    if devices and devices > 1:  # CPU only (fake host devices, set before JAX starts); GPU/TPU ignore it
        flag = f"--xla_force_host_platform_device_count={devices}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    proc = subprocess.run(
        [sys.executable, __file__, *argv, "--child", mode], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"the {mode} run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(args, results: dict[str, dict]) -> str:
    first = next(iter(results.values()))
    n_dev = first["devices"]
    plans = budget(args, n_dev)
    measured = "peak_bytes_in_use" if first["peak_bytes_in_use"] is not None else "peak_live_array_bytes"
    biggest = max(sum(b.values()) for b in plans.values())
    unit, scale = ("GB", GB) if biggest >= 0.5 * GB else ("MB", 1e6)
    lines = [
        f"{args.method}, {args.layers} layer(s) of hidden {args.hidden} / intermediate {args.intermediate} / "
        f"{args.heads} heads / {args.kv_heads} KV heads, {args.nsamples} x {args.seqlen} tokens, batch "
        f"{args.batch_size}, {n_dev} {first['platform']} device(s)",
        "",
        f"| run | offload | solve shards | {measured}, max over devices ({unit}) | host peak RSS ({unit}) | "
        f"budget per device ({unit}): weights + Hessians + activations = sum | + solve (est.) | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, r in results.items():
        b = plans[mode]
        total = b["weights"] + b["hessians"] + b["activations"]
        lines.append(
            f"| {mode} | {r['offload'] or '-'} | {r['solve_shards']} | {max(r[measured]) / scale:.3f} | "
            f"{r['host_peak_rss_bytes'] / scale:.2f} | {b['weights'] / scale:.3f} + {b['hessians'] / scale:.3f} + "
            f"{b['activations'] / scale:.3f} = {total / scale:.3f} | {b['solve'] / scale:.3f} | {r['seconds']:.1f} |"
        )
    if n_dev > 1:
        lines.append("")
        for mode, r in results.items():
            per = ", ".join(f"{v / scale:.3f}" for v in r[measured])
            lines.append(f"{mode}: {measured} per device ({unit}): {per}")
    if len(results) == 2:
        d, s = results["default"], results["streaming"]
        lines += ["", f"streaming / default, {measured} per device: {max(s[measured]) / max(d[measured]):.2f}; "
                      f"host peak RSS: {s['host_peak_rss_bytes'] / d['host_peak_rss_bytes']:.2f}"]  # fmt: skip
    if measured == "peak_live_array_bytes":
        lines += ["", "The backend reports no memory_stats: 'peak_live_array_bytes' is the largest sum of live "
                      "device-memory jax.Arrays on one device, sampled after each linear (XLA temporaries "
                      "excluded); host peak RSS is process memory (on CPU the same RAM as the 'device')."]  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    # the parent never starts JAX (on a GPU it would hold memory the runs measure)
    results = {mode: run_mode(mode, argv, args.devices) for mode in args.modes}
    print(table(args, results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"args": {k: v for k, v in vars(args).items() if k != "child"}, "results": results},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
