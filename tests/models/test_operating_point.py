"""The veto's operating point: calibrated on glitch-free time to a target deadtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glitchflow.models.operating_point import (
    DEFAULT_SNR2_GRID,
    OperatingPoint,
    calibrate_veto,
    widen,
)

#: the false alarms' SNR^2 in :func:`_crops` (3 bins each) and its glitch-free bins: the 40
#: background crops of 64 bins and the 61 bins around each 3-bin glitch
ALARMS = torch.tensor([10.0 + 5.0 * k for k in range(40)])
FREE_BINS = 40 * 64 + 20 * 61


def _crops(seed: int = 0):
    """40 glitch-free crops whose generated spectrogram has false alarms of growing SNR^2,
    and 20 glitch crops whose generated glitch is predicted at a quarter of its power."""
    rng = np.random.default_rng(seed)
    n_bg, n_gl, f, t = 40, 20, 16, 64
    real = torch.ones(n_bg + n_gl, f, t)
    gen = torch.ones(n_bg + n_gl, f, t)
    for k in range(n_bg):  # false alarm k: 3x2 pixels at SNR^2 ALARMS[k], bins 20-22
        gen[k, 5:7, 20:23] = ALARMS[k]
    for k in range(n_gl):
        col = int(rng.integers(8, 56))
        power = 100.0 + 40.0 * k
        real[n_bg + k, 8:10, col : col + 3] = power
        gen[n_bg + k, 8:10, col : col + 3] = power / 4
    return real, gen


def test_calibration_keeps_the_deadtime_on_glitch_free_time():
    real, gen = _crops()
    point = calibrate_veto(real, gen, glitch_threshold=25.0, target_deadtime=0.01, padding_bins=0)
    assert point["reached_target"]
    # each false alarm costs 3 bins, so at most 12 of them (36 bins <= 1 % of 3780) may fire
    assert point["glitch_free_bins"] == FREE_BINS
    assert point["val_deadtime"] <= 0.01
    fired = int((point["snr2"] <= ALARMS).sum())
    assert 0 < fired <= 12
    assert fired * 3 / FREE_BINS == pytest.approx(point["val_deadtime"])
    # Neyman-Pearson: the budget is spent, the next lower threshold would overspend it
    lower = max(g for g in DEFAULT_SNR2_GRID if g < point["snr2"])
    assert int((lower <= ALARMS).sum()) * 3 / FREE_BINS > 0.01
    # the glitch crops predicted at a quarter of their power above the threshold are caught
    predicted = np.array([(100.0 + 40.0 * k) / 4 for k in range(20)])
    assert point["val_efficiency"] == pytest.approx(np.mean(predicted >= point["snr2"]))
    assert point["glitches"] == 20
    # a guard band around each glitch takes its neighbourhood out of the glitch-free time
    guarded = calibrate_veto(real, gen, 25.0, 0.01, padding_bins=0, guard_bins=4)
    assert guarded["glitch_free_bins"] == FREE_BINS - 20 * 8
    # a looser target buys efficiency with deadtime
    loose = calibrate_veto(real, gen, 25.0, 0.05, 0)
    assert loose["snr2"] < point["snr2"]
    assert point["val_deadtime"] < loose["val_deadtime"] <= 0.05
    assert loose["val_efficiency"] >= point["val_efficiency"]


def test_padding_counts_in_the_deadtime_and_no_glitch_free_time_means_no_calibration():
    real, gen = _crops()
    plain = calibrate_veto(real, gen, 25.0, 0.02, padding_bins=0)
    padded = calibrate_veto(real, gen, 25.0, 0.02, padding_bins=2)
    # each false alarm now costs 3 + 2 x 2 bins, so fewer may fire
    assert padded["snr2"] > plain["snr2"]
    # strain loud everywhere: no glitch-free time to calibrate on
    assert calibrate_veto(torch.full_like(real, 30.0), gen, 25.0, 0.01, 0) == {}


def test_operating_point_from_checkpoint_thresholds():
    real, gen = _crops()
    veto = calibrate_veto(real, gen, 25.0, 0.01, 0)
    point = OperatingPoint.from_thresholds({"snr2": 16.0, "min_area": 2, "veto": veto})
    assert point.calibrated and point.veto_snr2 == veto["snr2"]
    assert (point.denoise_snr2, point.denoise_min_area) == (16.0, 2)
    # the FAP of a cluster as loud as the threshold is the calibrated deadtime; louder is rarer
    assert point.fap(point.veto_snr2) == pytest.approx(veto["val_deadtime"])
    assert point.fap(1e4) <= point.fap(point.veto_snr2) <= point.fap(5.0)
    # an override sets both decisions and drops the calibration
    manual = OperatingPoint.from_thresholds({"snr2": 16.0, "min_area": 2, "veto": veto}, 40.0)
    assert (manual.veto_snr2, manual.denoise_snr2, manual.calibrated) == (40.0, 40.0, False)
    assert manual.fap(100.0) is None
    # checkpoints from before calibration: the veto uses the metric threshold
    old = OperatingPoint.from_thresholds({"snr2": 16.0, "min_area": 2})
    assert (old.veto_snr2, old.veto_min_area, old.calibrated) == (16.0, 2, False)


def test_widen_pads_vetoed_bins_on_both_sides():
    cols = torch.zeros(2, 32, dtype=torch.bool)
    cols[0, 10:13] = True
    wide = widen(cols, 2)
    assert wide[0].nonzero().flatten().tolist() == list(range(8, 15))
    assert not wide[1].any()
    assert torch.equal(widen(cols, 0), cols)


def test_calibration_spends_the_budget_when_every_validation_glitch_is_caught_anyway():
    """Loud validation glitches are caught at any threshold: efficiency cannot choose, the
    false-alarm budget does (the most sensitive veto within it, for weaker glitches)."""
    real, gen = _crops()
    gen[40:] = torch.where(real[40:] > 1.0, torch.full_like(gen[40:], 1000.0), gen[40:])
    point = calibrate_veto(real, gen, 25.0, 0.01, padding_bins=0)
    assert point["val_efficiency"] == 1.0
    fired = int((point["snr2"] <= ALARMS).sum())
    assert point["val_deadtime"] == pytest.approx(fired * 3 / FREE_BINS) and fired >= 10
    lower = max(g for g in DEFAULT_SNR2_GRID if g < point["snr2"])  # would overspend
    assert int((lower <= ALARMS).sum()) * 3 / FREE_BINS > 0.01
