"""Scattered-light witnesses in the subtraction: their triggers become arch fits in strain.

A motion witness (a seismometer, a suspension sensor) triggers in pieces over
one motion transient, so its triggers closer than ``clean.arch.merge_gap`` are
one window; :class:`~glitchflow.models.scatter_arches.ArchSearch` fits an arch
in the whitened strain around it.  ``clean.arch_witnesses = "auto"`` lets
fit-clean choose these witnesses: on a few training blocks the loudest
windows of each witness are fitted both ways (the linear coupling's fit and
the arch's), and a witness couples as arches when the arch explains at least
:data:`ARCH_POWER_RATIO` times the strain power, at ``clean.arch.min_snr`` or
more (median over its probed windows).

Ray-free, like :mod:`glitchflow.pipelines.clean_block`: times in GPS seconds,
arrays at the Conditioner's analysis rate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from glitchflow.models.scatter_arches import ArchFit, ArchSearch
from glitchflow.models.subtraction import segment_at
from glitchflow.signal.whitening import whitening_filter

log = logging.getLogger(__name__)

#: an arch witness's arches explain at least this many times the linear fit's SNR^2
ARCH_POWER_RATIO = 2.0
#: probed windows a witness needs before auto chooses arches for it
MIN_PROBES = 3


@dataclass
class ArchWindow:
    """Triggers of one witness merged over a motion transient: GPS ``[start, end]``, the
    loudest trigger's ``time``, ``frequency`` (Hz) and ``snr2``."""

    channel: str
    start: float
    end: float
    time: float
    frequency: float
    snr2: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def arch_windows(triggers, channel: str, gap: float) -> list[ArchWindow]:
    """The triggers of ``channel`` (time-ordered) merged where less than ``gap`` s apart."""
    out: list[ArchWindow] = []
    for t in triggers:
        if t.channel != channel:
            continue
        lo, hi = t.time - t.duration / 2, t.time + t.duration / 2
        if out and lo - out[-1].end < gap:
            w = out[-1]
            w.end = max(w.end, hi)
            if t.snr2 > w.snr2:
                w.time, w.frequency, w.snr2 = t.time, t.frequency, t.snr2
        else:
            out.append(ArchWindow(channel, lo, hi, t.time, t.frequency, t.snr2))
    return out


def block_fir(block) -> np.ndarray:
    """The whitening FIR ``(ntaps,)`` the block's data went through."""
    psd = block.psd.double()[None, None]
    fir = whitening_filter(
        psd, block.psd_df, block.n_input, block.sample_rate, block.filter_duration, block.highpass
    )
    return fir[0, 0].numpy()


def fit_window(search: ArchSearch, block, window: ArchWindow, y_full: np.ndarray, fir) -> tuple:
    """Fit an arch over ``window`` in ``y_full`` (the block's whitened strain, earlier fits
    removed): ``(first sample, ArchFit)``, the fit covering samples from there on."""
    fs = block.sample_rate
    factor = round(fs / search.search_rate)
    n = round(search.segment((window.start, window.end)) * fs) // factor * factor
    start = round(((window.start + window.end) / 2 - block.t0) * fs) - n // 2
    y = segment_at(y_full, start, n)
    s0 = block.t0 + start / fs
    return start, search(y, fs, fir, (window.start - s0, window.end - s0))


def arch_row(window: ArchWindow, fit: ArchFit, min_snr: float) -> dict:
    """The glitches.csv row of an arch fit (gain/quadrature: the in-phase and quadrature
    fringe coefficients)."""
    return {
        "channel": window.channel,
        "gps": round(window.time, 4),
        "frequency": round(fit.params.peak_frequency, 2),
        "witness_snr2": round(window.snr2, 2),
        "duration": round(window.duration, 4),
        "fit_snr": round(fit.snr, 3),
        "gain": fit.coefficients[0],
        "quadrature": fit.coefficients[1],
        "subtracted": fit.snr >= min_snr,
        "coupling": "arch",
    }


def choose_arches(probes: list[dict], witnesses: list[str], min_snr: float) -> dict:
    """Per witness, the probe medians and whether it couples as arches."""
    out = {}
    for w in witnesses:
        mine = [p for p in probes if p["channel"] == w]
        lin = float(np.median([p["linear_snr"] ** 2 for p in mine])) if mine else 0.0
        arch = float(np.median([p["arch_snr"] ** 2 for p in mine])) if mine else 0.0
        chosen = len(mine) >= MIN_PROBES and arch >= ARCH_POWER_RATIO * lin and arch >= min_snr**2
        out[w] = {
            "probes": len(mine),
            "median_linear_snr2": round(lin, 2),
            "median_arch_snr2": round(arch, 2),
            "arch": bool(chosen),
        }
        log.info("fit-clean: %s couples as %s (%s)", w, "arches" if chosen else "a filter",
                 out[w])  # fmt: skip
    return out
