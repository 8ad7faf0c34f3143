"""The examples and the tested documentation snippets: ``examples/recover.py --tiny`` end to end,
and the NumPy selection example of ``docs/training.md`` (run as written, its picks checked against
the plain-Python greedy reference)."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pytest
from greedy_reference import python_greedy, row_sets

ROOT = Path(__file__).resolve().parent.parent


def docs_block(path: Path, tag: str) -> str:
    """The fenced ``python`` block right after the ``<!-- tested: ...tag -->`` marker in ``path``."""
    text = path.read_text()
    match = re.search(rf"<!-- tested: [^>]*{re.escape(tag)} -->\n```python\n(.*?)\n```", text, re.DOTALL)
    assert match, f"no tested block {tag!r} in {path}"
    return match.group(1)


def test_docs_numpy_selection(capsys):
    code = docs_block(ROOT / "docs" / "training.md", "test_docs_numpy_selection")
    namespace: dict = {"__name__": "docs_snippet"}
    exec(compile(code, "docs/training.md", "exec"), namespace)
    ids, mask, sel = namespace["ids"], namespace["mask"], namespace["sel"]
    assert ids.ndim == 2 and ids.shape[1] == namespace["L"] and ids.shape == mask.shape
    assert mask.any(axis=1).all() and not mask.all()  # ragged rows: the padding is masked
    picks, gains = python_greedy(row_sets(ids, mask), 16)
    np.testing.assert_array_equal(sel.indices, picks)
    np.testing.assert_array_equal(sel.gains, gains)
    assert str(ids.shape) in capsys.readouterr().out


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recover_tiny_keeps_sparsity_and_lowers_the_loss(tmp_path, capsys):
    recover = load_example("recover")
    out = tmp_path / "results.json"
    results = recover.main(["--tiny", "--quiet", "--json", str(out)])
    assert out.is_file()
    assert results["sparsity_pruned"] == pytest.approx(0.5, abs=0.01)
    assert results["sparsity_recovered"] == results["sparsity_pruned"]  # no pruned weight moved
    assert all(math.isfinite(results[k]) for k in ("ppl_dense", "ppl_pruned", "ppl_recovered"))
    assert results["ppl_recovered"] < results["ppl_pruned"]
    assert results["losses"][-1] < results["losses"][0]
    printed = capsys.readouterr().out
    assert "| + recovery |" in printed and "every pruned weight still exactly zero" in printed


def test_recover_rejects_bad_flags():
    recover = load_example("recover")
    with pytest.raises(SystemExit):
        recover.parse_args(["--sparsity", "1.5"])
    with pytest.raises(SystemExit):
        recover.parse_args(["--steps", "0"])
