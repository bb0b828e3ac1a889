"""Signal settings shared by every stage (one place for detector, channels, rates, Q grid)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from glitchflow.config.base import Strict


class ConditioningConfig(Strict):
    """Whitening settings (all durations in seconds, frequencies in Hz)."""

    fftlength: float = Field(2.0, gt=0, description="Welch FFT length for the PSD (s)")
    overlap: float = Field(1.0, ge=0, description="Welch segment overlap (s)")
    average: Literal["median", "mean"] = "median"
    filter_duration: float = Field(
        2.0, gt=0, description="whitening FIR length (s), truncates the inverse ASD"
    )
    highpass: float | None = Field(
        None, ge=0, description="zero the whitening filter below this frequency (Hz)"
    )

    @model_validator(mode="after")
    def _overlap_below_fftlength(self) -> ConditioningConfig:
        if self.overlap >= self.fftlength:
            raise ValueError(
                f"overlap ({self.overlap} s) must be shorter than fftlength ({self.fftlength} s)"
            )
        return self


class QTransformConfig(Strict):
    """Single-Q transform onto a log-frequency x uniform-time grid."""

    q: float = Field(12.0, gt=2.0, description="quality factor of the sine-Gaussian tiles")
    frange: tuple[float, float] = Field((8.0, 500.0), description="frequency range (Hz)")
    n_freq: int = Field(64, ge=2, le=4096, description="number of log-spaced frequency rows")
    time_step: float = Field(
        6.0 / 256, gt=0, description="output time-bin width (s); 6 s / 256 bins in the seed"
    )
    reduction: Literal["max", "interpolate"] = Field(
        "max",
        description="tile row -> time bins: max = loudest tile sample in the bin (peaks "
        "survive any grid); interpolate = gwpy's spline at the bin times",
    )
    oversample: int = Field(
        1, ge=1, le=8, description="tile samples per gwpy tile sample (reduction=max)"
    )

    @model_validator(mode="after")
    def _ordered_range(self) -> QTransformConfig:
        lo, hi = self.frange
        if not 0 < lo < hi:
            raise ValueError(f"frange must satisfy 0 < low < high, got {list(self.frange)}")
        return self


class SignalConfig(Strict):
    """Settings shared by every stage: detector, channels, rates and the Q grid."""

    detector: str = Field("V1", pattern=r"^[A-Z][0-9]$")
    strain_channel: str = "V1:Hrec_hoft_16384Hz"
    sample_rate: float = Field(4096.0, gt=0, description="analysis sample rate (Hz)")
    conditioning: ConditioningConfig = ConditioningConfig()
    qtransform: QTransformConfig = QTransformConfig()

    @model_validator(mode="after")
    def _band_below_nyquist(self) -> SignalConfig:
        if self.qtransform.frange[1] >= self.sample_rate / 2:
            raise ValueError(
                f"qtransform.frange upper edge {self.qtransform.frange[1]} Hz must be below "
                f"the Nyquist frequency {self.sample_rate / 2} Hz of signal.sample_rate"
            )
        per_bin = self.qtransform.time_step * self.sample_rate
        if abs(per_bin - round(per_bin)) > 1e-6:
            raise ValueError(
                f"qtransform.time_step ({self.qtransform.time_step} s) x sample_rate "
                f"({self.sample_rate} Hz) = {per_bin} must be a whole number of samples"
            )
        if not self.strain_channel.startswith(self.detector + ":"):
            raise ValueError(
                f"strain_channel {self.strain_channel!r} does not belong to detector "
                f"{self.detector!r}"
            )
        return self
