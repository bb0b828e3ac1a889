"""Gating: zero data inside veto segments with cosine tapers (an inverse Tukey window).

As gwpy's ``TimeSeries.gate``: inside a segment the data are multiplied by 0;
over ``taper`` seconds on each side the factor rises as a half cosine from 0
to 1, so the gate adds no step to the data.  Overlapping tapers multiply.
"""

from __future__ import annotations

import numpy as np


def gate_window(
    n: int, sample_rate: float, t0: float, segments: np.ndarray, taper: float
) -> np.ndarray:
    """Multiplicative gate ``(n,)`` for samples at ``t0 + k / sample_rate`` (GPS s).

    ``segments`` (k, 2) GPS [start, end) to zero; ``taper`` seconds of half-cosine
    on each side.
    """
    times = t0 + np.arange(n) / sample_rate
    window = np.ones(n)
    for start, end in np.asarray(segments, dtype=float).reshape(-1, 2):
        if end + taper < times[0] or start - taper > times[-1]:
            continue
        factor = np.ones(n)
        factor[(times >= start) & (times < end)] = 0.0
        if taper > 0:
            before = (times >= start - taper) & (times < start)
            factor[before] = 0.5 * (1 + np.cos(np.pi * (times[before] - (start - taper)) / taper))
            after = (times >= end) & (times < end + taper)
            factor[after] = 0.5 * (1 - np.cos(np.pi * (times[after] - end) / taper))
        window *= factor
    return window


def state_vector(n: int, sample_rate: float, t0: float, segments: np.ndarray) -> np.ndarray:
    """1 where a sample's interval overlaps a segment, else 0 (``int32``, shape ``(n,)``)."""
    starts = t0 + np.arange(n) / sample_rate
    ends = starts + 1.0 / sample_rate
    state = np.zeros(n, dtype=np.int32)
    for start, end in np.asarray(segments, dtype=float).reshape(-1, 2):
        state[(ends > start) & (starts < end)] = 1
    return state
