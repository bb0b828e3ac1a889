"""The GPS timeline of a live frame directory: what arrived, what failed, what is missing.

Frames are discovered by polling the directory (a detector's frame writer, and
``glitchflow synth --realtime``, rename complete files into place).  Every
file that appears after the service's origin is counted once in the
:class:`~glitchflow.pipelines.online_status.OnlineMetrics`: kept on the
timeline (readable or failed) or skipped with its reason (badly named,
duplicate, overlapping, late).  A hole in the timeline becomes *missing* once
data ``late_horizon`` s past its start have arrived (at once when the stream
has ended); a frame arriving in missing time is skipped as late.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glitchflow.evaluate.hveto import merge_segments
from glitchflow.io.frames import FrameError, FrameFile, check_frame_structure
from glitchflow.pipelines.online_outputs import Slot
from glitchflow.pipelines.online_status import OnlineMetrics

log = logging.getLogger(__name__)

EPS = 1e-6


@dataclass
class Arrival:
    """An input frame on the timeline: ``kind`` = ``frame`` (readable) or ``failed``."""

    frame: FrameFile
    appeared: float  # wall time it appeared (file ctime, s since the epoch)
    kind: str = "frame"


class FrameTimeline:
    """Arrivals and missing spans after ``origin`` (plus earlier frames, kept as padding).

    Args:
        metrics: counters to update.
        late_horizon: data seconds past a hole's start before it is declared missing.
        origin: first GPS second to publish (None: the first frame that appears).
    """

    def __init__(self, metrics: OnlineMetrics, late_horizon: float, origin: float | None) -> None:
        self.metrics = metrics
        self.late_horizon = late_horizon
        self.origin = origin
        self.frames: dict[float, Arrival] = {}
        self.missing = np.zeros((0, 2))
        self.seen: set[str] = set()
        self.newest = -math.inf
        self.cadence = 1.0
        self.settled = -math.inf  # everything before it is published and forgotten
        self.end_of_stream = False

    # ------------------------------------------------------------------ discovery
    def scan(self, directory: Path, front: float | None) -> int:
        """Register the ``*.gwf`` files that appeared since the last look, in name order;
        ``front`` is the end of the published output (frames before it are late)."""
        new = []
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(".gwf") and entry.path not in self.seen:
                    new.append((entry.path, entry.stat().st_ctime))
        for path, appeared in sorted(new):
            self.seen.add(path)
            self.arrive(path, appeared, front)
        return len(new)

    def arrive(self, path: str, appeared: float, front: float | None) -> None:
        m = self.metrics
        try:
            frame = FrameFile.from_path(path)
        except FrameError as exc:
            with m.lock:
                m.frames_in += 1
            m.skip(path, f"name: {exc.reason}")
            return
        if self.origin is None:
            self.origin = frame.start
        counted = frame.end > self.origin + EPS
        if counted:
            with m.lock:
                m.frames_in += 1
        if frame.end <= self.settled + EPS:
            if counted:
                m.skip(path, "late: its time was published long ago")
            return
        if any(abs(s - frame.start) < EPS for s in self.frames):
            if counted:
                m.skip(path, f"duplicate: a frame at GPS {frame.start:g} already arrived")
            return
        overlap = [
            a
            for a in self.frames.values()
            if a.frame.start < frame.end - EPS and a.frame.end > frame.start + EPS
        ]
        if overlap:
            if counted:
                m.skip(path, f"overlap: overlaps {Path(overlap[0].frame.path).name}")
            return
        late = _overlaps(self.missing, frame.start, frame.end) or (
            front is not None and frame.start < front - EPS
        )
        if counted and late:
            m.skip(path, f"late: its time was declared missing (horizon {self.late_horizon} s)")
            return
        kind = "frame"
        try:
            check_frame_structure(path)
        except FrameError as exc:
            kind = "failed"
            if counted:
                m.fail(path, exc.reason)
        self.frames[frame.start] = Arrival(frame, appeared, kind)
        self.newest = max(self.newest, frame.end)
        self.cadence = frame.duration
        with m.lock:
            m.newest_data = self.newest

    # ------------------------------------------------------------------ queries
    def covered(self, lo: float, hi: float) -> bool:
        """Every second of ``[lo, hi)`` has arrived, failed, been declared missing, lies
        before the origin or after the end of the stream: nothing more will come for it."""
        segs = [[a.frame.start, a.frame.end] for a in self.frames.values()]
        segs += self.missing.tolist()
        segs.append([-math.inf, max(self.origin, self.settled)])
        if self.end_of_stream:
            segs.append([self.newest, math.inf])
        merged = merge_segments(np.array(segs, dtype=float))
        return any(a <= lo + EPS and b >= hi - EPS for a, b in merged)

    def owner(self, t: float) -> Arrival | None:
        """The frame holding GPS ``t``."""
        for arrival in self.frames.values():
            if arrival.frame.start - EPS <= t < arrival.frame.end - EPS:
                return arrival
        return None

    def slot_at(self, t: float) -> Slot | None:
        """The output slot starting at ``t``: its frame, a missing span, or None (not yet)."""
        arrival = self.owner(t)
        if arrival is not None and abs(arrival.frame.start - t) < EPS:
            f = arrival.frame
            return Slot(f.start, f.end, arrival.kind, f.path, arrival.appeared)
        for a, b in self.missing:
            if a <= t + EPS < b:
                return Slot(t, min(b, t + self.cadence), "missing")
        return None

    def pending(self, after: float) -> int:
        """Frames on the timeline at or after ``after`` (arrived, not yet published)."""
        return sum(1 for a in self.frames.values() if a.frame.start >= after - EPS)

    # ------------------------------------------------------------------ updates
    def declare_missing(self, front: float) -> None:
        """Holes after ``front`` whose start the stream has passed by the horizon."""
        spans = sorted((a.frame.start, a.frame.end) for a in self.frames.values())
        cursor, holes = front, []
        for start, end in spans:
            if end <= front + EPS:
                continue
            if start > cursor + EPS:
                holes.append((cursor, start))
            cursor = max(cursor, end)
        horizon = 0.0 if self.end_of_stream else self.late_horizon
        for a, b in holes:
            if self.newest - a >= horizon - EPS and not _covers(self.missing, a, b):
                log.warning("online: no data for GPS [%g, %g): published as not analysed", a, b)
                self.missing = merge_segments(np.vstack([self.missing, [[a, b]]]))

    def forget_before(self, t: float) -> list[float]:
        """Drop frames ending before ``t`` (published, no longer needed as padding);
        returns their starts."""
        gone = [s for s, a in self.frames.items() if a.frame.end < t]
        for s in gone:
            self.frames.pop(s)
        if len(self.missing):
            self.missing = self.missing[self.missing[:, 1] >= t]
        self.settled = max(self.settled, t)
        return gone


def _overlaps(segments: np.ndarray, a: float, b: float) -> bool:
    return any(lo < b - EPS and hi > a + EPS for lo, hi in segments)


def _covers(segments: np.ndarray, a: float, b: float) -> bool:
    return any(lo <= a + EPS and hi >= b - EPS for lo, hi in segments)
