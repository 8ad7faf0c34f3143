"""Run a script on 8 fake CPU devices. The device count must be set before JAX starts, so the
script runs in a subprocess and reports one JSON line on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_on_8_devices(script: str, *args: str) -> dict:
    """Run ``script`` (Python source) with 8 CPU devices; return its last stdout line as JSON."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
