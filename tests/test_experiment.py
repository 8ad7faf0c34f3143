"""The experiment runner end to end on a tiny random model folder (offline, well under a minute)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from zipcal_jax.cli import main
from zipcal_jax.experiment import (
    ExperimentConfig,
    geometric_mean_ratio,
    plan_cells,
    run_experiment,
    summarize,
    summary_markdown,
)

torch = pytest.importorskip("torch")
from hf_models import tiny_hf_llama  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
TEXT = " ".join(f"Paragraph {i} talks about rivers, lanterns and the number {i * 7}." for i in range(60))
WORDS = "river lantern quantum harbor violin orbit pepper falcon granite cobalt meadow tensor".split()


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("experiment")
    model = root / "tiny-model"
    tiny_hf_llama(3, vocab_size=300, tie_word_embeddings=True).save_pretrained(model)
    tiny_tokenizer.save(str(model / "tokenizer.json"))
    pool = root / "pool.txt"
    paras = [" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(3 + i % 9)) for i in range(40)]
    pool.write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    text = root / "eval.txt"
    text.write_text(TEXT, encoding="utf-8")
    return {"model": str(model), "pool": str(pool), "text": str(text)}


def grid(files, out, **changes) -> dict:
    values = {
        "models": [files["model"]],
        "calibration": {"paras": [files["pool"]]},
        "seqlen": 16,
        "methods": ["zipcal", "random"],
        "compressors": {"wanda50": {"method": "wanda", "sparsity": 0.5}, "mag": {"method": "magnitude"}},
        "nsamples": [4],
        "seeds": [0, 1],
        "evaluation": {"ppl": [files["text"]], "seqlen": 32, "max_windows": 2,
                       "tasks": [f"piqa@{FIXTURES / 'piqa.jsonl'}", "continuation/pydoc"], "limit": 4},
        "out": str(out),
        "batch_size": 4,
        "progress": False,
    }  # fmt: skip
    return {**values, **changes}


def test_grid_resume_and_summary(files, tmp_path):
    out = tmp_path / "run"
    cfg = ExperimentConfig.from_dict(grid(files, out))
    result = run_experiment(cfg)
    # 1 dense + 1 pool x 1 k x (zipcal: seed 0 only, it ignores the seed; random: 2 seeds) x 2 compressors
    assert len(result.computed) == 7 and result.skipped == []
    cells = sorted(p.name for p in (out / "cells").glob("*.json"))
    assert len(cells) == 7 and "tiny-model__dense.json" in cells
    assert "tiny-model__paras__wanda50__zipcal__k4__s1.json" not in cells
    cell = json.loads((out / "cells" / "tiny-model__paras__wanda50__random__k4__s1.json").read_text())
    assert cell["config"]["seed"] == 1 and cell["config"]["compressor"]["name"] == "wanda50"
    assert cell["selection"]["samples"] == 4 and cell["selection"]["seconds"] >= 0
    assert cell["selection"]["pool_size"] > 4
    assert abs(cell["compression"]["mean_sparsity"] - 0.5) < 0.01
    assert math.isfinite(cell["evaluation"]["perplexity"][files["text"]]["ppl"])
    assert set(cell["evaluation"]["zeroshot"]) == {"piqa", "continuation/pydoc"}
    # the same selection is shared by both compressors of a seed
    other = json.loads((out / "cells" / "tiny-model__paras__mag__random__k4__s1.json").read_text())
    assert other["selection"]["stats"] == cell["selection"]["stats"]

    rows = result.rows
    assert [(r["compressor"], r["method"]) for r in rows] == [
        ("dense", "dense"), ("wanda50", "zipcal"), ("mag", "zipcal"), ("wanda50", "random"), ("mag", "random")
    ]  # fmt: skip
    assert rows[0]["rel"] == pytest.approx(100.0)
    assert [r["seeds"] for r in rows[1:]] == [[0], [0], [0, 1], [0, 1]]
    assert all(r["pool_size"] == cell["selection"]["pool_size"] for r in rows[1:])
    table = (out / "summary.md").read_text()
    header = [h.strip() for h in table.splitlines()[0].strip("|").split("|")]
    assert header == ["model", "compressor", "pool", "k", "method", "seeds", "acc %", "rel. to dense %",
                      f"ppl {files['text']}", "tokens", "select s"]  # fmt: skip
    assert len([ln for ln in table.splitlines() if ln.startswith("|")]) == 2 + 5
    assert json.loads((out / "summary.json").read_text())["rows"][1]["method"] == "zipcal"
    assert (out / "accuracy.png").stat().st_size > 0 and (out / "selection_seconds.png").stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["seeds"] == [0, 1]

    # resume: nothing to do
    again = run_experiment(cfg)
    assert again.computed == [] and len(again.skipped) == 7
    assert again.markdown == result.markdown
    # a changed setting recomputes the affected cells only; a new seed adds cells
    changed = ExperimentConfig.from_dict(grid(files, out, seeds=[0, 1, 2], compressors=["wanda50"]))
    third = run_experiment(changed)
    assert third.computed == ["tiny-model__paras__wanda50__random__k4__s2"]
    ev = {**grid(files, out)["evaluation"], "limit": 3}
    fourth = run_experiment(ExperimentConfig.from_dict(grid(files, out, evaluation=ev, seeds=[0],
                                                            compressors=["wanda50"])))  # fmt: skip
    assert len(fourth.computed) == 3  # dense + 2 methods: the evaluation changed


def test_model_based_methods_share_one_forward(files, tmp_path):
    from zipcal_jax.data import build_candidates
    from zipcal_jax.models import llama
    from zipcal_jax.select import select

    cfg = grid(files, tmp_path / "mb", methods=["least_perplexity", "cola"], compressors=["magnitude50"])
    result = run_experiment(ExperimentConfig.from_dict(cfg))
    # least_perplexity ignores the seed (one cell); cola runs per seed
    assert sorted(result.computed) == ["tiny-model__dense", "tiny-model__paras__magnitude50__cola__k4__s0",
                                       "tiny-model__paras__magnitude50__cola__k4__s1",
                                       "tiny-model__paras__magnitude50__least_perplexity__k4__s0"]  # fmt: skip
    cells = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "mb" / "cells").glob("*.json")}
    s0 = cells["tiny-model__paras__magnitude50__cola__k4__s0"]["selection"]
    s1 = cells["tiny-model__paras__magnitude50__cola__k4__s1"]["selection"]
    assert s0["forward"]["reused"] is False and s1["forward"]["reused"] is True
    assert s1["forward"]["seconds"] == s0["forward"]["seconds"] and s1["seconds"] >= s1["forward"]["seconds"]
    # the reused forward gives the picks a fresh select() call gives
    model, tok = llama.load(files["model"])
    cands = build_candidates([files["pool"]], tok, 16, progress=False)
    for seed, sel in ((0, s0), (1, s1)):
        direct = select(cands.ids, 4, method="cola", mask=cands.mask, model=model, seed=seed)
        assert sel["indices"] == direct.indices.tolist()
    lp = cells["tiny-model__paras__magnitude50__least_perplexity__k4__s0"]["selection"]
    direct = select(cands.ids, 4, method="least_perplexity", mask=cands.mask, model=model)
    assert lp["indices"] == direct.indices.tolist()


def test_cli_run_yaml(files, tmp_path, capsys):
    import yaml

    cfg = grid(files, tmp_path / "unused", methods=["zipcal"], compressors=["magnitude50"], seeds=[0])
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "cli"
    assert main(["run", "--config", str(path), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| dense |" in text and "magnitude50" in text
    assert len(list((out / "cells").glob("*.json"))) == 2


def test_geometric_mean_ratio():
    dense = {"a": 0.5, "b": 0.8, "c": 0.0}
    acc = {"a": 0.25, "b": 0.8, "c": 0.3}  # c: dense 0 → left out
    assert geometric_mean_ratio(acc, dense) == pytest.approx(100 * math.sqrt(0.5 * 1.0))
    assert geometric_mean_ratio({"a": 0.0, "b": 0.8}, dense) == 0.0
    assert math.isnan(geometric_mean_ratio({"x": 0.5}, dense))


def test_summary_crafted_rows():
    def cell(kind, seed, accs, ppl, method="zipcal"):
        config = {"kind": kind, "model": "m", "seed": seed}
        if kind == "compressed":
            config |= {
                "compressor": {"name": "w"},
                "nsamples": 8,
                "calibration": {"pool": "p"},
                "method": method,
            }
        return {"config": config, "selection": {"seconds": 0.5, "tokens": 100},
                "evaluation": {"zeroshot": {t: {"acc": a} for t, a in accs.items()},
                               "perplexity": {"src": {"ppl": ppl}}}}  # fmt: skip

    cells = [cell("dense", 0, {"t1": 0.8, "t2": 0.4}, 10.0),
             cell("compressed", 0, {"t1": 0.4, "t2": 0.4}, 20.0),
             cell("compressed", 1, {"t1": 0.8, "t2": 0.1}, 30.0)]  # fmt: skip
    dense, row = summarize(cells)
    assert dense["method"] == "dense" and dense["acc"] == pytest.approx(60.0) and dense["rel"] == 100.0
    assert row["acc"] == pytest.approx((40.0 + 45.0) / 2)
    g0, g1 = 100 * math.sqrt(0.5 * 1.0), 100 * math.sqrt(1.0 * 0.25)
    assert row["rel"] == pytest.approx((g0 + g1) / 2)
    assert row["rel_std"] == pytest.approx(abs(g0 - g1) / math.sqrt(2))
    assert row["ppl"]["src"][0] == pytest.approx(25.0)
    md = summary_markdown([dense, row])
    assert "| m | w | p | 8 | zipcal | 2 | 42.50 ± 3.54 |" in md


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bogus": 1}, "valid keys"),
        ({"evaluation": {"ppl": ["x"], "windows": 3}}, "max_windows"),
        ({"methods": ["zipcall"]}, "zipcal"),
        ({"compressors": ["wanda51"]}, "wanda50"),
        ({"compressors": {"w": {"method": "wanda", "bits": 4}}}, "sparsity"),
        ({"nsamples": []}, "nsamples is empty"),
    ],
)
def test_bad_config(files, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig.from_dict(grid(files, tmp_path, **change))


def test_from_file_and_plan(files, tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(grid(files, tmp_path, calibration=[[files["pool"]]])))
    cfg = ExperimentConfig.from_file(path)
    assert list(cfg.calibration) == ["pool0"]
    assert len(plan_cells(cfg)) == 7
    with pytest.raises(FileNotFoundError):
        ExperimentConfig.from_file(tmp_path / "missing.yaml")


@pytest.mark.slow  # ~60 s: the grid in one process, then twice as two jax.distributed processes
def test_grid_on_two_processes_matches_one(files, tmp_path):
    """``run_experiment`` over a mesh spanning two processes: the one-process selections, sparsity,
    perplexity and accuracies; only process 0 writes and returns the summary; a rerun finds every
    cell finished (process 0's decision, sent to process 1, whose output folder is never written)."""
    from multidevice import run_two_processes

    cfg = grid(files, tmp_path / "one", methods=["zipcal", "least_perplexity", "cola"],
               compressors=["wanda50"], seeds=[0])  # fmt: skip
    one = run_experiment(ExperimentConfig.from_dict(cfg))
    script = f"""
import json, sys
from zipcal_jax import distributed as D
assert D.initialize(timeout_s=60)
from zipcal_jax.experiment import ExperimentConfig, run_experiment
cfg = json.loads({json.dumps(json.dumps(cfg))})
cfg["out"] = sys.argv[1] if D.is_writer() else sys.argv[1] + "-never-written"
r = run_experiment(ExperimentConfig.from_dict(cfg), mesh=D.make_mesh())
print(json.dumps(dict(rows=r.rows, computed=r.computed, skipped=r.skipped, files=len(r.files))))
"""
    two = tmp_path / "two"
    outs = run_two_processes([sys.executable, "-c", script, str(two)], timeout=400)
    r0, r1 = (json.loads(o.stdout.strip().splitlines()[-1]) for o in outs)
    assert r0["computed"] == r1["computed"] == one.computed and len(one.computed) == 4
    assert r1["rows"] == [] and r1["files"] == 0 and not (tmp_path / "two-never-written").exists()
    assert len(r0["rows"]) == len(one.rows) == 4 and r0["files"] == len(one.files)
    for a, b in zip(one.rows, r0["rows"]):
        assert a["method"] == b["method"]
        assert b["acc"] == pytest.approx(a["acc"], abs=1e-9)
        for src, (ppl, _) in a["ppl"].items():
            assert b["ppl"][src][0] == pytest.approx(ppl, rel=1e-4)
    for cell in one.computed[1:]:
        c_one = json.loads((tmp_path / "one" / "cells" / f"{cell}.json").read_text())
        c_two = json.loads((two / "cells" / f"{cell}.json").read_text())
        assert c_one["selection"]["indices"] == c_two["selection"]["indices"], cell
        assert c_two["compression"]["mean_sparsity"] == c_one["compression"]["mean_sparsity"], cell
        assert c_two["compression"]["loss"] == pytest.approx(c_one["compression"]["loss"], rel=1e-4), cell
    outs = run_two_processes([sys.executable, "-c", script, str(two)], timeout=400)
    again = [json.loads(o.stdout.strip().splitlines()[-1]) for o in outs]
    assert [a["computed"] for a in again] == [[], []]
    assert again[0]["skipped"] == again[1]["skipped"] == one.computed


def test_demo_config_drops_kjv_tasks_when_unavailable(monkeypatch, capsys):
    from zipcal_jax.cache import DownloadError
    from zipcal_jax.data import builtins

    def unavailable(name, **kw):
        raise DownloadError("apt-get not found on this system")

    monkeypatch.setattr(builtins, "debian_text_path", unavailable)
    from zipcal_jax import experiment

    assert experiment.demo_config().evaluation.tasks == ("continuation/pydoc", "last_word/pydoc")
    assert "builtin:kjv unavailable" in capsys.readouterr().err
    chosen = experiment.demo_config(tasks=["last_word/pydoc"]).evaluation.tasks
    assert chosen == ("last_word/pydoc",)


@pytest.mark.slow  # ~25-50 s: the grid twice, once in an 8-device subprocess
def test_grid_on_8_devices_matches_one_device(files, tmp_path):
    """The grid with a ``data`` mesh over 8 fake devices gives the one-device selections and
    the same perplexity and accuracies (up to float summation order)."""
    from multidevice import run_on_8_devices

    cfg = grid(files, tmp_path / "one", methods=["zipcal", "cola"], compressors=["wanda50"], seeds=[0])
    one = run_experiment(ExperimentConfig.from_dict(cfg))
    script = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from zipcal_jax.distributed import make_mesh
from zipcal_jax.experiment import ExperimentConfig, run_experiment
cfg = json.loads({json.dumps(json.dumps({**cfg, "out": str(tmp_path / "eight")}))})
result = run_experiment(ExperimentConfig.from_dict(cfg), mesh=make_mesh(8))
print(json.dumps(result.rows))
"""
    eight = run_on_8_devices(script)
    assert len(eight) == len(one.rows) == 3
    for a, b in zip(one.rows, eight):
        assert (a["method"], a["tokens"] if "tokens" in a else None) == (b["method"], b.get("tokens"))
        assert b["acc"] == pytest.approx(a["acc"], abs=1e-9)
        for src, (ppl, _) in a["ppl"].items():
            assert b["ppl"][src][0] == pytest.approx(ppl, rel=1e-4)
    for name in ("tiny-model__paras__wanda50__zipcal__k4__s0", "tiny-model__paras__wanda50__cola__k4__s0"):
        sel_one = json.loads((tmp_path / "one" / "cells" / f"{name}.json").read_text())["selection"]
        sel_eight = json.loads((tmp_path / "eight" / "cells" / f"{name}.json").read_text())["selection"]
        assert sel_one["indices"] == sel_eight["indices"]
