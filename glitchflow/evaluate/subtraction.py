"""Subtraction quality against the twin's truth frames (``report.json`` key ``subtraction``).

Inputs: the twin's companion truth frames (the strain the twin injected from
glitches, :func:`~glitchflow.synth.twin.truth_channels`) and the frames of
``glitchflow clean`` (cleaned strain and the subtracted signal; raw strain is
their sum).  Per frame, with :data:`PAD` s of neighbouring data, everything is
resampled to the analysis rate and whitened with the *raw* strain's PSD, so a
signal's whitened norm is its matched-filter SNR.

Per witnessed glitch (strain SNR >= ``min_snr``), in ``[peak - duration/2 -
MARGIN, peak + duration/2 + MARGIN]``:

- ``injected_snr``: whitened norm of the truth (the witnessed families' strain);
- ``residual_snr``: whitened norm of cleaned minus glitch-free strain
  (``= truth_witnessed - subtracted``);
- ``reduction = 1 - residual_snr / injected_snr``;
- ``raw_max_snr2`` / ``cleaned_max_snr2``: the loudest tile of the one
  Conditioner's Q-transform (tiles at their own resolution) of raw and of
  cleaned strain within the glitch's window; the glitch counts as cleaned in
  the spectrogram sense (the seed's "cleaned" figure, now recomputed on cleaned
  strain) when ``cleaned_max_snr2`` is below ``spectrogram_snr2``.

Glitch-free time (no truth glitch of any family within 1 s) gives the ratio of
cleaned to raw PSD in 1/3-octave bands over 20-1000 Hz: a subtraction that adds
or removes noise moves it away from 1.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from glitchflow.io.frames import find_frames
from glitchflow.io.span import read_span
from glitchflow.io.truth import read_truth
from glitchflow.models.subtraction import SUBTRACTED
from glitchflow.signal.conditioner import Conditioner
from glitchflow.signal.resample import resample
from glitchflow.signal.whitening import welch_psd, whiten_segment
from glitchflow.synth.twin import TRUTH_DIR, WITNESSED_FAMILIES, truth_channels

log = logging.getLogger(__name__)

PAD = 3.0
#: seconds scored beyond each end of a glitch (the couplings ring; the residual is
#: noise-free, so a wider window costs nothing)
MARGIN = 0.3
#: SNR below which a glitch counts as removed
REMOVED_SNR = 5.0
#: 1/3-octave bands over 20-1000 Hz for the glitch-free PSD ratio
BANDS = [(f / 2 ** (1 / 6), f * 2 ** (1 / 6)) for f in 20.0 * 2 ** (np.arange(0, 17) / 3)]


def _whiten_with(strain: np.ndarray, others: list[np.ndarray], fs: float, cond) -> np.ndarray:
    """Whiten ``[strain, *others]`` (analysis rate) with strain's PSD -> ``(1 + k, n')``."""
    x = torch.from_numpy(np.stack([strain, *others]))[None]
    psd = welch_psd(x[:, :1], fs, cond.fftlength, cond.overlap, cond.average)
    psd = psd.expand(1, x.shape[1], psd.shape[-1])
    return whiten_segment(x, psd, 1.0 / cond.fftlength, fs, cond.filter_duration, cond.highpass)[
        0
    ].numpy()


def _welch_sum(x: np.ndarray, fs: float, chunk: float) -> np.ndarray:
    n = round(chunk * fs)
    w = np.hanning(n)
    return np.abs(np.fft.rfft(x[:n] * w)) ** 2


def evaluate_subtraction(
    truth_dir: str | Path,
    clean_dir: str | Path,
    strain: str,
    signal,
    min_snr: float = 8.0,
    spectrogram_snr2: float = 16.0,
) -> dict:
    """Score a cleaned span against truth; returns the ``subtraction`` report section.

    ``truth_dir`` holds ``truth.csv`` and ``truth_frames/``; ``signal`` is the
    shared :class:`~glitchflow.config.SignalConfig` (analysis rate, whitening);
    ``spectrogram_snr2`` the tile SNR^2 below which a glitch is cleaned in the
    spectrogram.
    """

    truth_dir = Path(truth_dir)
    truth = read_truth(truth_dir / "truth.csv")
    names = truth_channels(signal.detector)
    detector = strain.split(":")[0]
    subtracted = f"{detector}:{SUBTRACTED}"
    clean = find_frames(Path(clean_dir) / "frames").frames
    truth_frames = find_frames(truth_dir / TRUTH_DIR).frames
    if not truth_frames:
        raise FileNotFoundError(
            f"{truth_dir / TRUTH_DIR}: no truth frames (made by glitchflow synth since the "
            "subtraction truth was added; regenerate the span)"
        )
    fs = float(signal.sample_rate)
    cond = Conditioner(signal)
    rows, psd_raw, psd_clean, frames_scored = [], 0.0, 0.0, 0
    for frame in clean:
        lo, hi = frame.start - PAD, frame.end + PAD
        got = [
            read_span(clean, [strain, subtracted], lo, hi),
            read_span(truth_frames, [names["witnessed"], names["all"]], lo, hi),
        ]
        if any(len(g.segments) != 1 for g in got):
            log.warning("subtraction: %s has gaps or failures around it; not scored", frame.path)
            continue
        seg_clean, seg_truth = (g.segments[0] for g in got)
        if abs(seg_clean.start - seg_truth.start) > 1e-6 or seg_clean.end != seg_truth.end:
            log.warning("subtraction: %s: truth covers another span; not scored", frame.path)
            continue
        rate = seg_clean.rates[strain]

        def down(x, rate=rate):
            return resample(torch.from_numpy(np.asarray(x, float)), rate, fs).numpy()

        s = down(seg_clean.data[subtracted])
        r = down(seg_clean.data[strain]) + s  # raw = cleaned + subtracted
        tw = down(seg_truth.data[names["witnessed"]])
        white = _whiten_with(r, [tw - s, tw, r - s], fs, signal.conditioning)
        t0 = seg_clean.start + signal.conditioning.filter_duration / 2
        mine = truth[(truth.gps_peak >= frame.start) & (truth.gps_peak < frame.end)]
        peaks = loudest_tiles(cond, white[[0, 3]], t0)
        rows += glitch_rows(mine, white, t0, fs, min_snr, peaks)
        raw, cleaned = glitch_free_psds(truth, frame.start, frame.end, white, t0, fs)
        psd_raw, psd_clean = psd_raw + raw, psd_clean + cleaned
        frames_scored += 1
    return summarise(pd.DataFrame(rows), psd_raw, psd_clean, fs, frames_scored, spectrogram_snr2)


def loudest_tiles(cond: Conditioner, white: np.ndarray, t0: float) -> list[np.ndarray]:
    """Q-transform tiles (SNR^2 >= 1, at their own resolution) of each whitened row of
    ``white`` ``(k, samples)`` starting at GPS ``t0``: per row ``(m, 2)`` [GPS s, SNR^2]."""
    found = cond.tile_peaks(torch.from_numpy(white[None]).float(), 1.0)[0]
    half_filter = cond.signal.conditioning.filter_duration / 2  # what whitening cut
    return [np.stack([t0 - half_filter + f[:, 0], f[:, 2]], axis=1) for f in found]


def _max_in(tiles: np.ndarray, lo: float, hi: float) -> float:
    inside = (tiles[:, 0] >= lo) & (tiles[:, 0] <= hi)
    return float(tiles[inside, 1].max()) if inside.any() else 0.0


def glitch_rows(
    glitches, white: np.ndarray, t0: float, fs: float, min_snr: float, peaks=None
) -> list[dict]:
    """One row per witnessed glitch of ``glitches`` (truth rows) with strain SNR >=
    ``min_snr``: injected SNR (whitened norm of the glitch alone) and residual SNR
    (whitened norm of cleaned minus glitch-free strain) over the glitch +- MARGIN s.
    ``white``: (4, samples) whitened [raw, residual, injected glitch, cleaned] from
    GPS ``t0`` at ``fs`` Hz; ``peaks``: :func:`loudest_tiles` of raw and cleaned, for
    the loudest tile of each within the glitch's window."""
    rows = []
    for g in glitches.itertuples():
        if g.family not in WITNESSED_FAMILIES or g.strain_snr < min_snr:
            continue
        half = g.duration / 2 + MARGIN
        a = round((g.gps_peak - half - t0) * fs)
        b = round((g.gps_peak + half - t0) * fs)
        if a < 0 or b > white.shape[-1]:
            log.warning("subtraction: glitch %d runs past the data; not scored", g.id)
            continue
        injected = float(np.linalg.norm(white[2, a:b]))
        residual = float(np.linalg.norm(white[1, a:b]))
        rows.append(
            {
                "id": int(g.id),
                "family": g.family,
                "gps_peak": g.gps_peak,
                "strain_snr": g.strain_snr,
                "injected_snr": round(injected, 3),
                "residual_snr": round(residual, 3),
                "reduction": round(1 - residual / max(injected, 1e-12), 4),
            }
        )
        if peaks is not None:
            lo, hi = g.gps_peak - g.duration / 2 - 0.1, g.gps_peak + g.duration / 2 + 0.1
            rows[-1]["raw_max_snr2"] = round(_max_in(peaks[0], lo, hi), 2)
            rows[-1]["cleaned_max_snr2"] = round(_max_in(peaks[1], lo, hi), 2)
    return rows


