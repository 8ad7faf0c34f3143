"""Pod slices and multi-host runs: JAX's distributed runtime, the device mesh, per-process data.

One Python process runs per host (a TPU VM worker, a GPU node, or one process per GPU); all of
them run the same program. :func:`initialize` connects them (``jax.distributed.initialize()``),
after which ``jax.devices()`` lists every device of every process and a :class:`~jax.sharding.Mesh`
over them shards work across hosts. Three rules follow:

* **Start first.** :func:`initialize` must run before anything touches a JAX backend
  (``jax.devices()``, an array, a jitted call); the CLI and the benchmarks call it right after
  parsing their flags.
* **Every process reads the inputs.** Text sources, calibration sets and models are read by
  every process (they are small next to the compute), so every process holds the same host
  arrays and ``jax.device_put`` onto a mesh sharding keeps only the shards of its own devices.
  For data too large for that, :func:`process_slice` gives each process a contiguous share of the
  rows and :func:`global_rows` builds the global array from the shares
  (``jax.make_array_from_process_local_data``).
* **Process 0 writes.** Results, tables and plots are written where :func:`is_writer` is True.

When :func:`initialize` starts the runtime (checked in this order):

1. ``enabled=True`` (the ``--distributed`` flag) or ``enabled=False`` decides;
2. else ``ZIPCAL_DISTRIBUTED`` = ``1``/``true``/``yes``/``on`` starts it, ``0``/``false``/
   ``no``/``off`` keeps a single process (no launcher detection);
3. else a launcher's environment with more than one process starts it:

   * ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0) with ``JAX_NUM_PROCESSES`` and
     ``JAX_PROCESS_ID`` — any launcher of your own (also read under 1 and 2);
   * SLURM ``srun``: ``SLURM_STEP_NUM_TASKS`` > 1 with ``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``,
     ``SLURM_PROCID`` and ``SLURM_LOCALID`` (a batch script run without ``srun`` is one process);
   * Open MPI ``mpirun``: ``OMPI_MCA_orte_hnp_uri`` with ``OMPI_COMM_WORLD_SIZE`` > 1;
   * Cloud TPU: ``MEGASCALE_COORDINATOR_ADDRESS`` (multislice), or ``TPU_PROCESS_ADDRESSES`` /
     ``TPU_WORKER_HOSTNAMES`` listing more than one host (GKE). A TPU VM pod slice reached with
     ``gcloud compute tpus tpu-vm ssh --worker=all`` keeps its worker list in the metadata
     server, not the environment: pass ``--distributed`` there (JAX reads the metadata).

Otherwise it is a no-op: one process, ``process_index() == 0``, ``is_writer()`` True. Calling it
again is a no-op too. Coordinator address, process count and id come from
``jax.distributed.initialize``'s own cluster detection (SLURM, Open MPI, Cloud TPU, Kubernetes)
unless the ``JAX_*`` variables above give them.

The mesh (:func:`make_mesh`) has axes ``("data", "model")`` with ``AxisType.Auto``: selection
candidates, calibration samples and evaluation batches are sharded over ``data``; Llama
parameters over ``model`` (tensor parallel, :func:`zipcal_jax.models.sharding.shard`) when the
model is too large for one device (:func:`auto_model_parallel`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["ENV_FLAG", "add_mesh_arguments", "auto_model_parallel", "detect_launcher", "global_rows",
           "initialize", "initialize_from_args", "is_writer", "make_mesh", "mesh_for_model", "mesh_from_args",
           "place_replicated", "process_count", "process_index", "process_slice", "quiet_unless_writer",
           "rows_per_process", "sharding_mesh"]  # fmt: skip

ENV_FLAG = "ZIPCAL_DISTRIBUTED"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
_SLURM = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")


# ----------------------------------------------------------------------------- start-up


def _count(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env.get(key, "1"))
    except ValueError:
        return 1


def detect_launcher(env: Mapping[str, str] | None = None) -> str | None:
    """The multi-process launcher whose environment ``env`` (default ``os.environ``) shows, with more
    than one process: ``"jax"``, ``"slurm"``, ``"mpi"``, ``"tpu"``, or None (see the module docstring)."""
    env = os.environ if env is None else env
    if env.get("JAX_COORDINATOR_ADDRESS") and _count(env, "JAX_NUM_PROCESSES") > 1:
        return "jax"
    if all(k in env for k in _SLURM) and _count(env, "SLURM_STEP_NUM_TASKS") > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and _count(env, "OMPI_COMM_WORLD_SIZE") > 1:
        return "mpi"
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if env.get("MEGASCALE_COORDINATOR_ADDRESS") or len([h for h in hosts.split(",") if h.strip()]) > 1:
        return "tpu"
    return None


def _wanted(enabled: bool | None, env: Mapping[str, str]) -> bool:
    if enabled is not None:
        return bool(enabled)
    flag = env.get(ENV_FLAG)
    if flag is not None:
        value = flag.strip().lower()
        if value not in _TRUE + _FALSE:
            raise ValueError(f"{ENV_FLAG}={flag!r}: use 1 (start the distributed runtime) or 0 (one process)")
        return value in _TRUE
    return detect_launcher(env) is not None


def initialize(enabled: bool | None = None, *, timeout_s: int = 300) -> bool:
    """Start JAX's distributed runtime when this process is one of several; returns whether it runs.

    ``enabled``: True (``--distributed``) or False force it; None decides from ``ZIPCAL_DISTRIBUTED``
    and the launcher's environment (module docstring). Idempotent; a no-op in a single process.
    ``timeout_s``: how long to wait for every process to connect.

    Raises:
        RuntimeError: a JAX backend was already in use (call this first thing).
        ValueError: the runtime is wanted but no launcher gives a coordinator address (the
            message lists what to set).
    """
    import jax

    if jax.distributed.is_initialized():
        return True
    env = os.environ
    if not _wanted(enabled, env):
        return False
    kwargs: dict[str, Any] = {"initialization_timeout": int(timeout_s)}
    if env.get("JAX_COORDINATOR_ADDRESS") and "JAX_NUM_PROCESSES" in env and "JAX_PROCESS_ID" in env:
        kwargs |= {"coordinator_address": env["JAX_COORDINATOR_ADDRESS"],
                   "num_processes": int(env["JAX_NUM_PROCESSES"]), "process_id": int(env["JAX_PROCESS_ID"])}  # fmt: skip
    try:  # JAX's own check, private: skipped if it moves (JAX then raises its RuntimeError)
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # pragma: no cover
        backends_are_initialized = lambda: False  # noqa: E731
    if backends_are_initialized():
        raise RuntimeError(
            "zipcal_jax.distributed.initialize() ran after JAX started its backend (jax.devices(), an "
            "array or a jitted call came first); call it before any other JAX use"
        )
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as err:
        raise ValueError(
            f"the distributed runtime was requested (--distributed or {ENV_FLAG}) but cannot start: {str(err).rstrip('.')}. "
            "Run under a launcher (srun, mpirun, every worker of a Cloud TPU VM) or set "
            "JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID in every process"
        ) from err
    return True


def process_index() -> int:
    """This process's index, 0 … ``process_count() - 1`` (0 in a single process)."""
    import jax

    return jax.process_index()


