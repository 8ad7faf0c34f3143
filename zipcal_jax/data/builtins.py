"""Built-in offline text sources: ``pydoc``, ``bigbench/<task>``, ``kjv`` and ``devil``.

* ``pydoc``: the standard library's ``pydoc_data.topics`` (Python reference prose), one document
  per topic, in sorted topic order. Always available.
* ``bigbench/<task>``: one BIG-bench 1.0.0 task (``task.json``), taken from the ``bigbench``
  sdist on PyPI. The sdist (~358 MB) is fetched once with ``pip download`` into
  ``<cache>/downloads/``, verified, and only ``bigbench-1.0.0/bigbench/benchmark_tasks/<task>/task.json``
  is streamed out of it into ``<cache>/bigbench/<task>/task.json``.
* ``kjv`` (King James Bible) and ``devil`` (Bierce's *Devil's Dictionary*): public-domain texts
  from Debian packages, fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` (no
  system install), cached as ``<cache>/debian/<name>.txt`` with a SHA-256 sidecar
  ``<name>.txt.json``.

The download steps are module-level functions (:func:`download_bigbench_sdist`, :func:`run`) so
that tests can replace them.
"""

from __future__ import annotations

import difflib
import gzip
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from zipcal_jax.cache import DownloadError, atomic_write_bytes, cache_dir, sha256_file, verify

__all__ = [
    "BIGBENCH_SDIST",
    "BIGBENCH_SDIST_SHA256",
    "BIGBENCH_SDIST_SIZE",
    "KNOWN_MC_TASKS",
    "bigbench_records",
    "bigbench_task_path",
    "debian_text_path",
    "download_bigbench_sdist",
    "ensure_bigbench_sdist",
    "extract_bigbench_task",
    "pydoc_documents",
]

BIGBENCH_VERSION = "1.0.0"
BIGBENCH_SDIST = f"bigbench-{BIGBENCH_VERSION}.tar.gz"
#: Pinned digest of the sdist. None: not pinned yet; the digest of the first download is then
#: recorded next to it and later uses are checked against that record (see
#: :func:`ensure_bigbench_sdist`).
BIGBENCH_SDIST_SHA256: str | None = None
#: Pinned size in bytes of the sdist (None: not pinned).
BIGBENCH_SDIST_SIZE: int | None = None
BIGBENCH_TASKS_PREFIX = f"bigbench-{BIGBENCH_VERSION}/bigbench/benchmark_tasks/"
#: Multiple-choice tasks (``target_scores``) known to work as calibration pools.
KNOWN_MC_TASKS = (
    "winowhy",
    "strategyqa",
    "timedial",
    "sports_understanding",
    "date_understanding",
    "logical_deduction/three_objects",
    "physical_intuition",
    "fantasy_reasoning",
    "causal_judgment",
    "general_knowledge",
    "hhh_alignment/helpful",
    "riddle_sense",
    "english_proverbs",
)
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"
DEBIAN_TEXTS = {"kjv": ("bible-kjv-text", "bible-kjv"), "devil": ("dict-devil",)}


