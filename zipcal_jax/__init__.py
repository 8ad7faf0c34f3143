"""zipcal-jax: JAX-native calibration-data curation (ZipCal) and post-training compression.

The public API:

* :func:`concept_table`, :func:`select`, :func:`select_multi`, :class:`Selection` — choose
  calibration samples (one pool, or several pools with a k-center merge).
* :func:`build_candidates`, :class:`Candidates`, :func:`load_texts`, :func:`parse_spec` —
  text sources and tokenized candidates (see :mod:`zipcal_jax.data` for the spec format).
* :class:`CalibrationSet`, :func:`set_statistics` — the chosen set, saved and described.
* :func:`load_tokenizer` — tokenizers from tokenizer.json, HF folders, GGUF, the hub.
"""

from zipcal_jax.calibration import CalibrationSet, fit_zipf_exponent, rank_frequency, set_statistics
from zipcal_jax.concepts import concept_table
from zipcal_jax.data import Candidates, SourceSpec, TextSource, build_candidates, load_texts, parse_spec
from zipcal_jax.models.tokenizers import load_tokenizer
from zipcal_jax.select import METHODS, Selection, select, select_multi

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "CalibrationSet",
    "Candidates",
    "Selection",
    "SourceSpec",
    "TextSource",
    "build_candidates",
    "concept_table",
    "fit_zipf_exponent",
    "load_texts",
    "load_tokenizer",
    "parse_spec",
    "rank_frequency",
    "select",
    "select_multi",
    "set_statistics",
]
