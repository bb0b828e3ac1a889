"""PSD estimation and FIR whitening in torch, with gwpy's conventions.

The PSD is a Welch estimate from the data being whitened (``fftlength``,
``overlap``, Hann window, bias-corrected median or mean average).
The whitening filter follows ``gwpy.timeseries.TimeSeries.whiten``: the ASD
is interpolated to the data's frequency resolution, the inverse ASD is
tapered over its first and last five bins (and zeroed below an optional
high-pass corner), its impulse response is truncated to ``filter_duration``
seconds with a Hann window, and the data are convolved with it and scaled by
``sqrt(2 / sample_rate)`` (unit variance for Gaussian noise).  Unlike gwpy,
the edges are not tapered but cropped: half a filter length at each end.

Frequencies above a channel's usable band (the native Nyquist of an
up-sampled channel) are zeroed in the filter rather than amplified.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from glitchflow.signal.fast import irfft, median, rfft, smooth_length, squared_magnitude


def _median_bias(n: int) -> float:
    """Bias of the median of ``n`` chi^2_2 periodogram values (scipy's ``_median_bias``)."""
    even = 2 * np.arange(1, (n - 1) // 2 + 1)
    return float(1 + np.sum(1.0 / (even + 1) - 1.0 / even))


def welch_psd(
    x: Tensor, sample_rate: float, fftlength: float, overlap: float, average: str
) -> Tensor:
    """One-sided Welch PSD (units^2/Hz) of ``x`` (batch, channel, time) -> (batch, channel, freq).

    Hann-windowed segments of ``fftlength`` s every ``fftlength - overlap`` s, each
    mean-subtracted, averaged with the bias-corrected median or the mean (as
    ``scipy.signal.welch`` and gwpy).  ``fftlength * sample_rate // 2 + 1`` bins.
    """
    nperseg = round(fftlength * sample_rate)
    nstride = nperseg - round(overlap * sample_rate)
    if x.shape[-1] < nperseg:
        raise ValueError(
            f"need at least fftlength={fftlength} s of data to estimate a PSD, "
            f"got {x.shape[-1] / sample_rate:.3f} s"
        )
    segments = x.unfold(-1, nperseg, nstride)  # (batch, channel, segment, nperseg), a view
    window = torch.hann_window(nperseg, periodic=True, dtype=x.dtype, device=x.device)
    spectra = rfft(segments * window)
    # each segment's mean is removed in the spectrum: the periodic Hann window's own
    # spectrum is nperseg / 2 at DC and -nperseg / 4 at bin 1, zero elsewhere (one pass
    # over the segments fewer than subtracting before windowing)
    means = segments.mean(dim=-1)
    spectra[..., 0] -= means * (nperseg / 2)
    if spectra.shape[-1] > 1:
        spectra[..., 1] += means * (nperseg / 4)
    power = squared_magnitude(spectra)
    n_seg = power.shape[-2]
    if average == "mean":
        psd = power.mean(dim=-2)
    else:
        psd = median(power, dim=-2).squeeze(-2) / _median_bias(n_seg)
    # the one-sided scaling is positive per bin, so it commutes with the average
    psd = psd * (2.0 / (sample_rate * float((window**2).sum())))
    psd[..., 0] /= 2
    if nperseg % 2 == 0:
        psd[..., -1] /= 2
    return psd


def _interp_last(values: Tensor, old_step: float, new_step: float, n_new: int) -> Tensor:
    """Linear interpolation along the last axis from a grid ``k * old_step`` to ``k * new_step``.

    When both grids end at the same frequency (whitening data of an even number of
    samples) by ``F.interpolate`` (3-5x faster than gathering the neighbours), else by
    gathering them; the same values to float rounding."""
    n_old = values.shape[-1]
    if abs((n_new - 1) * new_step - (n_old - 1) * old_step) <= 1e-9 * n_old * old_step:
        flat = values.reshape(-1, 1, n_old)
        out = torch.nn.functional.interpolate(flat, size=n_new, mode="linear", align_corners=True)
        return out.reshape(*values.shape[:-1], n_new)
    pos = torch.arange(n_new, dtype=torch.float64, device=values.device) * (new_step / old_step)
    pos = pos.clamp(max=values.shape[-1] - 1)
    lo = pos.floor().long().clamp(max=values.shape[-1] - 2)
    frac = (pos - lo).to(values.dtype)
    return values[..., lo] * (1 - frac) + values[..., lo + 1] * frac


def whitening_filter(
    psd: Tensor,
    psd_df: float,
    n_samples: int,
    sample_rate: float,
    filter_duration: float,
    highpass: float | None = None,
    band_limit: Tensor | None = None,
) -> Tensor:
    """Time-domain whitening FIR ``(batch, channel, ntaps)`` for data of ``n_samples``.

    ``psd`` (batch, channel, freq) on a grid of ``psd_df`` Hz; ``band_limit``
    (channel,) Hz zeroes the response above each channel's usable band.
    """
    ntaps = int(filter_duration * sample_rate)
    df = sample_rate / n_samples
    n_freq = round((psd.shape[-1] - 1) * psd_df / df) + 1
    asd = _interp_last(psd.sqrt(), psd_df, df, n_freq)
    tiny = torch.finfo(asd.dtype).tiny ** 0.5  # 1/tiny stays finite (float32: 1e-19)
    transfer = torch.where(asd > tiny, 1.0 / asd.clamp_min(tiny), torch.zeros_like(asd))
    freqs = torch.arange(n_freq, dtype=torch.float64, device=psd.device) * df
    ncorner = int(highpass / df) if highpass else 0
    transfer[..., :ncorner] = 0
    taper = torch.hann_window(10, periodic=False, dtype=transfer.dtype, device=psd.device)
    transfer[..., ncorner : ncorner + 5] *= taper[:5]
    transfer[..., n_freq - 5 :] *= taper[5:]
    if band_limit is not None:
        above = freqs[None, :] > band_limit.to(freqs)[:, None]
        transfer = transfer.masked_fill(above[None], 0.0)
    impulse = irfft(transfer)
    half = ntaps // 2
    window = torch.hann_window(ntaps, periodic=False, dtype=impulse.dtype, device=psd.device)
    head = impulse[..., :half] * window[half:ntaps]
    tail = impulse[..., impulse.shape[-1] - half :] * window[:half]
    # gwpy rolls the truncated impulse by ntaps/2 - 1 and keeps the first ntaps samples
    # (the sample after the head is the zeroed middle of the truncated impulse)
    return torch.cat([tail[..., 1:], head, torch.zeros_like(head[..., :1])], dim=-1)


def whiten_segment(
    x: Tensor,
    psd: Tensor,
    psd_df: float,
    sample_rate: float,
    filter_duration: float,
    highpass: float | None = None,
    band_limit: Tensor | None = None,
) -> Tensor:
    """Whiten ``x`` (batch, channel, time) by ``psd`` (batch, channel, freq at ``psd_df`` Hz).

    Returns ``(batch, channel, time - 2 * (ntaps // 2))`` in ``x``'s dtype with ``ntaps =
    filter_duration * sample_rate``: half a filter is cropped from each edge.  Float32
    input is whitened in float32 (bring it to unit scale first: the PSD of strain's
    ~1e-21 underflows there).
    """
    # designed and applied in x's precision (float32 differs from double by ~1e-7)
    fir = whitening_filter(
        psd.to(x.dtype), psd_df, x.shape[-1], sample_rate, filter_duration, highpass, band_limit
    )
    return apply_whitening(x, filter_response(fir, x.shape[-1]), fir.shape[-1], sample_rate)


#: overlap-save block of a long whitening convolution, in filter lengths: blocks of 4
#: filters (32768 samples for 2 s at 4096 Hz) keep 3/4 of each transform and are
#: transformed as one batch, which torch's FFTs take 2.5x faster for one 64-s channel
#: (filter spectrum included) than one transform of the data's length
BLOCK_FILTERS = 4


def convolution_length(n: int, ntaps: int) -> int:
    """FFT length of :func:`apply_whitening` for ``n`` samples and an FIR of ``ntaps``.

    Up to two blocks' worth of data (16 s at 4096 Hz with a 2-s filter): ``n`` rounded
    up to a fast length, one circular convolution.  That wraps only into the first
    ``ntaps - 1`` samples of the full linear one, inside the half filter cropped at each
    edge (as long as ``ntaps <= n``), so padding to ``n + ntaps - 1`` would buy nothing
    kept.  Longer data: overlap-save blocks of :data:`BLOCK_FILTERS` filters."""
    single = smooth_length(max(n, ntaps))
    block = smooth_length(BLOCK_FILTERS * ntaps)
    return single if single <= 2 * block else block


def filter_response(fir: Tensor, n: int) -> Tensor:
    """Spectrum ``(..., nfft // 2 + 1)`` of a whitening FIR ``(..., ntaps)`` for data of ``n``
    samples, on the FFT length :func:`apply_whitening` uses (:func:`convolution_length`):
    depends on the PSD and ``n`` only, so it can be kept and reused."""
    return rfft(fir, convolution_length(n, fir.shape[-1]))


def apply_whitening(x: Tensor, response: Tensor, ntaps: int, sample_rate: float) -> Tensor:
    """Convolve mean-removed ``x`` (batch, channel, time) with the FIR whose
    :func:`filter_response` is ``response`` (broadcast against ``(batch, channel, freq)``)
    and crop half a filter from each edge, as :func:`whiten_segment`.

    The samples kept are those of the linear convolution from ``ntaps - 1`` on (where
    the filter lies wholly inside the data): by overlap-save, each block of ``nfft``
    input samples gives ``nfft - ntaps + 1`` of them exactly, the blocks transformed as
    one batch (a single block for short data)."""
    x = x - x.mean(dim=-1, keepdim=True)  # gwpy detrends ('constant') before whitening
    n = x.shape[-1]
    nfft = convolution_length(n, ntaps)
    if response.shape[-1] != nfft // 2 + 1:
        raise ValueError(
            f"filter response of {response.shape[-1]} bins is not for {n} samples "
            f"({nfft // 2 + 1} bins)"
        )
    # scipy.signal.fftconvolve(mode='same') starts at (ntaps - 1) // 2 of the full one;
    # half a filter more is cropped at each end: n_out samples from ntaps - 1 on
    n_out = n - 2 * (ntaps // 2)
    step = nfft - ntaps + 1  # exact samples per block
    n_blocks = -(-n_out // step)
    if n_blocks == 1:
        blocks = x[..., None, :]  # (batch, channel, 1, n), zero-padded by the FFT
    else:
        padded = F.pad(x, (0, max(0, (n_blocks - 1) * step + nfft - n)))
        blocks = padded.unfold(-1, nfft, step)  # (batch, channel, block, nfft), a view
    full = irfft(rfft(blocks, nfft) * response[..., None, :], nfft)[..., ntaps - 1 :]
    kept = full[..., :step].reshape(*full.shape[:-2], -1)
    return kept[..., :n_out] * math.sqrt(2.0 / sample_rate)


def unwhiten(
    white: Tensor,
    psd: Tensor,
    psd_df: float,
    n_whitened: int,
    sample_rate: float,
    filter_duration: float,
    band: tuple[float, float],
    highpass: float | None = None,
) -> Tensor:
    """Invert :func:`whiten_segment` for a localised signal: whitened ``(time,)`` -> data units.

    ``psd`` ``(freq,)`` on a ``psd_df`` Hz grid and ``n_whitened`` (the length of
    the data that was whitened) rebuild the same FIR; the signal is divided by
    its frequency response inside ``band`` (Hz) and zeroed outside it, where the
    filter is tapered, cut or too small to invert.  Whitening ``unwhiten(w)``
    again gives back ``w`` band-limited to ``band``.
    """
    fir = whitening_filter(
        psd[None, None], psd_df, n_whitened, sample_rate, filter_duration, highpass
    )[0, 0]
    ntaps = fir.shape[-1]
    n = white.shape[-1]
    nfft = smooth_length(n + ntaps)
    centre = (ntaps - 1) // 2  # the 'same' alignment of whiten_segment
    response = torch.fft.rfft(torch.roll(torch.nn.functional.pad(fir, (0, nfft - ntaps)), -centre))
    response = response * math.sqrt(2.0 / sample_rate)
    freqs = torch.fft.rfftfreq(nfft, 1.0 / sample_rate, dtype=torch.float64)
    inside = (freqs >= band[0]) & (freqs <= band[1]) & (response.abs() > 0)
    inverse = torch.where(inside, 1.0 / torch.where(inside, response, 1.0), 0.0)
    spectrum = torch.fft.rfft(white.double(), nfft) * inverse
    return torch.fft.irfft(spectrum, nfft)[..., :n]
