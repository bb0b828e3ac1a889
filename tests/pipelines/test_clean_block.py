"""The pieces of one cleaned block that need no Ray: resampling only where there is signal."""

from __future__ import annotations

import numpy as np
import torch

from glitchflow.pipelines.clean_block import resample_support
from glitchflow.signal.resample import resample


def test_resampling_the_support_gives_the_whole_block_resampling():
    fs, n = 4096, 40 * 4096
    x = np.zeros(n)
    t = np.arange(-2 * fs, 2 * fs) / fs
    for centre in (5.3, 6.0, 31.7):  # two close glitches make one chunk, one alone another
        k = int(centre * fs)
        x[k - 2 * fs : k + 2 * fs] += np.exp(-((t / 0.3) ** 2)) * np.sin(2 * np.pi * 80 * t)
    whole = resample(torch.from_numpy(x), fs, 16384).numpy()
    part = resample_support(x, fs, 16384, len(whole))
    np.testing.assert_allclose(part, whole, rtol=0, atol=1e-12 * np.abs(whole).max())
    assert not part[: 2 * 16384].any()  # nothing computed (or invented) far from signal
    assert not resample_support(np.zeros(n), fs, 16384, len(whole)).any()
