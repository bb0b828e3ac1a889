"""The per-glitch coupling fit: prior widths estimated from training fits, faint glitches shrunk."""

from __future__ import annotations

import numpy as np
import pytest

from glitchflow.models.coupling_fit import fit_columns, fit_glitch, prior_widths

FS = 4096.0
L = 4096


def _glitch(rng, f=120.0, q=8.0):
    t = (np.arange(L) - L // 2) / FS
    tau = q / (np.sqrt(2) * np.pi * f)
    x = np.exp(-((t / tau) ** 2)) * np.cos(2 * np.pi * f * t + rng.uniform(0, 6.28))
    return x / np.linalg.norm(x)


def _truth(p, basis, gain, shape):
    """The arriving glitch: gain x (prediction + shape . other columns)."""
    return gain * (p + basis[:, 1:] @ shape)


def test_prior_widths_recover_the_coupling_shape_spread():
    rng = np.random.default_rng(0)
    widths = np.array([0.15, 0.05, 0.02])
    relative, variance = [], []
    for _ in range(200):
        p = _glitch(rng)
        basis, quad = fit_columns(p, FS, 120.0, tilt=True, quadrature=True)
        shape = rng.normal(0, widths)
        y = _truth(p, basis, rng.uniform(20, 60), shape) + rng.standard_normal(L)
        fit = fit_glitch(basis, y, quad)
        relative.append(fit.relative)
        variance.append(fit.relative_var)
    got = prior_widths(relative, variance)
    assert got == pytest.approx(widths, rel=0.25, abs=0.01)
    assert prior_widths(relative[:3], variance[:3]) is None  # too few fits


def test_the_prior_keeps_faint_glitches_from_absorbing_noise():
    """Over many faint glitches (SNR 10) whose shape barely scatters, the shrunk fit leaves
    less of the glitch behind than the free fit; loud ones are fitted as before."""
    rng = np.random.default_rng(1)
    prior = [0.05, 0.02, 0.02]
    free, shrunk, loud_free, loud_shrunk = [], [], [], []
    for k in range(200):
        p = _glitch(rng)
        basis, quad = fit_columns(p, FS, 120.0, tilt=True, quadrature=True)
        snr = 10.0 if k % 2 else 80.0
        glitch = _truth(p, basis, snr, rng.normal(0, prior))
        y = glitch + rng.standard_normal(L)
        a = np.linalg.norm(glitch - fit_glitch(basis, y, quad).fitted)
        b = np.linalg.norm(glitch - fit_glitch(basis, y, quad, prior).fitted)
        (free if snr == 10 else loud_free).append(a)
        (shrunk if snr == 10 else loud_shrunk).append(b)
    assert np.median(shrunk) < 0.8 * np.median(free)
    assert np.median(loud_shrunk) < 1.1 * np.median(loud_free)
