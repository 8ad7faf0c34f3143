"""Compression (``zipcal_jax.compress``): Wanda, SparseGPT and GPTQ on JAX.

Low-level solvers take weights in the papers' layout ``W: (d_out, d_in)`` (a row is an output
channel) and the input statistic of the layer (``H = 2/N · XᵀX: (d_in, d_in)``, or its diagonal
for Wanda). A prune mask is a bool array shaped like its weight, True where the weight is pruned.

* ``wanda.prune(W, col_norms_sq, sparsity=0.5, nm=None) -> mask``
* ``sparsegpt.prune(W, H, sparsity=0.5, nm=None, blocksize=128, percdamp=0.01) -> W_new``
  (``quantizer=`` for joint sparse + quantized, ``return_info=True`` for loss/damping/mask)
* ``gptq.quantize(W, H, bits=4, group_size=128, sym=False, act_order=False, static_groups=False,
  blocksize=128, percdamp=0.01) -> (W_dequant, QuantParams)`` (``mse=``, ``return_info=``)
* ``baselines.magnitude_prune(W, sparsity, nm) -> mask``, ``baselines.rtn_quantize(W, bits,
  group_size, sym) -> (W_dequant, QuantParams)``
* ``compress(model, calibration, method="wanda", **options) -> (model, report)``: the
  layer-sequential pipeline (``pipeline``), statistics capture in ``capture``
* ``quant``: the min-max quantizer (``Quantizer``, ``find_params``), ``QuantParams``, and the
  GPTQ checkpoint layout (``pack(params) -> dict``, ``unpack(dict, bits) -> arrays``).
* ``training``: fine-tuning compressed models with optax — ``keep_sparsity(tx, masks)``,
  ``sparsity_masks(model)``, ``fake_quant(W, params)``, ``fake_quant_model(model, qparams)``,
  ``snap_to_grid``, ``lm_loss``, ``CompressionCollector`` (also importable from here).

Submodules load on first use, so ``import zipcal_jax.compress`` stays cheap.
"""

from __future__ import annotations

import importlib

_SUBMODULES = ("baselines", "capture", "gptq", "pipeline", "quant", "sparsegpt", "training", "wanda")
# Names of ``training`` re-exported here (loaded on first use, with optax).
_TRAINING = ("CompressionCollector", "KeepSparsityState", "fake_quant", "fake_quant_model", "keep_sparsity",
             "linear_sparsity", "lm_loss", "snap_to_grid", "sparsity_masks", "sparsity_violations")  # fmt: skip


def __getattr__(name: str):
    if name == "compress":
        return importlib.import_module(f"{__name__}.pipeline").compress
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _TRAINING:
        return getattr(importlib.import_module(f"{__name__}.training"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_SUBMODULES, *_TRAINING, "compress"})
