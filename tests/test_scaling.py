"""``benchmarks/scaling.py`` at tiny sizes: a subprocess on 8 fake CPU devices (the script asks for
them itself; 1 and 8 of them used) prints one row per workload, scaling mode and device count,
every sharded result matching the one-device result; a failed check gives a non-zero exit."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "scaling.py"
TINY = ["--n", "96", "--n-per-device", "24", "--seqlen", "16", "--vocab", "500", "--k", "6",
        "--samples", "8", "--samples-per-device", "2", "--tokens", "16", "--hidden", "32", "--repeats", "1"]  # fmt: skip


def _module():
    spec = importlib.util.spec_from_file_location("scaling_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table(text: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header, _, *body = ([c.strip() for c in ln.strip("|").split("|")] for ln in lines)
    return [dict(zip(header, row, strict=True)) for row in body]


def test_tiny_run_prints_the_table_and_every_check_passes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
    out = tmp_path / "scaling.json"
    argv = [*TINY, "--devices", "1,8", "--json", str(out)]
    proc = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "8 cpu device(s)" in proc.stdout and "share this machine's cores" in proc.stdout
    rows = _table(proc.stdout)
    got = [(r["task"], r["scaling"], r["devices"]) for r in rows]
    assert got == [(t, m, d) for t in ("select", "statistics") for m in ("strong", "weak") for d in "18"]
    assert all(r["matches"] == "yes" for r in rows)
    for r in rows:
        assert float(r["seconds"]) > 0
        if r["devices"] == "1":
            assert float(r["speedup"]) == float(r["efficiency"]) == 1.0
    strong = {r["size"] for r in rows if r["scaling"] == "strong" and r["task"] == "statistics"}
    assert len(strong) == 1  # strong scaling keeps the problem
    weak = [r["size"] for r in rows if r["scaling"] == "weak" and r["task"] == "select"]
    assert weak == ["n=24", "n=192"]
    assert out.is_file() and '"rows"' in out.read_text()


def test_scaling_arithmetic_and_the_statistics_check():
    scaling = _module()
    strong = scaling.scaling_rows(
        "t", "strong", [{"devices": 1, "seconds": 8.0}, {"devices": 4, "seconds": 4.0}]
    )
    assert (strong[1]["speedup"], strong[1]["efficiency"]) == (2.0, 0.5)
    weak = scaling.scaling_rows("t", "weak", [{"devices": 1, "seconds": 2.0}, {"devices": 4, "seconds": 4.0}])
    assert (weak[1]["speedup"], weak[1]["efficiency"]) == (2.0, 0.5)
    a = {"attn_in": np.arange(16.0).reshape(4, 4)}
    assert scaling.stats_match(a, {"attn_in": a["attn_in"] * (1 + 1e-7)})
    assert not scaling.stats_match(a, {"attn_in": a["attn_in"] + np.eye(4) * 0.01})
    assert not scaling.stats_match(a, {"mlp_in": a["attn_in"]})


def test_a_failed_check_exits_non_zero(monkeypatch, capsys):
    scaling = _module()
    monkeypatch.setenv("XLA_FLAGS", "")  # this process's JAX has started: one CPU device, count 1 only
    monkeypatch.setattr(scaling, "stats_match", lambda *a, **k: False)
    code = scaling.main([*TINY, "--devices", "1", "--tasks", "statistics"])
    assert code == 1
    assert "| NO |" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [["--devices", "0"], ["--tasks", "nope", "--devices", "1"]])
def test_bad_arguments_say_what_to_use(bad, monkeypatch):
    scaling = _module()
    monkeypatch.setenv("XLA_FLAGS", "")
    with pytest.raises(SystemExit, match=r"--devices|--tasks"):
        scaling.main([*TINY, *bad])
