"""Condition one frame's span (padded with its neighbours) and cut it into windows.

Window starts lie on a global GPS grid (multiples of ``stride``), so every
frame knows its own windows without looking at the others: frame ``[a, b)``
owns the windows starting in ``[a, b)``.  The data read for them reach
``edge`` seconds before the first start and after the last end, taken from
the neighbouring frames, so frame boundaries leave no edge artefacts.

Nothing is dropped silently: each frame yields a :class:`FrameReport` that
lists its windows written, windows skipped with the reason (gap, unreadable
data) and channels zeroed for bad data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from glitchflow.io.frame_memory import FrameMemory
from glitchflow.io.frames import FrameFile
from glitchflow.io.span import Segment, read_padded
from glitchflow.signal.conditioner import Conditioner

log = logging.getLogger(__name__)


@dataclass
class FrameReport:
    """What became of one frame: windows written and skipped, problems found."""

    frame: str
    gps_start: float
    gps_end: float
    windows_expected: int = 0
    windows_written: int = 0
    skipped: list[dict] = field(default_factory=list)  # {"gps_start", "reason"}
    bad_channels: dict[str, str] = field(default_factory=dict)  # channel -> reason
    errors: list[str] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)  # channel -> sample rate (Hz)
    worker: str = ""  # where it ran (set by the distributed caller)

    @property
    def failed(self) -> bool:
        return self.windows_written == 0 and self.windows_expected > 0

    def to_dict(self) -> dict:
        return asdict(self)


def window_starts(start: float, end: float, stride: float) -> np.ndarray:
    """Grid starts ``k * stride`` (GPS s) in ``[start, end)``."""
    first = math.ceil(start / stride - 1e-6)
    last = math.ceil(end / stride - 1e-6)
    return np.arange(first, last) * stride


def read_grid_unit(time_step: float) -> int:
    """Seconds between read starts on which every integer-rate channel and every output bin
    has a sample: the least common multiple of 1 s and the bin width (3 s for 3/128 s)."""
    return Fraction(time_step).limit_denominator(1 << 20).numerator


@dataclass(frozen=True)
class ReadGrid:
    """Where the data of a window are read from and where the window sits in them: the
    one arithmetic of preprocess, infer, online and the endpoint, so that all of them
    condition the same samples for a window and give it the same decision.

    A window starting at GPS ``s`` is conditioned from data read from
    :meth:`read_start` (the ``unit`` grid time at or before ``s - edge``, so that every
    integer-rate channel has a sample there and the output bins of different reads line
    up) to ``s + window + edge``; in that read its first output bin is
    :meth:`first_bin`.  ``edge``: the Conditioner's edge (s); ``time_step``: output bin
    width (s); ``unit``: :func:`read_grid_unit` (s)."""

    edge: float
    time_step: float
    unit: int

    @classmethod
    def of(cls, conditioner: Conditioner) -> ReadGrid:
        step = conditioner.time_step
        return cls(conditioner.edge_seconds, step, read_grid_unit(step))

    def read_start(self, start: float) -> float:
        """The read start (GPS s) for a window starting at ``start``."""
        return math.floor((start - self.edge) / self.unit + 1e-9) * self.unit

    def first_grid_time(self, t: float) -> float:
        """The first ``unit`` grid time at or after ``t`` (GPS s)."""
        return math.ceil(t / self.unit - 1e-9) * self.unit

    def first_bin(self, start: float, read_start: float) -> int:
        """Index of the window's first output bin in data read from ``read_start``."""
        return round((start - read_start - self.edge) / self.time_step)

    @property
    def pad_before(self) -> float:
        """Seconds read before a window that starts on the ``unit`` grid."""
        return math.ceil(self.edge / self.unit - 1e-9) * self.unit


