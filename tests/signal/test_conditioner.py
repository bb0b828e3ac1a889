"""The Conditioner against gwpy (the independent reference) and against injected physics."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from glitchflow.config import load_config
from glitchflow.evaluate.reference import gwpy_pooled_spectrogram, gwpy_spectrogram
from glitchflow.io.frames import find_frames
from glitchflow.io.span import read_span
from glitchflow.signal.conditioner import Conditioner
from glitchflow.signal.fast import BinPool, irfft, median, pool_index, rfft, smooth_length
from glitchflow.synth.waveforms import Component, render
from tests.conftest import CONFIGS

STRAIN = "V1:Hrec_hoft_16384Hz"


@pytest.fixture(scope="module")
def conditioner():
    return Conditioner(load_config(CONFIGS / "demo.yaml").signal)


@pytest.fixture(scope="module")
def interpolating():
    """gwpy's reduction (spline at the bin times): the one to compare with gwpy grid to grid."""
    return Conditioner(
        load_config(CONFIGS / "demo.yaml", ["signal.qtransform.reduction=interpolate"]).signal
    )


@pytest.fixture(scope="module")
def strain_segment(tiny_twin):
    frames = find_frames(tiny_twin.frames).frames
    seg = read_span(frames, [STRAIN]).segments[0]
    return seg.start, seg.data[STRAIN]


def test_agrees_with_gwpy_within_one_percent(interpolating, strain_segment):
    conditioner = interpolating
    _, raw = strain_segment
    x = conditioner.stack([torch.from_numpy(raw)[None]], [16384.0])
    ours = conditioner(x, [16384.0])[0, 0].numpy()
    ref, freqs = gwpy_spectrogram(x[0, 0].numpy(), conditioner, ours.shape[-1])
    np.testing.assert_allclose(freqs, conditioner.frequencies, rtol=1e-9)
    ours = ours[:, : ref.shape[1]]
    # statistic: relative L2 difference over the whole spectrogram, and the median
    # per-pixel relative difference
    rel_l2 = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    median_rel = np.median(np.abs(ours - ref) / ref)
    assert rel_l2 < 0.01 and median_rel < 0.01, (rel_l2, median_rel)
    assert np.unravel_index(ours.argmax(), ours.shape) == np.unravel_index(ref.argmax(), ref.shape)


def test_pooled_agrees_with_gwpy_reduced_the_same_way(conditioner, strain_segment):
    """The default reduction (max-pooling at each row's own sampling) against gwpy's own
    tile rows (q_scan), sampled and pooled onto the same bins: the same numbers."""
    _, raw = strain_segment
    x = conditioner.stack([torch.from_numpy(raw)[None]], [16384.0])
    ours = conditioner(x, [16384.0])[0, 0].numpy()
    ref, _ = gwpy_pooled_spectrogram(x[0, 0].numpy(), conditioner, ours.shape[-1])
    ours = ours[:, : ref.shape[1]]
    rel_l2 = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    positive = ref > 0
    median_rel = np.median(np.abs(ours - ref)[positive] / ref[positive])
    assert rel_l2 < 0.01 and median_rel < 0.01, (rel_l2, median_rel)
    assert np.unravel_index(ours.argmax(), ours.shape) == np.unravel_index(ref.argmax(), ref.shape)


def test_plans_are_built_once_per_length_and_change_nothing(conditioner):
    qt = conditioner.qtransform
    x = torch.randn(1, 2, 16 * 4096, dtype=torch.float64)
    first = conditioner(x)
    built = list(qt._plans)
    assert built, "the call built a plan for its input length"
    n, device = built[-1]
    assert qt.plan(n, device) is qt.plan(n, device)
    assert torch.equal(conditioner(x), first)  # the cached plan gives the same numbers
    assert list(qt._plans) == built  # and no new one


@pytest.mark.parametrize("shape", [(3, 63, 5), (2, 4, 64), (7,), (2, 8, 1)])
def test_median_is_numpys(shape):
    x = torch.rand(*shape)
    for dim in range(-len(shape), 0):
        expected = torch.as_tensor(np.median(x.numpy(), axis=dim))
        assert torch.allclose(median(x, dim).squeeze(dim), expected)


