"""Checkpoints: Hugging Face safetensors ↔ :class:`~zipcal_jax.models.llama.Llama`.

One declarative table (:data:`HF_TO_MODEL`) maps HF tensor names to model parameter paths and
back. Loading builds the model skeleton with ``nnx.eval_shape`` (no random init, no memory),
fills every parameter, checks every shape, and reports *all* problems (missing, unexpected,
wrongly shaped tensors) in one ``ValueError``. Tensors are read one at a time from memory-mapped
files and converted straight to the parameter dtype (and sharding, when a mesh is given).

bfloat16 safetensors: ``safe_open(framework="numpy")`` cannot build bf16 arrays, so BF16 tensors
are read from the raw bytes (offsets from the file header) as ``ml_dtypes.bfloat16``.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import safe_open

from zipcal_jax.models.llama import LINEAR_MODULES, Llama, LlamaConfig, param_sharding

__all__ = [
    "HF_TO_MODEL",
    "SafetensorsState",
    "hf_name",
    "load_hf_folder",
    "load_hf_hub",
    "load_hf_state",
    "model_path",
    "state_from_model",
]

# (HF name, model parameter path, transform); ``{i}`` is a layer index. ``"T"``: HF ``Linear.weight``
# is (d_out, d_in), the NNX kernel (d_in, d_out); ``None``: copied as is.
HF_TO_MODEL: tuple[tuple[str, str, str | None], ...] = (
    ("model.embed_tokens.weight", "embed.embedding", None),
    ("model.norm.weight", "final_norm.weight", None),
    ("lm_head.weight", "lm_head.kernel", "T"),
    ("model.layers.{i}.input_layernorm.weight", "layers.{i}.input_layernorm.weight", None),
    ("model.layers.{i}.post_attention_layernorm.weight", "layers.{i}.post_attention_layernorm.weight", None),
    *((f"model.layers.{{i}}.{m}.weight", f"layers.{{i}}.{m}.kernel", "T") for m in LINEAR_MODULES),
    *((f"model.layers.{{i}}.{m}.bias", f"layers.{{i}}.{m}.bias", None) for m in LINEAR_MODULES),
)
# Buffers some exporters write that carry no parameters (RoPE is recomputed from the config).
_IGNORED = re.compile(r".*\.rotary_emb\.inv_freq$")


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


_FORWARD = [(_pattern(hf), path, t) for hf, path, t in HF_TO_MODEL]
_BACKWARD = [(_pattern(path), hf, t) for hf, path, t in HF_TO_MODEL]


def _lookup(table: list, name: str) -> tuple[str, str | None] | None:
    for pattern, template, transform in table:
        if m := pattern.match(name):
            return template.format(i=m.groupdict().get("i")), transform
    return None


def model_path(name: str) -> tuple[str, str | None] | None:
    """HF tensor name → (model parameter path, transform), or None when the table has no entry."""
    return _lookup(_FORWARD, name)


def hf_name(path: str) -> tuple[str, str | None] | None:
    """Model parameter path (``"layers.0.mlp.up_proj.kernel"``) → (HF tensor name, transform)."""
    return _lookup(_BACKWARD, path)


def _hf_shape(shape: tuple[int, ...], transform: str | None) -> tuple[int, ...]:
    return tuple(shape[::-1]) if transform == "T" else tuple(shape)


def load_hf_state(
    cfg: LlamaConfig,
    state: Mapping[str, Any],
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    mesh: jax.sharding.Mesh | None = None,
) -> Llama:
    """Build a :class:`Llama` from an HF-named state dict (``{name: array}``, torch layout).

    Every tensor is read once (``state`` may be lazy, e.g. :class:`SafetensorsState`), checked
    against the expected shape and cast to ``param_dtype``; with ``mesh`` each parameter goes
    straight to its :func:`~zipcal_jax.models.llama.param_sharding`. Tied configs ignore an
    ``lm_head.weight``; untied ones require it. Raises one ValueError listing every missing,
    unexpected or wrongly shaped tensor.
    """
    abstract = nnx.eval_shape(lambda: Llama(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(abstract)
    slots = {".".join(map(str, p)): (p, v) for p, v in nnx.to_flat_state(params)}
    problems: list[str] = []
    seen: set[str] = set()  # parameters the checkpoint has (possibly with a wrong shape)
    for name in state.keys():
        hit = model_path(name)
        if hit is None or hit[0] not in slots:
            tied_head = name == "lm_head.weight" and cfg.tie_word_embeddings
            if not (tied_head or _IGNORED.match(name)):
                problems.append(f"unexpected tensor {name}")
            continue
        path, transform = hit
        seen.add(path)
        tuple_path, var = slots[path]
        value = state[name]
        want = _hf_shape(var.shape, transform)
        if tuple(value.shape) != want:
            problems.append(f"wrong shape for {name}: got {tuple(value.shape)}, expected {want}")
            continue
        value = value.T if transform == "T" else value
        if mesh is None:
            var.set_value(jnp.asarray(value, dtype=var.dtype))
        else:
            sharding = param_sharding(mesh, tuple_path, var.shape)
            var.set_value(jax.device_put(np.asarray(value).astype(var.dtype), sharding))
    for path in slots.keys() - seen:
        problems.append(f"missing tensor {hf_name(path)[0]}")
    if problems:
        listing = "".join(f"\n  - {p}" for p in sorted(problems))
        raise ValueError(
            f"{len(problems)} problem(s) loading the checkpoint into {cfg}:{listing}\n"
            "Check that config.json belongs to these weights."
        )
    return nnx.merge(graphdef, params)


def state_from_model(model: Llama) -> dict[str, np.ndarray]:
    """The inverse of :func:`load_hf_state`: ``{HF name: np.ndarray}`` in torch layout and the
    parameter dtype; no ``lm_head.weight`` when embeddings are tied."""
    out = {}
    for p, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        path = ".".join(map(str, p))
        hit = hf_name(path)
        if hit is None:
            raise ValueError(f"parameter {path} has no HF name in HF_TO_MODEL")
        value = np.asarray(var.get_value())
        out[hit[0]] = np.ascontiguousarray(value.T if hit[1] == "T" else value)
    return out


# ----------------------------------------------------------------------------- safetensors files


def _read_header(file: Path) -> tuple[dict[str, Any], int]:
    """The safetensors JSON header and the byte offset where tensor data starts; checks that the
    file holds every byte the header promises. Raises ValueError naming the file."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as f:
            raw = f.read(8)
            n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
            if n < 2 or 8 + n > size:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{file}: not a safetensors file, or truncated ({e}); re-download it") from e
    if 8 + n + end > size:
        raise ValueError(
            f"{file}: truncated ({size} bytes, the header promises {8 + n + end}); re-download it"
        )
    return header, 8 + n


