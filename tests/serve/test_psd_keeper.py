"""The endpoint's kept PSDs: made from requests, robust to a glitchy one, versioned, and
whitening a request the way its own PSD does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glitchflow.config import ServePsdConfig
from glitchflow.io.frames import find_frames, read_frame
from glitchflow.models.checkpoint import read_checkpoint
from glitchflow.serve.engine import DecisionEngine
from glitchflow.serve.psd_keeper import PsdKeeper

GPS = 1_400_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_keeper_makes_a_median_psd_refreshes_and_samples():
    clock = Clock()
    keeper = PsdKeeper(
        ["A", "B"], refresh_s=60, depth=5, sample_every=4, min_requests=3, clock=clock
    )
    flat = torch.ones(1, 2, 9, dtype=torch.float64)
    assert keeper.served(["A"]) is None and keeper.samples(["A", "B"], 2) == [0, 1]
    keeper.add(["A", "B"], flat, [GPS])
    keeper.add(["A", "B"], flat * 1e4, [GPS + 3])  # a request with a loud glitch
    assert keeper.version == 0  # 2 < min_requests
    keeper.add(["A", "B"], flat, [GPS + 6])
    assert keeper.version == 1
    torch.testing.assert_close(keeper.served(["B", "A"]), torch.ones(2, 9, dtype=torch.float64))
    info = keeper.describe()
    assert info["requests"] == 3 and info["gps_span"] == [GPS, GPS + 6] and info["age_s"] == 0
    # once kept: one request in sample_every contributes
    assert keeper.samples(["A", "B"], 6) == [0, 4] and keeper.samples(["A", "B"], 3) == [2]
    keeper.add(["A", "B"], flat * 2, [GPS + 9])
    assert keeper.version == 1  # not due yet
    clock.now = 61.0
    keeper.add(["A", "B"], flat * 2, [GPS + 12])
    assert keeper.version == 2 and keeper.describe()["age_s"] == 0
    # the ring holds 1, 1e4, 1, 2, 2: its median, not its mean
    torch.testing.assert_close(keeper.served(["A"]), torch.full((1, 9), 2.0, dtype=torch.float64))
    clock.now = 200.0
    keeper._refresh()  # nothing new: the served PSDs stay
    assert keeper.version == 2
    with pytest.raises(ValueError, match="min_requests"):
        PsdKeeper(["A"], 1, depth=2, sample_every=1, min_requests=3)


def test_kept_psd_whitens_requests_as_their_own_psd_does(tiny_model, tiny_twin):
    """Requests whitened with the kept PSD (median of earlier requests) find the loudest
    pixel of each channel where their own PSD does (to a row or bin), at its SNR^2 within
    1.5x, on the same noise floor, and carry the PSD version they used."""
    summary, _ = tiny_model
    ckpt = read_checkpoint(summary.best_checkpoint)
    own = DecisionEngine(ckpt, 1.5)
    settings = ServePsdConfig(mode="kept", min_requests=3, depth=8, sample_every=2)
    kept = DecisionEngine(ckpt, 1.5, psd=settings)
    assert own.describe()["psd"] == {"mode": "request"}
    frames = find_frames(tiny_twin.frames[0].parent).frames
    data = {c: read_frame(frames[0], [c])[c] for c in ckpt.channels}

    def request(engine, gps):
        channels = {}
        for name, (x, rate, t0) in data.items():
            a = round((gps - t0) * rate)
            channels[name] = (rate, x[a : a + engine.samples(name)])
        return engine.validate(gps, channels, need_strain=True)

    starts = [frames[0].start + 3.0 * k for k in range(1, 6)]
    versions = [kept.run([request(kept, gps)])[0]["psd_version"] for gps in starts[:3]]
    info = kept.describe()["psd"]
    # auxiliary and strain PSDs are made as each reaches 3 requests (a veto request has
    # no strain), each a new version
    assert versions == [0, 0, 0] and info["version"] == 2 and info["requests"] == 3
    assert sorted(info["channels"]) == sorted(ckpt.channels)
    for gps in starts[3:]:
        a, b = request(own, gps), request(kept, gps)
        assert kept.run([b])[0]["psd_version"] == 2
        names = list(ckpt.channels)
        spec_own = own._condition([a], names).numpy()
        spec_kept = kept._condition([b], names, keep=True).numpy()
        for k in range(len(names)):
            x, y = spec_own[0, k], spec_kept[0, k]
            at_x = np.unravel_index(x.argmax(), x.shape)
            at_y = np.unravel_index(y.argmax(), y.shape)
            assert np.abs(np.subtract(at_x, at_y)).max() <= 1, names[k]  # row, bin
            assert abs(np.log(y.max() / x.max())) < np.log(1.5), names[k]
            # the noise floor: the same level (pixels differ by the PSDs' own noise)
            assert 0.8 < np.median(y) / np.median(x) < 1.25, names[k]
    # the kept PSDs' whitening filter is designed once per version and channel set
    built = dict(kept._kept_filters)
    assert built and {key[0] for key in built} == {2}
    kept.run([request(kept, starts[-1])])
    assert all(kept._kept_filters[key] is response for key, response in built.items())
