"""Coloured Gaussian noise for the twin, generated frame by frame with continuity.

White noise is shaped by a zero-phase FIR filter whose amplitude response is
``sqrt(psd * fs / 2)`` (so unit-variance white noise acquires the one-sided
PSD ``psd``).  The filter carries its input tail from frame to frame, so the
stream has no discontinuity at frame boundaries and memory stays bounded by
one frame plus one filter length.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import oaconvolve

from glitchflow.config.twin import NoiseModel

PsdFunction = Callable[[np.ndarray], np.ndarray]


def strain_psd(name: str, low_frequency: float) -> PsdFunction:
    """One-sided strain PSD (1/Hz) from a lalsimulation noise model, flat below ``low_frequency``.

    ``name`` is a lalsimulation function: either a series filler such as
    ``SimNoisePSDAdVDesignSensitivityP1200087`` (Advanced Virgo design) or a
    per-frequency function such as ``SimNoisePSDAdvVirgo``.
    """
    import lal
    import lalsimulation

    func = getattr(lalsimulation, name, None)
    if func is None or not name.startswith("SimNoisePSD"):
        raise ValueError(f"twin.strain_psd: lalsimulation has no PSD function {name!r}")
    df, f_max = 0.25, 8192.0
    freqs = np.arange(0.0, f_max + df, df)
    try:
        series = lal.CreateREAL8FrequencySeries(
            name, lal.LIGOTimeGPS(0), 0.0, df, lal.DimensionlessUnit, len(freqs)
        )
        func(series, float(low_frequency))
        values = np.array(series.data.data, dtype=float)
    except TypeError:
        values = np.array([func(float(f)) if f > 0 else 0.0 for f in freqs])
    usable = (freqs >= low_frequency) & (values > 0)
    if not usable.any():
        raise ValueError(f"twin.strain_psd: {name} returned no positive values")
    good = np.flatnonzero(usable)
    values[: good[0]] = values[good[0]]
    values[good[-1] :] = values[good[-1]]
    if (values <= 0).any():  # interior holes: carry the last good value forward
        idx = np.where(values > 0, np.arange(len(values)), 0)
        values = values[np.maximum.accumulate(idx)]
    log_values = np.log(values)

    def psd(f: np.ndarray) -> np.ndarray:
        f = np.clip(np.abs(np.asarray(f, dtype=float)), 0.0, f_max)
        return np.exp(np.interp(f, freqs, log_values))

    return psd


def aux_psd(model: NoiseModel) -> PsdFunction:
    """One-sided PSD (units^2/Hz) of ``level * sqrt(1 + (knee/f)**slope)``; lines excluded."""

    def psd(freqs: np.ndarray) -> np.ndarray:
        f = np.maximum(np.abs(np.asarray(freqs, dtype=float)), 1e-3)
        shape = 1.0 + (model.knee / f) ** model.slope if model.knee > 0 else np.ones_like(f)
        # cap the red tail at 1e8 x the floor so the FIR stays well conditioned
        return model.level**2 * np.minimum(shape, 1e8)

    return psd


def colouring_filter(psd: PsdFunction, sample_rate: float, duration: float) -> np.ndarray:
    """Zero-phase, Hann-windowed FIR of ``duration`` s that colours unit white noise to ``psd``.

    Returns taps, shape ``(round(duration * sample_rate) | 1,)`` (odd length).
    """
    ntaps = round(duration * sample_rate) | 1
    freqs = np.fft.rfftfreq(ntaps, 1.0 / sample_rate)
    amplitude = np.sqrt(psd(freqs) * sample_rate / 2.0)
    amplitude[0] = 0.0  # no DC
    taps = np.fft.irfft(amplitude, n=ntaps)
    taps = np.roll(taps, ntaps // 2) * np.hanning(ntaps)
    return taps


class ColouredNoiseStream:
    """Continuous coloured noise, one block at a time.

    ``next(n, rng)`` returns ``n`` samples; consecutive blocks join without a
    seam because the filter's input history is carried over.
    """

    def __init__(self, taps: np.ndarray, rng: np.random.Generator) -> None:
        self.taps = taps
        self._history = rng.standard_normal(len(taps) - 1)

    def next(self, n: int, rng: np.random.Generator) -> np.ndarray:
        white = rng.standard_normal(n)
        full = np.concatenate([self._history, white])
        self._history = full[len(full) - (len(self.taps) - 1) :]
        return oaconvolve(full, self.taps, mode="valid")


def snr(waveform: np.ndarray, sample_rate: float, psd: PsdFunction) -> float:
    """Optimal matched-filter SNR ``sqrt(4 sum |h(f)|^2 / S(f) df)`` of a waveform.

    ``waveform`` in channel units sampled at ``sample_rate`` Hz; ``psd`` one-sided.
    """
    n = len(waveform)
    if n == 0:
        return 0.0
    spectrum = np.fft.rfft(waveform) / sample_rate
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    df = sample_rate / n
    weight = 4.0 * np.abs(spectrum[1:]) ** 2 / psd(freqs[1:])
    return float(np.sqrt(np.sum(weight) * df))