def test_median_leaves_its_input_alone():
    x = torch.rand(4, 9)
    kept = x.clone()
    median(x, -1), median(x, 0)
    assert torch.equal(x, kept)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(8192,), (1, 1, 10001), (3, 2, 4096)])
def test_real_ffts_are_torchs(shape, dtype):
    """One channel goes to pocketfft, batches to torch: the same transforms either way."""
    x = torch.randn(*shape, dtype=dtype)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for n in (None, shape[-1] + 7):
        ours = rfft(x, n)
        expected = torch.fft.rfft(x, n, dim=-1)
        assert ours.dtype == expected.dtype and ours.shape == expected.shape
        scale = expected.abs().max()
        assert (ours - expected).abs().max() <= tol * scale
        m = n or shape[-1]
        back = irfft(expected.conj().conj(), m)  # a conjugate view, resolved
        assert back.dtype == x.dtype and back.shape[-1] == m
        assert (back - torch.fft.irfft(expected, m, dim=-1)).abs().max() <= tol * x.abs().max()
    grad = x.clone().requires_grad_(True)
    rfft(grad).abs().sum().backward()  # autograd takes torch's transform
    assert grad.grad is not None


def test_fft_lengths_are_smooth_and_long_enough():
    for n in (3, 100, 8193, 270335, 1_000_001):
        m = smooth_length(n)
        assert m >= n and m % 2 == 0 and m < 1.25 * n + 4
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        assert m == 1


def _noise_with_glitch(rate, duration, t_glitch, f_glitch, snr_amp, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(duration * rate))
    comp = Component("x", "sine_gaussian", snr_amp, t_glitch, (f_glitch, 9.0, 0.0))
    k0, wave = render(comp, 0.0, rate)
    x[k0 : k0 + len(wave)] += wave
    return x


def test_glitch_found_at_its_time_and_frequency(conditioner, interpolating):
    duration, t_glitch, f_glitch = 16.0, 9.3, 120.0
    x = _noise_with_glitch(4096, duration, t_glitch, f_glitch, 6.0)
    spec = conditioner(torch.from_numpy(x)[None, None])[0, 0].numpy()
    sampled = interpolating(torch.from_numpy(x)[None, None])[0, 0].numpy()
    i_f, i_t = np.unravel_index(spec.argmax(), spec.shape)
    t_peak = conditioner.edge_seconds + (i_t + 0.5) * conditioner.time_step
    assert abs(t_peak - t_glitch) < 2 * conditioner.time_step
    assert abs(np.log(conditioner.frequencies[i_f] / f_glitch)) < 0.1
    assert spec.max() > 50
    # away from the glitch the energy is noise: tile energies have median 1 by
    # construction (seen sampled at the bin times); a pooled bin keeps the largest of
    # its tile samples, above 1 but far below any glitch threshold
    quiet = spec[:, : int(4 / conditioner.time_step)]
    assert 0.9 < np.median(sampled[:, : quiet.shape[1]]) < 1.1
    assert 1.0 < np.median(quiet) < 3.0 and quiet.max() < 25


def test_whitened_gaussian_noise_has_unit_variance(conditioner):
    rng = np.random.default_rng(4)
    coloured = np.cumsum(rng.standard_normal(4096 * 16)) * 0.01 + rng.standard_normal(4096 * 16)
    white = conditioner.whiten(torch.from_numpy(coloured)[None, None])[0, 0].numpy()
    assert abs(np.std(white) - 1) < 0.05


