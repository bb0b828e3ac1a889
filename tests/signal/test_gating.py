"""Inverse-Tukey gating and the veto state vector."""

from __future__ import annotations

import numpy as np

from glitchflow.signal.gating import gate_window, state_vector


def test_gate_zeroes_the_segment_and_tapers_smoothly():
    rate, t0 = 256.0, 100.0
    w = gate_window(int(8 * rate), rate, t0, np.array([[103.0, 104.0]]), taper=0.5)
    t = t0 + np.arange(len(w)) / rate
    assert np.all(w[(t >= 103.0) & (t < 104.0)] == 0)
    assert np.all(w[(t < 102.5) | (t >= 104.5)] == 1)
    ramp = w[(t >= 102.5) & (t < 103.0)]
    assert np.all(np.diff(ramp) <= 0) and ramp[0] == 1.0  # falls smoothly to 0
    assert np.max(np.abs(np.diff(w))) < 0.05  # no step anywhere


def test_overlapping_gates_and_state_vector():
    rate, t0 = 16.0, 0.0
    segs = np.array([[1.0, 1.5], [1.6, 2.0]])
    w = gate_window(64, rate, t0, segs, taper=0.25)
    assert w[int(1.5 * rate)] < 0.5  # between two close gates the tapers multiply
    state = state_vector(64, rate, t0, segs)
    assert state.dtype == np.int32
    assert state[int(1.0 * rate)] == 1 and state[int(0.9 * rate)] == 0
    assert state.sum() == int(0.5 * rate) + int(0.4 * rate) + 1  # 1.5625-1.625 overlaps [1.6, 2)
