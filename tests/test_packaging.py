"""Packaging and deployment files agree with pyproject: Ray pin, entrypoints, CLI help."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from tests.conftest import REPO


def _ray_pin() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    ray = next(d for d in deps if d.startswith("ray["))
    return ray.split("==")[1]


def test_image_uses_the_pinned_ray_version():
    import ray

    assert ray.__version__ == _ray_pin()
    base = re.search(
        r"FROM rayproject/ray:([0-9.]+)-", (REPO / "cluster" / "Dockerfile").read_text()
    )
    assert base and base.group(1) == _ray_pin()


def test_job_entrypoints_exist_and_show_their_stage_help():
    from glitchflow.workflow import COMMANDS

    for stage in (*COMMANDS, "serve"):
        out = subprocess.run(
            [sys.executable, str(REPO / "jobs" / f"{stage}.py"), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert out.returncode == 0 and f"glitchflow {stage}" in out.stdout, out.stderr


def test_cli_help_at_every_level():
    from glitchflow.cli import build_parser

    parser = build_parser()
    assert "synth" in parser.format_help() and "demo" in parser.format_help()
    out = subprocess.run(
        [sys.executable, "-m", "glitchflow.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0 and "COMMAND" in out.stdout
