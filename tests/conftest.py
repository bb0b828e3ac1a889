"""Shared fixtures: a tiny detector twin written once per session, and one Ray instance."""

from __future__ import annotations

from pathlib import Path

import pytest

from glitchflow.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

# A 64 s twin in two 32 s frames, with rates high enough that every family occurs.
TINY_OVERRIDES = [
    "seed=2",
    "twin.duration=64",
    "twin.frame_duration=32",
    "twin.families.blip.rate=0.12",
    "twin.families.scattered_light.rate=0.08",
    "twin.families.environmental.rate=0.08",
    "twin.families.unwitnessed.rate=0.08",
    "twin.families.witness_only.rate=0.08",
    "twin.families.decoy.rate=0.08",
]


@pytest.fixture(scope="session")
def tiny_config() -> Config:
    return load_config(CONFIGS / "demo.yaml", TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_twin(tmp_path_factory, tiny_config):
    """Frames and truth of the tiny twin: returns the generate() result."""
    from glitchflow.synth.twin import generate

    out = tmp_path_factory.mktemp("tiny_twin")
    return generate(tiny_config, out, progress=False)
