"""GWF frame files: naming, discovery and reading (through lalframe; writing:
:mod:`glitchflow.io.frame_writer`).

Frame names follow ``OBS-TAG-GPSSTART-DURATION.gwf``.  Reading works file by
file so that one corrupt file costs only its own span: the reader returns the
contiguous segments it could read, the gaps between them and a list of
failures, each naming the file, the channel and the reason.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FRAME_NAME = re.compile(
    r"^(?P<obs>[A-Z]+)-(?P<tag>[A-Za-z0-9_]+)-(?P<start>\d+)-(?P<dur>\d+(\.\d+)?)\.gwf$"
)


class FrameError(RuntimeError):
    """A frame could not be used; ``path`` and ``channel`` say which and ``reason`` why."""

    def __init__(self, path: str | os.PathLike, reason: str, channel: str | None = None):
        self.path = str(path)
        self.channel = channel
        self.reason = reason
        where = f"{self.path}" + (f" [{channel}]" if channel else "")
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, order=True)
class FrameFile:
    """One frame file and the GPS span its name declares (seconds)."""

    start: float
    duration: float
    path: str = field(compare=False)
    observatory: str = field(compare=False, default="")
    tag: str = field(compare=False, default="")

    @property
    def end(self) -> float:
        return self.start + self.duration

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> FrameFile:
        match = FRAME_NAME.match(Path(path).name)
        if not match:
            raise FrameError(path, "name does not follow OBS-TAG-GPSSTART-DURATION.gwf")
        return cls(
            float(match["start"]), float(match["dur"]), str(path), match["obs"], match["tag"]
        )


def frame_name(observatory: str, tag: str, start: int, duration: int) -> str:
    """``OBS-TAG-GPSSTART-DURATION.gwf`` for integer GPS start and duration (s)."""
    return f"{observatory}-{tag}-{int(start)}-{int(duration)}.gwf"


@dataclass
class FrameList:
    """Frames found for a span, in GPS order, and the files that were rejected."""

    frames: list[FrameFile]
    failures: list[FrameError]


def find_frames(
    source: str | os.PathLike | Iterable[str | os.PathLike],
    start: float | None = None,
    end: float | None = None,
) -> FrameList:
    """Frames in a directory (or an explicit file list) overlapping GPS ``[start, end)``.

    Badly named files and frames overlapping an earlier frame are returned as
    failures, not raised.
    """
    if isinstance(source, str | os.PathLike) and Path(source).is_dir():
        paths = sorted(str(p) for p in Path(source).glob("*.gwf"))
    elif isinstance(source, str | os.PathLike):
        raise FileNotFoundError(f"{source}: frame directory does not exist")
    else:
        paths = [str(p) for p in source]
    frames, failures = [], []
    for path in paths:
        try:
            frames.append(FrameFile.from_path(path))
        except FrameError as exc:
            failures.append(exc)
    frames.sort()
    kept: list[FrameFile] = []
    for frame in frames:
        if start is not None and frame.end <= start:
            continue
        if end is not None and frame.start >= end:
            continue
        if kept and frame.start < kept[-1].end:
            failures.append(
                FrameError(frame.path, f"overlaps {kept[-1].path} ({frame.start} < {kept[-1].end})")
            )
            continue
        kept.append(frame)
    return FrameList(kept, failures)


_EOF_RECORD = struct.Struct("<QBBIIQQIII")  # FrEndOfFile of a version-8 GWF file


def check_frame_structure(path: str | os.PathLike) -> None:
    """Cheap structural check before lalframe touches a file (a truncated GWF can crash it).

    Checks the ``IGWD`` magic and that the trailing FrEndOfFile record's byte
    count equals the file size.  Raises :class:`FrameError` otherwise.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(6)
            fh.seek(max(size - _EOF_RECORD.size, 0))
            tail = fh.read(_EOF_RECORD.size)
    except OSError as exc:
        raise FrameError(path, f"cannot open ({exc.strerror})") from None
    if head[:4] != b"IGWD":
        raise FrameError(path, "not a GWF file (no IGWD magic)")
    if head[5] >= 8:
        if len(tail) < _EOF_RECORD.size:
            raise FrameError(path, f"truncated: {size} bytes")
        n_bytes = _EOF_RECORD.unpack(tail)[5]
        if n_bytes != size:
            raise FrameError(path, f"truncated or corrupt: {size} bytes, end record says {n_bytes}")


