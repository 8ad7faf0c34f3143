"""Compression (``zipcal_jax.compress``): Wanda, SparseGPT and GPTQ.

Not implemented yet; see the project's open issues. Importing this package is safe.
"""
