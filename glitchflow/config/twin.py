"""Configuration of the detector twin: span, frames, channels, noise and glitch families.

Rates are in events per second (Hz), frequencies in Hz, times in seconds (GPS for
absolute times), SNRs are matched-filter (optimal) SNRs against the channel's
own noise PSD.  The default channel layout is a Virgo-like set of auxiliary
channels; see :mod:`glitchflow.synth.twin` for how each family couples.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from glitchflow.config.base import Strict

CHANNEL_PATTERN = r"^[A-Z][0-9]:[A-Za-z0-9_\-]+$"


class NoiseModel(Strict):
    """Amplitude spectral density ``level * sqrt(1 + (knee / f) ** slope)`` plus lines.

    ``level`` is the white floor in channel units per sqrt(Hz); ``lines`` are
    sinusoids ``[frequency Hz, amplitude]`` (mains in magnetometers, say).
    """

    level: float = Field(1.0, gt=0)
    knee: float = Field(0.0, ge=0, description="Hz; 0 for white noise")
    slope: float = Field(2.0, ge=0, le=8)
    lines: list[tuple[float, float]] = Field(default_factory=list)


class ChannelSpec(Strict):
    """One auxiliary channel of the twin."""

    name: str = Field(pattern=CHANNEL_PATTERN)
    sample_rate: float = Field(gt=0, le=65536)
    noise: NoiseModel = NoiseModel()
    unit: str = "counts"
    strain_derived: bool = Field(
        False, description="carries a copy of strain (unsafe for vetoes, e.g. DARM error)"
    )


class SnrDistribution(Strict):
    """Power law ``p(snr) ~ snr**-index`` on ``[low, high]``."""

    low: float = Field(8.0, gt=0)
    high: float = Field(80.0, gt=0)
    index: float = Field(2.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> SnrDistribution:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self


def _range(lo: float, hi: float, name: str) -> None:
    if not 0 < lo <= hi:
        raise ValueError(f"{name} must satisfy 0 < low <= high, got [{lo}, {hi}]")


class _Family(Strict):
    rate: float = Field(0.01, ge=0, description="events per second")
    snr: SnrDistribution = SnrDistribution()


class SineGaussianFamily(_Family):
    """Sine-Gaussian glitches: frequency log-uniform, Q uniform within the ranges."""

    frequency: tuple[float, float] = (30.0, 250.0)
    q: tuple[float, float] = (4.0, 12.0)

    @model_validator(mode="after")
    def _ranges(self) -> SineGaussianFamily:
        _range(*self.frequency, "frequency")
        _range(*self.q, "q")
        return self


class BlipFamily(SineGaussianFamily):
    """Family 1: blips in strain witnessed linearly by a control channel with a delay."""

    witness: str = Field("V1:LSC_DARM_CORR", pattern=CHANNEL_PATTERN)
    witness_snr_ratio: float = Field(2.0, gt=0, description="median witness/strain SNR ratio")
    ratio_scatter: float = Field(0.3, ge=0, description="log-normal sigma of that ratio")
    delay: float = Field(0.005, ge=0, le=1.0, description="strain lags the witness (s)")


class ScatteredLightFamily(_Family):
    """Family 2: scattered-light arches driven by a seismic/suspension witness's motion.

    Strain phase ``4 pi x(t) / wavelength``: the arch frequency follows the
    witness velocity, ``f(t) = 2 |v(t)| / wavelength``.
    """

    witness: str = Field("V1:Sa_NE_F0_Z_500Hz", pattern=CHANNEL_PATTERN)
    fringe_frequency: tuple[float, float] = Field(
        (20.0, 45.0), description="peak arch frequency (Hz)"
    )
    motion_frequency: tuple[float, float] = Field(
        (1.5, 3.0), description="frequency of the slow witness motion (Hz)"
    )
    duration: tuple[float, float] = Field((1.0, 2.5), description="burst length (s)")
    witness_snr_ratio: float = Field(2.0, gt=0)
    ratio_scatter: float = Field(0.3, ge=0)
    wavelength: float = Field(1.064e-6, gt=0, description="laser wavelength (m)")

    @model_validator(mode="after")
    def _ranges(self) -> ScatteredLightFamily:
        _range(*self.fringe_frequency, "fringe_frequency")
        _range(*self.motion_frequency, "motion_frequency")
        _range(*self.duration, "duration")
        return self


class EnvironmentalFamily(SineGaussianFamily):
    """Family 3: environmental bursts coupling through a two-pole low-pass transfer function."""

    witness: str = Field("V1:ENV_CEB_MAG_N", pattern=CHANNEL_PATTERN)
    corner: float = Field(60.0, gt=0, description="transfer-function corner frequency (Hz)")
    witness_snr_ratio: float = Field(2.5, gt=0)
    ratio_scatter: float = Field(0.3, ge=0)


class WitnessOnlyFamily(SineGaussianFamily):
    """Family 5: glitches in witness channels that do not couple into strain."""

    channels: list[str] = Field(default_factory=lambda: ["V1:LSC_DARM_CORR", "V1:ENV_CEB_MAG_N"])


class DecoyFamily(SineGaussianFamily):
    """Family 6: independent glitches in channels unrelated to strain."""

    channels: list[str] = Field(
        default_factory=lambda: [
            "V1:LSC_PRCL_ERR",
            "V1:INJ_IMC_TRA_DC",
            "V1:ENV_NEB_SEIS_W",
            "V1:ENV_CEB_ACC_Y",
        ]
    )


class Families(Strict):
    blip: BlipFamily = BlipFamily(rate=0.02)
    scattered_light: ScatteredLightFamily = ScatteredLightFamily(rate=0.01)
    environmental: EnvironmentalFamily = EnvironmentalFamily(rate=0.01)
    unwitnessed: SineGaussianFamily = SineGaussianFamily(rate=0.01)
    witness_only: WitnessOnlyFamily = WitnessOnlyFamily(rate=0.02)
    decoy: DecoyFamily = DecoyFamily(rate=0.03)


def default_channels() -> list[ChannelSpec]:
    """A Virgo-like auxiliary channel set at mixed rates (256 Hz to 10 kHz)."""
    spec = [
        # name, rate, level, knee, slope, lines, strain_derived
        ("V1:LSC_DARM_CORR", 10000, 1.0, 20.0, 2.0, [], False),
        ("V1:LSC_DARM_ERR", 10000, 1.0, 0.0, 2.0, [], True),
        ("V1:LSC_MICH_ERR", 10000, 1.0, 10.0, 2.0, [], False),
        ("V1:LSC_PRCL_ERR", 10000, 1.0, 10.0, 2.0, [], False),
        ("V1:LSC_NE_CORR", 10000, 1.0, 30.0, 1.0, [], False),
        ("V1:Sa_NE_F0_Z_500Hz", 500, 1e-9, 5.0, 4.0, [], False),
        ("V1:Sa_WE_F0_X_500Hz", 500, 1e-9, 5.0, 4.0, [], False),
        ("V1:Sc_MC_MIR_Z_CORR", 1000, 1.0, 15.0, 2.0, [], False),
        ("V1:ENV_CEB_MAG_N", 2048, 1e-12, 5.0, 1.0, [(50.0, 3e-11), (150.0, 1e-11)], False),
        ("V1:ENV_CEB_MAG_W", 2048, 1e-12, 5.0, 1.0, [(50.0, 3e-11)], False),
        ("V1:ENV_CEB_ACC_Y", 2048, 1e-6, 10.0, 2.0, [], False),
        ("V1:ENV_NEB_SEIS_N", 256, 1e-8, 2.0, 3.0, [], False),
        ("V1:ENV_NEB_SEIS_W", 256, 1e-8, 2.0, 3.0, [], False),
        ("V1:INJ_IMC_TRA_DC", 1000, 1e-3, 1.0, 1.0, [], False),
    ]
    units = {"Sa_": "m", "MAG": "T", "ACC": "m/s^2", "SEIS": "m/s"}
    out = []
    for name, rate, level, knee, slope, lines, derived in spec:
        unit = next((u for key, u in units.items() if key in name), "counts")
        out.append(
            ChannelSpec(
                name=name,
                sample_rate=rate,
                noise=NoiseModel(level=level, knee=knee, slope=slope, lines=lines),
                unit=unit,
                strain_derived=derived,
            )
        )
    return out


class TwinConfig(Strict):
    """The detector twin's span, frame layout, channels and glitch populations."""

    gps_start: int = Field(1_400_000_000, ge=0, description="GPS start of the first frame (s)")
    duration: int = Field(512, gt=0, description="total span (s), a multiple of frame_duration")
    frame_duration: int = Field(64, gt=0, le=4096, description="seconds per frame file")
    observatory: str = Field("V", pattern=r"^[A-Z]+$")
    frame_tag: str = Field("V1_GLITCHFLOW_TWIN", pattern=r"^[A-Za-z0-9_]+$")
    gaps: list[tuple[int, int]] = Field(
        default_factory=list, description="GPS [start, end) spans with no frames written"
    )
    strain_psd: str = Field(
        "SimNoisePSDAdVDesignSensitivityP1200087",
        description="lalsimulation PSD function for strain",
    )
    psd_low_frequency: float = Field(
        5.0, gt=0, description="PSD held constant below this frequency (Hz)"
    )
    strain_dtype: Literal["float64", "float32"] = "float64"
    aux_dtype: Literal["float64", "float32"] = "float32"
    channels: list[ChannelSpec] = Field(default_factory=default_channels)
    families: Families = Families()

    @model_validator(mode="after")
    def _consistent(self) -> TwinConfig:
        if self.duration % self.frame_duration:
            raise ValueError(
                f"duration ({self.duration} s) must be a multiple of "
                f"frame_duration ({self.frame_duration} s)"
            )
        names = [c.name for c in self.channels]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate channel names: {sorted(dupes)}")
        fam = self.families
        wanted = {
            "families.blip.witness": [fam.blip.witness],
            "families.scattered_light.witness": [fam.scattered_light.witness],
            "families.environmental.witness": [fam.environmental.witness],
            "families.witness_only.channels": fam.witness_only.channels,
            "families.decoy.channels": fam.decoy.channels,
        }
        for key, chans in wanted.items():
            for chan in chans:
                if chan not in names:
                    raise ValueError(f"{key}: channel {chan!r} is not in twin.channels")
        for lo, hi in self.gaps:
            if hi <= lo:
                raise ValueError(f"gap [{lo}, {hi}] must have end > start")
        return self

    @property
    def gps_end(self) -> int:
        return self.gps_start + self.duration
