"""gwpy as the independent reference for the Conditioner (tests and benchmarks)."""

from __future__ import annotations

import numpy as np

from glitchflow.signal.conditioner import Conditioner


def gwpy_spectrogram(
    x: np.ndarray, cond: Conditioner, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """gwpy's whitening and single-Q transform of ``x`` (at the analysis rate, starting at 0 s)
    on the Conditioner's grid: ``(freq, n_bins)`` SNR^2 and the row frequencies.

    gwpy tapers the edges of whitened data, which would bias the row medians, so
    the whitened series is cropped exactly as the Conditioner crops it before
    ``q_transform(whiten=False, norm='median', logf=True)``.
    """
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
    white = white[: (len(white) // per_bin) * per_bin]
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
