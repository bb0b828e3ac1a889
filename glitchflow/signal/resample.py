"""Band-limited resampling of channels at mixed native rates to the analysis rate."""

from __future__ import annotations

from torch import Tensor


def integer_rate(rate: float, what: str = "sample rate") -> int:
    """``rate`` as an int (Hz), or a ValueError naming it when it is not whole."""
    if abs(rate - round(rate)) > 1e-9 or rate <= 0:
        raise ValueError(f"{what} {rate} Hz: only positive whole-Hz rates can be resampled")
    return round(rate)


def resample(x: Tensor, rate_in: float, rate_out: float) -> Tensor:
    """Resample ``x`` (..., time) from ``rate_in`` to ``rate_out`` Hz (windowed-sinc, torchaudio).

    Output length is ``round(time * rate_out / rate_in)``; a no-op when the rates match.
    """
    a, b = integer_rate(rate_in, "input rate"), integer_rate(rate_out, "output rate")
    if a == b:
        return x
    import torchaudio.functional as taf

    dtype = x.dtype
    out = taf.resample(x.double(), a, b, lowpass_filter_width=16, rolloff=0.95)
    n_out = round(x.shape[-1] * b / a)
    return out[..., :n_out].to(dtype)
