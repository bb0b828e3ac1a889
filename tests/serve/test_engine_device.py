"""The endpoint's decision engine on a GPU: the same answers as on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glitchflow.config import load_config
from glitchflow.models.checkpoint import make_checkpoint
from glitchflow.models.registry import arguments_from_settings, create_model
from glitchflow.serve.engine import DecisionEngine
from tests.conftest import CONFIGS

STRAIN, AUX = "V1:Hrec_hoft_16384Hz", ["V1:LSC_DARM_CORR", "V1:ENV_CEB_MAG_N"]


def _checkpoint():
    cfg = load_config(CONFIGS / "demo.yaml")
    rates = {c.name: c.sample_rate for c in cfg.twin.channels}
    kwargs = arguments_from_settings("unet_res_att", len(AUX), 4, 2, True, True)
    torch.manual_seed(0)
    return make_checkpoint(
        create_model("unet_res_att", **kwargs),
        {"name": "unet_res_att", "kwargs": kwargs},
        cfg.signal.model_dump(mode="json"),
        [STRAIN, *AUX],
        {"aux": [3.0] * len(AUX), "strain": 3.0, "transform": "log1p"},
        {
            "crop": cfg.train.crop,
            "clamp": cfg.train.clamp,
            "window": 1.5,
            "stride": 1.5,
            "rates": {STRAIN: 16384.0} | {a: rates[a] for a in AUX},
        },
        {"snr2": 25.0, "min_area": 4},
        0,
        {},
    )


def _request(engine, glitch_at: float):
    """White noise in every channel, a loud 120-Hz sine-Gaussian in strain and the first
    witness at ``glitch_at`` s into the request."""
    rng = np.random.default_rng(1)
    channels = {}
    for name in engine.channels:
        rate = engine.rates[name]
        t = np.arange(engine.samples(name)) / rate - glitch_at
        x = rng.standard_normal(len(t))
        if name in (STRAIN, AUX[0]):
            x += 3.0 * np.exp(-((t / 0.02) ** 2)) * np.sin(2 * np.pi * 120.0 * t)
        channels[name] = (rate, x)
    return engine.validate(1_400_000_000.0, channels, need_strain=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_engine_on_gpu_answers_as_on_cpu():
    ckpt = _checkpoint()
    cpu, gpu = DecisionEngine(ckpt), DecisionEngine(ckpt, device="cuda")
    request = _request(cpu, cpu.pad_before + 0.7)
    a, b = cpu.run([request] * 3), gpu.run([request] * 3)
    assert a[0]["max_real_snr2"] > 100  # the injected glitch is there
    for x, y in zip(a, b):
        for key in ("max_real_snr2", "max_generated_snr2", "max_residual_snr2"):
            assert y[key] == pytest.approx(x[key], rel=1e-3, abs=1e-3)
