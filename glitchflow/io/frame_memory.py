"""A reader that remembers the last few frames it decoded.

Conditioning a block of frames needs ``edge`` seconds from each neighbouring frame,
and lalframe decodes a channel's whole vector whatever span is asked for: with blocks
of 4 frames, every block decodes 6 (the neighbours' data is about a third of the
decoding, and decoding is about a third of ``glitchflow infer``).  A process that
works through consecutive blocks reads each boundary frame twice, once as padding and
once as a frame of the next block; :class:`FrameMemory` keeps the decoded vectors of
the frames the next block may need, so the second read costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from glitchflow.io.frames import FrameFile, crop_decoded, decode_frame


class FrameMemory:
    """:func:`~glitchflow.io.frames.read_frame` with a memory of the frames it decoded.

    Called like ``read_frame(frame, channels, start, end)`` and returns the same
    ``{name: (samples float64, rate Hz, gps_start s)}``, raising the same
    :class:`~glitchflow.io.frames.FrameError`.  A frame is decoded whole; a later call
    for the same file and a subset of the channels it holds is cropped from memory.
    A failed decode is not remembered.  :meth:`retain` bounds the memory: before each
    block, the caller keeps only the frames that overlap the block's padded span (a
    64-s frame of 16384-Hz strain and three auxiliary channels is ~10 MB).
    ``decoded`` counts the frames decoded so far.
    """

    def __init__(self) -> None:
        self.decoded = 0
        self._frames: dict[str, tuple[FrameFile, dict[str, tuple[np.ndarray, float]]]] = {}

    def __call__(
        self,
        frame: FrameFile,
        channels: Sequence[str],
        start: float | None = None,
        end: float | None = None,
    ) -> dict[str, tuple[np.ndarray, float, float]]:
        known = self._frames.get(frame.path, (frame, {}))[1]
        if not all(c in known for c in channels):
            known = decode_frame(frame, channels)
            self.decoded += 1
            self._frames[frame.path] = (frame, known)
        return crop_decoded(frame, {c: known[c] for c in channels}, start, end)

    def retain(self, start: float, end: float) -> None:
        """Forget every frame that does not overlap GPS ``[start, end)`` (s)."""
        self._frames = {
            path: (frame, data)
            for path, (frame, data) in self._frames.items()
            if frame.end > start and frame.start < end
        }

    @property
    def frames(self) -> list[str]:
        """Paths of the frames held, in the order they were decoded."""
        return list(self._frames)