def frame_channels(path: str | os.PathLike) -> list[str]:
    """Names of the channels stored in a frame (ADC, processed and simulated data, from its
    table of contents, through lalframe directly: gwpy's equivalent imports gwpy's
    plotting and scipy.signal, 2 s of start-up in every fresh actor)."""
    import lalframe

    check_frame_structure(path)
    try:
        frfile = lalframe.FrameUFrFileOpen(str(path), "r")  # alive while toc is read
        toc = lalframe.FrameUFrTOCRead(frfile)
        names = []
        for kind in ("Adc", "Proc", "Sim"):
            count = getattr(lalframe, f"FrameUFrTOCQuery{kind}N")(toc)
            name = getattr(lalframe, f"FrameUFrTOCQuery{kind}Name")
            names.extend(name(toc, i) for i in range(count))
        del toc, frfile  # the table before the file it points into
        return names
    except Exception as exc:
        raise FrameError(
            path, f"cannot read table of contents ({type(exc).__name__}: {exc})"
        ) from None


#: channel name -> (lal type name, sample spacing s), learnt on the channel's first read
_LAL_LAYOUTS: dict[str, tuple[str, float]] = {}
#: lal type code -> the type's name in lal's and lalframe's function names
_LAL_KINDS = {
    "I2_TYPE_CODE": "INT2",
    "I4_TYPE_CODE": "INT4",
    "I8_TYPE_CODE": "INT8",
    "U4_TYPE_CODE": "UINT4",
    "S_TYPE_CODE": "REAL4",
    "D_TYPE_CODE": "REAL8",
    "C_TYPE_CODE": "COMPLEX8",
    "Z_TYPE_CODE": "COMPLEX16",
}


def _read_channel(stream, name: str, start, duration: float):
    """Read ``duration`` s of one channel from an open lalframe stream.

    lalframe's ``FrStreamRead*TimeSeries`` decodes a channel twice (once for its
    metadata, once for the samples) and its type query a third time; decoding (inflate
    and checksum) is most of the cost of reading a frame.  So a channel's type and
    sample spacing are learnt on its first read and later reads fill a series of that
    layout with one ``FrStreamGet*TimeSeries``; a file whose layout differs is read
    again the slow way.
    """
    import lal
    import lalframe

    layout = _LAL_LAYOUTS.get(name)
    if layout is not None:
        kind, spacing = layout
        series = getattr(lal, f"Create{kind}TimeSeries")(
            name, start, 0.0, spacing, lal.DimensionlessUnit, round(duration / spacing)
        )
        lalframe.FrStreamSeek(stream, start)
        level = lal.GetDebugLevel()
        lal.ClobberDebugLevel(0)  # a file of another type is expected here: no XLAL print
        try:
            getattr(lalframe, f"FrStreamGet{kind}TimeSeries")(series, stream)
            if series.deltaT == spacing:  # lalframe sets the file's spacing
                return series
        except RuntimeError:
            pass  # type changed between files: ask again
        finally:
            lal.ClobberDebugLevel(level)
    lalframe.FrStreamSeek(stream, start)
    code = lalframe.FrStreamGetTimeSeriesType(name, stream)
    kinds = {getattr(lal, attr): kind for attr, kind in _LAL_KINDS.items()}
    if code not in kinds:
        raise TypeError(f"unsupported lal type code {code}")
    lalframe.FrStreamSeek(stream, start)
    series = getattr(lalframe, f"FrStreamRead{kinds[code]}TimeSeries")(
        stream, name, start, duration, 0
    )
    _LAL_LAYOUTS[name] = (kinds[code], series.deltaT)
    return series


def read_frame(
    frame: FrameFile, channels: Sequence[str], start: float | None = None, end: float | None = None
) -> dict[str, tuple[np.ndarray, float, float]]:
    """Read ``channels`` from one frame over ``[start, end)`` (default: the whole frame).

    Returns ``{name: (samples float64, sample_rate Hz, gps_start s)}``.  Raises
    :class:`FrameError` naming the file and channel for a missing channel, a
    corrupt or truncated file, or non-finite samples.
    """
    return crop_decoded(frame, decode_frame(frame, channels), start, end)


