"""Prune SmolLM2-135M with Wanda on a ZipCal calibration set, then recover with a short masked
fine-tune (optax AdamW), keeping every pruned weight exactly zero.

    python examples/recover.py                     # SmolLM2-135M (offline default), pydoc text
    python examples/recover.py --steps 20 --batch 4 --seqlen 256
    python examples/recover.py --tiny              # tiny random model + tiny tokenizer: seconds

Steps: perplexity of the dense model on held-out text (``pydoc``: the last 10% of the standard
library's ``pydoc_data.topics``) → ZipCal selection of ``--nsamples`` calibration samples from the
training part (``builtin:pydoc``, the first 90%) → ``compress(model, calib, "wanda", sparsity=...)``
→ perplexity → ``--steps`` AdamW steps on ``--seqlen`` windows of the training part, through
``keep_sparsity`` (gradient clipping, warmup + cosine schedule, decoupled weight decay) → perplexity,
and a check that every pruned weight is still exactly zero.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from zipcal_jax import CalibrationSet, build_candidates, concept_table, load_texts, select
from zipcal_jax.compress import compress, training
from zipcal_jax.evals import perplexity
from zipcal_jax.models import llama

DEFAULTS = dict(model="smollm2-135m", calib="builtin:pydoc", train="builtin:pydoc", eval="pydoc",
                nsamples=32, calib_seqlen=128, sparsity=0.5, steps=20, lr=1e-4, weight_decay=0.01,
                batch=4, seqlen=256, eval_seqlen=512, eval_windows=None)  # fmt: skip
# --tiny: a random 2-layer model and a BPE tokenizer trained on a slice of the same text.
TINY = dict(calib="builtin:pydoc?limit=300", train="builtin:pydoc?limit=300", nsamples=8, calib_seqlen=32,
            steps=12, lr=3e-3, batch=4, seqlen=64, eval_seqlen=64, eval_windows=8)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--model", help="llama.load spec (named default, HF folder, .gguf, saved folder)")
    p.add_argument("--calib", help="source spec of the calibration pool")
    p.add_argument("--train", help="source spec of the fine-tuning text")
    p.add_argument("--eval", help="perplexity source (named source or spec), held out from --train")
    p.add_argument("--nsamples", type=int, help="calibration samples chosen by ZipCal")
    p.add_argument("--calib-seqlen", type=int, help="tokens per calibration candidate")
    p.add_argument("--sparsity", type=float, help="Wanda unstructured sparsity")
    p.add_argument("--steps", type=int, help="optimizer steps of the recovery fine-tune")
    p.add_argument("--lr", type=float, help="peak learning rate (warmup, then cosine to lr/10)")
    p.add_argument("--weight-decay", type=float, help="AdamW decoupled weight decay")
    p.add_argument("--batch", type=int, help="windows per step")
    p.add_argument("--seqlen", type=int, help="tokens per training window")
    p.add_argument("--eval-seqlen", type=int, help="tokens per perplexity window")
    p.add_argument("--eval-windows", type=int, help="score only the first N perplexity windows")
    p.add_argument("--remat", action="store_true", help="rematerialize decoder layers in the backward pass")
    p.add_argument("--seed", type=int, default=0, help="data order and tiny-model seed")
    p.add_argument("--tiny", action="store_true", help="tiny random model and tokenizer (a smoke run)")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    for key, value in {**DEFAULTS, **(TINY if args.tiny else {})}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("nsamples", "calib_seqlen", "steps", "batch", "seqlen", "eval_seqlen"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if not 0.0 < args.sparsity < 1.0:
        p.error(f"--sparsity must be in (0, 1), got {args.sparsity}")
    return args


def tiny_model_and_tokenizer(texts: list[str], seed: int) -> tuple[llama.Llama, Any]:
    """A 512-id byte-level BPE trained on ``texts`` and a random 2-layer LLaMA over it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)  # fmt: skip
    tok.train_from_iterator(texts, trainer)
    # every linear is (64, 64): one compiled solver shape keeps the smoke run short
    cfg = llama.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                            tie_word_embeddings=True)  # fmt: skip
    return llama.Llama(cfg, rngs=nnx.Rngs(seed)), tok


