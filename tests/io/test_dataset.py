"""GPS-block splits and crops for training."""

from __future__ import annotations

import numpy as np
import pytest

from glitchflow.io.dataset import (
    assign_blocks,
    balance_repeats,
    crop_rows,
    leading_channel,
    normalisation,
    window_split,
)


def test_blocks_are_dealt_to_every_split_and_windows_never_straddle():
    starts = np.arange(0, 640, 3.0) + 1_400_000_000
    assignment = assign_blocks(starts, 64.0, (0.7, 0.15, 0.15), seed=1)
    assert set(assignment.values()) == {"train", "val", "test"}
    assert assign_blocks(starts, 64.0, (0.7, 0.15, 0.15), seed=1) == assignment
    splits = [window_split(s, s + 6, 64.0, assignment) for s in starts]
    for s, split in zip(starts, splits):
        same = assignment.get(int(s // 64)) == assignment.get(int((s + 6 - 1e-6) // 64))
        assert (split is not None) == same


def test_crops_are_kept_once_and_flag_glitches():
    t0 = 1_400_000_001.0  # grid with stride 3 s, windows of 6 s, 256 bins of 6/256 s
    starts = t0 + 3.0 * np.arange(4)
    spec = np.ones((len(starts), 3, 64, 256), dtype=np.float32)
    spec[1, 0, 30, 50] = 100.0  # a strain glitch at t0 + 3 + 50 * 6/256 s
    rows = {
        "gps_start": starts,
        "gps_end": starts + 6,
        "spectrogram": spec,
        "bad": np.zeros(4, dtype=bool),
    }
    assignment = {int(s // 1000): "train" for s in starts}
    out = crop_rows(
        rows, 6 / 256, 64, 1e4, 3.0, {round(float(s), 6) for s in starts}, 1000.0, assignment, 25.0
    )
    crop_starts = np.round(out["gps_start"], 6)
    assert len(crop_starts) == len(set(crop_starts)) == 2 * 3 + 4  # last window keeps all 4
    assert out["x"].shape[1:] == (2, 64, 64) and out["y"].shape[1:] == (1, 64, 64)
    assert out["is_glitch"].sum() == 1
    norm = normalisation(np.array([[2.0, 0.0], [4.0, 0.0]]), np.array([10.0, 30.0]))
    assert norm == {"aux": [3.0, 1.0], "strain": 20.0, "transform": "linear"}
    logged = normalisation(np.array([[np.e - 1, 0.0]]), np.array([np.e**2 - 1]), "log1p")
    assert logged["aux"] == pytest.approx([1.0, 1.0]) and logged["strain"] == pytest.approx(2.0)


def test_training_glitch_crops_are_also_cut_at_shifted_offsets():
    t0 = 1_400_000_001.0
    starts = t0 + 3.0 * np.arange(4)
    spec = np.ones((len(starts), 3, 64, 256), dtype=np.float32)
    spec[1, 0, 30, 50] = 100.0  # the strain glitch of window 1, bin 50
    rows = {
        "gps_start": starts,
        "gps_end": starts + 6,
        "spectrogram": spec,
        "bad": np.zeros(4, dtype=bool),
    }
    args = (6 / 256, 64, 1e4, 3.0, {round(float(s), 6) for s in starts}, 1000.0)
    train = {int(s // 1000): "train" for s in starts}
    out = crop_rows(rows, *args, train, 25.0, augment_shifts=4)
    # aligned crops as before, plus the shifted crops (every 16 bins) holding the glitch:
    # window 1's crops starting at bins 16, 32 and 48 (bin 0 is aligned)
    assert len(out["gps_start"]) == 2 * 3 + 4 + 3
    assert out["is_glitch"].sum() == 4
    glitch_starts = np.sort(out["gps_start"][out["is_glitch"]] - starts[1])
    assert glitch_starts == pytest.approx(np.array([0, 16, 32, 48]) * 6 / 256)
    # the glitch sits at a different bin of each crop
    at = sorted(int(np.argmax(y[0].max(axis=0))) for y in out["y"][out["is_glitch"]])
    assert at == [2, 18, 34, 50]
    # validation keeps the aligned crops only
    val = crop_rows(rows, *args, {k: "val" for k in train}, 25.0, augment_shifts=4)
    assert len(val["gps_start"]) == 2 * 3 + 4 and val["is_glitch"].sum() == 1


def test_rare_witnesses_are_repeated_up_to_the_cap():
    """20 crops led by channel 0, 5 by channel 2, none by channel 1: channel 2's crops are
    used 4 times (capped at 3 when asked), channel 0's once; off at max_repeat 1."""
    rng = np.random.default_rng(0)
    x = rng.exponential(1.0, (25, 3, 8, 8))
    x[:20, 0, 3, 4] = 500.0  # a blip's witness
    x[20:, 2, 5, 1] = 300.0  # a magnetometer's
    leaders = leading_channel(x)
    assert leaders.tolist() == [0] * 20 + [2] * 5
    assert balance_repeats(leaders, 3, 8).tolist() == [1, 8, 4]  # no crop led by 1: capped
    assert balance_repeats(leaders, 3, 3).tolist() == [1, 3, 3]
    assert balance_repeats(leaders, 3, 1).tolist() == [1, 1, 1]
    assert balance_repeats(np.zeros(0, dtype=int), 3, 4).tolist() == [1, 1, 1]
