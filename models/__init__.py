"""Models (``zipcal_jax.models``): the JAX LLaMA and what feeds it.

* :mod:`~zipcal_jax.models.llama` — config, Flax NNX modules, jitted forward, generation,
  layer-wise pieces and linear-weight access for compression; ``load``/``save``.
* :mod:`~zipcal_jax.models.generation` — KV-cache generation (``llama.generate``, ``llama.init_cache``).
* :mod:`~zipcal_jax.models.persist` — what ``load``/``save`` do: HF folders, GGUF, Orbax,
  hub ids, the named default ``smollm2-135m`` (converted weights cached), HF export.
* :mod:`~zipcal_jax.models.orbax_io` — the Orbax ``params/`` checkpoint of a save (read and write).
* :mod:`~zipcal_jax.models.sharding` — logical axis rules and parameter placement on a mesh.
* :mod:`~zipcal_jax.models.checkpoints` — Hugging Face safetensors folders and hub ids.
* :mod:`~zipcal_jax.models.gguf` — GGUF files, dequantized torch-free.
* :mod:`~zipcal_jax.models.tokenizers` — tokenizers from tokenizer.json, folders, GGUF, hub.
* :mod:`~zipcal_jax.models.gguf_tokenizer` — the byte-level BPE tokenizer rebuilt from GGUF metadata.

Submodules import lazily (``from zipcal_jax.models import llama``), so importing this package
costs nothing.
"""