def process_count() -> int:
    """Number of processes (1 unless :func:`initialize` started the runtime)."""
    import jax

    return jax.process_count()


def is_writer() -> bool:
    """True in the one process that writes results (process 0)."""
    return process_index() == 0


def quiet_unless_writer() -> None:
    """Send this process's stdout to ``os.devnull`` unless it is the writer, so tables print once
    (stderr is kept: errors and progress bars of every process still show)."""
    if not is_writer():
        sys.stdout = open(os.devnull, "w")  # lives as long as the process


# ----------------------------------------------------------------------------- per-process rows


def rows_per_process(n: int, multiple: int = 1, count: int | None = None) -> int:
    """Rows each process holds when ``n`` rows are split into contiguous equal shares:
    ``ceil(n / count)`` rounded up to ``multiple`` (e.g. the local devices along ``data``)."""
    count = process_count() if count is None else int(count)
    if n < 0 or multiple < 1 or count < 1:
        raise ValueError(f"need n >= 0, multiple >= 1 and count >= 1, got {n}, {multiple}, {count}")
    per = -(-n // count)
    return max(multiple, -(-per // multiple) * multiple)


def process_slice(n: int, multiple: int = 1, index: int | None = None, count: int | None = None) -> slice:
    """This process's contiguous share of ``n`` rows: ``[i * per, min(n, (i + 1) * per))`` with
    ``per = rows_per_process(n, multiple)``. The shares cover ``range(n)`` once, in process order;
    the last ones may be short or empty (pad them to ``per`` rows, see :func:`global_rows`)."""
    count = process_count() if count is None else int(count)
    index = process_index() if index is None else int(index)
    if not 0 <= index < count:
        raise ValueError(f"process index {index} is outside 0..{count - 1}")
    per = rows_per_process(n, multiple, count)
    return slice(min(n, index * per), min(n, (index + 1) * per))


def global_rows(local: Any, mesh: Any, rows: int | None = None, axis: str = "data", fill: Any = 0) -> Any:
    """A global ``jax.Array`` whose leading axis is sharded over ``axis``, from this process's rows.

    ``local``: this process's rows (e.g. ``data[process_slice(n, multiple)]``), padded with ``fill``
    to ``rows`` (default ``len(local)``; every process must end with the same count, a multiple of its
    devices along ``axis``). The global array holds process 0's block, then process 1's, …: shape
    ``(process_count() * rows, ...)`` (``jax.make_array_from_process_local_data``). Padding rows
    sit at the end of each process's block; carry a mask to ignore them."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    local = np.asarray(local)
    rows = len(local) if rows is None else int(rows)
    if len(local) > rows:
        raise ValueError(f"this process holds {len(local)} rows, more than rows={rows}")
    if len(local) < rows:
        pad = np.full((rows - len(local), *local.shape[1:]), fill, local.dtype)
        local = np.concatenate([local, pad])
    spec = P(axis, *([None] * (local.ndim - 1)))
    return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local)


def local_value(x: Any, device: Any = None) -> Any:
    """``x`` (a ``jax.Array``) as a value this process can read and keep: unchanged when it is fully
    addressable; the shard on ``device`` (default: this process's first shard) when it is replicated
    over devices of several processes (no communication); else gathered from every process into a
    NumPy array (``multihost_utils.process_allgather``, a collective: every process must call it at
    the same point). Non-``jax.Array`` values are returned as they are."""
    import jax

    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return x
    if x.is_fully_replicated:
        shards = x.addressable_shards
        return next((s.data for s in shards if s.device == device), shards[0].data)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(x, tiled=True)


def put_global(tree: Any, sharding: Any) -> Any:
    """``jax.device_put(tree, sharding)`` that also works when ``sharding`` spans devices of several
    processes, for values every process holds in full (NumPy, or this process's copy on one of its
    devices, e.g. a model every process loaded): each process places only its own devices' parts
    (``jax.make_array_from_callback``), so nothing is sent between hosts. Arrays already on the
    target's devices are resharded by ``device_put``. Every process must pass the same values."""
    import jax

    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def put(x: Any) -> Any:
        if isinstance(x, jax.Array) and x.sharding.device_set == sharding.device_set:
            return jax.device_put(x, sharding)
        host = np.asarray(local_value(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def from_writer(values: Any) -> np.ndarray:
    """Process 0's copy of a small NumPy array, on every process (``broadcast_one_to_all``; the
    array itself in one process). For decisions every process must take alike, e.g. which work
    is already done according to files only process 0 can see."""
    import jax

    values = np.asarray(values)
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    sent = values.astype(np.uint8) if values.dtype == bool else values
    return np.asarray(multihost_utils.broadcast_one_to_all(sent)).astype(values.dtype)


def each_process(values: Any) -> np.ndarray:
    """Every process's copy of a small NumPy array, stacked in process order: shape
    ``(process_count(), *values.shape)`` (``process_allgather``; ``values[None]`` in one process).
    For checks that every process must fail alike, e.g. that all see the same files."""
    import jax

    values = np.asarray(values)
    if jax.process_count() == 1:
        return values[None]
    from jax.experimental import multihost_utils

    sent = values.astype(np.uint8) if values.dtype == bool else values
    return np.asarray(multihost_utils.process_allgather(sent)).astype(values.dtype)


def local_devices_of(mesh: Any) -> list:
    """The devices of ``mesh`` that belong to this process, in mesh order (all of them in one process)."""
    import jax

    here = jax.process_index()
    return [d for d in mesh.devices.flat if d.process_index == here]


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (a no-op in one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ----------------------------------------------------------------------------- the mesh


def _pick_devices(n_devices: int | None) -> list:
    """All devices, or ``n_devices`` of them: the same number from every process, process order."""
    import jax

    devices = jax.devices()
    if n_devices is None or n_devices == len(devices):
        return devices
    if not 1 <= n_devices <= len(devices):
        raise ValueError(f"--devices {n_devices}: there are {len(devices)} devices; use 1..{len(devices)}")
    procs = sorted({d.process_index for d in devices})
    if n_devices % len(procs):
        raise ValueError(
            f"--devices {n_devices} must be a multiple of the {len(procs)} processes, so that every "
            f"process keeps the same number of devices (e.g. --devices {len(procs) * max(1, n_devices // len(procs))})"
        )
    per = n_devices // len(procs)
    return [d for p in procs for d in [d for d in devices if d.process_index == p][:per]]


def make_mesh(n_devices: int | None = None, model: int = 1) -> Any:
    """A ``Mesh`` with axes ``("data", "model")`` of shape ``(n_devices // model, model)``, Auto axis types.

    ``n_devices``: all devices when None, else that many (an equal number from every process).
    ``model``: devices per model replica (tensor parallel, must divide ``n_devices``). The ``model``
    axis runs over neighbouring devices (the same host where possible), ``data`` across hosts."""
    import jax
    from jax.sharding import AxisType, Mesh

    devices = _pick_devices(n_devices)
    n = len(devices)
    if model < 1 or n % model:
        raise ValueError(f"--model-parallel {model} must divide the {n} devices (try 1 or a divisor of {n})")
    shape, names, types = (n // model, model), ("data", "model"), (AxisType.Auto, AxisType.Auto)
    if n == jax.device_count():  # every device: let JAX order them by the physical topology
        return jax.make_mesh(shape, names, axis_types=types)
    return Mesh(np.asarray(devices, dtype=object).reshape(shape), names, axis_types=types)


def sharding_mesh(mesh: Any) -> Any:
    """``mesh``, or None when it has a single device (callers then take their unsharded path, which
    gives exactly the results they gave before meshes existed)."""
    return None if mesh is None or mesh.size == 1 else mesh


def auto_model_parallel(param_bytes: int, n_devices: int, fraction: float = 0.5) -> int:
    """Smallest power of two ``m`` dividing ``n_devices`` with ``param_bytes / m`` at most ``fraction``
    of one device's memory (``memory_stats()["bytes_limit"]``); 1 where the backend does not report
    memory (CPU), so the parameters are replicated and every device works on its own batch rows."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    m = 1
    if not limit:
        return m
    while param_bytes / m > fraction * limit and n_devices % (2 * m) == 0:
        m *= 2
    return m


def place_replicated(tree: Any, mesh: Any) -> Any:
    """``tree`` with every array that is not already on ``mesh``'s devices put there replicated
    (arrays already sharded over those devices, e.g. by ``llama.shard``, are kept as they are)."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    devices = set(mesh.devices.flat)
    replicated = NamedSharding(mesh, P())

    def put(x: Any) -> Any:
        if isinstance(x, jax.Array) and set(x.sharding.device_set) == devices:
            return x
        return jax.device_put(x, replicated)

    return jax.tree.map(put, tree)


# ----------------------------------------------------------------------------- command lines


def add_mesh_arguments(parser: argparse.ArgumentParser, *, suppress: bool = False) -> argparse.ArgumentParser:
    """Add ``--devices N``, ``--model-parallel M`` and ``--distributed`` to ``parser``; with
    ``suppress`` their defaults are ``argparse.SUPPRESS`` (a subcommand's copy of a top-level flag)."""
    unset = argparse.SUPPRESS if suppress else None
    g = parser.add_argument_group("devices and hosts")
    g.add_argument("--devices", type=int, default=unset, metavar="N",
                   help="devices to shard selection, calibration statistics and evaluation over "
                   "(default: every visible device, of every process)")  # fmt: skip
    g.add_argument("--model-parallel", default=unset or "auto", metavar="M",
                   help="devices per model replica, tensor parallel over the 'model' mesh axis; 'auto': "
                   "the fewest (a power of two) that keep the parameters under half of one device's "
                   "memory, 1 on CPU (default: auto)")  # fmt: skip
    g.add_argument("--distributed", action="store_true", default=unset,
                   help="start jax.distributed, one process per host (default: when "
                   f"{ENV_FLAG}=1 or srun/mpirun/a TPU pod is detected); see docs/pods.md")  # fmt: skip
    return parser


def initialize_from_args(args: argparse.Namespace) -> bool:
    """What a script does first: :func:`initialize` with ``--distributed``, then
    :func:`quiet_unless_writer` (one copy of every printed table). Returns whether the runtime runs."""
    running = initialize(getattr(args, "distributed", None))
    quiet_unless_writer()
    return running


def mesh_from_args(args: argparse.Namespace, param_bytes: int = 0) -> Any:
    """The ``Mesh`` that ``--devices`` / ``--model-parallel`` ask for (``param_bytes`` sizes
    ``--model-parallel auto``). Call :func:`initialize` first."""
    n = args.devices if args.devices is not None else None
    n_devices = len(_pick_devices(n))
    m = str(getattr(args, "model_parallel", "1"))
    if m == "auto":
        model = auto_model_parallel(param_bytes, n_devices)
    else:
        try:
            model = int(m)
        except ValueError:
            raise ValueError(f"--model-parallel must be a number of devices or 'auto', got {m!r}") from None
    return make_mesh(n, model)


def mesh_for_model(args: argparse.Namespace, model: Any) -> Any:
    """The mesh of ``--devices`` / ``--model-parallel`` for a loaded Llama (``auto`` sized by its
    parameter bytes), with the parameters placed on it — split over ``model`` by
    :func:`zipcal_jax.models.sharding.shard`, replicated when that axis has one device; None (and
    the model left as it is) when the mesh has a single device."""
    import jax
    from flax import nnx

    from zipcal_jax.models.sharding import shard

    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    mesh = sharding_mesh(mesh_from_args(args, sum(int(x.nbytes) for x in params)))
    if mesh is not None:
        shard(model, mesh)
    return mesh