class SafetensorsState(Mapping):
    """A lazy ``{name: np.ndarray}`` over one or more ``.safetensors`` files.

    ``files`` maps each tensor name to its file (as ``model.safetensors.index.json`` does); each
    file's header is validated on construction, and a tensor is read when it is looked up.
    """

    def __init__(self, files: Mapping[str, Path]):
        self._files = {name: Path(f) for name, f in files.items()}
        self._headers: dict[Path, tuple[dict[str, Any], int]] = {}
        for file in sorted(set(self._files.values())):
            try:
                self._headers[file] = _read_header(file)
                with safe_open(str(file), framework="numpy") as f:
                    keys = set(f.keys())
            except ValueError:
                raise
            except Exception as e:  # safetensors raises its own SafetensorError
                raise ValueError(f"{file}: unreadable safetensors file ({e}); re-download it") from e
            absent = sorted(n for n, f in self._files.items() if f == file and n not in keys)
            if absent:
                raise ValueError(f"{file}: the index lists tensors the file lacks: {', '.join(absent[:5])}")

    @classmethod
    def from_files(cls, files: list[Path]) -> SafetensorsState:
        """Every tensor of every file (a name in two files is an error)."""
        names: dict[str, Path] = {}
        for file in files:
            for name in _read_header(Path(file))[0]:
                if name in names:
                    raise ValueError(f"tensor {name} is in both {names[name]} and {file}")
                names[name] = Path(file)
        return cls(names)

    def __getitem__(self, name: str) -> np.ndarray:
        file = self._files[name]
        header, start = self._headers[file]
        info = header[name]
        if info["dtype"] == "BF16":
            begin, end = info["data_offsets"]
            raw = np.fromfile(file, dtype=np.uint16, count=(end - begin) // 2, offset=start + begin)
            return raw.view(ml_dtypes.bfloat16).reshape(info["shape"])
        with safe_open(str(file), framework="numpy") as f:
            return f.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def _weights_in(folder: Path) -> SafetensorsState:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {name: folder / f for name, f in weight_map.items()}
        missing = sorted({str(f) for f in files.values() if not f.is_file()})
        if missing:
            raise FileNotFoundError(f"{index} names shard files that do not exist: {', '.join(missing)}")
        return SafetensorsState(files)
    if (folder / "model.safetensors").is_file():
        return SafetensorsState.from_files([folder / "model.safetensors"])
    others = sorted(folder.glob("*.safetensors"))
    if others:
        return SafetensorsState.from_files(others)
    hint = ""
    if list(folder.glob("*.bin")) or list(folder.glob("*.pth")):
        hint = (
            " It has PyTorch .bin/.pth weights: convert them once with transformers, "
            "AutoModelForCausalLM.from_pretrained(folder).save_pretrained(out, safe_serialization=True)."
        )
    raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json.{hint}")


def load_hf_folder(
    path: str | Path, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, mesh: Any = None
) -> Llama:
    """Load a local HF folder: ``config.json`` plus ``model.safetensors`` or a sharded
    ``model.safetensors.index.json``. Truncated or corrupt files raise ValueError naming the file."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass an HF model folder with config.json")
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{folder} has no config.json; an HF model folder needs one")
    cfg = LlamaConfig.from_hf_config(json.loads(config.read_text()))
    return load_hf_state(cfg, _weights_in(folder), dtype=dtype, param_dtype=param_dtype, mesh=mesh)


def hub_snapshot(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """``config.json``, tokenizer files and ``*.safetensors`` of ``repo_id`` from the Hugging Face
    hub (``huggingface_hub.snapshot_download``, cached): the local snapshot folder. Raises
    FileNotFoundError with instructions when the hub cannot be reached."""
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=["*.json", "*.safetensors"]
            )
        )
    except Exception as e:  # offline, unknown repo, gated repo, network failure
        raise FileNotFoundError(
            f"could not fetch {repo_id!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Without network access, copy the model to a local folder holding config.json and the "
            f"*.safetensors files (on a connected machine: `hf download {repo_id} --include '*.json' "
            "'*.safetensors' --local-dir DIR`) and load it with load_hf_folder(DIR)."
        ) from e


def load_hf_hub(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    mesh: Any = None,
) -> Llama:
    """:func:`hub_snapshot` of ``repo_id``, loaded with :func:`load_hf_folder`."""
    folder = hub_snapshot(repo_id, revision=revision, cache_dir=cache_dir)
    return load_hf_folder(folder, dtype=dtype, param_dtype=param_dtype, mesh=mesh)
