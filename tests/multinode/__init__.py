"""Helpers that run stages on a multi-node ``ray.cluster_utils.Cluster`` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("run_on_cluster.py")


def run_on_cluster(stage: str, config, frames, out, overrides, timeout: int = 360) -> dict:
    """Run ``stage`` on a fresh two-node cluster; returns the stage's JSON result."""
    repo = SCRIPT.parent.parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            stage,
            str(config),
            str(frames),
            str(out),
            json.dumps(list(overrides)),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=repo,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))
