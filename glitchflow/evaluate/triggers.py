"""Triggers from Q-spectrograms: peak masks, peak lists, time clustering.

A *peak* is a pixel that is the maximum of its 3x3 neighbourhood and above
an SNR^2 threshold (the seed's "local maxima above normalised energy 20").
*Triggers* are peaks clustered in time: within ``cluster_window`` seconds
only the loudest peak is kept, so one glitch gives one trigger.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, maximum_filter


@dataclass
class Triggers:
    """Time-sorted triggers: ``time`` (GPS s), ``frequency`` (Hz), ``snr2`` (normalised energy)."""

    time: np.ndarray
    frequency: np.ndarray
    snr2: np.ndarray

    @classmethod
    def empty(cls) -> Triggers:
        return cls(np.zeros(0), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.time)

    def above(self, threshold: float) -> Triggers:
        keep = self.snr2 >= threshold
        return Triggers(self.time[keep], self.frequency[keep], self.snr2[keep])

    @classmethod
    def concat(cls, parts: list[Triggers]) -> Triggers:
        if not parts:
            return cls.empty()
        time = np.concatenate([p.time for p in parts])
        order = np.argsort(time, kind="stable")
        return cls(
            time[order],
            np.concatenate([p.frequency for p in parts])[order],
            np.concatenate([p.snr2 for p in parts])[order],
        )


def peak_mask(spec: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of 3x3 local maxima above ``threshold`` in ``spec`` (..., freq, time)."""
    size = (1,) * (spec.ndim - 2) + (3, 3)
    return (spec >= maximum_filter(spec, size=size, mode="nearest")) & (spec > threshold)


def dilate(mask: np.ndarray, time_bins: int, freq_rows: int) -> np.ndarray:
    """Grow a (..., freq, time) mask by +-``freq_rows`` rows and +-``time_bins`` bins."""
    if time_bins == 0 and freq_rows == 0:
        return mask
    shape = (1,) * (mask.ndim - 2) + (2 * freq_rows + 1, 2 * time_bins + 1)
    return binary_dilation(mask, structure=np.ones(shape, dtype=bool))


def peaks_to_triggers(
    spec: np.ndarray, t0: float, time_step: float, frequencies: np.ndarray, threshold: float
) -> Triggers:
    """Peaks of one (freq, time) spectrogram whose bin 0 starts at GPS ``t0``.

    Times are bin centres, ``t0 + (k + 0.5) * time_step``.
    """
    rows, cols = np.nonzero(peak_mask(spec, threshold))
    order = np.argsort(cols, kind="stable")
    rows, cols = rows[order], cols[order]
    return Triggers(
        t0 + (cols + 0.5) * time_step,
        frequencies[rows].astype(float),
        spec[rows, cols].astype(float),
    )


def cluster(triggers: Triggers, window: float) -> Triggers:
    """Keep the loudest trigger of each run whose neighbours are closer than ``window`` s."""
    if len(triggers) == 0:
        return triggers
    breaks = np.flatnonzero(np.diff(triggers.time) > window) + 1
    groups = np.split(np.arange(len(triggers)), breaks)
    best = np.array([g[np.argmax(triggers.snr2[g])] for g in groups])
    return Triggers(triggers.time[best], triggers.frequency[best], triggers.snr2[best])
