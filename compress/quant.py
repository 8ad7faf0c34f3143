"""Quantizer grids (the GPTQ reference ``quant.py``) and the GPTQ checkpoint packing.

A weight row (or one group of ``group_size`` consecutive inputs of a row) is quantized on a
uniform grid of ``2**bits`` levels::

    maxq  = 2**bits - 1
    q(x)  = scale * (clamp(round(x / scale) + zero, 0, maxq) - zero)      # round half to even

with ``scale`` and ``zero`` from the row's range (min-max, ``find_params``), exactly as
IST-DASLab/gptq ``quant.py`` ``Quantizer.find_params`` (anchors note §3.2):

* ``xmin = min(min(x), 0)``, ``xmax = max(max(x), 0)`` — the grid always holds 0, so a pruned
  (zero) weight stays exactly zero after quantization (note §2.5);
* symmetric: ``xmax = max(|xmin|, xmax)``, ``xmin = -xmax`` where ``xmin < 0``, and
  ``zero = (maxq + 1) / 2`` (4-bit: zero 8, codes 0..15, so +absmax rounds to 16 and clips to 15);
* asymmetric: ``zero = round(-xmin / scale)``;
* an all-zero row gets ``[xmin, xmax] = [-1, +1]``;
* ``scale = (xmax - xmin) / maxq``;
* ``mse=True``: grid search over ``p = 1 - i/grid`` for ``i < int(maxshrink * grid)``, shrinking
  ``[xmin, xmax]`` by ``p`` and keeping, per row, the first (scale, zero) with the smallest
  ``sum |q(x) - x| ** norm`` (``norm=2.4, grid=100, maxshrink=0.8``).

``QuantParams`` holds the result of a quantization as integers plus per-group floats; ``pack`` /
``unpack`` convert it to and from the AutoGPTQ/GPTQModel checkpoint tensors (note §3.4).

Packing layout (AutoGPTQ ``QuantLinear.pack``). Codes are a little-endian bit stream of
``bits``-wide fields in 32-bit words — for 2/4/8 bits field ``k`` of a word sits at bit
``bits * k``; for 3 bits 32 values fill 3 words and values 10 and 21 straddle two words:

    =========  ======  ================================  =============================
    tensor     dtype   shape                              packed along
    =========  ======  ================================  =============================
    qweight    int32   (ceil(d_in * bits / 32), d_out)    d_in (the input dimension)
    qzeros     int32   (n_groups, ceil(d_out * bits / 32)) d_out
    scales     fp16    (n_groups, d_out)                  —
    g_idx      int32   (d_in,)                            — (group of each input column)
    =========  ======  ================================  =============================

Zero-point convention: ``format="gptq"`` (the default; AutoGPTQ and ``checkpoint_format:
"gptq"`` in HF configs, "v1") stores ``zero - 1`` in each field and readers add 1 back;
``format="gptq_v2"`` (GPTQModel's internal format) stores ``zero`` itself. v1 cannot hold a zero
point of 0 (an asymmetric group whose weights are all >= 0): ``pack`` raises and names
``gptq_v2`` as the fix instead of writing a corrupted field, as AutoGPTQ's packer does.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

BITS = (2, 3, 4, 8)
FORMATS = ("gptq", "gptq_v2")


@dataclass(frozen=True)
class Quantizer:
    """A min-max quantizer configuration (the reference ``Quantizer.configure``), per channel.

    ``bits`` in {2, 3, 4, 8}; ``sym`` picks the symmetric grid (zero = 2**(bits-1));
    ``mse`` turns on the shrinking grid search with ``norm``, ``grid`` and ``maxshrink``.
    """

    bits: int = 4
    sym: bool = False
    mse: bool = False
    norm: float = 2.4
    grid: int = 100
    maxshrink: float = 0.8

    def __post_init__(self):
        if self.bits not in BITS:
            raise ValueError(f"bits={self.bits} is not supported; use one of {BITS}")
        if self.grid < 1 or not 0.0 <= self.maxshrink <= 1.0:
            raise ValueError(f"need grid >= 1 and 0 <= maxshrink <= 1, got {self.grid}, {self.maxshrink}")

    @property
    def maxq(self) -> int:
        return 2**self.bits - 1


def exact_div(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a / b`` with IEEE division also where ``b`` is broadcast.

    XLA rewrites a division by a broadcast operand into a multiplication by its reciprocal,
    which is 1 ulp off torch/NumPy for about a third of the inputs and can flip round-half
    decisions; the optimization barrier keeps the true division.
    """
    a, b = jnp.broadcast_arrays(a, b)
    return a / jax.lax.optimization_barrier(b)


def quantize(x: jax.Array, scale: jax.Array, zero: jax.Array, maxq: int) -> jax.Array:
    """Round ``x`` to the grid and map it back: ``scale * (clamp(round(x/scale) + zero) - zero)``."""
    return scale * (jnp.clip(jnp.round(exact_div(x, scale)) + zero, 0, maxq) - zero)


