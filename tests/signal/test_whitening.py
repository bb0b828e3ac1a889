"""Whitening's numerical kernels against scipy: the Welch PSD and the FIR convolution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from glitchflow.signal.whitening import (
    apply_whitening,
    convolution_length,
    filter_response,
    welch_psd,
)


@pytest.mark.parametrize("average", ["median", "mean"])
@pytest.mark.parametrize("nperseg", [1024, 1023])
def test_welch_is_scipys(average, nperseg):
    """Segment means removed in the spectrum and the one-sided scaling after the average
    give scipy's Welch (even and odd segments, data with an offset)."""
    rng = np.random.default_rng(nperseg)
    x = rng.normal(size=(2, 3, 9000)) + 5.0
    noverlap = nperseg // 2
    _, expected = scipy.signal.welch(
        x, fs=nperseg, nperseg=nperseg, noverlap=noverlap, average=average
    )
    ours = welch_psd(torch.from_numpy(x), float(nperseg), 1.0, noverlap / nperseg, average)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10)
    single = welch_psd(
        torch.from_numpy(x).float(), float(nperseg), 1.0, noverlap / nperseg, average
    )
    np.testing.assert_allclose(single.numpy(), expected, rtol=2e-4)


@pytest.mark.parametrize(
    ("n", "ntaps", "blocks"),
    [
        (1000, 101, True),
        (1000, 100, True),
        (4097, 4096, False),
        (65536, 8192, False),
        (262144, 8192, True),
        (300001, 8191, True),
    ],
)
def test_convolution_is_fftconvolve_same_cropped(n, ntaps, blocks):
    """One circular convolution of length ``n`` (not ``n + ntaps - 1``), or overlap-save
    blocks for long data, keeps exactly the samples of the linear one that survive the
    crop of half a filter at each end."""
    nfft = convolution_length(n, ntaps)
    assert (nfft < n) == blocks
    rng = np.random.default_rng(n + ntaps)
    x, fir = rng.normal(size=(2, n)), rng.normal(size=(2, ntaps))
    ours = apply_whitening(
        torch.from_numpy(x), filter_response(torch.from_numpy(fir), n), ntaps, 4096.0
    ).numpy()
    centred = x - x.mean(-1, keepdims=True)
    same = np.stack([scipy.signal.fftconvolve(a, b, mode="same") for a, b in zip(centred, fir)])
    half = ntaps // 2
    expected = same[:, half : n - half] * math.sqrt(2 / 4096)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-12 * np.abs(expected).max())
