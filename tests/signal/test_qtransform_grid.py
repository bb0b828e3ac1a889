"""No glitch lost between bins: peaks on coarse grids against gwpy at 0.5 ms resolution.

Sine-Gaussians over 30-450 Hz, Q 4-30 and arrival times spread over a bin are
injected into white noise and Q-transformed on the training grid (23.4 ms bins)
and the scan grid (93.75 ms bins).  The peak SNR^2 on the grid must reach at least
0.7 of gwpy's ``q_transform`` of the same whitened data on a fine grid (tres 0.5 ms).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glitchflow.config import load_config
from glitchflow.signal.conditioner import Conditioner
from glitchflow.synth.waveforms import Component, render
from tests.conftest import CONFIGS

FREQUENCIES = (30.0, 75.0, 150.0, 300.0, 450.0)
QUALITIES = (4.0, 12.0, 30.0)
SUB_BIN = (0.0, 0.45, 0.8)  # arrival time as a fraction of a bin past a bin edge
SPACING = 2.0  # s between injections


def _with_reduction(signal, reduction: str):
    qt = signal.qtransform.model_copy(update={"reduction": reduction})
    return signal.model_copy(update={"qtransform": qt})


def _whitened_injections(cond: Conditioner, seed: int = 0):
    """Whitened white noise with every (f, Q, sub-bin) case injected; returns the series
    (aligned to the Q-transform's sample 0), the cases and their times (s from sample 0)."""
    fs, dt = cond.sample_rate, cond.time_step
    cases = [(f, q, s) for f in FREQUENCIES for q in QUALITIES for s in SUB_BIN]
    duration = np.ceil((2 * cond.edge_seconds + SPACING * (len(cases) + 1)) / dt) * dt
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(round(duration * fs))
    times = []
    for k, (f, q, sub) in enumerate(cases):
        t = (np.floor((cond.edge_seconds + SPACING * (k + 1)) / dt) + sub) * dt
        k0, wave = render(Component("x", "sine_gaussian", 25.0, t, (f, q, 0.0)), 0.0, fs)
        x[k0 : k0 + len(wave)] += wave
        times.append(t - cond.whiten_edge)
    white = cond.whiten(torch.from_numpy(x)[None, None])[..., cond._lead :]
    per_bin = cond.qtransform.samples_per_bin
    return white[..., : (white.shape[-1] // per_bin) * per_bin], cases, np.array(times)


def _gwpy_fine(white: np.ndarray, cond: Conditioner):
    from gwpy.timeseries import TimeSeries

    qt = cond.signal.qtransform
    ref = TimeSeries(white, t0=0, sample_rate=cond.sample_rate).q_transform(
        qrange=(qt.q, qt.q),
        frange=qt.frange,
        logf=True,
        fres=qt.n_freq,
        tres=0.0005,
        whiten=False,
        norm="median",
    )
    return ref.xindex.value, ref.value.T


def _peak_ratios(cond: Conditioner) -> tuple[np.ndarray, list]:
    white, cases, times = _whitened_injections(cond)
    ours = cond.qtransform(white)[0, 0].numpy()
    ref_t, ref = _gwpy_fine(white[0, 0].numpy(), cond)
    centres = (np.arange(ours.shape[1]) + 0.5) * cond.time_step
    ratios = [
        ours[:, np.abs(centres - t) < 0.3].max() / ref[:, np.abs(ref_t - t) < 0.3].max()
        for t in times
    ]
    return np.array(ratios), cases


@pytest.fixture(scope="module")
def config():
    return load_config(CONFIGS / "demo.yaml")


@pytest.mark.parametrize("grid", ["training", "scan"])
def test_peaks_survive_the_grid(config, grid):
    signal = config.signal if grid == "training" else config.scan_signal()
    assert signal.qtransform.reduction == "max"
    ratios, cases = _peak_ratios(Conditioner(signal))
    worst = int(np.argmin(ratios))
    assert ratios.min() >= 0.7, (cases[worst], ratios.min())
    assert ratios.max() < 1.1  # pooling selects tile samples, it never adds energy


def test_interpolation_loses_short_glitches_on_the_scan_grid(config):
    """The reason for pooling: gwpy's spline at bin times misses peaks between them."""
    ratios, _ = _peak_ratios(Conditioner(_with_reduction(config.scan_signal(), "interpolate")))
    assert ratios.min() < 0.1


def test_pooled_peak_at_the_right_time_and_frequency(config):
    cond = Conditioner(config.scan_signal())
    white, cases, times = _whitened_injections(cond)
    spec = cond.qtransform(white)[0, 0].numpy()
    for (f, _, _), t in zip(cases, times):
        m0 = int(np.floor((t - 0.3) / cond.time_step))
        local = spec[:, m0 : m0 + int(0.6 / cond.time_step)]
        i_f, i_t = np.unravel_index(local.argmax(), local.shape)
        assert abs((m0 + i_t + 0.5) * cond.time_step - t) <= cond.time_step
        assert abs(np.log(cond.frequencies[i_f] / f)) < 0.25


@pytest.mark.parametrize("n", [4, 5, 17, 90])
def test_frequency_spline_is_scipys_not_a_knot_spline(n):
    """The numpy spline matrix that maps tile rows to output rows is scipy's
    make_interp_spline(k=3) (gwpy's), points outside clamped to the ends."""
    from scipy.interpolate import make_interp_spline

    from glitchflow.signal.qtransform import spline_matrix

    rng = np.random.default_rng(n)
    x = np.unique(np.sort(rng.uniform(8.0, 500.0, n)))
    points = np.concatenate([np.geomspace(x[0], x[-1], 64), [x[0] - 1.0, x[-1] + 5.0, x[2]]])
    expected = make_interp_spline(x, np.eye(len(x)), k=3)(np.clip(points, x[0], x[-1]))
    np.testing.assert_allclose(spline_matrix(x, points), expected, rtol=0, atol=1e-10)