def to_codes(x: jax.Array, scale: jax.Array, zero: jax.Array, maxq: int) -> jax.Array:
    """The integer grid index of ``x``: ``clamp(round(x/scale) + zero, 0, maxq)`` as uint8."""
    return jnp.clip(jnp.round(exact_div(x, scale)) + zero, 0, maxq).astype(jnp.uint8)


def find_params(x: jax.Array, quantizer: Quantizer) -> tuple[jax.Array, jax.Array]:
    """Per-row ``(scale, zero)`` of ``x`` (rows, cols), both shaped (rows,) in ``x``'s dtype.

    ``zero`` is integer-valued (stored as float, as in the reference). Traceable under ``jit``;
    the mse search is a ``lax.fori_loop`` over the shrink factors.
    """
    maxq = quantizer.maxq
    xmin = jnp.minimum(x.min(axis=1), 0)
    xmax = jnp.maximum(x.max(axis=1), 0)
    if quantizer.sym:
        xmax = jnp.maximum(jnp.abs(xmin), xmax)
        xmin = jnp.where(xmin < 0, -xmax, xmin)
    empty = (xmin == 0) & (xmax == 0)
    xmin = jnp.where(empty, -1, xmin)
    xmax = jnp.where(empty, 1, xmax)
    scale = exact_div(xmax - xmin, jnp.asarray(maxq, x.dtype))
    if quantizer.sym:
        zero = jnp.full_like(scale, (maxq + 1) / 2)
    else:
        zero = jnp.round(-xmin / scale)
    if not quantizer.mse:
        return scale, zero

    steps = int(quantizer.maxshrink * quantizer.grid)
    # the shrink factors as the reference forms them (a Python double), then cast like torch does
    shrink = jnp.asarray(np.array([1 - i / quantizer.grid for i in range(steps)]), dtype=x.dtype)

    def step(i, carry):
        best, scale, zero = carry
        p = shrink[i]
        xmin1, xmax1 = p * xmin, p * xmax
        scale1 = exact_div(xmax1 - xmin1, jnp.asarray(maxq, x.dtype))
        zero1 = zero if quantizer.sym else jnp.round(-xmin1 / scale1)
        err = jnp.sum(
            jnp.abs(quantize(x, scale1[:, None], zero1[:, None], maxq) - x) ** quantizer.norm, axis=1
        )
        better = err < best
        return (
            jnp.where(better, err, best),
            jnp.where(better, scale1, scale),
            jnp.where(better, zero1, zero),
        )

    best = jnp.full_like(scale, jnp.inf)
    _, scale, zero = jax.lax.fori_loop(0, steps, step, (best, scale, zero))
    return scale, zero


