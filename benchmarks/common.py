"""Helpers shared by the benchmark scripts: child runs in fresh processes, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_child(script: str, options: dict) -> dict:
    """Run ``script --child --key value ...`` in a fresh Python (own Ray instance) and return
    the JSON printed after ``RESULT``; the child's stderr tail on failure."""
    argv = [sys.executable, script, "--child"]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)}
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        raise RuntimeError(proc.stderr[-4000:])
    return json.loads(line[0].removeprefix("RESULT "))


def write_json(report: dict, path: Path | None) -> None:
    """Write the report where ``--json`` asked (nothing when it was not given)."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
