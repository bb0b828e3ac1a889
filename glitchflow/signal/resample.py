"""Band-limited resampling of channels at mixed native rates to the analysis rate."""

from __future__ import annotations

import functools

import torch
from torch import Tensor


def integer_rate(rate: float, what: str = "sample rate") -> int:
    """``rate`` as an int (Hz), or a ValueError naming it when it is not whole."""
    if abs(rate - round(rate)) > 1e-9 or rate <= 0:
        raise ValueError(f"{what} {rate} Hz: only positive whole-Hz rates can be resampled")
    return round(rate)


#: windowed-sinc settings: 16 zero crossings each side, pass band to 0.95 x Nyquist
LOWPASS_FILTER_WIDTH = 16
ROLLOFF = 0.95


@functools.lru_cache(maxsize=64)
def _resampler(rate_in: int, rate_out: int, device: str):
    """torchaudio's ``Resample`` for one rate pair (its sinc kernel built once, double)."""
    from torchaudio.transforms import Resample

    module = Resample(
        rate_in,
        rate_out,
        lowpass_filter_width=LOWPASS_FILTER_WIDTH,
        rolloff=ROLLOFF,
        dtype=torch.float64,
    )
    return module.to(device)


def resample(x: Tensor, rate_in: float, rate_out: float) -> Tensor:
    """Resample ``x`` (..., time) from ``rate_in`` to ``rate_out`` Hz (windowed-sinc, torchaudio,
    in double; the kernel of each rate pair is built once).

    Output length is ``round(time * rate_out / rate_in)``; a no-op when the rates match.
    Stack the channels that share a rate into ``...`` to resample them in one call.
    """
    a, b = integer_rate(rate_in, "input rate"), integer_rate(rate_out, "output rate")
    if a == b:
        return x
    out = _resampler(a, b, str(x.device))(x.double())
    n_out = round(x.shape[-1] * b / a)
    return out[..., :n_out].to(x.dtype)
