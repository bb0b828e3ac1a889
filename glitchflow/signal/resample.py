"""Band-limited resampling of channels at mixed native rates to the analysis rate.

One filter for every path: torchaudio's windowed-sinc kernel (16 zero crossings
each side, pass band to 0.95 x the lower Nyquist), built once per rate pair in
double.  How it is applied depends on the ratio ``orig : new`` (reduced by the
greatest common divisor):

* few output phases (``new <= FFT_MAX_PHASES``: 16384 -> 4096 Hz is 4 : 1,
  2048 -> 4096 Hz is 1 : 2): FFT overlap-save, one correlation per phase, in
  segments of 16 kernels.  In double precision torch's direct ``conv1d`` of a
  one-channel signal is slow on CPU (6.4 s for 3 x 300 s of 16-kHz strain against
  0.18 s here); the samples agree with torchaudio's to ~1e-15 of the signal's scale;
* many phases (10 kHz -> 4096 Hz is 625 : 256, 500 Hz -> 4096 Hz is 125 :
  1024): torchaudio's own strided convolution, already fast for those shapes.

In single precision (``dtype=torch.float32``, what the Conditioner asks for: its
whitening and Q-transform run in float32) oneDNN runs the strided convolution 2-14x
faster than either double path, and it takes every ratio but few-phase down-sampling
(16 kHz strain to 4096 Hz), whose 140-tap single phase it runs at ~1 GFLOP/s: that
goes by the FFT path in float32, 3-4x faster (8.4 s of strain: 4.1 -> 1.2 ms).  Both
agree with double to ~5e-7 of the signal's peak.
"""

from __future__ import annotations

import functools
import math

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
def _resampler(rate_in: int, rate_out: int, device: str, dtype: torch.dtype = torch.float64):
    """torchaudio's ``Resample`` for one rate pair (its sinc kernel built once in double,
    kept in ``dtype``)."""
    from torchaudio.transforms import Resample

    module = Resample(
        rate_in,
        rate_out,
        lowpass_filter_width=LOWPASS_FILTER_WIDTH,
        rolloff=ROLLOFF,
        dtype=torch.float64,
    )
    return module.to(device, dtype)


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
    few_phases = b // math.gcd(a, b) <= FFT_MAX_PHASES
    fft_path = few_phases and (dtype == torch.float64 or a > b)
    if fft_path and x.shape[-1] > 0:
        flat = x.to(dtype).reshape(-1, x.shape[-1])
        out = _fft_resample(flat, a, b).reshape(*x.shape[:-1], -1)
    else:
        out = _resampler(a, b, str(x.device), dtype)(x.to(dtype))
    return out[..., :n_out].to(x.dtype)
