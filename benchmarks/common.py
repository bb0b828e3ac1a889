"""Helpers shared by the benchmark scripts: child runs in fresh processes, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def add_child_args(parser: argparse.ArgumentParser, frames_option: str) -> None:
    """The hidden options a benchmark passes to its own child runs."""
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(f"--{frames_option}", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n-frames", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cpus", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)


def run_child(script: str, options: dict) -> dict:
    """Run ``script --child --key value ...`` in a fresh Python (own Ray instance) and return
    the JSON printed after ``RESULT``; the child's stderr tail on failure.  The child's
    ``out`` directory is emptied before the run and removed after it."""
    out = options.get("out")
    if out:
        shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, script, "--child"]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)}
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if out:
        shutil.rmtree(out, ignore_errors=True)
    if proc.returncode or not line:
        raise RuntimeError(proc.stderr[-4000:])
    return json.loads(line[0].removeprefix("RESULT "))


def _plain(value):
    """numpy scalars (bool, int, float) as Python values, for json."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(report: dict, path: Path | None) -> None:
    """Write the report where ``--json`` asked (nothing when it was not given)."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=_plain))


def random_checkpoint(cfg, aux: list[str], directory: Path) -> Path:
    """A self-describing checkpoint of the config's architecture with random weights over
    ``aux`` (the twin's native rates): speed figures do not depend on the weights."""
    import torch

    from glitchflow.models.checkpoint import make_checkpoint, save_checkpoint
    from glitchflow.models.registry import arguments_from_settings, create_model

    rates = {c.name: c.sample_rate for c in cfg.twin.channels}
    tr = cfg.train
    m = tr.model
    kwargs = arguments_from_settings(m.name, len(aux), m.base, m.depth, m.residual, m.attention)
    torch.manual_seed(0)
    ckpt = make_checkpoint(
        create_model(tr.model.name, **kwargs),
        {"name": tr.model.name, "kwargs": kwargs},
        cfg.signal.model_dump(mode="json"),
        [cfg.signal.strain_channel, *aux],
        {"aux": [3.0] * len(aux), "strain": 3.0, "transform": "log1p"},
        {
            "crop": tr.crop,
            "clamp": tr.clamp,
            "window": 6.0,
            "stride": 3.0,
            "rates": {cfg.signal.strain_channel: 16384.0} | {a: rates[a] for a in aux},
        },
        {"snr2": tr.snr2_threshold, "min_area": tr.min_area},
        0,
        {},
    )
    return save_checkpoint(ckpt, directory)
