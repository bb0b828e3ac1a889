"""Triggers from Q-spectrograms: peak masks, peak lists, time clustering.

A *peak* is a pixel that is the maximum of its 3x3 neighbourhood and above
an SNR^2 threshold (the seed's "local maxima above normalised energy 20").
*Triggers* are peaks clustered in time: within ``cluster_window`` seconds
only the loudest peak is kept, so one glitch gives one trigger.  The scan's
triggers come from tiles at their own resolution (:func:`tile_triggers`, as
Omicron clusters tiles): the loudest tile's time, frequency and SNR^2, and the
cluster's duration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, maximum_filter


@dataclass
class Triggers:
    """Time-sorted triggers: ``time`` (GPS s), ``frequency`` (Hz), ``snr2`` (normalised
    energy) and ``duration`` (s, the extent of the trigger's tiles; 0 when unknown)."""

    time: np.ndarray
    frequency: np.ndarray
    snr2: np.ndarray
    duration: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.duration is None:
            self.duration = np.zeros(len(self.time))

    @classmethod
    def empty(cls) -> Triggers:
        return cls(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.time)

    def take(self, index: np.ndarray) -> Triggers:
        return Triggers(
            self.time[index], self.frequency[index], self.snr2[index], self.duration[index]
        )

    def above(self, threshold: float) -> Triggers:
        return self.take(self.snr2 >= threshold)

    @classmethod
    def concat(cls, parts: list[Triggers]) -> Triggers:
        if not parts:
            return cls.empty()
        joined = cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in FIELDS))
        return joined.take(np.argsort(joined.time, kind="stable"))


#: the per-trigger arrays of :class:`Triggers`
FIELDS = ("time", "frequency", "snr2", "duration")


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


def cluster(triggers: Triggers, window: float) -> Triggers:
    """Keep the loudest trigger of each run whose neighbours are closer than ``window`` s."""
    if len(triggers) == 0:
        return triggers
    breaks = np.flatnonzero(np.diff(triggers.time) > window) + 1
    groups = np.split(np.arange(len(triggers)), breaks)
    best = np.array([g[np.argmax(triggers.snr2[g])] for g in groups])
    return triggers.take(best)


def tile_triggers(tiles: np.ndarray, t0: float, window: float) -> Triggers:
    """Triggers from tiles ``(k, 4)`` ``[time (s after GPS t0), frequency (Hz), SNR^2,
    time resolution (s)]`` (:meth:`~glitchflow.signal.conditioner.Conditioner.tile_peaks`).

    Tiles closer in time than ``window`` s (across rows) are one trigger: the
    loudest tile's time, frequency and SNR^2, and the time extent of the tiles
    (each tile spans its own resolution).
    """
    if len(tiles) == 0:
        return Triggers.empty()
    tiles = tiles[np.argsort(tiles[:, 0], kind="stable")]
    breaks = np.flatnonzero(np.diff(tiles[:, 0]) > window) + 1
    rows = []
    for group in np.split(tiles, breaks):
        best = group[np.argmax(group[:, 2])]
        start = np.min(group[:, 0] - group[:, 3] / 2)
        end = np.max(group[:, 0] + group[:, 3] / 2)
        rows.append((t0 + best[0], best[1], best[2], end - start))
    time, frequency, snr2, duration = (np.array(c) for c in zip(*rows))
    return Triggers(time, frequency, snr2, duration)
