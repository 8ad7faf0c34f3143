"""Run a script on 8 fake CPU devices, or as two ``jax.distributed`` processes on this machine.
Device counts and process groups must be set before JAX starts, so scripts run in subprocesses
and report one JSON line on stdout."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time


def run_on_8_devices(script: str, *args: str) -> dict:
    """Run ``script`` (Python source) with 8 CPU devices; return its last stdout line as JSON."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


LAUNCHER_VARS = ["JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID",
                 "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_NUM_TASKS",
                 "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "TPU_PROCESS_ADDRESSES",
                 "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "ZIPCAL_DISTRIBUTED"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_two_processes(argv: list[str], timeout: float = 240) -> list[subprocess.CompletedProcess]:
    """Run ``argv`` as processes 0 and 1 of a ``jax.distributed`` job on localhost (one CPU device
    each); returns both results in process order. Both are killed if either overruns."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and k != "XLA_FLAGS"}
    env |= {"JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2"}
    pipe = subprocess.PIPE
    procs = [
        subprocess.Popen(argv, env={**env, "JAX_PROCESS_ID": str(i)}, stdout=pipe, stderr=pipe, text=True)
        for i in range(2)
    ]
    deadline = time.monotonic() + timeout
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outs.append(subprocess.CompletedProcess(argv, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()  # SIGKILL: JAX's preemption notifier catches SIGTERM
                p.wait()
    for i, r in enumerate(outs):
        assert r.returncode == 0, f"process {i}:\n{r.stderr[-3000:]}"
    return outs