@functools.partial(nnx.jit, static_argnums=3)
def train_step(model: llama.Llama, optimizer: nnx.Optimizer, ids: jax.Array, remat: bool) -> jax.Array:
    loss, grads = nnx.value_and_grad(training.lm_loss)(model, ids, None, remat)
    optimizer.update(model, grads)
    return loss


def ppl(model, tok, args) -> float:
    result = perplexity.evaluate(model, tok, args.eval, seqlen=args.eval_seqlen, max_windows=args.eval_windows,
                                 progress=not args.quiet)  # fmt: skip
    return float(result["ppl"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    say = print
    t0 = time.perf_counter()
    progress = not args.quiet
    train_texts = load_texts(args.train, progress=False).texts
    if args.tiny:
        model, tok = tiny_model_and_tokenizer(train_texts, args.seed)
    else:
        model, tok = llama.load(args.model)
    results: dict[str, Any] = {"args": vars(args)}
    results["ppl_dense"] = ppl(model, tok, args)
    say(f"dense     ppl {results['ppl_dense']:.3f}")

    # ZipCal calibration set from the training part of the text
    concepts = concept_table(tok)
    cands = build_candidates(args.calib, tok, seqlen=args.calib_seqlen, progress=False)
    sel = select(cands.ids, args.nsamples, mask=cands.mask, concepts=concepts)
    calib = CalibrationSet.from_selection(cands, sel, concepts=concepts)
    say(f"calibration: {len(calib)} of {len(cands)} candidates, {int(calib.mask.sum())} tokens")

    collector = training.CompressionCollector()
    _, report = compress(model, calib, "wanda", sparsity=args.sparsity, callback=collector, progress=progress)
    results["sparsity_pruned"] = training.linear_sparsity(model)
    results["ppl_pruned"] = ppl(model, tok, args)
    say(f"pruned    ppl {results['ppl_pruned']:.3f}  (linear sparsity {results['sparsity_pruned']:.4f})")

    # masked fine-tune: the pipeline's own masks, AdamW with clipping, warmup and cosine decay
    masks = training.sparsity_masks(model, pruned=collector.masks)
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, max(1, args.steps // 10), args.steps,
                                                  end_value=args.lr / 10)  # fmt: skip
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=args.weight_decay))
    optimizer = nnx.Optimizer(model, training.keep_sparsity(tx, masks), wrt=nnx.Param)
    windows = perplexity.token_windows(tok, train_texts, args.seqlen)  # (n, seqlen) int32
    order = np.random.default_rng(args.seed).permutation(len(windows))
    if len(windows) < args.batch:
        raise ValueError(f"{args.train} gives {len(windows)} windows of {args.seqlen} tokens, fewer than "
                         f"--batch {args.batch}; use a smaller --seqlen or --batch")  # fmt: skip
    losses = []
    t1 = time.perf_counter()
    bar = tqdm(range(args.steps), desc="recovery fine-tune", unit="step", disable=not progress)
    for step in bar:
        start = (step * args.batch) % (len(order) - args.batch + 1)
        ids = jnp.asarray(windows[order[start : start + args.batch]])
        losses.append(float(train_step(model, optimizer, ids, args.remat)))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    results["train_seconds"] = time.perf_counter() - t1
    results["losses"] = losses

    violations = training.sparsity_violations(model, masks)
    results["sparsity_recovered"] = training.linear_sparsity(model)
    assert violations == 0, f"{violations} pruned weights moved off zero"
    results["ppl_recovered"] = ppl(model, tok, args)
    say(f"recovered ppl {results['ppl_recovered']:.3f}  (linear sparsity {results['sparsity_recovered']:.4f}, "
        f"every pruned weight still exactly zero)")  # fmt: skip
    say(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {args.steps} steps of {args.batch} x {args.seqlen} "
        f"tokens ({results['train_seconds']:.1f} s); total {time.perf_counter() - t0:.1f} s")  # fmt: skip
    say("| model | perplexity |\n| --- | --- |\n"
        f"| dense | {results['ppl_dense']:.2f} |\n| Wanda {args.sparsity:.0%} | {results['ppl_pruned']:.2f} |\n"
        f"| + recovery | {results['ppl_recovered']:.2f} |")  # fmt: skip
    results["wanda_output_error"] = report["totals"]["output_error"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
