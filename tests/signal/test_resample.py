"""The resampler: both application paths (FFT, bands of phases) give torchaudio's samples,
and a tone survives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glitchflow.signal.resample import _resampler, resample


@pytest.mark.parametrize(
    ("rate_in", "rate_out", "length"),
    [
        (16384, 4096, 16384 * 3 + 5),  # 4 : 1, FFT path, a length not a multiple of 4
        (16384, 4096, 300_000),  # several overlap-save segments
        (2048, 4096, 2048 * 5 + 3),  # 1 : 2, FFT path with two phases
        (8192, 4096, 7),  # shorter than the kernel
        (10000, 4096, 10000 * 2),  # 625 : 256, bands of phases
        (500, 4096, 500 * 4),  # 125 : 1024, bands of phases
        (256, 4096, 256 * 3 + 1),  # 1 : 16, bands of phases, up-sampling only
        (44100, 4096, 44100),  # 11025 : 1024, a kernel longer than the frames' hop
        (10000, 4096, 3),  # bands of phases on fewer samples than a kernel
    ],
)
def test_resample_gives_torchaudios_samples(rate_in, rate_out, length):
    x = torch.randn(2, 3, length, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    reference = _resampler(rate_in, rate_out, "cpu")(x)[..., : round(length * rate_out / rate_in)]
    out = resample(x, rate_in, rate_out)
    assert out.shape == (2, 3, round(length * rate_out / rate_in))
    assert torch.allclose(out, reference, rtol=0, atol=1e-12 * float(x.abs().max()))


@pytest.mark.parametrize(
    ("rate_in", "rate_out"), [(16384, 4096), (2048, 4096), (10000, 4096), (500, 4096), (256, 4096)]
)
def test_single_precision_gives_the_double_samples_to_float32_rounding(rate_in, rate_out):
    """The Conditioner's float32 resampling (one strided convolution for every ratio) is
    the double-precision filter to float32 rounding, strain-sized values included."""
    gen = torch.Generator().manual_seed(2)
    x = 1e-21 * torch.randn(2, rate_in * 3 + 1, dtype=torch.float64, generator=gen)
    exact = resample(x, rate_in, rate_out)
    single = resample(x, rate_in, rate_out, torch.float32)
    assert single.dtype == torch.float64 and single.shape == exact.shape
    assert torch.allclose(single, exact, rtol=0, atol=2e-6 * float(exact.abs().max()))
    assert not torch.equal(single, exact)  # it did compute in single precision


@pytest.mark.parametrize(("rate_in", "tone"), [(16384, 300.0), (2048, 700.0)])
def test_tone_keeps_amplitude_and_phase(rate_in, tone):
    """A tone inside the pass band comes out at the analysis rate with its amplitude and
    phase (to 0.1 %), away from the edges."""
    t_in = np.arange(rate_in * 4) / rate_in
    x = torch.from_numpy(np.sin(2 * np.pi * tone * t_in))[None]
    out = resample(x, rate_in, 4096)[0].numpy()
    t_out = np.arange(out.size) / 4096
    inner = slice(4096, -4096)
    assert np.max(np.abs(out[inner] - np.sin(2 * np.pi * tone * t_out[inner]))) < 1e-3


def test_float32_in_float32_out():
    x = torch.randn(1, 16384, dtype=torch.float32)
    assert resample(x, 16384, 4096).dtype == torch.float32
