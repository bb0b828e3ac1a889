"""Read a GPS span of several channels across frame boundaries, with gaps and failures.

A span read never raises for bad files: a frame that cannot be read becomes
a listed failure and a gap, and every readable frame still contributes.
Contiguous frames are stitched into :class:`Segment` objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from glitchflow.io.frames import FrameError, FrameFile, read_frame

log = logging.getLogger(__name__)

#: ``read_frame(frame, channels, start=None, end=None)`` or a reader called the same way
#: (:class:`~glitchflow.io.frame_memory.FrameMemory`)
FrameReader = Callable[..., dict[str, tuple[np.ndarray, float, float]]]


@dataclass
class Segment:
    """Contiguous data ``[start, end)`` (GPS s): ``data[name]`` samples at ``rates[name]`` Hz."""

    start: float
    end: float
    data: dict[str, np.ndarray]
    rates: dict[str, float]
    frames: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class SpanRead:
    """Result of :func:`read_span`: segments, gaps ``[(start, end)]`` (GPS s), failures."""

    segments: list[Segment]
    gaps: list[tuple[float, float]]
    failures: list[FrameError]

    @property
    def livetime(self) -> float:
        return float(sum(s.duration for s in self.segments))


def _crop(whole: dict, channels: Sequence[str], start: float, end: float) -> dict:
    out = {}
    for name in channels:
        data, rate, t0 = whole[name]
        a = max(0, round((start - t0) * rate))
        b = min(len(data), round((end - t0) * rate))
        out[name] = (data[a:b], rate, t0 + a / rate)
    return out


def read_span(
    frames: Sequence[FrameFile],
    channels: Sequence[str],
    start: float | None = None,
    end: float | None = None,
    preloaded: dict[str, dict] | None = None,
    reader: FrameReader = read_frame,
) -> SpanRead:
    """Read ``channels`` over GPS ``[start, end)`` from ``frames`` (sorted, non-overlapping).

    ``start``/``end`` default to the first frame's start and the last frame's end.
    Frames are joined when one starts where the previous ended; anything else is
    a gap.  A frame whose read fails (missing channel, corrupt, NaN/Inf) is a
    failure and leaves a gap.  ``preloaded`` maps a frame path to the result of
    :func:`~glitchflow.io.frames.read_frame` over the whole frame, to avoid reading it twice;
    ``reader`` reads the others.
    """
    frames = sorted(frames)
    if not frames:
        span = (start, end) if start is not None and end is not None else None
        return SpanRead([], [span] if span else [], [])
    start = frames[0].start if start is None else start
    end = frames[-1].end if end is None else end
    pieces: list[tuple[float, float, dict, str]] = []
    failures: list[FrameError] = []
    for frame in frames:
        if frame.end <= start or frame.start >= end:
            continue
        try:
            if preloaded and frame.path in preloaded:
                got = _crop(preloaded[frame.path], channels, start, end)
            else:
                got = reader(frame, channels, start, end)
        except FrameError as exc:
            log.warning("skipping frame: %s", exc)
            failures.append(exc)
            continue
        t0 = max(start, frame.start)
        t1 = min(end, frame.end)
        pieces.append((t0, t1, got, frame.path))

    segments: list[Segment] = []
    gaps: list[tuple[float, float]] = []
    cursor = start
    for t0, t1, got, path in pieces:
        if t0 > cursor + 1e-6:
            gaps.append((cursor, t0))
        joined = segments and abs(segments[-1].end - t0) < 1e-6
        if joined:
            seg = segments[-1]
            for name in channels:
                seg.data[name].append(got[name][0])
            seg.end = t1
            seg.frames.append(path)
        else:
            segments.append(
                Segment(
                    t0,
                    t1,
                    {name: [got[name][0]] for name in channels},
                    {name: got[name][1] for name in channels},
                    [path],
                )
            )
        cursor = t1
    if end > cursor + 1e-6:
        gaps.append((cursor, end))
    for seg in segments:
        seg.data = {name: np.concatenate(parts) for name, parts in seg.data.items()}
    return SpanRead(segments, gaps, failures)


@dataclass
class PaddedRead:
    """A block of frames read with padding from its neighbours.

    ``channels``: those usable in every frame of the block; ``bad[channel] =
    (frame, reason)`` for the others (missing, non-finite or flat); ``errors[frame]``
    for frames that could not be read at all.
    """

    span: SpanRead
    channels: list[str]
    bad: dict[str, tuple[str, str]]
    errors: dict[str, str]


def read_padded(
    block: Sequence[FrameFile],
    frames: Sequence[FrameFile],
    channels: Sequence[str],
    start: float,
    end: float,
    required: Sequence[str] = (),
    reader: FrameReader = read_frame,
) -> PaddedRead:
    """Read ``channels`` over ``[start, end)`` from ``block`` plus the neighbouring ``frames``.

    Each frame of the block is read whole first: a channel that is missing, has
    NaN/Inf samples or is flat (constant) there is dropped for the block and
    reported; the other channels go on.  A frame unreadable as a whole, or
    missing a ``required`` channel, is an error and leaves a gap.  ``reader`` reads
    the frames (a :class:`~glitchflow.io.frame_memory.FrameMemory` shares the boundary
    frames of consecutive blocks).
    """
    channels = list(channels)
    bad: dict[str, tuple[str, str]] = {}
    errors: dict[str, str] = {}
    preloaded: dict[str, dict] = {}
    for frame in block:
        while channels:
            try:
                data = reader(frame, channels)
            except FrameError as exc:
                names = [c for c in (exc.channel or "").split(", ") if c in channels]
                if not names or any(n in required for n in names) or len(names) == len(channels):
                    errors[frame.path] = str(exc)
                    break
                for name in names:
                    bad[name] = (frame.path, exc.reason)
                    channels.remove(name)
                continue
            flat = [c for c in channels if c not in required and np.ptp(data[c][0]) == 0]
            for name in flat:
                bad[name] = (frame.path, "flat (constant) data")
                channels.remove(name)
            preloaded[frame.path] = data
            break
    paths = {f.path for f in block}
    readable = [
        f
        for f in frames
        if f.end > start and f.start < end and (f.path not in paths or f.path in preloaded)
    ]
    kept = {p: {c: d[c] for c in channels} for p, d in preloaded.items()}
    span = read_span(readable, channels, start, end, kept, reader)
    for path, reason in errors.items():
        span.failures.append(FrameError(path, reason.split(": ", 1)[-1]))
    for err in span.failures:
        log.warning("frame unusable: %s", err)
    return PaddedRead(span, channels, bad, errors)
