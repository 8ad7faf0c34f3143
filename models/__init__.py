"""Models: the JAX LLaMA port, checkpoints and tokenizers (``zipcal_jax.models``).

This release ships :mod:`zipcal_jax.models.tokenizers`; the Flax NNX LLaMA and its
checkpoint loaders arrive with the model issue.
"""