def test_shapes_times_and_mixed_rates(conditioner):
    rates = [16384.0, 10000.0, 256.0]
    duration = 12.0
    rng = np.random.default_rng(1)
    chans = [torch.from_numpy(rng.standard_normal((2, int(duration * r)))) for r in rates]
    spec = conditioner.condition(chans, rates)
    assert spec.shape == (2, 3, 64, conditioner.n_bins(duration)) and spec.dtype == torch.float32
    assert conditioner.padded_duration(conditioner.n_bins(duration)) <= duration
    # the 256 Hz channel has no information above 0.9 x 128 Hz: those rows are zero
    above = conditioner.frequencies > 0.9 * 128
    assert torch.all(spec[:, 2, above] == 0) and torch.all(spec[:, 2, ~above].mean(-1) > 0.5)
    assert torch.isfinite(spec).all()


def test_glitch_in_a_slow_channel_is_found(conditioner):
    x = _noise_with_glitch(256, 16.0, 8.0, 40.0, 6.0, seed=2)
    spec = conditioner.condition([torch.from_numpy(x)[None]], [256.0])[0, 0].numpy()
    i_f, i_t = np.unravel_index(spec.argmax(), spec.shape)
    assert abs(conditioner.edge_seconds + (i_t + 0.5) * conditioner.time_step - 8.0) < 0.05
    assert abs(np.log(conditioner.frequencies[i_f] / 40.0)) < 0.1


def test_no_state_between_calls_and_thread_safe(conditioner):
    rng = np.random.default_rng(3)
    inputs = [torch.from_numpy(rng.standard_normal((1, 2, 4096 * 8))) for _ in range(4)]
    expected = [conditioner(x) for x in inputs]
    results = [None] * 8

    def work(k):
        results[k] = conditioner(inputs[k % 4])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(8):
        assert torch.equal(results[k], expected[k % 4])


def test_bad_shapes_are_rejected(conditioner):
    with pytest.raises(ValueError, match="batch, channel, time"):
        conditioner(torch.zeros(10))
    with pytest.raises(ValueError, match="native rates"):
        conditioner(torch.zeros(1, 2, 4096 * 8), [4096.0])
    with pytest.raises(ValueError, match="fftlength"):
        conditioner(torch.zeros(1, 1, 1000))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu(conditioner):
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 4096 * 8)))
    cpu = conditioner(x)
    gpu = conditioner.to("cuda")(x.cuda()).cpu()
    conditioner.to("cpu")
    assert torch.allclose(cpu, gpu, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(("length", "n_bins"), [(32768, 2645), (4096, 2645), (1024, 597), (64, 64)])
def test_bin_pool_is_the_gather_of_its_bins(length, n_bins):
    """The sliding-window max-pooling picks, per bin, the largest of exactly the samples
    :func:`pool_index` assigns to it (bins of uneven width included)."""
    values = torch.rand(2, 3, length)
    values[0, 0, 5] = 100.0  # a lone peak lands in the bin that holds sample 5
    pooled = BinPool.build(length, n_bins).max(values)
    expected = values[..., torch.from_numpy(pool_index(length, n_bins))].amax(-1)
    assert torch.equal(pooled, expected)
    assert pooled[0, 0, 5 * n_bins // length] == 100.0


def test_a_kept_filter_response_whitens_as_designing_the_filter_each_time(
    conditioner, strain_segment
):
    """The endpoint's fast path: the whitening filter of a kept PSD, built once for an
    input length (and the channels' rates), gives the spectrogram that designing the
    filter from that PSD on every call gives, for strain-scaled data and at any scale."""
    _, raw = strain_segment
    rates = [16384.0, 16384.0]
    n_in = 16384 * 12
    x = conditioner.stack([torch.from_numpy(raw[:n_in])[None]] * 2, rates)
    x[:, 1] *= 1e22  # the same data at a very different scale
    psd = conditioner.estimate_psd(x)[0]
    response = conditioner.kept_response(psd, x.shape[-1], rates)
    with_response = conditioner(x, rates, psd=psd, response=response)
    designed = conditioner(x, rates, psd=psd)
    # the filter designed in double here and in float32 there: ~1e-4 of SNR^2
    assert torch.allclose(with_response, designed, rtol=2e-3, atol=2e-3)
    assert torch.allclose(with_response[:, 0], with_response[:, 1], rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="not for"):
        conditioner(x[..., :-4096], rates, psd=psd, response=response)