def group_params(x: jax.Array, quantizer: Quantizer, group_size: int) -> tuple[jax.Array, jax.Array]:
    """``find_params`` on each run of ``group_size`` consecutive columns of ``x`` (rows, cols).

    Returns ``(scale, zero)`` shaped (rows, ceil(cols / group_size)); the last group is padded
    with zeros, which changes neither the range (it always holds 0) nor the mse error (0 maps to 0).
    """
    rows, cols = x.shape
    n_groups = -(-cols // group_size)
    x = jnp.pad(x, ((0, 0), (0, n_groups * group_size - cols)))
    scale, zero = find_params(x.reshape(rows * n_groups, group_size), quantizer)
    return scale.reshape(rows, n_groups), zero.reshape(rows, n_groups)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class QuantParams:
    """An integer-quantized weight ``(d_out, d_in)`` (a pytree; the last three fields are static).

    * ``codes``: uint8 ``(d_out, d_in)``, grid indices in ``[0, 2**bits - 1]``, original column order;
    * ``scales``: float ``(d_out, n_groups)``; ``zeros``: int32 ``(d_out, n_groups)``;
    * ``g_idx``: int32 ``(d_in,)``, the group of each input column (``i // group_size`` unless
      act-order with dynamic groups reordered them);
    * ``perm``: int32 ``(d_in,)`` act-order processing order (None without act-order).

    ``W[:, i] = scales[:, g_idx[i]] * (codes[:, i] - zeros[:, g_idx[i]])`` (``dequantize``).
    """

    codes: jax.Array
    scales: jax.Array
    zeros: jax.Array
    g_idx: jax.Array
    perm: jax.Array | None
    bits: int = dataclasses.field(metadata={"static": True})
    group_size: int = dataclasses.field(metadata={"static": True})
    sym: bool = dataclasses.field(metadata={"static": True})

    def dequantize(self, dtype=jnp.float32) -> jax.Array:
        """The weight on the grid, ``(d_out, d_in)``; bit-identical to the solver's output in float32."""
        scale = self.scales[:, self.g_idx]
        zero = self.zeros[:, self.g_idx].astype(scale.dtype)
        return (scale * (self.codes.astype(scale.dtype) - zero)).astype(dtype)


# ----------------------------------------------------------------------------- packing (NumPy)


def _pack_fields(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack the last axis of non-negative ints (< 2**bits) as a little-endian bit stream of
    ``bits``-wide fields into int32 words: (..., n) -> (..., ceil(n * bits / 32))."""
    values = np.asarray(values, dtype=np.uint32)
    *lead, n = values.shape
    stream = ((values[..., None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    stream = stream.reshape(*lead, n * bits)
    words = -(-n * bits // 32)
    stream = np.concatenate([stream, np.zeros((*lead, words * 32 - n * bits), np.uint8)], axis=-1)
    packed = np.packbits(stream, axis=-1, bitorder="little")  # (..., words * 4) bytes
    return np.ascontiguousarray(packed).view("<u4").astype(np.uint32).view(np.int32).reshape(*lead, words)


def _unpack_fields(words: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of ``_pack_fields``: (..., words) int32 -> (..., n) int64 fields."""
    words = np.ascontiguousarray(np.asarray(words, dtype=np.int32).view(np.uint32).astype("<u4"))
    stream = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")[..., : n * bits]
    stream = stream.reshape(*words.shape[:-1], n, bits).astype(np.int64)
    return (stream << np.arange(bits)).sum(axis=-1)


def pack(params: QuantParams, format: str = "gptq") -> dict[str, np.ndarray]:
    """Export ``params`` as AutoGPTQ/GPTQModel checkpoint tensors (NumPy, host).

    Returns ``{"qweight", "qzeros", "scales", "g_idx"}`` in the layout of the module docstring.
    ``format="gptq"`` stores ``zero - 1`` (v1, what HF/AutoGPTQ checkpoints hold);
    ``"gptq_v2"`` stores ``zero``. Scales become float16 (the checkpoint dtype), so a packed
    model dequantizes with fp16-rounded scales; codes, zeros and ``g_idx`` are exact.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not supported; use one of {FORMATS}")
    bits = params.bits
    codes = np.asarray(params.codes)
    zeros = np.asarray(params.zeros).astype(np.int64).T  # (n_groups, d_out)
    if format == "gptq":
        if (zeros < 1).any():
            raise ValueError(
                "GPTQ v1 checkpoints store zero - 1 and cannot hold a zero point of 0 (an asymmetric "
                "group whose weights are all >= 0); pack with format='gptq_v2' or quantize with sym=True"
            )
        zeros = zeros - 1
    scales = np.asarray(params.scales, dtype=np.float32).T.astype(np.float16)
    if not np.isfinite(scales).all():
        raise ValueError("a scale overflows float16; the GPTQ checkpoint layout stores scales in fp16")
    return {
        "qweight": _pack_fields(codes, bits).T.copy(),  # codes along d_in -> (words, d_out)
        "qzeros": _pack_fields(zeros, bits),
        "scales": scales,
        "g_idx": np.asarray(params.g_idx, dtype=np.int32),
    }


def unpack(
    tensors: dict[str, np.ndarray], bits: int, format: str = "gptq"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read GPTQ checkpoint tensors back into ``QuantParams``' layout.

    Returns ``(codes uint8 (d_out, d_in), scales float32 (d_out, n_groups), zeros int32
    (d_out, n_groups), g_idx int32 (d_in,))``; ``d_in`` comes from ``g_idx``, ``d_out`` and
    ``n_groups`` from ``scales``. ``bits`` and ``format`` are the checkpoint's (its
    ``quantization_config``), not stored in the tensors.
    """
    if bits not in BITS:
        raise ValueError(f"bits={bits} is not supported; use one of {BITS}")
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not supported; use one of {FORMATS}")
    g_idx = np.asarray(tensors["g_idx"], dtype=np.int32)
    scales = np.asarray(tensors["scales"])
    n_groups, d_out = scales.shape
    d_in = g_idx.shape[0]
    qweight, qzeros = np.asarray(tensors["qweight"]), np.asarray(tensors["qzeros"])
    if qweight.shape != (math.ceil(d_in * bits / 32), d_out) or qzeros.shape != (
        n_groups,
        math.ceil(d_out * bits / 32),
    ):
        raise ValueError(
            f"qweight {qweight.shape} / qzeros {qzeros.shape} do not fit {bits}-bit weights with "
            f"d_in={d_in} (g_idx), d_out={d_out} and {n_groups} groups (scales); check bits"
        )
    codes = _unpack_fields(qweight.T, bits, d_in).astype(np.uint8)
    zeros = _unpack_fields(qzeros, bits, d_out)
    if format == "gptq":
        zeros = zeros + 1
    return codes, scales.astype(np.float32).T.copy(), zeros.astype(np.int32).T.copy(), g_idx
