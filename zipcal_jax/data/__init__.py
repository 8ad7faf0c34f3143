"""Text sources and calibration candidates.

Source specs
============

One string names a text source everywhere: the CLI's ``--data SPEC``, Python calls, configs::

    LOCATION[?key=value&key=value...]

The spec is split at its first ``?``. Options are ``&``-separated ``key=value`` pairs; values
are percent-decoded, so a literal ``&`` is written ``%26`` (and ``%`` is ``%25``). Unknown
option keys, kinds and file extensions are errors whose message lists the valid choices.

Locations
---------

===============================  ==============================================================
``notes.txt``                    running text; ``unit=paragraph`` (default, blank-line
                                 separated), ``unit=line`` or ``unit=document`` (whole file)
``data.jsonl``                   one JSON record per line (a bare JSON string is a text)
``data.json``                    a list of records, or an object with one list-valued key
                                 (``examples``/``data`` win); a BIG-bench ``task.json`` gives
                                 ``input``/``choices``/``target`` records
``data.csv``, ``data.parquet``   one record per row
``path/to/folder``               a folder written by ``datasets`` ``save_to_disk``;
                                 ``split=`` picks from a DatasetDict (default train, else
                                 test, else the first split)
``hf:NAME``                      ``datasets.load_dataset(NAME, config, split=split)`` with
                                 ``config=`` and ``split=`` (default ``train``); NAME may be a
                                 hub id (online) or a local dataset-repository folder
``builtin:pydoc``                the standard library's ``pydoc_data.topics`` (offline);
                                 like ``kjv`` and ``devil`` it takes ``split=`` (below)
``builtin:bigbench/TASK``        a BIG-bench 1.0.0 task, e.g. ``bigbench/winowhy`` or
                                 ``bigbench/logical_deduction/three_objects``; records
                                 ``{"input", "choices", "target"}``, default field ``input``
``builtin:kjv``                  King James Bible (Debian ``bible-kjv-text``; needs apt-get);
                                 one chapter per paragraph, one verse per line
``builtin:devil``                Bierce's *Devil's Dictionary* (Debian ``dict-devil``)
===============================  ==============================================================

Options
-------

* ``field=NAME`` — the record field holding the text. Default: the first of ``text``,
  ``sentence``, ``prompt``, ``question``, ``input`` that the records have. Dotted names reach
  into nested objects (``choices.text``); a list value is joined with spaces.
* ``template=...`` — a ``str.format``-style template over fields, instead of ``field``:
  ``template={question} {choices.text}``. Write ``{{``/``}}`` for literal braces.
* ``unit=paragraph|line|document`` — how running text (``.txt``, ``pydoc``, ``kjv``, ``devil``)
  is cut into texts.
* ``limit=N`` — read only the first N records/units.
* ``min_chars=N`` — drop texts shorter than N characters once stripped (default 1: drop empty
  ones). Dropped texts are counted (``TextSource.dropped``, ``Candidates.dropped``).
* ``split=``, ``config=`` — for ``hf:`` and ``save_to_disk`` folders: the split to read.
* ``split=train|test|all`` — for the running-text built-ins (``pydoc``, ``kjv``, ``devil``):
  their paragraphs (blank-line separated blocks, counted across the source's documents in
  order) are cut into ``train``, the first 90% and the **default**, and ``test``, the last 10%
  (``ceil(n / 10)`` of ``n`` paragraphs, so at least one); ``all`` is the whole text. ``unit=`` is
  then cut within the chosen part (a document that straddles the boundary is cut between two
  paragraphs) and ``rows`` count within it. Calibration pools use ``train``; evaluation text
  (perplexity, the cloze tasks of :mod:`zipcal_jax.evals.tasks`) uses ``test``, so the two never
  share a paragraph. BIG-bench built-ins take no ``split``.

  ==========  ==========================================  ==========================
  source      paragraphs (train / test)                   words in ``split=test``
  ==========  ==========================================  ==========================
  ``pydoc``   2,347 / 261 (Python 3.11; varies)          ~6,200
  ``kjv``     1,070 / 119 chapters                        ~61,600
  ``devil``   1,324 / 148 entries                         ~9,300
  ==========  ==========================================  ==========================

Examples::

    corpus/notes.txt?unit=line&min_chars=20
    arc.jsonl?template={question} {choices.text}&limit=500
    qa.jsonl?template=Q: {question} %26 A: {answer}
    hf:allenai/c4?config=en&split=validation&field=text&limit=5000
    builtin:bigbench/winowhy?limit=256
    builtin:kjv?split=test&unit=document

Python::

    from zipcal_jax.data import build_candidates, load_texts
    src = load_texts("builtin:pydoc?min_chars=40")          # TextSource(texts, rows, dropped)
    cands = build_candidates(["builtin:pydoc", "notes.txt"], tokenizer, seqlen=128)
    cands.ids, cands.mask, cands.provenance(0)

Built-in downloads are cached in ``$ZIPCAL_CACHE`` (default ``~/.cache/zipcal_jax``), verified
and written atomically; see :mod:`zipcal_jax.cache`.
"""

from zipcal_jax.data.candidates import Candidates, build_candidates
from zipcal_jax.data.readers import TextSource, load_texts
from zipcal_jax.data.specs import SourceSpec, parse_spec

__all__ = ["Candidates", "SourceSpec", "TextSource", "build_candidates", "load_texts", "parse_spec"]
