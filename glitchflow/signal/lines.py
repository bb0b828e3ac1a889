"""Spectral lines of a PSD estimate: the narrow bands whitening notches out.

A channel with lines (mains at 50 Hz and harmonics in a magnetometer, say) is
whitened by a PSD that towers over its neighbours at the lines, so whitened data
carry (almost) nothing there.  A broadband glitch seen through that channel is
missing those bins; code that rebuilds the glitch from its whitened samples needs
to know where they are (:mod:`glitchflow.models.witness_atoms`).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter


def spectral_lines(
    psd: np.ndarray, df: float, ratio: float = 10.0, width_hz: float = 8.0
) -> tuple[tuple[float, float], ...]:
    """Frequency intervals (Hz) where ``psd`` ``(n_freq,)`` (one-sided, on a ``df`` Hz grid
    from 0) exceeds ``ratio`` x its running median over ``width_hz``; each interval is
    widened by one bin each side (the whitening filter's spectral leakage)."""
    psd = np.asarray(psd, float)
    size = max(3, round(width_hz / df) | 1)
    floor = median_filter(psd, size=size, mode="nearest")
    hot = psd > ratio * np.maximum(floor, 1e-300)
    hot[0] = False  # DC is not a line
    out = []
    k = 0
    while k < len(hot):
        if hot[k]:
            j = k
            while j + 1 < len(hot) and hot[j + 1]:
                j += 1
            out.append(((k - 1.5) * df, (j + 1.5) * df))
            k = j + 1
        else:
            k += 1
    return tuple(out)
