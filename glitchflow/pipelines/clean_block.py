"""One block of frames through the subtraction: whiten, find witness triggers, fit, subtract.

Ray-free: :mod:`glitchflow.pipelines.clean` and :mod:`glitchflow.pipelines.clean_fit`
map these functions over blocks of frames.  A block is read with
:data:`PAD` seconds of its neighbours on each side, so the whitening filter's
edges and the subtraction segments of glitches near a frame boundary see
real data.

Times: ``WhitenedBlock.t0`` is the GPS time of the first whitened sample;
trigger times are GPS seconds; arrays are at the Conditioner's analysis rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from glitchflow.evaluate.triggers import tile_triggers
from glitchflow.io.frame_memory import FrameMemory
from glitchflow.io.frames import FrameFile, read_frame
from glitchflow.io.span import Segment, read_padded
from glitchflow.models.scatter_arches import arch_search
from glitchflow.models.subtraction import CouplingEquations, SubtractionModel, segment_at
from glitchflow.pipelines.clean_arches import (
    ArchWindow,
    arch_row,
    arch_windows,
    block_fir,
    fit_window,
)
from glitchflow.signal.conditioner import Conditioner
from glitchflow.signal.lines import spectral_lines
from glitchflow.signal.resample import resample
from glitchflow.signal.whitening import unwhiten

#: seconds of neighbouring data read around a block (whitening edge + segment + margin)
PAD = 4.0


@dataclass
class WitnessTrigger:
    """A witness channel's trigger: GPS ``time`` (s), ``duration`` (s), ``frequency`` (Hz),
    ``snr2`` (the loudest tile's SNR^2)."""

    channel: str
    time: float
    duration: float
    frequency: float
    snr2: float


@dataclass
class WhitenedBlock:
    """Strain and witnesses whitened by the one Conditioner over a contiguous segment."""

    t0: float
    sample_rate: float
    strain: np.ndarray  # (n,)
    witnesses: dict[str, np.ndarray]  # channel -> (n,)
    triggers: list[WitnessTrigger]
    psd: torch.Tensor  # (freq,) strain PSD at the analysis rate, on a psd_df grid
    psd_df: float
    n_input: int  # samples of the analysis-rate data that was whitened
    start: float  # GPS of the first analysis-rate input sample
    filter_duration: float  # s, of the whitening FIR
    highpass: float | None
    raw_strain: np.ndarray = field(repr=False, default=None)  # native-rate strain
    notches: dict[str, tuple] = field(default_factory=dict)  # witness -> lines (Hz) whitened out


def whiten_block(
    cond: Conditioner, seg: Segment, strain: str, witnesses: list[str], clean
) -> WhitenedBlock:
    """Whiten ``seg`` and list the triggers of each witness above ``clean.trigger_snr2``."""
    names = [strain, *witnesses]
    rates = [seg.rates[c] for c in names]
    x = cond.stack([torch.from_numpy(np.asarray(seg.data[c], float))[None] for c in names], rates)
    x = x.double()
    cfg = cond.signal.conditioning
    fs = cond.sample_rate
    white, psd = cond.whiten_with_psd(x, rates)
    white = white[0].double().numpy()
    df = 1.0 / cfg.fftlength
    notches = {w: spectral_lines(psd[0, 1 + i].numpy(), df) for i, w in enumerate(witnesses)}
    t0 = seg.start + (x.shape[-1] - white.shape[-1]) / 2 / fs
    triggers = []
    if witnesses:
        tiles = cond.tile_peaks(torch.from_numpy(white[None, 1:]), clean.trigger_snr2, rates[1:])[0]
        for name, found in zip(witnesses, tiles):
            # tile times count from the first sample given to the Conditioner
            trig = tile_triggers(found, seg.start, clean.cluster_window)
            triggers += [
                WitnessTrigger(name, float(t), float(d), float(f), float(s))
                for t, d, f, s in zip(trig.time, trig.duration, trig.frequency, trig.snr2)
            ]
    triggers.sort(key=lambda tr: tr.time)
    return WhitenedBlock(
        t0,
        fs,
        white[0],
        dict(zip(witnesses, white[1:])),
        triggers,
        psd[0, 0],
        1.0 / cfg.fftlength,
        x.shape[-1],
        seg.start,
        cfg.filter_duration,
        cfg.highpass,
        np.asarray(seg.data[strain], float),
        notches,
    )


def _segment_start(block: WhitenedBlock, time: float, n: int) -> int:
    return round((time - block.t0) * block.sample_rate) - n // 2


def accumulate(empty, localiser, block: WhitenedBlock, keep=None) -> dict[str, CouplingEquations]:
    """Coupling sums of each witness from the block's triggers; ``empty()`` makes a fresh
    :class:`CouplingEquations`.  ``keep(trigger) -> bool`` restricts the triggers (the
    fit's second pass)."""
    eqs: dict[str, CouplingEquations] = {}
    n = localiser.n
    for trig in block.triggers:
        if keep is not None and not keep(trig):
            continue
        start = _segment_start(block, trig.time, n)
        u = segment_at(block.witnesses[trig.channel], start, n)
        m = localiser(u, trig.duration, trig.frequency, block.notches.get(trig.channel, ()))
        y = segment_at(block.strain, start, n)
        if trig.channel not in eqs:
            eqs[trig.channel] = empty()
        eqs[trig.channel].add(m, y)
    return eqs


def subtract_block(
    model: SubtractionModel, block: WhitenedBlock, shapes: list | None = None
) -> tuple[np.ndarray, list[dict]]:
    """Whitened subtracted signal ``(n,)`` and one row per trigger (fit SNR, subtracted or not).

    Triggers of the model's arch witnesses are merged into windows and fitted as
    scattered-light arches (:mod:`glitchflow.pipelines.clean_arches`); the others
    through their coupling filters.  Both are handled in time order against strain
    with the earlier fits already removed, so overlapping glitches are not
    subtracted twice.  ``shapes``, when given, receives ``(channel, fit SNR, relative
    coefficients, their noise variances)`` of each filter fit (fit-clean's prior)."""
    s = model.settings
    search = arch_search(s)
    linear = [
        t for t in block.triggers if t.channel in model.firs and t.channel not in model.arches
    ]
    windows = [
        w for c in model.arches for w in arch_windows(block.triggers, c, s["arch"]["merge_gap"])
    ]
    jobs = sorted(linear + windows, key=lambda j: j.time)
    sub = np.zeros_like(block.strain)
    rows, fir = [], None
    for job in jobs:
        if isinstance(job, ArchWindow):
            fir = block_fir(block) if fir is None else fir
            start, fit = fit_window(search, block, job, block.strain - sub, fir)
            row, fitted = arch_row(job, fit, search.min_snr), fit.fitted
        else:
            start, row, fitted = linear_fit(model, block, job, sub, shapes)
        if row["subtracted"]:
            a, b = max(start, 0), min(start + len(fitted), len(sub))
            sub[a:b] += fitted[a - start : b - start]
        rows.append(row)
    return sub, rows


def linear_fit(model: SubtractionModel, block: WhitenedBlock, trig, sub=None, shapes=None):
    """``(first sample, row, fitted (L,))`` of one trigger (or arch window) through its
    coupling filter, against strain minus ``sub`` (the earlier fits; None: raw strain)."""
    loc = model.localiser
    n = loc.n
    start = _segment_start(block, trig.time, n)
    u = segment_at(block.witnesses[trig.channel], start, n)
    m = loc(u, trig.duration, trig.frequency, block.notches.get(trig.channel, ()))
    prediction = model.predict(trig.channel, m)
    row = {
        "channel": trig.channel,
        "gps": round(trig.time, 4),
        "frequency": round(trig.frequency, 2),
        "witness_snr2": round(trig.snr2, 2),
        "duration": round(trig.duration, 4),
        "fit_snr": 0.0,
        "gain": 0.0,
        "quadrature": 0.0,
        "subtracted": False,
        "coupling": "linear",
    }
    fitted = np.zeros(n)
    if float(prediction @ prediction) > 0:
        y = segment_at(block.strain, start, n)
        if sub is not None:
            y = y - segment_at(sub, start, n)
        fit = model.fit(prediction, y, trig.frequency, trig.channel)
        fitted = fit.fitted
        if shapes is not None:
            shapes.append((trig.channel, fit.snr, fit.relative, fit.relative_var))
        row |= {
            "fit_snr": round(fit.snr, 3),
            "gain": fit.coefficients[0],
            "quadrature": fit.coefficients[1],
            "subtracted": fit.snr >= model.settings["min_fit_snr"],
        }
    return start, row, fitted


def probe_block(model: SubtractionModel, block: WhitenedBlock, per_witness: int) -> list[dict]:
    """Fit the ``per_witness`` loudest windows of each witness (below the arch search's
    highest peak frequency) both ways on the raw strain: ``{channel, linear_snr,
    arch_snr}`` per window (fit-clean's automatic choice of arch witnesses)."""
    search = arch_search(model.settings)
    gap = model.settings["arch"]["merge_gap"]
    fir, out = None, []
    for channel in model.channels:
        windows = arch_windows(block.triggers, channel, gap)
        windows = [w for w in windows if w.frequency <= search.peak_frequency[1]]
        for w in sorted(windows, key=lambda w: -w.snr2)[:per_witness]:
            fir = block_fir(block) if fir is None else fir
            _, row, _ = linear_fit(model, block, w)
            _, fit = fit_window(search, block, w, block.strain, fir)
            out.append({"channel": channel, "linear_snr": row["fit_snr"], "arch_snr": fit.snr})
    return out


def subtracted_strain(
    block: WhitenedBlock, sub_white: np.ndarray, strain_rate: float, band: tuple[float, float]
) -> np.ndarray:
    """The whitened subtraction in strain units at ``strain_rate``, aligned with
    ``block.raw_strain`` (zero outside the whitened range)."""
    fs = block.sample_rate
    if not np.any(sub_white):
        return np.zeros_like(block.raw_strain)
    raw = unwhiten(
        torch.from_numpy(sub_white),
        block.psd,
        block.psd_df,
        block.n_input,
        fs,
        block.filter_duration,
        band,
        block.highpass,
    )
    lead = round((block.t0 - block.start) * fs)
    full = np.zeros(block.n_input)
    full[lead : lead + raw.shape[-1]] = raw.numpy()
    return resample_support(full, fs, strain_rate, len(block.raw_strain))


def resample_support(
    x: np.ndarray, rate_in: float, rate_out: float, n_out: int, margin: float = 0.25
) -> np.ndarray:
    """``x`` ``(n,)`` resampled to ``rate_out`` Hz, ``(n_out,)``, computed only where ``x``
    carries signal (above 1e-12 of its peak, plus ``margin`` s) and zero elsewhere.

    The subtracted signal of a block is a few glitches' worth of seconds in a
    block of minutes; the resampling kernel is short, so the chunks give the samples
    a whole-block resampling would (to its rounding) at a fraction of the cost."""
    out = np.zeros(n_out)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0.0:
        return out
    step = round(rate_in / math.gcd(round(rate_in), round(rate_out)))  # aligned chunk starts
    ratio = rate_out / rate_in
    live = np.flatnonzero(np.abs(x) > 1e-12 * peak)
    pad = round(margin * rate_in)
    starts, ends = [live[0]], [live[0]]
    for k in live:  # runs of signal closer than two margins are one chunk
        if k - ends[-1] > 2 * pad:
            starts.append(k)
            ends.append(k)
        ends[-1] = k
    for a, b in zip(starts, ends):
        a = max(0, (a - pad) // step * step)
        b = min(len(x), b + pad + 1)
        up = resample(torch.from_numpy(x[a:b]), rate_in, rate_out).numpy()
        first = round(a * ratio)
        k = min(len(up), n_out - first)
        if k > 0:
            out[first : first + k] = up[:k]
    return out


class Settings:
    """A ``clean`` settings dict with attribute access (what :func:`whiten_block` reads)."""

    def __init__(self, settings: dict) -> None:
        self.__dict__.update(settings)


def clean_segment(
    model: SubtractionModel, cond: Conditioner, seg: Segment, own: tuple[float, float]
) -> tuple[np.ndarray, list[dict]]:
    """Subtract the witnessed glitches of ``seg`` whose triggers lie in ``own`` (GPS s).

    Returns the subtracted signal in strain units at the strain's own rate, aligned
    with ``seg.data[strain]`` (cleaned = raw - subtracted), and one row per trigger.
    Witnesses missing from ``seg`` are skipped."""
    s = model.settings
    strain = model.strain_channel
    witnesses = [c for c in model.channels if c in seg.data]
    block = whiten_block(cond, seg, strain, witnesses, Settings(s))
    block = owned(block, own[0], own[1], s["segment"])
    sub_white, fits = subtract_block(model, block)
    return subtracted_strain(block, sub_white, seg.rates[strain], tuple(s["band"])), fits


@dataclass
class BlockRead:
    """A block's contiguous pieces (padded by :data:`PAD`), the witnesses usable in all of
    them, and what went wrong: ``bad[channel] = (frame, reason)``, ``errors[frame] = reason``."""

    segments: list[Segment]
    witnesses: list[str]
    bad: dict[str, tuple[str, str]]
    errors: dict[str, str]
    start: float  # GPS span the block owns
    end: float


def read_block(
    paths: list[str],
    frames: list[tuple[str, float, float]],
    strain: str,
    witnesses: list[str],
    memory: FrameMemory | None = None,
) -> BlockRead:
    """Read the block of frame ``paths`` with :data:`PAD` s from its neighbours in ``frames``
    (``(path, gps_start, duration)`` of the whole span); strain is required.  ``memory``
    (kept across consecutive blocks) decodes a boundary frame once for both blocks."""
    every = [FrameFile(start, duration, path) for path, start, duration in frames]
    mine = [f for f in every if f.path in set(paths)]
    start, end = min(f.start for f in mine), max(f.end for f in mine)
    reader = read_frame
    if memory is not None:
        memory.retain(start - PAD, end + PAD)
        reader = memory
    read = read_padded(mine, every, [strain, *witnesses], start - PAD, end + PAD, [strain], reader)
    usable = [c for c in witnesses if c in read.channels]
    return BlockRead(read.span.segments, usable, read.bad, read.errors, start, end)


def owned(block: WhitenedBlock, start: float, end: float, segment: float) -> WhitenedBlock:
    """Keep the triggers the block owns (``[start, end)``) whose segment lies in whitened data."""
    last = block.t0 + len(block.strain) / block.sample_rate
    block.triggers = [
        t
        for t in block.triggers
        if start <= t.time < end
        and t.time - segment / 2 >= block.t0
        and t.time + segment / 2 <= last
    ]
    return block
