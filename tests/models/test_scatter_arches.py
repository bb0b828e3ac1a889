"""The arch fit finds a twin scattered-light arch in whitened strain and subtracts it to noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glitchflow.models.scatter_arches import ArchSearch, FirWhitener, arch_basis, decimate
from glitchflow.signal.whitening import whitening_filter
from glitchflow.synth.waveforms import Component, render

FS = 4096.0
SEG = 6.0  # s
N = int(SEG * FS)


@pytest.fixture(scope="module")
def fir() -> np.ndarray:
    """Whitening FIR of a detector-like PSD: a steep seismic wall below ~20 Hz."""
    df = 0.5
    f = np.maximum(np.arange(0, FS / 2 + df, df), 0.5)
    psd = 1.0 + (20.0 / f) ** 8
    taps = whitening_filter(torch.from_numpy(psd)[None, None], df, N, FS, 2.0)
    return taps[0, 0].numpy()


def twin_arch(fir, centre, f_fringe, f_motion, duration, phase, snr):
    """The twin's own scatter_fringe waveform, whitened by ``fir`` and scaled to ``snr``."""
    params = (f_fringe, f_motion, duration, phase, 1.064e-6, 0)
    comp = Component("V1:STRAIN", "scatter_fringe", 1.0, centre, params)
    x = np.zeros(N)
    first, samples = render(comp, 0.0, FS)
    x[first : first + len(samples)] = samples
    white = FirWhitener(fir, FS, N, FS)(x)
    return white * snr / np.linalg.norm(white)


@pytest.mark.parametrize(
    "f_fringe, f_motion, duration, snr, seed",
    [(35.0, 2.5, 1.3, 22.0, 1), (22.0, 1.8, 1.9, 12.0, 2), (42.0, 1.6, 2.4, 40.0, 3)],
)
def test_a_witnessed_arch_is_found_and_subtracted_to_noise(
    fir, f_fringe, f_motion, duration, snr, seed
):
    rng = np.random.default_rng(seed)
    centre = SEG / 2 + rng.uniform(-0.1, 0.1)
    glitch = twin_arch(fir, centre, f_fringe, f_motion, duration, rng.uniform(0, 6.28), snr)
    y = glitch + rng.standard_normal(N)
    # the witness window: a trigger cluster somewhere inside the motion transient
    window = (centre - 0.3 + rng.uniform(-0.1, 0.1), centre + 0.3 + rng.uniform(-0.1, 0.1))
    fit = ArchSearch()(y, FS, fir, window)
    p = fit.params
    assert p.centre == pytest.approx(centre, abs=0.05)
    assert p.peak_frequency == pytest.approx(f_fringe, abs=2.5)
    assert p.duration == pytest.approx(duration, rel=0.15)
    assert fit.snr > ArchSearch().min_snr
    # what is left of the glitch: at most half its SNR, and a few noise units (the fit's
    # parameters) once the arch is loud enough that noise cannot pull the fringe phase
    residual = np.linalg.norm(glitch - fit.fitted)
    assert residual < 0.5 * snr
    if snr >= 20:
        assert residual < 4.0


@pytest.mark.parametrize("seed", [11, 12])
def test_noise_alone_fits_below_the_subtraction_threshold(fir, seed):
    y = np.random.default_rng(seed).standard_normal(N)
    fit = ArchSearch()(y, FS, fir, (SEG / 2 - 0.3, SEG / 2 + 0.3))
    assert fit.snr < ArchSearch().min_snr


def test_the_search_rate_template_is_the_decimated_full_rate_one(fir):
    """Whitening at 256 Hz gives the full-rate whitened template, band-limited."""
    t_full = np.arange(N) / FS
    params = (3.0, 1.5, 2.0, 3.05, 20.0)
    full = FirWhitener(fir, FS, N, FS)(arch_basis(t_full, *params))
    n = N // 16
    low = FirWhitener(fir, FS, n, FS / 16)(arch_basis(np.arange(n) / (FS / 16), *params))
    down = np.stack([decimate(c, 16) for c in full])
    assert np.linalg.norm(low - down) < 0.03 * np.linalg.norm(down)
