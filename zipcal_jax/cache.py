"""The download cache: where fetched data lives, atomic writes, and integrity checks.

The cache folder is ``$ZIPCAL_CACHE`` when set, otherwise ``~/.cache/zipcal_jax``. It never lies
inside the repository (large downloads must not end up in a commit). Every file the library
writes there is written atomically (a temporary file in the same folder, then ``os.replace``),
and every download is checked against a known size and/or SHA-256 before it is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "ChecksumError",
    "DownloadError",
    "atomic_path",
    "atomic_write_bytes",
    "cache_dir",
    "sha256_file",
    "verify",
]

_ENV = "ZIPCAL_CACHE"
_REPO_ROOT = Path(__file__).resolve().parent.parent


class ChecksumError(ValueError):
    """A file's size or SHA-256 differs from the expected value (the file has been removed)."""


class DownloadError(RuntimeError):
    """A source could not be fetched (tool missing, registry unreachable, package not found)."""


def _inside_repository(path: Path) -> bool:
    if not (_REPO_ROOT / ".git").exists():  # installed from a wheel: no repository to protect
        return False
    try:
        path.resolve().relative_to(_REPO_ROOT)
    except ValueError:
        return False
    return True


def cache_dir(create: bool = True) -> Path:
    """The cache folder: ``$ZIPCAL_CACHE`` or ``~/.cache/zipcal_jax``.

    Args:
        create: make the folder (and its parents) when it does not exist.

    Raises:
        ValueError: the folder lies inside this repository's working tree.
    """
    env = os.environ.get(_ENV, "").strip()
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "zipcal_jax"
    if _inside_repository(path):
        raise ValueError(
            f"the cache folder {path} lies inside the repository {_REPO_ROOT}; downloads must not end "
            f"up in a commit. Set {_ENV} to a folder outside it (or unset it to use ~/.cache/zipcal_jax)."
        )
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    Create and write the yielded path inside the ``with`` block. If the block raises, the
    temporary file is removed and ``path`` is left untouched, so readers never see a half-written
    file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name rather than mkstemp, so the file gets the usual permissions (umask), not 0600.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + ``os.replace``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in chunks of ``chunk_size`` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def verify(path: str | os.PathLike, sha256: str | None = None, size: int | None = None) -> None:
    """Check a file's size (bytes) and SHA-256; on a mismatch remove the file and raise.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ChecksumError: the size or the digest differs (the bad file has been deleted, so the next
            attempt downloads it afresh).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot verify {path}: no such file")
    problems = []
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        problems.append(f"size {actual_size} bytes, expected {size}")
    if sha256 is not None and not problems:
        actual = sha256_file(path)
        if actual.lower() != sha256.lower():
            problems.append(f"sha256 {actual}, expected {sha256.lower()}")
    if problems:
        path.unlink()
        raise ChecksumError(
            f"integrity check failed for {path}: {'; '.join(problems)}. The file was removed; run again "
            "to download it afresh (a repeated mismatch means the source changed or is corrupt)."
        )
