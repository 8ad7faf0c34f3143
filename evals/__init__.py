"""Evaluation (``zipcal_jax.evals``): perplexity and zero-shot multiple choice.

* :mod:`~zipcal_jax.evals.perplexity` — ``evaluate(model, tokenizer, source, seqlen=2048)``:
  non-overlapping windows of the joined text, the Wanda/SparseGPT/GPTQ convention; named
  sources ``wikitext2``, ``c4`` (hub) and ``pydoc``, ``kjv``, ``devil`` (offline, held-out).
* :mod:`~zipcal_jax.evals.zeroshot` — ``loglikelihood`` with lm-evaluation-harness's
  tokenization rules (batched, shared contexts scored once) and ``evaluate`` → ``acc``,
  ``acc_norm``, ``greedy`` per task, JSON and Markdown.
  Its requests are laid out in rows and fixed-shape, bucketed batches by
  :mod:`~zipcal_jax.evals.batching`.
* :mod:`~zipcal_jax.evals.tasks` — the task registry: the harness's tasks from the hub or local
  files, BIG-bench ``task.json``, corpus cloze tasks on held-out text; the ``offline`` suite.

From the command line: ``zipcal eval --model SPEC --ppl SOURCE --tasks offline --limit N``.
"""
