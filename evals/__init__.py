"""Evaluation (``zipcal_jax.evals``): perplexity and zero-shot multiple choice.

Not implemented yet; see the project's open issues. Importing this package is safe.
"""
