"""Veto and denoise decisions for one window, from real and generated spectrograms.

Definitions (all spectrograms in SNR^2, shape ``(batch, rows, bins)``, the
Conditioner normalises every row to median 1, so the noise floor is ~1):

* **veto**: the generated spectrogram ``G`` has an 8-connected cluster of at
  least the veto's ``min_area`` pixels above its SNR^2 threshold (the operating
  point calibrated on glitch-free validation time, :mod:`.operating_point`).
  The auxiliary channels predict a glitch in strain.  Each cluster carries its
  false-alarm probability: the fraction of glitch-free time a veto at the
  cluster's peak SNR^2 would remove.
* **predicted glitch** ``P = max(G - floor(G), 0)``, ``floor`` = the per-row
  median of ``G`` over the window: what the model adds above its own noise
  floor.  Subtracting ``G`` itself would also remove the noise floor.
* **residual** ``R - P`` (signed) and **cleaned** spectrogram
  ``max(R - P, 0)``, ``R`` the real strain spectrogram.
* **cleaned flag**: ``|R - P|`` has no cluster of the denoise ``min_area`` above the
  denoise threshold (an over-subtraction spoils the data as much as a left-over glitch).
* residual area: pixels with ``|R - P|`` above threshold, and the same in
  Hz*s (row bandwidth x bin width).

Clusters carry GPS time and frequency of their peak, their SNR^2 and area, and
their time extent, so veto segments come straight from them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor

from glitchflow.models.clusters import cluster_areas
from glitchflow.models.operating_point import OperatingPoint


@dataclass
class Cluster:
    """One cluster above threshold: peak time (GPS s), frequency (Hz), SNR^2, area, and
    its false-alarm probability (None when the model's veto is not calibrated)."""

    gps_time: float
    frequency: float
    snr2: float
    area_pixels: int
    gps_start: float
    gps_end: float
    f_low: float
    f_high: float
    fap: float | None = None


@dataclass
class WindowDecision:
    """Veto and denoise outcome for one window ``[gps_start, gps_end)``."""

    gps_start: float
    gps_end: float
    veto: bool
    cleaned: bool
    max_generated_snr2: float
    max_real_snr2: float
    max_residual_snr2: float
    residual_area_pixels: int
    residual_area_hz_s: float
    clusters: list[Cluster] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def row_bandwidths(frequencies: np.ndarray) -> np.ndarray:
    """Bandwidth (Hz) of each row of a log-spaced frequency grid (geometric edges)."""
    f = np.asarray(frequencies, dtype=float)
    if len(f) == 1:
        return np.ones(1)
    mid = np.sqrt(f[1:] * f[:-1])
    lo = np.concatenate([[f[0] ** 2 / mid[0]], mid])
    hi = np.concatenate([mid, [f[-1] ** 2 / mid[-1]]])
    return hi - lo


def predicted_glitch(generated: Tensor) -> Tensor:
    """``max(G - median_t(G), 0)`` per row: the model's glitch power above its floor."""
    floor = generated.median(dim=-1, keepdim=True).values
    return torch.clamp(generated - floor, min=0.0)


def residual(real: Tensor, generated: Tensor) -> Tensor:
    """Signed residual ``real - predicted_glitch(generated)`` (SNR^2)."""
    return real - predicted_glitch(generated)


def find_clusters(
    spec: Tensor,
    snr2_threshold: float,
    min_area: int,
    gps_start: np.ndarray,
    time_step: float,
    frequencies: np.ndarray,
) -> list[list[Cluster]]:
    """Clusters of ``min_area`` pixels or more above threshold, per sample.

    ``spec`` (batch, rows, bins); ``gps_start`` (batch,) GPS of bin 0's start;
    ``frequencies`` (rows,) Hz.
    """
    labels, area = cluster_areas(spec, snr2_threshold)
    labels, area, values = labels.cpu().numpy(), area.cpu().numpy(), spec.cpu().numpy()
    out: list[list[Cluster]] = []
    for b in range(spec.shape[0]):
        found = []
        keep = area[b] >= min_area
        for lab in np.unique(labels[b][keep]):
            rows, cols = np.nonzero(labels[b] == lab)
            k = int(np.argmax(values[b][rows, cols]))
            t0 = float(gps_start[b])
            found.append(
                Cluster(
                    gps_time=t0 + (cols[k] + 0.5) * time_step,
                    frequency=float(frequencies[rows[k]]),
                    snr2=float(values[b][rows[k], cols[k]]),
                    area_pixels=len(rows),
                    gps_start=t0 + cols.min() * time_step,
                    gps_end=t0 + (cols.max() + 1) * time_step,
                    f_low=float(frequencies[rows.min()]),
                    f_high=float(frequencies[rows.max()]),
                )
            )
        found.sort(key=lambda c: c.gps_time)
        out.append(found)
    return out


def decide(
    real: Tensor | None,
    generated: Tensor,
    gps_start: np.ndarray,
    time_step: float,
    frequencies: np.ndarray,
    point: OperatingPoint,
) -> list[WindowDecision]:
    """Decisions for a batch of windows at the operating ``point``.

    ``real`` and ``generated`` (batch, rows, bins) SNR^2 on the same rows and
    bins; ``real`` may be None (veto only: no strain given), then the denoise
    fields are NaN / False.  ``gps_start`` (batch,) is the GPS start of bin 0.
    """
    gps_start = np.asarray(gps_start, dtype=float).reshape(-1)
    n_bins = generated.shape[-1]
    clusters = find_clusters(
        generated, point.veto_snr2, point.veto_min_area, gps_start, time_step, frequencies
    )
    for found in clusters:
        for c in found:
            c.fap = point.fap(c.snr2)
    max_gen = generated.flatten(1).amax(1)
    if real is not None:
        resid = residual(real, generated).abs()
        _, area = cluster_areas(resid, point.denoise_snr2)
        resid_cluster = (area >= point.denoise_min_area).flatten(1).any(1)
        above = resid > point.denoise_snr2
        pixels = above.flatten(1).sum(1)
        band = torch.as_tensor(row_bandwidths(frequencies), dtype=torch.float32)
        hz_s = (above.float() * band[None, :, None]).flatten(1).sum(1) * time_step
        max_resid = resid.flatten(1).amax(1)
        max_real = real.flatten(1).amax(1)
    decisions = []
    for b in range(generated.shape[0]):
        has_real = real is not None
        decisions.append(
            WindowDecision(
                gps_start=float(gps_start[b]),
                gps_end=float(gps_start[b] + n_bins * time_step),
                veto=bool(clusters[b]),
                cleaned=bool(~resid_cluster[b]) if has_real else False,
                max_generated_snr2=float(max_gen[b]),
                max_real_snr2=float(max_real[b]) if has_real else float("nan"),
                max_residual_snr2=float(max_resid[b]) if has_real else float("nan"),
                residual_area_pixels=int(pixels[b]) if has_real else 0,
                residual_area_hz_s=float(hz_s[b]) if has_real else 0.0,
                clusters=clusters[b],
            )
        )
    return decisions
