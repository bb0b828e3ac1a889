"""Band-limited resampling of channels at mixed native rates to the analysis rate.

One filter for every path: torchaudio's windowed-sinc kernel (16 zero crossings
each side, pass band to 0.95 x the lower Nyquist), built once per rate pair in
double; torchaudio's samples (its strided convolution) computed in one of two ways,
by the ratio ``orig : new`` (reduced by the greatest common divisor):

* few output phases (``new <= FFT_MAX_PHASES``: 16384 -> 4096 Hz is 4 : 1,
  2048 -> 4096 Hz is 1 : 2): FFT overlap-save, one correlation per phase, in
  segments of 16 kernels.  torch's direct ``conv1d`` of a one-channel signal is slow
  on CPU: 6.4 s in double for 3 x 300 s of 16-kHz strain against 0.18 s here, and
  oneDNN runs the 140-tap single phase of 16384 -> 4096 Hz at ~1 GFLOP/s in float32
  (8.4 s of strain: 4.1 ms, 1.2 ms here);
* many phases (10 kHz -> 4096 Hz is 625 : 256, 500 Hz -> 4096 Hz is 125 :
  1024): by bands of phases (:func:`_banded_resample`), skipping the taps outside
  each phase's window that the strided convolution multiplies all the same (8 of
  the endpoint's channels, 5 of them at 10 kHz: 7.2 -> 3.8 ms in float32).

In double the samples agree with torchaudio's to ~1e-15 of the signal's scale; in
single precision (``dtype=torch.float32``, what the Conditioner asks for: its
whitening and Q-transform run in float32) to ~5e-7 of the signal's peak.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: windowed-sinc settings: 16 zero crossings each side, pass band to 0.95 x Nyquist
LOWPASS_FILTER_WIDTH = 16
ROLLOFF = 0.95
#: at most this many output phases use the FFT path
FFT_MAX_PHASES = 4
#: overlap-save segments of this many kernel lengths (rounded up to a power of two):
#: 4096 samples for 16384 -> 4096 Hz, the fastest of 2^10-2^16 in double and single
FFT_SEGMENT_KERNELS = 16


def integer_rate(rate: float, what: str = "sample rate") -> int:
    """``rate`` as an int (Hz), or a ValueError naming it when it is not whole."""
    if abs(rate - round(rate)) > 1e-9 or rate <= 0:
        raise ValueError(f"{what} {rate} Hz: only positive whole-Hz rates can be resampled")
    return round(rate)


@functools.lru_cache(maxsize=64)
def _resampler(rate_in: int, rate_out: int, device: str):
    """torchaudio's ``Resample`` for one rate pair: the source of its sinc kernel (built
    once, in double) and of its geometry; both paths apply the kernel themselves."""
    from torchaudio.transforms import Resample

    module = Resample(
        rate_in,
        rate_out,
        lowpass_filter_width=LOWPASS_FILTER_WIDTH,
        rolloff=ROLLOFF,
        dtype=torch.float64,
    )
    return module.to(device)


@functools.lru_cache(maxsize=64)
def _phase_spectra(
    rate_in: int, rate_out: int, device: str, segment: int, dtype: torch.dtype
) -> Tensor:
    """Spectra ``(new, segment // 2 + 1)`` of the time-reversed sinc kernel of each output
    phase, zero-padded to ``segment`` samples (computed in double, complex ``dtype``)."""
    kernel = _resampler(rate_in, rate_out, device).kernel[:, 0]  # (new, K)
    return torch.fft.rfft(kernel.flip(-1), n=segment).to(dtype)


def _fft_resample(x: Tensor, rate_in: int, rate_out: int) -> Tensor:
    """torchaudio's resampling of ``x`` (batch, time), double or float32, by overlap-save
    correlation.

    torchaudio pads ``x`` with ``width`` zeros before and ``width + orig`` after and
    takes, for output phase ``i`` and frame ``k``, ``y[k * new + i] = sum_j kernel[i, j]
    x_padded[k * orig + j]``.  Here each phase's full correlation is computed in
    segments of :data:`FFT_SEGMENT_KERNELS` kernel lengths whose hop is a multiple of
    ``orig`` and sub-sampled every ``orig`` samples."""
    module = _resampler(rate_in, rate_out, str(x.device))
    orig, new = module.orig_freq // module.gcd, module.new_freq // module.gcd
    width, taps = module.width, module.kernel.shape[-1]
    batch, length = x.shape
    frames = length // orig + 1  # torchaudio's strided-convolution output frames
    needed = frames * orig  # correlation lags computed (every orig-th one kept)
    segment = 1 << math.ceil(math.log2(FFT_SEGMENT_KERNELS * taps))
    hop = segment - taps + 1
    hop -= hop % orig
    n_seg = math.ceil(needed / hop)
    total = (n_seg - 1) * hop + segment
    padded = torch.nn.functional.pad(x, (width, total - length - width))
    segments = padded.unfold(-1, segment, hop)  # (batch, n_seg, segment), a view
    spectra = torch.fft.rfft(segments)[:, :, None]  # (batch, n_seg, 1, bins)
    phases = _phase_spectra(rate_in, rate_out, str(x.device), segment, spectra.dtype)
    full = torch.fft.irfft(spectra * phases, n=segment)  # (batch, n_seg, new, segment)
    kept = full[..., taps - 1 : taps - 1 + hop : orig]  # (batch, n_seg, new, hop / orig)
    frames_out = kept.transpose(2, 3).reshape(batch, -1, new)[:, :frames]
    return frames_out.reshape(batch, -1)


@dataclass(frozen=True)
class _Bands:
    """torchaudio's kernel cut into bands of ``per_band`` consecutive output phases, each
    band's taps over ``span`` input samples starting ``step`` samples after the previous
    band's: ``weights`` ``(n_bands, span, per_band)``."""

    weights: Tensor
    step: int
    span: int
    orig: int
    width: int


@functools.lru_cache(maxsize=64)
def _bands(rate_in: int, rate_out: int, device: str, dtype: torch.dtype) -> _Bands:
    """The :class:`_Bands` of a rate pair: of the powers of two that divide the phases,
    the band size with the least work, ``phases x span`` multiply-adds plus the copy of
    ``n_bands x span`` input samples per frame (taken as 32 multiply-adds each)."""
    module = _resampler(rate_in, rate_out, device)
    kernel = module.kernel[:, 0]  # (new, taps), double
    new, taps = kernel.shape
    orig = module.orig_freq // module.gcd
    # each phase's window spans +-16 zero crossings of the sinc; outside it the taps are
    # cos(pi / 2)^2 ~ 4e-33 of the peak
    live = kernel.abs() > kernel.abs().max() * 1e-15
    first = live.int().argmax(-1)
    last = taps - 1 - live.flip(-1).int().argmax(-1)
    best = None
    per_band = 1
    while new % per_band == 0:
        n_bands = new // per_band
        band = torch.arange(n_bands)
        lo = first.view(n_bands, per_band).amin(-1)
        hi = last.view(n_bands, per_band).amax(-1)
        step = (per_band * orig) // new
        if n_bands > 1:  # bands start at band * step, at or before their first tap
            step = min(step, int((lo[1:] // band[1:]).min()))
        span = int((hi - band * step).max()) + 1
        cost = new * span + 32 * n_bands * span
        if best is None or cost < best[0]:
            best = (cost, per_band, step, span)
        per_band *= 2
    _, per_band, step, span = best
    n_bands = new // per_band
    padded = torch.nn.functional.pad(kernel, (0, n_bands * step + span))
    columns = (torch.arange(n_bands) * step)[:, None] + torch.arange(span)  # (n_bands, span)
    weights = padded.gather(1, columns.repeat_interleave(per_band, 0))  # (new, span)
    weights = weights.view(n_bands, per_band, span).transpose(1, 2).contiguous()
    return _Bands(weights.to(device, dtype), step, span, orig, module.width)


def _banded_resample(x: Tensor, bands: _Bands) -> Tensor:
    """torchaudio's strided convolution of ``x`` (batch, time) by bands of phases: each
    frame's input samples read in place (a strided view) for every band, one batched
    product with the band's taps.  The sinc kernel of ``new`` phases over ``2 width +
    orig`` taps is zero outside +-16 zero crossings of each phase (85 of 709 taps for
    10 kHz -> 4096 Hz), which the convolution multiplies all the same: 2-3x faster,
    the same sums to float rounding."""
    batch, length = x.shape
    n_bands, span, _ = bands.weights.shape
    frames = length // bands.orig + 1  # torchaudio's output frames
    needed = (frames - 1) * bands.orig + (n_bands - 1) * bands.step + span
    padded = torch.nn.functional.pad(x, (bands.width, max(0, needed - length - bands.width)))
    view = padded.as_strided(
        (batch, frames, n_bands, span), (padded.shape[-1], bands.orig, bands.step, 1)
    )
    return torch.einsum("bfgs,gsp->bfgp", view, bands.weights).reshape(batch, -1)


def resample(
    x: Tensor, rate_in: float, rate_out: float, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Resample ``x`` (..., time) from ``rate_in`` to ``rate_out`` Hz (windowed-sinc
    computed in ``dtype``: double by default, float32 for the Conditioner; the kernel of
    each rate pair is built once; see the module docstring for the paths).

    Output length is ``round(time * rate_out / rate_in)``, in ``x``'s dtype; a no-op when
    the rates match.  Stack the channels that share a rate into ``...`` to resample them
    in one call.
    """
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"resample computes in float64 or float32, not {dtype}")
    a, b = integer_rate(rate_in, "input rate"), integer_rate(rate_out, "output rate")
    if a == b:
        return x
    n_out = round(x.shape[-1] * b / a)
    flat = x.to(dtype).reshape(-1, x.shape[-1])
    if b // math.gcd(a, b) <= FFT_MAX_PHASES and x.shape[-1] > 0:
        out = _fft_resample(flat, a, b)
    else:
        out = _banded_resample(flat, _bands(a, b, str(x.device), dtype))
    return out.reshape(*x.shape[:-1], -1)[..., :n_out].to(x.dtype)