class FrameWindowCutter:
    """Turns a frame into window rows with one shared :class:`Conditioner`.

    ``frames`` are all frames of the data set (neighbours supply padding);
    ``channels`` the channels in output order, strain first by convention.  The cutter
    remembers the last frames it decoded (``reader``, by default a new :class:`~glitchflow.
    io.frame_memory.FrameMemory`), so consecutive blocks given in time order decode each
    frame once.
    """

    def __init__(
        self,
        conditioner: Conditioner,
        frames: Sequence[FrameFile],
        channels: Sequence[str],
        window: float,
        stride: float,
        device: str = "cpu",
        reader: FrameMemory | None = None,
    ) -> None:
        self.cond = conditioner
        self.frames = sorted(frames)
        self.channels = list(channels)
        self.window = window
        self.stride = stride
        self.device = device
        self.bins_per_window = round(window / conditioner.time_step)
        self.grid = ReadGrid.of(conditioner)
        self.reader = FrameMemory() if reader is None else reader

    def process(self, block: Sequence[FrameFile]) -> tuple[list[dict], list[FrameReport]]:
        """Window rows for a run of consecutive frames, and one report per frame.

        The block is read once, padded with ``edge`` seconds from the neighbouring
        frames; a neighbour that is also the previous block's frame, or its neighbour,
        is not decoded again.
        """
        block = sorted(block)
        reports = {f.path: FrameReport(f.path, f.start, f.end) for f in block}
        owner = {}
        for f in block:
            for t in window_starts(f.start, f.end, self.stride):
                owner[float(t)] = f.path
        starts = np.array(sorted(owner))
        for t in starts:
            reports[owner[t]].windows_expected += 1
        if not len(starts):
            return [], list(reports.values())
        edge = self.cond.edge_seconds
        lo = self.grid.read_start(starts[0])
        hi = math.ceil(starts[-1] + self.window + edge - 1e-9)
        self.reader.retain(lo, hi)  # the previous block's frames that this one needs
        got = read_padded(block, self.frames, self.channels, lo, hi, self.channels[:1], self.reader)
        span, channels = got.span, got.channels
        bad = {name: reason for name, (_, reason) in got.bad.items()}
        for name, (path, reason) in got.bad.items():
            reports[path].bad_channels[name] = reason
        for path, reason in got.errors.items():
            reports[path].errors.append(reason)
        rows: list[dict] = []
        done = np.zeros(len(starts), dtype=bool)
        for seg in span.segments:
            for report in reports.values():
                report.rates.update({c: float(r) for c, r in seg.rates.items()})
            new_rows, covered = self._windows(seg, starts, channels, bad, (lo, hi))
            rows.extend(new_rows)
            done |= covered
        for row in rows:
            report = reports[owner[row["gps_start"]]]
            report.windows_written += 1
            row["frame"] = Path(report.frame).name
        failures = "; ".join(str(e) for e in span.failures)
        for t, ok in zip(starts, done):
            if not ok:
                reason = (
                    f"unreadable data: {failures}"
                    if failures
                    else "gap: no data for the window plus its padding"
                )
                reports[owner[t]].skipped.append({"gps_start": float(t), "reason": reason})
        return rows, list(reports.values())

    def cut(self, seg: Segment, starts) -> list[dict]:
        """Window rows for ``starts`` (GPS s) from data already in memory: ``seg`` holds
        every channel of the cutter, padding included (benchmarks on machines without a
        frame library, callers that hold the data)."""
        missing = [c for c in self.channels if c not in seg.data]
        if missing:
            raise ValueError(f"segment [{seg.start}, {seg.end}) lacks channels {missing}")
        starts = np.asarray(starts, dtype=float)
        rows, _ = self._windows(seg, starts, self.channels, {}, (seg.start, seg.end))
        return rows

    def _windows(self, seg: Segment, starts, channels, bad: dict[str, str], wanted):
        """Condition the part of ``seg`` that covers whole windows with their padding and
        cut it; returns the rows and a mask of the windows covered."""
        edge = self.cond.edge_seconds
        grid0 = self.grid.first_grid_time(seg.start)
        fits = (starts - edge >= grid0 - 1e-6) & (starts + self.window + edge <= seg.end + 1e-6)
        covered = np.zeros(len(starts), dtype=bool)
        if not fits.any():
            return [], covered
        first, last = starts[fits][0], starts[fits][-1]
        t0 = self.grid.read_start(first)
        t1 = last + self.window + edge
        arrays, rates = [], []
        for name in channels:
            rate = seg.rates[name]
            a = round((t0 - seg.start) * rate)
            b = a + math.ceil((t1 - t0) * rate - 1e-6)
            arrays.append(torch.from_numpy(np.ascontiguousarray(seg.data[name][a:b]))[None])
            rates.append(rate)
        with torch.no_grad():
            x = self.cond.stack([a.to(self.device) for a in arrays], rates)
            spec = self.cond(x, rates)[0].cpu().numpy()  # (channel, freq, bins)
        full = np.zeros((len(self.channels), *spec.shape[1:]), dtype=np.float32)
        for i, name in enumerate(channels):
            full[self.channels.index(name)] = spec[i]
        bad_names = ";".join(sorted(bad))
        # a segment cut short by a gap: flag the windows within one window of that end
        gap_before = seg.start > wanted[0] + 1e-6
        gap_after = seg.end < wanted[1] - 1e-6
        rows = []
        for k in np.flatnonzero(fits):
            b0 = self.grid.first_bin(starts[k], t0)
            tile = full[:, :, b0 : b0 + self.bins_per_window]
            if tile.shape[-1] < self.bins_per_window:
                continue
            covered[k] = True
            rows.append(
                {
                    "gps_start": float(starts[k]),
                    "gps_end": float(starts[k] + self.window),
                    "channels": list(self.channels),
                    "spectrogram": np.ascontiguousarray(tile),
                    "max_snr2": tile.reshape(len(self.channels), -1).max(axis=1),
                    "gap": bool(
                        (gap_before and starts[k] - self.window < seg.start + edge)
                        or (gap_after and starts[k] + 2 * self.window > seg.end - edge)
                    ),
                    "bad": bool(bad_names),
                    "bad_channels": bad_names,
                }
            )
        return rows, covered


def drop_bad_windows(windows: list[dict], reports: Sequence[FrameReport]) -> list[dict]:
    """Windows with every channel usable; the others are moved to their frame's report as
    skipped ("bad data in ...: no decision"), so nothing is decided on zeroed channels."""
    by_name = {Path(r.frame).name: r for r in reports}
    good = []
    for w in windows:
        if not w["bad"]:
            good.append(w)
            continue
        report = by_name[w["frame"]]
        report.windows_written -= 1
        report.skipped.append(
            {"gps_start": w["gps_start"], "reason": f"bad data in {w['bad_channels']}: no decision"}
        )
    return good
