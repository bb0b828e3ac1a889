"""The read grid shared by preprocess, infer, online and the endpoint: a window starting
on the grid is read from the same place and sits at the same bins whichever stage reads
it, and the samples of every integer-rate channel line up with the output bins."""

from __future__ import annotations

import math

import numpy as np
import pytest

from glitchflow.config import load_config
from glitchflow.io.windows import ReadGrid, read_grid_unit
from glitchflow.signal.conditioner import Conditioner
from tests.conftest import CONFIGS


@pytest.mark.parametrize(("step", "unit"), [(3 / 128, 3), (0.25, 1), (1 / 64, 1), (0.094, 47)])
def test_the_unit_holds_whole_bins_and_whole_seconds(step, unit):
    assert read_grid_unit(step) == unit
    assert math.isclose(unit / step, round(unit / step))


def test_every_stage_reads_a_window_from_the_same_place():
    grid = ReadGrid.of(Conditioner(load_config(CONFIGS / "demo.yaml").signal))
    assert grid.unit == read_grid_unit(grid.time_step)
    # the endpoint's request: pad_before seconds before the window, first bin at ...
    endpoint_bin = grid.first_bin(grid.pad_before, 0.0)
    assert grid.pad_before >= grid.edge and grid.pad_before % grid.unit == 0
    for start in grid.first_grid_time(1400000000) + grid.unit * np.arange(-3, 40):
        read = grid.read_start(float(start))
        # infer and online read from the unit grid, edge seconds or more before the window
        assert read % grid.unit == 0 and start - read >= grid.edge - 1e-9
        assert start - read == pytest.approx(grid.pad_before)
        # ... and the window's first bin is where the endpoint puts it
        assert grid.first_bin(float(start), read) == endpoint_bin
    # the bins before the window are the read's padding beyond the edge
    assert endpoint_bin * grid.time_step == pytest.approx(
        grid.pad_before - grid.edge, abs=grid.time_step / 2
    )
    assert grid.first_grid_time(1400000001.5) == pytest.approx(1400000001.5 // 3 * 3 + 3)


def test_cutting_data_in_memory_gives_the_frames_windows(tiny_twin, tiny_config):
    """``FrameWindowCutter.cut`` on a segment read beforehand gives the same windows as
    ``process`` reading the frames (the in-memory path of benchmarks/gpu.py)."""
    from glitchflow.io.frames import find_frames
    from glitchflow.io.span import read_span
    from glitchflow.io.windows import FrameWindowCutter

    cond = Conditioner(tiny_config.signal)
    frames = find_frames(tiny_twin.frames[0].parent).frames
    channels = [tiny_config.signal.strain_channel, "V1:ENV_CEB_MAG_N"]
    cutter = FrameWindowCutter(cond, frames, channels, 3.0, 3.0)
    rows, _ = cutter.process(frames[:1])
    seg = read_span(frames, channels, frames[0].start, frames[-1].end).segments[0]
    again = cutter.cut(seg, [r["gps_start"] for r in rows])
    assert [r["gps_start"] for r in again] == [r["gps_start"] for r in rows] and rows
    for a, b in zip(rows, again):
        np.testing.assert_allclose(b["spectrogram"], a["spectrogram"], rtol=1e-4, atol=1e-4)
    wider = FrameWindowCutter(cond, frames, [*channels, "V1:NOPE"], 3.0, 3.0)
    with pytest.raises(ValueError, match="lacks channels"):
        wider.cut(seg, [rows[0]["gps_start"]])