def decode_frame(frame: FrameFile, channels: Sequence[str]) -> dict[str, tuple[np.ndarray, float]]:
    """Decode ``channels`` over the whole frame: ``{name: (samples float64, rate Hz)}``.

    lalframe decodes whole vectors whatever span is asked for, so this is the whole
    cost of reading a frame; :func:`crop_decoded` then keeps a span and checks it.
    Raises :class:`FrameError` for a missing file or channel, a corrupt or truncated
    file, or a vector of the wrong length (non-finite samples are not checked here).
    """
    import lal
    import lalframe

    path = frame.path
    if not Path(path).is_file():
        raise FrameError(path, "file does not exist")
    available = set(frame_channels(path))
    missing = [c for c in channels if c not in available]
    if missing:
        raise FrameError(path, "channel not in frame", channel=", ".join(missing))
    out = {}
    try:
        stream = lalframe.FrStreamOpen(str(Path(path).parent), Path(path).name)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise FrameError(path, f"cannot open ({type(exc).__name__}: {exc})") from None
    begin = lal.LIGOTimeGPS(frame.start)
    for name in channels:
        try:
            series = _read_channel(stream, name, begin, float(frame.duration))
        except (RuntimeError, TypeError, ValueError) as exc:  # lal reports errors this way
            raise FrameError(
                path, f"corrupt or unreadable ({type(exc).__name__}: {exc})", name
            ) from None
        rate = 1.0 / series.deltaT
        data = np.asarray(series.data.data, dtype=np.float64)
        if abs(len(data) - frame.duration * rate) > 0.5:
            raise FrameError(
                path, f"read {len(data)} samples, expected {frame.duration * rate:.0f}", name
            )
        out[name] = (data, float(rate))
    return out


def crop_decoded(
    frame: FrameFile,
    decoded: dict[str, tuple[np.ndarray, float]],
    start: float | None = None,
    end: float | None = None,
) -> dict[str, tuple[np.ndarray, float, float]]:
    """The samples of :func:`decode_frame`'s ``decoded`` at ``frame.start + k / rate`` with
    ``start <= t < end`` (default: the whole frame), as :func:`read_frame` returns them;
    :class:`FrameError` (naming the first bad sample's GPS time) for non-finite samples
    there.  The arrays are views of ``decoded``'s."""
    t0 = frame.start if start is None else max(start, frame.start)
    t1 = frame.end if end is None else min(end, frame.end)
    if t1 <= t0:
        raise FrameError(frame.path, f"empty span [{t0}, {t1})")
    rel0, rel1 = t0 - frame.start, t1 - frame.start
    out = {}
    for name, (whole, rate) in decoded.items():
        k0, k1 = math.ceil(rel0 * rate - 1e-6), math.ceil(rel1 * rate - 1e-6)
        data = whole[k0:k1]
        bad = ~np.isfinite(data)
        if bad.any():
            first = frame.start + (k0 + np.flatnonzero(bad)[0]) / rate
            raise FrameError(
                frame.path,
                f"{int(bad.sum())} non-finite samples (first at GPS {first:.6f})",
                name,
            )
        out[name] = (data, rate, frame.start + k0 / rate)
    return out


def make_blocks(frames: list[FrameFile], per_block: int) -> list[list[FrameFile]]:
    """Runs of up to ``per_block`` contiguous frames."""
    blocks: list[list[FrameFile]] = []
    for frame in frames:
        if blocks and len(blocks[-1]) < per_block and abs(blocks[-1][-1].end - frame.start) < 1e-6:
            blocks[-1].append(frame)
        else:
            blocks.append([frame])
    return blocks


#: the most blocks one worker takes in a row (a run): consecutive blocks share their
#: boundary frames' decoding, and a retried run redoes at most this many blocks
BLOCKS_PER_RUN = 8


def make_runs(
    blocks: list[list[FrameFile]], parts: int, most: int = BLOCKS_PER_RUN
) -> list[list[list[FrameFile]]]:
    """Split ``blocks`` (in time order) into runs of consecutive blocks for one worker each:
    at least ``parts`` runs (fewer only when there are fewer blocks), at most ``most``
    blocks per run, the runs as equal as possible.  A worker that reads its run's blocks
    in order decodes each boundary frame once (:class:`~glitchflow.io.frame_memory.
    FrameMemory`)."""
    if parts < 1 or most < 1:
        raise ValueError(f"parts ({parts}) and most ({most}) must be >= 1")
    n = len(blocks)
    count = min(n, max(parts, math.ceil(n / most)))
    edges = [round(k * n / count) for k in range(count + 1)] if count else [0]
    return [blocks[a:b] for a, b in itertools.pairwise(edges)]
