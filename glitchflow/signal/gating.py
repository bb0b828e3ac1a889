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


#: bits of the glitchflow state channels (gated frames of ``infer``, frames of ``online``)
STATE_ANALYSED = 1
STATE_VETOED = 2


def state_bits(
    n: int, sample_rate: float, t0: float, analysed: np.ndarray, vetoed: np.ndarray
) -> np.ndarray:
    """State channel ``(n,)`` int32: bit 0 where a sample lies wholly in ``analysed``, bit 1
    where it overlaps ``vetoed`` (within analysed time); so 0 = not analysed, 1 = analysed
    and clean, 3 = vetoed.  A search keeps the samples equal to 1."""
    starts = t0 + np.arange(n) / sample_rate
    ends = starts + 1.0 / sample_rate
    inside = np.zeros(n, dtype=bool)
    for start, end in np.asarray(analysed, dtype=float).reshape(-1, 2):
        inside |= (starts >= start - 1e-9) & (ends <= end + 1e-9)
    state = inside.astype(np.int32) * STATE_ANALYSED
    state |= (state_vector(n, sample_rate, t0, vetoed) * STATE_VETOED) * inside
    return state.astype(np.int32)
