"""ZipCal vs COLA selection time as the candidate pool grows (the paper's scalability figure).

Both methods choose ``k`` samples from the same pools of ``seqlen``-token windows of built-in
text (``builtin:pydoc`` and ``builtin:kjv``, train split), with the same model's tokenizer:

* ``zipcal`` — ``select(method="zipcal")`` (exact greedy over concept sets; compiled once for the
  shape first, best of 3 runs: the machine is shared);
* ``cola``   — ``select(method="cola", model=SmolLM2-135M)``: a forward pass over every candidate
  (per-layer masked mean activations), random projection to 64 dims, seeded k-means with k
  clusters, nearest sample per centroid (one run; the forward is compiled on a warm-up batch).

COLA's cost is one model forward per candidate, so it grows with ``n × seqlen × model size``;
ZipCal's with the number of tokens only. The paper reports ~240x on its pools (reference §D.5).
Prints a table with the ratio per pool size and writes a log-log PNG.

    python benchmarks/bench_vs_cola.py                          # 128, 512, 2048 x 64 tokens (~3 min)
    python benchmarks/bench_vs_cola.py --sizes 256 1024 4096 --seqlen 128

``--devices N`` / ``--model-parallel M`` / ``--distributed``: both selections run on a mesh over N
devices (``docs/pods.md``); process 0 prints and writes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from zipcal_jax import build_candidates, concept_table, distributed, select


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", nargs="+", default=["builtin:pydoc", "builtin:kjv"])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2048])
    p.add_argument("--seqlen", type=int, default=64)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_vs_cola.png", help="PNG (a .json with the rows next to it)")
    distributed.add_mesh_arguments(p)
    args = p.parse_args()
    distributed.initialize_from_args(args)

    from zipcal_jax.models import llama

    model, tok = llama.load(args.model)
    mesh = distributed.mesh_for_model(args, model)
    table = concept_table(tok)
    cands = build_candidates(args.data, tok, args.seqlen, windows=True, progress=False)
    keep = cands.mask.sum(1) == args.seqlen  # full windows only: every pool has n x seqlen tokens
    order = np.random.default_rng(args.seed).permutation(np.flatnonzero(keep))
    if max(args.sizes) > len(order):
        raise SystemExit(f"only {len(order)} full windows of {args.seqlen} tokens in {args.data}")
    print(f"model {args.model}; {len(order)} windows of {args.seqlen} tokens from {' + '.join(args.data)}; "
          f"k = {args.k}")  # fmt: skip

    warm = order[: min(args.sizes)]  # compile COLA's forward for the batch shape once
    select(
        cands.ids[warm], args.k, method="cola", mask=cands.mask[warm], model=model, seed=args.seed, mesh=mesh
    )
    rows = []
    for n in args.sizes:
        idx = order[:n]
        ids, mask = cands.ids[idx], cands.mask[idx]
        select(ids, args.k, mask=mask, concepts=table, mesh=mesh)  # compile for this shape
        z = min(timed(select, ids, args.k, mask=mask, concepts=table, mesh=mesh)[1] for _ in range(3))
        _, c = timed(select, ids, args.k, method="cola", mask=mask, model=model, seed=args.seed, mesh=mesh)
        rows.append({"n": n, "tokens": n * args.seqlen, "zipcal_s": z, "cola_s": c, "ratio": c / z})
        print(f"n = {n:6d}: zipcal {z:8.4f} s   cola {c:8.2f} s   cola/zipcal {c / z:8.0f}x", flush=True)

    print("\n| pool n | tokens | ZipCal s | COLA s | COLA / ZipCal |\n|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']} | {r['tokens']} | {r['zipcal_s']:.4f} | {r['cola_s']:.2f} | {r['ratio']:.0f}x |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4))
    ns = [r["n"] for r in rows]
    ax.loglog(ns, [r["zipcal_s"] for r in rows], "o-", label="ZipCal")
    ax.loglog(ns, [r["cola_s"] for r in rows], "s-", label=f"COLA ({args.model})")
    ax.set_xlabel(f"pool size (candidates of {args.seqlen} tokens)")
    ax.set_ylabel("selection time (s)")
    ax.set_title(f"Selection time vs pool size, k = {args.k}")
    ax.legend()
    fig.tight_layout()
    out = Path(args.out)
    if distributed.is_writer():
        fig.savefig(out, dpi=120)
        out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"\nwrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
