"""gwpy as the independent reference for the Conditioner (tests and benchmarks)."""

from __future__ import annotations

import numpy as np

from glitchflow.signal.conditioner import Conditioner
from glitchflow.signal.fast import pool_index


def gwpy_spectrogram(
    x: np.ndarray, cond: Conditioner, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """gwpy's whitening and single-Q transform of ``x`` (at the analysis rate, starting at 0 s)
    on the Conditioner's grid: ``(freq, n_bins)`` SNR^2 and the row frequencies.

    gwpy tapers the edges of whitened data, which would bias the row medians, so
    the whitened series is cropped exactly as the Conditioner crops it before
    ``q_transform(whiten=False, norm='median', logf=True)``.
    """
    sig = cond.signal
    white = gwpy_whitened(x, cond)
    t0 = cond.edge_seconds
    q = white.q_transform(
        qrange=(sig.qtransform.q, sig.qtransform.q),
        frange=sig.qtransform.frange,
        logf=True,
        fres=sig.qtransform.n_freq,
        tres=sig.qtransform.time_step,
        whiten=False,
        norm="median",
        outseg=(t0, t0 + n_bins * sig.qtransform.time_step),
    )
    return q.value.T[:, :n_bins], q.frequencies.value


def gwpy_whitened(x: np.ndarray, cond: Conditioner):
    """gwpy's whitening of ``x`` (analysis rate, from 0 s) cropped exactly as the
    Conditioner crops its own, to whole output bins: a gwpy ``TimeSeries``."""
    from gwpy.timeseries import TimeSeries

    sig = cond.signal
    fs = int(cond.sample_rate)
    white = TimeSeries(x, t0=0, sample_rate=fs).whiten(
        fftlength=sig.conditioning.fftlength,
        overlap=sig.conditioning.overlap,
        method=sig.conditioning.average,
        fduration=sig.conditioning.filter_duration,
    )
    half = int(sig.conditioning.filter_duration * fs) // 2
    lead = round((cond.whiten_edge - sig.conditioning.filter_duration / 2) * fs)
    white = white[half + lead : -half]
    per_bin = cond.qtransform.samples_per_bin
    return white[: (len(white) // per_bin) * per_bin]


def gwpy_pooled_spectrogram(
    x: np.ndarray, cond: Conditioner, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """gwpy's tile rows reduced onto the Conditioner's grid the way it reduces its own
    (``signal.qtransform.reduction: max``): ``(freq, n_bins)`` SNR^2 and the frequencies.

    gwpy whitens; ``q_scan`` gives its median-normalised tile rows (``QGram.energies``,
    each at its own sampling); each row is sampled where the Conditioner samples that
    row (gwpy's own spline, as its ``interpolate`` does, where the Conditioner samples
    finer than gwpy's tiles), max-pooled onto the bins and interpolated along frequency
    with gwpy's ``RectBivariateSpline``.
    """
    from gwpy.signal.qtransform import q_scan
    from scipy.interpolate import InterpolatedUnivariateSpline, RectBivariateSpline

    sig = cond.signal
    white = gwpy_whitened(x, cond)
    qt = cond.qtransform
    q = sig.qtransform.q
    qgram, _ = q_scan(white, qrange=(q, q), frange=sig.qtransform.frange, norm="median")
    n = len(white)
    duration = n / cond.sample_rate
    total_bins = n // qt.samples_per_bin
    lengths = qt.row_lengths(n)
    pooled = np.empty((len(qgram.energies), total_bins))
    for i, row in enumerate(qgram.energies):
        values = np.asarray(row.value, dtype=float)
        length = int(lengths[i])
        if length != len(values):
            knots = np.arange(len(values)) * (duration / len(values))
            spline = InterpolatedUnivariateSpline(knots, values)
            values = spline(np.arange(length) * (duration / length))
        pooled[i] = values[pool_index(length, total_bins)].max(-1)
    times = (np.arange(total_bins) + 0.5) * qt.time_step
    tiles = np.asarray(qgram.plane.frequencies, dtype=float)
    spec = RectBivariateSpline(times, tiles, pooled.T)(times, cond.frequencies).T
    cut = round(qt.edge_seconds() / qt.time_step)
    return np.clip(spec[:, cut : cut + n_bins], 0.0, None), cond.frequencies
