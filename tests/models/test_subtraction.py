"""Witness-to-strain subtraction on whitened data: couplings come out right, glitches go."""

from __future__ import annotations

import numpy as np
import pytest

from glitchflow.models.subtraction import (
    Localiser,
    SubtractionModel,
    coupling_equations,
    fir_lags,
    segment_at,
)

FS = 4096.0
L = 4096


def sine_gaussian(t, f, q, phase=0.0):
    tau = q / (np.sqrt(2) * np.pi * f)
    return np.exp(-((t / tau) ** 2)) * np.cos(2 * np.pi * f * t + phase)


def unit_snr(x):
    return x / np.linalg.norm(x)


def make_pair(rng, delay_s, gain, f, q, witness_snr):
    """Whitened witness and strain segments (unit-variance noise) with a coupled glitch."""
    t = (np.arange(L) - L // 2) / FS
    glitch = unit_snr(sine_gaussian(t, f, q, rng.uniform(0, 2 * np.pi))) * witness_snr
    shift = round(delay_s * FS)
    witness = glitch + rng.standard_normal(L)
    strain = gain * np.roll(glitch, shift) + rng.standard_normal(L)
    return witness, strain, gain * np.roll(glitch, shift)


SETTINGS = {
    "segment": 1.0,
    "gate_extra": 0.02,
    "gate_ramp": 0.03,
    "mask_kappa": 4.0,
    "gate_q": 12.0,
    "min_fit_snr": 4.5,
    "coupling_bumps": (15.0, 1.5, 10),
    "coupling_delays": (-0.01, 0.04),
}


def fitted_model(rng, delay_s=0.005, gain=0.5, n=40):
    loc = Localiser(FS, 1.0, 0.02, 0.03, 4.0)
    lags = fir_lags(0.15, 0.2, FS)
    eq = coupling_equations(SETTINGS, FS)
    for _ in range(n):
        f = float(np.exp(rng.uniform(np.log(30), np.log(300))))
        w, y, _ = make_pair(rng, delay_s, gain, f, rng.uniform(4, 12), rng.uniform(30, 80))
        eq.add(loc(w, 0.02, f), y)
    coef, delay = eq.solve(1e-3)
    fir = eq.fir(coef, delay, lags)
    return SubtractionModel("X1:STRAIN", ["X1:WIT"], {"X1:WIT": fir}, lags, FS, SETTINGS, {})


def test_coupling_fir_recovers_the_delay_and_gain():
    model = fitted_model(np.random.default_rng(0), delay_s=0.005, gain=0.5)
    fir, lags = model.firs["X1:WIT"], model.lags
    freqs = np.linspace(50.0, 250.0, 41)
    response = np.exp(-2j * np.pi * freqs[:, None] * lags[None, :] / FS) @ fir
    # gain: flat over the glitch band, a little shrunk by the ridge (the per-glitch fit
    # restores it); delay: the phase slope
    assert np.all(np.abs(response) > 0.4) and np.all(np.abs(response) < 0.6)
    slope = np.polyfit(2 * np.pi * freqs, np.unwrap(np.angle(response)), 1)[0]
    assert -slope == pytest.approx(0.005, abs=0.2e-3)


def test_held_out_glitches_are_subtracted_to_noise_and_witness_only_ones_left_alone():
    rng = np.random.default_rng(1)
    model = fitted_model(rng)
    loc = model.localiser
    residuals, injected = [], []
    for _ in range(20):
        gain = 0.5 * float(np.exp(rng.normal(0, 0.3)))  # glitch-to-glitch coupling scatter
        f = rng.uniform(40, 250)
        w, y, truth = make_pair(rng, 0.005, gain, f, rng.uniform(4, 12), 60.0)
        fit = model.fit(model.predict("X1:WIT", loc(w, 0.02, f)), y)
        assert fit.snr >= model.settings["min_fit_snr"]
        residuals.append(np.linalg.norm(truth - fit.fitted))
        injected.append(np.linalg.norm(truth))
    assert np.median(injected) > 25
    assert np.mean(np.array(residuals) < 5) >= 0.9
    # a witness glitch that does not reach strain fits at noise level
    w, _, _ = make_pair(rng, 0.005, 0.5, 100.0, 8.0, 60.0)
    fit = model.fit(model.predict("X1:WIT", loc(w, 0.02, 100.0)), rng.standard_normal(L))
    assert fit.snr < model.settings["min_fit_snr"]


def test_localiser_keeps_the_glitch_and_drops_most_noise():
    rng = np.random.default_rng(2)
    loc = Localiser(FS, 1.0, 0.02, 0.03, 4.0)
    t = (np.arange(L) - L // 2) / FS
    glitch = unit_snr(sine_gaussian(t, 120.0, 8.0)) * 40
    noise = rng.standard_normal(L)
    out = loc(glitch + noise, 0.02, 120.0)
    assert np.linalg.norm(out - glitch) < 6  # of 64 noise units in the segment
    assert np.linalg.norm(loc(noise, 0.02, 120.0)) < 3


def test_segment_at_pads_with_zeros():
    x = np.arange(10.0)
    assert segment_at(x, -2, 5).tolist() == [0, 0, 0, 1, 2]
    assert segment_at(x, 8, 4).tolist() == [8, 9, 0, 0]


def test_checkpoint_round_trip_and_refusals(tmp_path):
    model = fitted_model(np.random.default_rng(3), n=5)
    path = model.save(tmp_path / "model.pt")
    back = SubtractionModel.load(path)
    assert back.channels == model.channels
    np.testing.assert_array_equal(back.firs["X1:WIT"], model.firs["X1:WIT"])
    np.testing.assert_array_equal(back.lags, model.lags)
    import torch

    torch.save({"kind": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a glitchflow subtraction checkpoint"):
        SubtractionModel.load(tmp_path / "other.pt")
    state = torch.load(path, weights_only=False)
    state["version"] = 99
    torch.save(state, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="version 99"):
        SubtractionModel.load(tmp_path / "future.pt")


def _lowpassed(x, corner=60.0):
    """``x`` through the twin's environmental coupling shape, ``1 / (1 + i f / fc)^2``."""
    n = 2 * len(x)
    f = np.fft.rfftfreq(n, 1 / FS)
    return np.fft.irfft(np.fft.rfft(x, n) / (1 + 1j * f / corner) ** 2, n)[: len(x)]


def test_glitch_to_glitch_gain_scatter_does_not_leak_into_the_coupling_shape():
    """Noise-free training glitches whose gains scatter by a factor ~2: summing their
    equations pins each frequency to the few glitches there, and their gains bend the
    response; alternating per-glitch gains and the response undoes that."""
    t = (np.arange(L) - L // 2) / FS
    settings = SETTINGS | {"fit_tilt": False}
    lags = fir_lags(0.15, 0.2, FS)

    def glitch(rng):
        f = float(np.exp(rng.uniform(np.log(30), np.log(250))))
        return f, unit_snr(sine_gaussian(t, f, rng.uniform(4, 12), rng.uniform(0, 2 * np.pi)))

    medians = {}
    for iterations in (0, 3):
        rng = np.random.default_rng(11)
        eq = coupling_equations(settings, FS)
        for _ in range(12):
            _, w = glitch(rng)
            eq.add(100 * w, 100 * np.exp(rng.normal(0, 0.6)) * _lowpassed(w))
        coef, delay = eq.solve(1e-6, iterations)
        assert len(eq.Rs) == len(eq.Xs) == eq.count == 12
        model = SubtractionModel(
            "X1:S", ["X1:W"], {"X1:W": eq.fir(coef, delay, lags)}, lags, FS, settings, {}
        )
        residuals = []
        for _ in range(30):
            f, w = glitch(rng)
            s = unit_snr(_lowpassed(w)) * 100
            fit = model.fit(model.predict("X1:W", 100 * w), s, f)
            residuals.append(np.linalg.norm(s - fit.fitted))
        medians[iterations] = np.median(residuals)
    assert medians[3] < 0.5 * medians[0]
    assert medians[3] < 8  # of SNR 100


def test_smoothness_trades_the_response_curvature_for_fit():
    """``smoothness`` penalises the bumps' second differences: the stronger it is, the
    straighter (in log frequency) the fitted response, at some cost in fit."""
    rng = np.random.default_rng(4)
    t = (np.arange(L) - L // 2) / FS
    eq = coupling_equations(SETTINGS, FS)
    for f in np.geomspace(30, 150, 10):
        w = unit_snr(sine_gaussian(t, f, rng.uniform(5, 10), rng.uniform(0, 2 * np.pi))) * 100
        eq.add(w, 0.4 * _lowpassed(w) + rng.standard_normal(L))
    half = len(eq.basis)
    second = np.diff(np.eye(half), n=2, axis=0)
    curvature, misfit = [], []
    for smoothness in (0.0, 1.0, 100.0):
        coef, delay = eq.solve(1e-3, 0, smoothness)
        curvature.append(
            np.linalg.norm(second @ coef[:half]) + np.linalg.norm(second @ coef[half:])
        )
        d = int(np.argmin(np.abs(eq.delays - delay)))
        misfit.append(coef @ eq.R @ coef - 2 * coef @ eq.X[:, d])
    assert curvature[0] > curvature[1] > curvature[2]
    assert misfit[0] <= misfit[1] <= misfit[2]
