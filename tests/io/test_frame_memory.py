"""Frames decoded once across consecutive blocks, with the same samples and errors."""

from __future__ import annotations

import numpy as np
import pytest

from glitchflow.config import load_config
from glitchflow.io.frame_memory import FrameMemory
from glitchflow.io.frames import FrameError, find_frames, make_blocks, make_runs, read_frame
from glitchflow.io.span import read_padded
from glitchflow.io.windows import FrameWindowCutter
from glitchflow.signal.conditioner import Conditioner
from tests.conftest import CONFIGS, write_test_frames

T0 = 1400000000
CHANNELS = ["V1:Hrec_hoft_16384Hz", "V1:AUX_A", "V1:AUX_B"]


def _frames(tmp_path, n=6, **kwargs):
    write_test_frames(tmp_path, [T0 + 16 * k for k in range(n)], **kwargs)
    return find_frames(tmp_path).frames


def test_memory_returns_what_read_frame_returns(tmp_path):
    frames = _frames(tmp_path, 2)
    memory = FrameMemory()
    for args in [(CHANNELS,), (CHANNELS[1:], T0 + 3.5, T0 + 7.25), (CHANNELS[:1], T0 + 15)]:
        got, want = memory(frames[0], *args), read_frame(frames[0], *args)
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name][0], want[name][0])
            assert got[name][1:] == want[name][1:]
    assert memory.decoded == 1  # the later calls asked for subsets of what it holds
    memory(frames[0], [*CHANNELS[:1], "V1:AUX_A"])
    assert memory.decoded == 1
    memory.retain(T0 + 16, T0 + 32)
    assert memory.frames == []
    memory(frames[0], CHANNELS[:1])
    memory(frames[0], CHANNELS)  # more channels than it holds: decoded again
    assert memory.decoded == 3


def test_consecutive_blocks_decode_each_frame_once(tmp_path):
    """Blocks of 2 frames padded 3 s from their neighbours: 6 frames in 3 blocks decode 6
    frames through one memory, 10 without (each block's neighbours again), and read the
    same samples."""
    frames = _frames(tmp_path)
    memory = FrameMemory()
    for block in make_blocks(frames, 2):
        lo, hi = block[0].start - 3, block[-1].end + 3
        memory.retain(lo, hi)
        fresh = FrameMemory()
        got = read_padded(block, frames, CHANNELS, lo, hi, CHANNELS[:1], memory)
        want = read_padded(block, frames, CHANNELS, lo, hi, CHANNELS[:1], fresh)
        assert [(s.start, s.end) for s in got.span.segments] == [
            (s.start, s.end) for s in want.span.segments
        ]
        for name in CHANNELS:
            np.testing.assert_array_equal(
                got.span.segments[0].data[name], want.span.segments[0].data[name]
            )
        neighbours = [f for f in frames if f.end > lo and f.start < hi and f not in block]
        assert fresh.decoded == len(block) + len(neighbours)
        assert len(memory.frames) <= len(block) + 2
    assert memory.decoded == 6


def test_errors_are_the_same_and_failed_frames_are_not_kept(tmp_path):
    """NaN in a neighbour outside the padding does not spoil the padding; NaN in the
    block drops that channel for the block and names it; a missing channel raises on
    every call (nothing kept)."""
    frames = _frames(tmp_path, 3, nan_in=(("V1:AUX_B", T0 + 32),))
    memory = FrameMemory()
    with pytest.raises(FrameError, match="non-finite") as err:
        memory(frames[2], CHANNELS)
    assert err.value.channel == "V1:AUX_B"
    got = read_padded(frames[1:2], frames, CHANNELS, T0 + 13, T0 + 35, CHANNELS[:1], memory)
    assert got.channels == CHANNELS and got.errors == {} and got.bad == {}
    bad = read_padded(frames[2:], frames, CHANNELS, T0 + 29, T0 + 48, CHANNELS[:1], memory)
    assert bad.channels == CHANNELS[:2] and "non-finite" in bad.bad["V1:AUX_B"][1]
    before = memory.decoded
    for _ in range(2):
        with pytest.raises(FrameError, match="channel not in frame"):
            memory(frames[0], ["V1:NOPE"])
    assert memory.decoded == before


def test_a_cutter_reads_consecutive_blocks_once_and_cuts_the_same_windows(tmp_path):
    frames = _frames(tmp_path)
    cond = Conditioner(load_config(CONFIGS / "demo.yaml").signal)
    shared = FrameWindowCutter(cond, frames, CHANNELS[:2], 3.0, 3.0)
    for block in make_blocks(frames, 2):
        fresh = FrameWindowCutter(cond, frames, CHANNELS[:2], 3.0, 3.0)
        rows, _ = shared.process(block)
        want, _ = fresh.process(block)
        assert [r["gps_start"] for r in rows] == [r["gps_start"] for r in want] and rows
        for a, b in zip(rows, want):
            np.testing.assert_array_equal(a["spectrogram"], b["spectrogram"])
        assert len(shared.reader.frames) <= len(block) + 2  # bounded: the rest forgotten
    assert shared.reader.decoded == len(frames)


@pytest.mark.parametrize(
    ("n", "parts", "most", "sizes"),
    [(4, 2, 8, [2, 2]), (5, 2, 8, [2, 3]), (1, 2, 8, [1]), (0, 2, 8, []), (20, 2, 8, [7, 6, 7])],
)
def test_runs_are_consecutive_balanced_and_bounded(n, parts, most, sizes):
    blocks = [[k] for k in range(n)]
    runs = make_runs(blocks, parts, most)
    assert [len(r) for r in runs] == sizes
    assert [b for run in runs for b in run] == blocks
    with pytest.raises(ValueError, match="must be >= 1"):
        make_runs(blocks, 0, most)