def glitch_free_psds(truth, start: float, end: float, white, t0: float, fs: float, chunk=2.0):
    """Summed Welch PSDs of raw and cleaned whitened strain (rows 0 and 3 of ``white``)
    over the ``chunk``-s stretches of [start, end) (GPS s) that no glitch of the truth
    comes within 1 s of (whitened, so flat near 1)."""
    psd_raw, psd_clean = 0.0, 0.0
    busy = truth[["gps_peak", "duration"]].to_numpy()
    for c0 in np.arange(start, end - chunk + 1e-9, chunk):
        near = np.abs(busy[:, 0] - (c0 + chunk / 2)) < chunk / 2 + busy[:, 1] / 2 + 1.0
        if near.any():
            continue
        a = round((c0 - t0) * fs)
        if a < 0 or a + round(chunk * fs) > white.shape[-1]:
            continue
        psd_raw = psd_raw + _welch_sum(white[0, a:], fs, chunk)
        psd_clean = psd_clean + _welch_sum(white[3, a:], fs, chunk)
    return psd_raw, psd_clean


def summarise(
    rows: pd.DataFrame,
    psd_raw,
    psd_clean,
    fs: float,
    frames_scored: int,
    spectrogram_snr2: float = 16.0,
) -> dict:
    """Per-family fractions and medians, and the glitch-free PSD ratio per band."""
    families = {}
    for family in WITNESSED_FAMILIES:
        part = rows[rows.family == family] if len(rows) else rows
        if len(part) == 0:
            families[family] = {"glitches": 0}
            continue
        families[family] = {
            "glitches": len(part),
            "fraction_below_snr5": round(float((part.residual_snr < REMOVED_SNR).mean()), 4),
            "median_reduction": round(float(part.reduction.median()), 4),
            "median_injected_snr": round(float(part.injected_snr.median()), 3),
            "median_residual_snr": round(float(part.residual_snr.median()), 3),
        }
        if "cleaned_max_snr2" in part:
            families[family]["spectrogram_cleaned_fraction"] = round(
                float((part.cleaned_max_snr2 < spectrogram_snr2).mean()), 4
            )
    bands = []
    if np.ndim(psd_raw) and np.sum(psd_raw) > 0:
        freqs = np.fft.rfftfreq(2 * (len(psd_raw) - 1), 1.0 / fs)
        for lo, hi in BANDS:
            inside = (freqs >= lo) & (freqs < hi)
            ratio = float(np.sum(psd_clean[inside]) / np.sum(psd_raw[inside]))
            bands.append({"low": round(lo, 2), "high": round(hi, 2), "ratio": round(ratio, 5)})
    deviation = max((abs(b["ratio"] - 1) for b in bands), default=None)
    return {
        "frames_scored": frames_scored,
        "families": families,
        "fraction_below_snr5": {
            f: v.get("fraction_below_snr5") for f, v in families.items() if v["glitches"]
        },
        "spectrogram_snr2": spectrogram_snr2,
        "spectrogram_cleaned_fraction": round(
            float((rows.cleaned_max_snr2 < spectrogram_snr2).mean()), 4
        )
        if "cleaned_max_snr2" in rows and len(rows)
        else None,
        "psd_ratio_bands": bands,
        "psd_ratio_max_deviation": None if deviation is None else round(deviation, 5),
        "glitches": rows.to_dict("records"),
    }
