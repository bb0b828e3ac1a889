"""Frame discovery, reading across boundaries, gaps, and every bad-input case."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from glitchflow.io.frame_writer import write_frame
from glitchflow.io.frames import (
    FrameError,
    FrameFile,
    find_frames,
    frame_channels,
    frame_name,
    read_frame,
)
from glitchflow.io.span import read_span

GWPY_FRAME = "HLV-HW100916-968654552-1.gwf"


def _write(dirpath: Path, start: int, duration: int, channels: dict) -> Path:
    path = dirpath / frame_name("V", "TEST", start, duration)
    data = {
        name: (fn(start + np.arange(int(duration * rate)) / rate), rate)
        for name, (fn, rate) in channels.items()
    }
    write_frame(path, start, data)
    return path


RAMP = {
    "V1:A": (lambda t: t - 1e9, 256.0),
    "V1:B": (lambda t: np.sin(2 * np.pi * 3 * t), 64.0),
}


def test_round_trip_preserves_samples_rate_and_time(tmp_path):
    path = _write(tmp_path, 1000000000, 4, RAMP)
    assert sorted(frame_channels(path)) == ["V1:A", "V1:B"]
    frame = FrameFile.from_path(path)
    assert (frame.observatory, frame.tag, frame.start, frame.duration) == ("V", "TEST", 1e9, 4)
    got = read_frame(frame, ["V1:A"])
    x, rate, t0 = got["V1:A"]
    assert rate == 256 and t0 == 1e9 and len(x) == 1024
    np.testing.assert_allclose(x, np.arange(1024) / 256.0)
    assert "V1:B" not in got  # only the channels asked for


def test_reading_across_frame_boundaries_is_contiguous(tmp_path):
    for k in range(3):
        _write(tmp_path, 1000000000 + 4 * k, 4, RAMP)
    frames = find_frames(tmp_path).frames
    span = read_span(frames, ["V1:A", "V1:B"], start=1000000002, end=1000000010)
    assert span.gaps == [] and span.failures == []
    (seg,) = span.segments
    assert (seg.start, seg.end) == (1000000002, 1000000010)
    np.testing.assert_allclose(seg.data["V1:A"], 2 + np.arange(8 * 256) / 256.0)
    assert len(seg.data["V1:B"]) == 8 * 64 and seg.rates["V1:B"] == 64


def test_gaps_are_detected_and_reported(tmp_path):
    for k in (0, 1, 3):
        _write(tmp_path, 1000000000 + 4 * k, 4, RAMP)
    frames = find_frames(tmp_path, start=1000000000, end=1000000020).frames
    span = read_span(frames, ["V1:A"], start=1000000000, end=1000000020)
    assert [(s.start, s.end) for s in span.segments] == [(1e9, 1e9 + 8), (1e9 + 12, 1e9 + 16)]
    assert span.gaps == [(1e9 + 8, 1e9 + 12), (1e9 + 16, 1e9 + 20)]
    assert span.livetime == 12


def test_find_frames_filters_by_gps_and_accepts_file_lists(tmp_path):
    paths = [_write(tmp_path, 1000000000 + 4 * k, 4, RAMP) for k in range(4)]
    assert len(find_frames(tmp_path, start=1000000005, end=1000000009).frames) == 2
    assert [f.path for f in find_frames(paths[::-1]).frames] == [str(p) for p in paths]
    (tmp_path / "notes.gwf").write_text("x")
    found = find_frames(tmp_path)
    assert len(found.frames) == 4
    assert "OBS-TAG-GPSSTART-DURATION" in str(found.failures[0])


def test_overlapping_frames_are_rejected_by_name(tmp_path):
    _write(tmp_path, 1000000000, 4, RAMP)
    late = _write(tmp_path, 1000000002, 4, RAMP)
    found = find_frames(tmp_path)
    assert len(found.frames) == 1
    assert str(late) in str(found.failures[0]) and "overlaps" in str(found.failures[0])


def test_missing_channel_names_file_and_channel(tmp_path):
    path = _write(tmp_path, 1000000000, 4, RAMP)
    with pytest.raises(FrameError) as err:
        read_frame(FrameFile.from_path(path), ["V1:A", "V1:NOT_THERE"])
    assert err.value.channel == "V1:NOT_THERE" and str(path) in str(err.value)


def test_nan_and_inf_samples_are_errors_naming_channel(tmp_path):
    bad = {
        "V1:A": (lambda t: np.where(t > 1e9 + 1, np.nan, 0.0), 256.0),
        "V1:B": (lambda t: np.zeros_like(t), 64.0),
    }
    path = _write(tmp_path, 1000000000, 4, bad)
    with pytest.raises(FrameError, match="non-finite") as err:
        read_frame(FrameFile.from_path(path), ["V1:A", "V1:B"])
    assert err.value.channel == "V1:A"
    assert read_frame(FrameFile.from_path(path), ["V1:B"])["V1:B"][0].shape == (256,)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_frame_is_reported_and_the_rest_still_read(tmp_path, damage):
    paths = [_write(tmp_path, 1000000000 + 4 * k, 4, RAMP) for k in range(3)]
    raw = paths[1].read_bytes()
    if damage == "truncate":
        paths[1].write_bytes(raw[: len(raw) // 2])
    else:
        paths[1].write_bytes(b"not a frame at all" * 10)
    span = read_span(find_frames(tmp_path).frames, ["V1:A"])
    assert len(span.failures) == 1 and span.failures[0].path == str(paths[1])
    assert [(s.start, s.end) for s in span.segments] == [(1e9, 1e9 + 4), (1e9 + 8, 1e9 + 12)]
    assert span.gaps == [(1e9 + 4, 1e9 + 8)]


def test_reads_the_real_frame_shipped_with_gwpy(tmp_path):
    import gwpy

    source = Path(gwpy.__file__).parent / "testing" / "data" / GWPY_FRAME
    path = tmp_path / GWPY_FRAME
    shutil.copy(source, path)
    found = find_frames(tmp_path)
    assert len(found.frames) == 1 and found.failures == []
    assert "V1:h_16384Hz" in frame_channels(path)
    span = read_span(found.frames, ["H1:LDAS-STRAIN", "V1:h_16384Hz"])
    (seg,) = span.segments
    assert seg.start == 968654552 and seg.end == 968654553
    assert seg.rates["V1:h_16384Hz"] == 16384
    strain = seg.data["H1:LDAS-STRAIN"]
    assert strain.shape == (16384,) and 1e-22 < np.std(strain) < 1e-15  # strain units


def test_a_channel_whose_rate_or_type_changes_between_files_is_read_as_each_file_holds(tmp_path):
    """Later reads of a channel reuse the layout learnt on its first read; a file that
    holds it at another rate or sample type is still read exactly."""
    name = "V1:LAYOUT_TEST"  # a name no other test reads (the layout is kept per process)
    layouts = [(256.0, np.float64), (256.0, np.float64), (512.0, np.float64), (128.0, np.float32)]
    for k, (rate, dtype) in enumerate(layouts):
        start = 1000000000 + 4 * k
        samples = (np.arange(int(4 * rate)) % 97).astype(dtype)
        write_frame(tmp_path / frame_name("V", "TEST", start, 4), start, {name: (samples, rate)})
    for frame, (rate, _) in zip(find_frames(tmp_path).frames, layouts):
        x, got_rate, t0 = read_frame(frame, [name])[name]
        assert (got_rate, t0, len(x)) == (rate, frame.start, int(4 * rate))
        np.testing.assert_array_equal(x, np.arange(int(4 * rate)) % 97)
