"""Shared fixtures: a tiny detector twin written once per session, and one Ray instance."""

from __future__ import annotations

from pathlib import Path

import pytest

from glitchflow.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


def start_cli(args: list[str], log_path: Path):
    """``python -m glitchflow.cli ARGS`` in its own process group (so a test can kill it
    and every child with ``os.killpg``), output to ``log_path``; returns the Popen."""
    import os
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "glitchflow.cli", *args],
        env=os.environ | {"PYTHONPATH": str(REPO)},
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


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


@pytest.fixture(scope="session")
def ray_local():
    """One private local Ray instance (2 CPUs, dashboard on loopback) shared by every test."""
    import ray

    from glitchflow.pipelines.runtime import local_ray_options

    if not ray.is_initialized():
        ray.init(**local_ray_options(num_cpus=2, log_to_driver=False))
    yield ray
    ray.shutdown()


def write_test_frames(
    directory: Path,
    starts: list[int],
    duration: int = 16,
    glitches: tuple = (),
    rates: dict | None = None,
    nan_in: tuple = (),
    drop: tuple = (),
    flat: tuple = (),
    seed: int = 0,
) -> list[Path]:
    """Small hand-made frames: white noise per channel plus sine-Gaussian glitches.

    ``glitches``: ``(channel, gps, frequency_Hz, amplitude)``; ``nan_in``:
    ``(channel, frame_start)`` pairs to fill with NaN; ``drop``: ``(channel,
    frame_start)`` pairs to leave out of a frame; ``flat``: channels held constant.
    """
    import numpy as np

    from glitchflow.io.frame_writer import write_frame
    from glitchflow.io.frames import frame_name
    from glitchflow.synth.waveforms import Component, render

    rates = rates or {"V1:Hrec_hoft_16384Hz": 4096.0, "V1:AUX_A": 1024.0, "V1:AUX_B": 256.0}
    origin = min(starts)
    rng = np.random.default_rng(seed)
    total = {
        name: rng.standard_normal(int((max(starts) + duration - origin) * rate))
        for name, rate in rates.items()
    }
    for channel, gps, freq, amp in glitches:
        comp = Component(channel, "sine_gaussian", amp, gps, (freq, 9.0, 0.0))
        k0, wave = render(comp, origin, rates[channel])
        total[channel][k0 : k0 + len(wave)] += wave
    paths = []
    directory.mkdir(parents=True, exist_ok=True)
    for start in starts:
        data = {}
        for name, rate in rates.items():
            if (name, start) in drop:
                continue
            a = int((start - origin) * rate)
            x = total[name][a : a + int(duration * rate)].copy()
            if name in flat:
                x[:] = 1.0
            if (name, start) in nan_in:
                x[len(x) // 2 :] = np.nan
            data[name] = (x, rate)
        path = directory / frame_name("V", "TEST", start, duration)
        write_frame(path, start, data)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def demo_twin(tmp_path_factory):
    """The demo configuration's twin, 512 s of it (every glitch family): generate() result."""
    from glitchflow.synth.twin import generate

    cfg = load_config(CONFIGS / "demo.yaml", ["twin.duration=512"])
    return generate(cfg, tmp_path_factory.mktemp("demo_twin"), progress=False, writers=2)


TRAIN_OVERRIDES = [
    "train.epochs=2",
    "train.batch_size=4",
    "train.model.base=4",
    "train.model.depth=2",
    "train.split_block=8",
    "train.glitch_threshold=25",
    "train.image_every=1",
    "train.workers=1",
    "train.cpus_per_worker=1",
]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_config, tiny_twin, ray_local):
    """Preprocessing of the tiny twin: strain and its three true witnesses."""
    import json

    from glitchflow.pipelines.preprocess import run_preprocess

    out = tmp_path_factory.mktemp("tiny_dataset")
    selected = out / "selected_channels.json"
    witnesses = ["V1:LSC_DARM_CORR", "V1:Sa_NE_F0_Z_500Hz", "V1:ENV_CEB_MAG_N"]
    selected.write_text(json.dumps({"channels": witnesses}))
    run_preprocess(tiny_config, tiny_twin.frames[0].parent, out, str(selected))
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_dataset):
    """A tiny U-Net trained for two epochs on the tiny dataset: (train summary, out dir)."""
    from glitchflow.pipelines.train import run_training

    out = tmp_path_factory.mktemp("tiny_model")
    cfg = load_config(CONFIGS / "demo.yaml", TRAIN_OVERRIDES)
    return run_training(cfg, tiny_dataset, out), out


@pytest.fixture(scope="session")
def tiny_subtraction(tmp_path_factory, tiny_config, tiny_twin, ray_local):
    """Witness couplings fitted on the tiny twin (fit-clean): (summary, config used)."""
    import json

    from glitchflow.config import with_overrides
    from glitchflow.pipelines.clean_fit import run_fit_clean

    cfg = with_overrides(tiny_config, ["clean.validation_fraction=0", "clean.frames_per_block=1"])
    root = tmp_path_factory.mktemp("tiny_subtraction")
    channels = root / "channels.json"
    witnesses = ["V1:LSC_DARM_CORR", "V1:ENV_CEB_MAG_N", "V1:Sa_NE_F0_Z_500Hz"]
    channels.write_text(json.dumps({"channels": [{"name": c} for c in witnesses]}))
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    return run_fit_clean(
        cfg, tiny_twin.frames[0].parent, str(channels), root / "fit", tracking
    ), cfg
