"""Packaging and deployment files agree with pyproject: Ray pin, entrypoints, CLI help."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import CONFIGS, REPO


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


@pytest.mark.parametrize("stage", ["serve", "infer", "online", "clean"])
def test_a_model_that_cannot_be_loaded_stops_the_stage_before_ray_with_one_line(
    stage, tmp_path, capsys, monkeypatch
):
    """README's serve example names models:/glitchflow-unet@production; without such a
    model every stage that takes --model stops at once with one line naming it (no
    Ray start, no replica restarts, no traceback)."""
    import glitchflow.pipelines.runtime as runtime
    from glitchflow.cli import main

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a model that cannot be loaded")

    monkeypatch.setattr(runtime, "init_ray", no_ray)
    uri = "models:/glitchflow-unet@production"
    args = {
        "serve": ["serve", "--model", uri],
        "infer": ["infer", "--frames", str(tmp_path), "--out", str(tmp_path / "o"), "--model", uri],
        "online": [
            "online",
            "--frames",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--model",
            uri,
        ],
        "clean": ["clean", "--frames", str(tmp_path), "--out", str(tmp_path / "o"), "--model", uri],
    }[stage]
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main([*args, "--config", str(CONFIGS / "demo.yaml"), "--tracking-uri", tracking])
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("glitchflow ")]
    assert code == 2
    assert len(ours) == 1 and uri in ours[0] and ours[0].startswith(f"glitchflow {stage}:"), err
    assert "Traceback" not in err