def _say(message: str) -> None:
    print(f"zipcal: {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run a command, capturing its output as text (replaceable in tests)."""
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def _tail(proc: subprocess.CompletedProcess, lines: int = 8) -> str:
    out = ((proc.stdout or "") + "\n" + (proc.stderr or "")).strip().splitlines()
    return "\n".join(out[-lines:])


# --------------------------------------------------------------------------- pydoc


def pydoc_documents() -> list[str]:
    """The ``pydoc_data.topics`` topics, one document per topic, in sorted topic order."""
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


# --------------------------------------------------------------------------- BIG-bench


def download_bigbench_sdist(dest_dir: Path) -> Path:
    """Fetch ``bigbench-1.0.0.tar.gz`` with ``pip download`` into ``dest_dir``; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--retries", "1", "--timeout", "30"]  # offline: fail in seconds, not after pip's backoff
    cmd += [f"bigbench=={BIGBENCH_VERSION}", "-d", str(dest_dir)]
    _say(f"downloading the bigbench=={BIGBENCH_VERSION} sdist (~358 MB) with pip; this happens once")
    start = time.perf_counter()
    proc = run(cmd)
    path = Path(dest_dir) / BIGBENCH_SDIST
    if proc.returncode != 0 or not path.is_file():
        raise DownloadError(
            f"pip could not download bigbench=={BIGBENCH_VERSION}:\n{_tail(proc)}\n"
            f"Fix: place {BIGBENCH_SDIST} in {cache_dir(create=False) / 'downloads'} by hand, or use a "
            "local task.json as the source instead (e.g. --data path/to/task.json)."
        )
    _say(
        f"downloaded {path.name} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.0f} s"
    )
    return path


def ensure_bigbench_sdist(
    *,
    cache: Path | None = None,
    downloader: Callable[[Path], Path] | None = None,
    sha256: str | None = None,
    size: int | None = None,
) -> Path:
    """Return the verified sdist in ``<cache>/downloads/``, downloading it when missing.

    Args:
        cache: cache folder (default :func:`zipcal_jax.cache.cache_dir`).
        downloader: ``f(dest_dir) -> path`` fetching the tarball into a temporary folder (default
            :func:`download_bigbench_sdist`).
        sha256, size: expected digest and size (default: the pinned :data:`BIGBENCH_SDIST_SHA256`
            / :data:`BIGBENCH_SDIST_SIZE`). When nothing is pinned, the digest of the first
            download is recorded in ``<sdist>.json`` and later uses are checked against it.

    Raises:
        zipcal_jax.cache.ChecksumError: the file does not match (it is removed).
        zipcal_jax.cache.DownloadError: the download failed.
    """
    downloads = Path(cache or cache_dir()) / "downloads"
    dest = downloads / BIGBENCH_SDIST
    record = downloads / f"{BIGBENCH_SDIST}.json"
    sha256 = sha256 or BIGBENCH_SDIST_SHA256
    size = size or BIGBENCH_SDIST_SIZE
    if sha256 is None and record.is_file():
        sha256 = json.loads(record.read_text())["sha256"]
    if not dest.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".bigbench-", dir=downloads) as tmp:
            fetched = Path((downloader or download_bigbench_sdist)(Path(tmp)))
            if fetched.parent != Path(tmp):  # keep the final rename inside one folder tree
                fetched = Path(shutil.copyfile(fetched, Path(tmp) / BIGBENCH_SDIST))
            verify(fetched, sha256=sha256, size=size)  # a bad download never reaches `dest`
            fetched.replace(dest)
    else:
        verify(dest, sha256=sha256, size=size)
    if sha256 is None:  # nothing pinned or recorded yet: trust on first use, check from now on
        digest = sha256_file(dest)
        meta = {"sha256": digest, "size": dest.stat().st_size, "pinned": False}
        atomic_write_bytes(record, json.dumps(meta, indent=1).encode())
        _say(f"no pinned sha256 for {BIGBENCH_SDIST}; recorded {digest} for later checks")
    return dest


def extract_bigbench_task(
    sdist: Path, task: str, dest: Path, *, index: Path | None = None, progress: bool = True
) -> Path:
    """Stream ``<task>/task.json`` out of the sdist (never unpacking the rest) to ``dest``.

    When the task is missing, the list of tasks seen is written to ``index`` (if given) so that
    the next unknown name fails without streaming the sdist again.

    Raises:
        ValueError: the task is not in the sdist; the message lists similar and known tasks.
    """
    wanted = f"{BIGBENCH_TASKS_PREFIX}{task}/task.json"
    seen: list[str] = []
    total = Path(sdist).stat().st_size
    with open(sdist, "rb") as raw:
        with tqdm.wrapattr(raw, "read", total=total, desc=f"bigbench {task}", disable=not progress) as f:
            with tarfile.open(fileobj=f, mode="r|gz") as tar:
                for member in tar:
                    name = member.name
                    if name == wanted and member.isfile():
                        data = tar.extractfile(member).read()
                        try:
                            json.loads(data)  # fail here, not later, on a corrupt member
                        except ValueError as err:
                            raise ValueError(f"{name} in {sdist} is not valid JSON ({err})") from None
                        return atomic_write_bytes(dest, data)
                    if name.startswith(BIGBENCH_TASKS_PREFIX) and name.endswith("/task.json"):
                        seen.append(name[len(BIGBENCH_TASKS_PREFIX) : -len("/task.json")])
    if index is not None:
        atomic_write_bytes(index, json.dumps(sorted(seen)).encode())
    raise _unknown_task(task, seen)


def _unknown_task(task: str, seen: list[str]) -> ValueError:
    similar = [t for t in seen if t.startswith(task + "/")][:8] or difflib.get_close_matches(task, seen, n=5)
    hint = f" Similar: {', '.join(similar)}." if similar else ""
    return ValueError(
        f"unknown BIG-bench task {task!r} (no {task}/task.json in {BIGBENCH_SDIST}).{hint} "
        f"Multiple-choice tasks known to work: {', '.join(KNOWN_MC_TASKS)}."
    )


def bigbench_task_path(task: str, *, cache: Path | None = None, progress: bool = True) -> Path:
    """Path of ``<cache>/bigbench/<task>/task.json``, fetching and extracting it when missing."""
    root = Path(cache or cache_dir()) / "bigbench"
    dest = root / task / "task.json"
    if dest.is_file():
        return dest
    index = root / "index.json"
    if index.is_file():
        known = json.loads(index.read_text())
        if task not in known:
            raise _unknown_task(task, known)
    sdist = ensure_bigbench_sdist(cache=cache)
    return extract_bigbench_task(sdist, task, dest, index=index, progress=progress)


def bigbench_records(task_json: dict) -> list[dict]:
    """Records ``{"input", "choices", "target"}`` of a BIG-bench task, one per example.

    ``choices`` are the keys of ``target_scores`` and ``target`` the key with the highest score
    (the first on a tie). Examples without ``target_scores`` (generative tasks) get
    ``choices=[]`` and their first ``target``.
    """
    records = []
    for example in task_json.get("examples", []):
        scores = example.get("target_scores")
        if isinstance(scores, dict) and scores:
            choices, target = list(scores), max(scores, key=lambda k: scores[k])
        else:
            target = example.get("target")
            choices, target = [], target[0] if isinstance(target, list) and target else target
        records.append({"input": example.get("input", ""), "choices": choices, "target": target})
    return records


# --------------------------------------------------------------------------- Debian texts


def _apt_download(packages: tuple[str, ...], where: Path) -> None:
    proc = run(["apt-get", "download", *packages], cwd=where)
    if proc.returncode != 0 and "Unable to locate package" in (proc.stderr or "") + (proc.stdout or ""):
        _say("apt-get does not know the package yet; running apt-get update once")
        update = run(["apt-get", "update"])
        if update.returncode != 0:
            raise DownloadError(f"apt-get update failed:\n{_tail(update)}")
        proc = run(["apt-get", "download", *packages], cwd=where)
    if proc.returncode != 0:
        raise DownloadError(f"apt-get download {' '.join(packages)} failed:\n{_tail(proc)}")


def _format_kjv(raw: str) -> str:
    """One chapter per paragraph: a heading line (``Genesis 1``), then one line per verse."""
    chapters: list[list[str]] = []
    for block in re.split(r"\n\s*\n", raw.strip()):
        if "\n" not in block and not re.match(r"\s+\d", block):
            chapters.append([block.strip()])
            continue
        if not chapters:
            chapters.append([])
        for verse in re.split(r"\n(?=\s+\d+ )", block):
            chapters[-1].append(" ".join(verse.split()))
    return "\n\n".join("\n".join(lines) for lines in chapters) + "\n"


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _extract_debian_text(name: str, root: Path) -> str:
    if name == "kjv":
        proc = run([str(root / "usr/bin/bible"), "-p", str(root / "usr/lib"), "gen1:1-rev22:21"])
        if proc.returncode != 0 or "In the beginning" not in proc.stdout:
            raise DownloadError(f"the unpacked bible program did not print the KJV text:\n{_tail(proc)}")
        return _format_kjv(proc.stdout)
    text = _decode(gzip.decompress((root / "usr/share/dictd/devil.dict.dz").read_bytes()))
    # Drop dictd's bookkeeping: '00-database-*' headwords and the trailing alphabet entry.
    lines = [ln for ln in text.split("\n") if not ln.startswith("00-database-") and ln.strip() != _ALPHABET]
    return "\n".join(lines)


def debian_text_path(name: str, *, cache: Path | None = None) -> Path:
    """Path of the cached Debian text ``name`` (``kjv`` or ``devil``), fetching it when missing.

    Raises:
        zipcal_jax.cache.DownloadError: ``apt-get``/``dpkg-deb`` are missing or the download failed.
        zipcal_jax.cache.ChecksumError: the cached file no longer matches its recorded SHA-256.
    """
    if name not in DEBIAN_TEXTS:
        raise ValueError(f"unknown Debian text {name!r}; valid: {', '.join(DEBIAN_TEXTS)}")
    dest = Path(cache or cache_dir()) / "debian" / f"{name}.txt"
    sidecar = dest.with_name(f"{name}.txt.json")
    if dest.is_file() and sidecar.is_file():
        meta = json.loads(sidecar.read_text())
        verify(dest, sha256=meta["sha256"], size=meta["size"])
        return dest
    packages = DEBIAN_TEXTS[name]
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise DownloadError(
            f"builtin:{name} needs {' and '.join(missing)} (Debian/Ubuntu) to fetch the package(s) "
            f"{', '.join(packages)}, and this machine has none. Use a local text file instead, e.g. "
            f"--data path/to/{name}.txt (plain UTF-8, paragraphs separated by blank lines)."
        )
    _say(f"fetching builtin:{name} from Debian ({', '.join(packages)}); this happens once")
    with tempfile.TemporaryDirectory(prefix="zipcal-deb-") as tmp:
        tmp = Path(tmp)
        _apt_download(packages, tmp)
        debs = sorted(tmp.glob("*.deb"))
        for deb in debs:
            proc = run(["dpkg-deb", "-x", str(deb), str(tmp / "x")])
            if proc.returncode != 0:
                raise DownloadError(f"dpkg-deb -x {deb.name} failed:\n{_tail(proc)}")
        data = _extract_debian_text(name, tmp / "x").encode("utf-8")
    atomic_write_bytes(dest, data)
    meta = {"sha256": sha256_file(dest), "size": len(data), "debs": [d.name for d in debs]}
    atomic_write_bytes(sidecar, json.dumps(meta, indent=1).encode())
    return dest
