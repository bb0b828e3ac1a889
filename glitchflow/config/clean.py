"""Configuration of witness-driven glitch subtraction (``glitchflow fit-clean`` / ``clean``).

Times in seconds, rates in Hz, SNRs as matched-filter SNR (whitened norm),
trigger thresholds in SNR^2 of the one Conditioner's Q-tiles.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from glitchflow.config.base import Strict
from glitchflow.config.stages import ResourcesConfig


class ArchConfig(Strict):
    """The scattered-light arch fit (:mod:`glitchflow.models.scatter_arches`) used for
    witnesses whose coupling is an arch rather than a linear filter."""

    peak_frequency: tuple[float, float] = Field(
        (14.0, 64.0), description="range of the arches' peak frequency searched (Hz)"
    )
    motion_frequency: tuple[float, float] = Field(
        (1.0, 4.0), description="range of the scatterer's motion frequency searched (Hz)"
    )
    duration: tuple[float, float] = Field(
        (0.8, 3.0), description="range of the motion transient's length searched (s)"
    )
    min_snr: float = Field(
        6.5,
        ge=0,
        description="subtract an arch only when it explains at least this SNR (arch-free "
        "twin segments fit SNR 3.6-6.6, median 4.9: two coefficients plus the search over "
        "shapes)",
    )
    min_track_score: float = Field(
        90.0,
        ge=0,
        description="fit only where the arch's frequency track collects this much excess "
        "spectrogram power (arch-free twin segments 34-84, arches of SNR >= 8.9 >= 100)",
    )
    merge_gap: float = Field(
        0.5, ge=0, description="witness triggers closer than this are one motion transient (s)"
    )
    probe_blocks: int = Field(
        8, ge=1, description="auto choice of arch witnesses: training blocks probed"
    )
    probe_triggers: int = Field(
        2, ge=1, description="auto choice: loudest triggers per witness and probed block"
    )

    @model_validator(mode="after")
    def _ranges(self) -> ArchConfig:
        for name in ("peak_frequency", "motion_frequency", "duration"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"clean.arch.{name} must satisfy 0 < low <= high, got {lo, hi}")
        if self.peak_frequency[1] >= 100.0:
            raise ValueError(
                "clean.arch.peak_frequency must stay below 100 Hz (the fit runs at 256 Hz)"
            )
        return self


class CleanConfig(Strict):
    """How witness triggers become subtracted strain, and how the couplings are fitted."""

    channels: list[str] | None = Field(
        None, description="witness channels; None = those selected by the scan (--channels)"
    )
    trigger_snr2: float = Field(
        25.0, gt=0, description="witness tiles above this SNR^2 make a trigger"
    )
    cluster_window: float = Field(0.1, gt=0, description="tiles closer than this are one trigger")
    segment: float = Field(
        1.0, gt=0, description="analysis segment around each trigger (s); longer than the gate"
    )
    localise: Literal["atoms", "mask"] = Field(
        "atoms",
        description="how the witness glitch is isolated from its noise: rebuilt from "
        "sine-Gaussian atoms (matching pursuit) or gated and spectrally masked",
    )
    atom_stop_snr2: float = Field(
        20.0, gt=0, description="matching pursuit stops when the next atom explains less SNR^2"
    )
    atom_max: int = Field(4, ge=1, description="at most this many atoms per witness trigger")
    gate_extra: float = Field(
        0.02, ge=0, description="flat part of the witness gate beyond the trigger's extent (s)"
    )
    gate_ramp: float = Field(0.03, gt=0, description="cosine ramp of the witness gate (s)")
    mask_kappa: float = Field(
        4.0,
        ge=0,
        description="spectral mask: witness bins below kappa x their noise power are dropped",
    )
    gate_q: float = Field(
        8.0, gt=0, description="the gate spans >= 2 e-folds of a sine-Gaussian of this Q"
    )
    fir_before: float = Field(0.15, ge=0, description="coupling FIR taps before zero lag (s)")
    fir_after: float = Field(0.2, gt=0, description="coupling FIR taps after zero lag (s)")
    coupling_bumps: tuple[float, float, int] = Field(
        (15.0, 1.5, 10),
        description="smooth coupling basis: first centre (Hz), ratio between centres, count",
    )
    coupling_delays: tuple[float, float] = Field(
        (-0.01, 0.04), description="range of the coupling's pure delay searched (s)"
    )
    delay_oversample: int = Field(
        4, ge=1, description="the coupling's pure delay is searched on a 1/N-sample grid"
    )
    ridge: float = Field(1e-3, ge=0, description="ridge strength relative to the mean power")
    smoothness: float = Field(
        1.0,
        ge=0,
        description="penalty on the curvature of the coupling's response across neighbouring "
        "bumps, relative to the mean power (continues trends where glitches are sparse)",
    )
    gain_iterations: int = Field(
        3,
        ge=0,
        description="alternate per-glitch gains and the coupling's response this many times "
        "(the glitch-to-glitch gain scatter otherwise leaks into the response's shape)",
    )
    fit_tilt: bool = Field(
        True,
        description="per-glitch fit also takes a spectral tilt of the coupling around the "
        "trigger frequency (4 coefficients instead of 2)",
    )
    fit_quadrature: bool = Field(
        True,
        description="per-glitch fit also takes the coupling's phase (the prediction's "
        "Hilbert pair), not only its gain",
    )
    fit_prior: bool = Field(
        True,
        description="shrink each glitch's fitted phase and tilt (relative to its gain) toward "
        "the coupling's usual shape, with widths estimated from the training fits "
        "(empirical Bayes): faint glitches absorb less noise",
    )
    fit_prior_hedge: float = Field(
        3.0,
        ge=1.0,
        description="the prior's widths are the maximum-likelihood ones times this (their "
        "estimate is noisy and the shape scatters more at some frequencies; 3 chosen on "
        "two validation twins, seeds 9301-9302, that no benchmark scores)",
    )
    min_fit_snr: float = Field(
        4.5, ge=0, description="subtract only when the fitted glitch has at least this SNR"
    )
    train_fit_snr: float = Field(
        5.0, ge=0, description="second pass of the fit uses triggers fitted above this SNR"
    )
    validation_fraction: float = Field(
        0.25, ge=0, lt=1, description="GPS blocks held out to score the fitted couplings"
    )
    arch_witnesses: list[str] | Literal["auto"] = Field(
        "auto",
        description="witnesses whose glitches couple as scattered-light arches (fitted in "
        "strain where they trigger) instead of through a linear filter; 'auto': chosen by "
        "fit-clean where arches explain at least twice the strain power the filter does",
    )
    arch: ArchConfig = ArchConfig()
    band: tuple[float, float] = Field(
        (15.0, 1800.0), description="band of the subtracted signal (Hz)"
    )
    frames_per_block: int = Field(2, ge=1, description="consecutive frames cleaned together")
    resources: ResourcesConfig = ResourcesConfig(workers=2, cpus_per_worker=0.5)
    max_failures: int = Field(
        2, ge=0, description="worker failures a fit-clean run survives (resuming its last pass)"
    )
    frame_tag: str = Field("GLITCHFLOW_CLEAN", pattern=r"^[A-Za-z0-9_]+$")
    output_dtype: Literal["float32", "float64"] = Field(
        "float32",
        description="sample type of the cleaned frames: float32 rounds strain to 2^-24 of "
        "its largest values (~1e-29 /sqrt(Hz) for the twin, far below detector noise) and "
        "writes ~9x faster than float64, whose random mantissas lalframe compresses slowly",
    )
    model_name: str = Field(
        "glitchflow-clean", description="registered model name of the subtraction model"
    )

    @model_validator(mode="after")
    def _segment_holds_the_filter(self) -> CleanConfig:
        if self.fir_before + self.fir_after >= self.segment / 2:
            raise ValueError(
                f"clean.segment ({self.segment} s) must exceed twice the coupling FIR "
                f"({self.fir_before} + {self.fir_after} s)"
            )
        if not 0 < self.band[0] < self.band[1]:
            raise ValueError(f"clean.band must satisfy 0 < low < high, got {self.band}")
        return self
