"""Spectral lines are found where they are, and nowhere else."""

from __future__ import annotations

import numpy as np
import pytest

from glitchflow.signal.lines import spectral_lines


def test_mains_lines_are_found_and_smooth_colour_is_not():
    df = 0.5
    f = np.arange(0, 1024, df)
    psd = 1e-24 * (1 + (20 / np.maximum(f, 0.1)) ** 4)  # steep red noise: not lines
    psd[[100, 300]] += 1e-21  # 50 Hz and 150 Hz
    lines = spectral_lines(psd, df)
    assert len(lines) == 2
    for (lo, hi), line in zip(lines, (50.0, 150.0)):
        assert lo < line < hi and hi - lo == pytest.approx(1.5, abs=0.01)
    assert spectral_lines(np.ones(1000), df) == ()
