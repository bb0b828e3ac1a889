"""Typed configuration for every glitchflow stage.

YAML files under ``configs/`` are validated into :class:`Config`.  Shared
signal settings live in ``configs/signal.yaml`` and are pulled in with
``include: signal.yaml``; command-line overrides are ``key.sub=value``.
Unknown keys, wrong types and out-of-range values raise :class:`ConfigError`
naming the file, the dotted key and the value.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from glitchflow.config.base import (
    ConfigError,
    Strict,
    apply_overrides,
    config_hash,
    json_hash,
    load_model,
    read_yaml,
    validate_model,
)
from glitchflow.config.clean import CleanConfig
from glitchflow.config.signal import ConditioningConfig, QTransformConfig, SignalConfig
from glitchflow.config.stages import (
    EvaluateConfig,
    HvetoConfig,
    InferConfig,
    OnlineConfig,
    PreprocessConfig,
    ResourcesConfig,
    RetrainConfig,
    ScanConfig,
    ServeConfig,
    ServePsdConfig,
    TrainConfig,
)
from glitchflow.config.tune import TuneConfig
from glitchflow.config.twin import ChannelSpec, TwinConfig

__all__ = [
    "ChannelSpec",
    "CleanConfig",
    "ConditioningConfig",
    "Config",
    "ConfigError",
    "EvaluateConfig",
    "HvetoConfig",
    "InferConfig",
    "OnlineConfig",
    "PreprocessConfig",
    "QTransformConfig",
    "ResourcesConfig",
    "RetrainConfig",
    "ScanConfig",
    "ServeConfig",
    "ServePsdConfig",
    "SignalConfig",
    "TrainConfig",
    "TuneConfig",
    "TwinConfig",
    "apply_overrides",
    "config_hash",
    "json_hash",
    "load_config",
    "read_yaml",
    "validate_config",
    "with_overrides",
]


class Config(Strict):
    """A whole glitchflow configuration; every section has validated defaults."""

    seed: int = Field(0, ge=0, description="realisation seed (twin, splits, training)")
    signal: SignalConfig = SignalConfig()
    twin: TwinConfig = TwinConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    scan: ScanConfig = ScanConfig()
    train: TrainConfig = TrainConfig()
    infer: InferConfig = InferConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    serve: ServeConfig = ServeConfig()
    tune: TuneConfig = TuneConfig()
    retrain: RetrainConfig = RetrainConfig()
    online: OnlineConfig = OnlineConfig()
    clean: CleanConfig = CleanConfig()

    def scan_signal(self) -> SignalConfig:
        """The shared signal settings with the scan's rate and Q grid."""
        return validate_model(
            SignalConfig,
            self.signal.model_dump()
            | {
                "sample_rate": self.scan.sample_rate,
                "qtransform": self.scan.qtransform.model_dump(),
            },
            "scan",
        )

    @model_validator(mode="after")
    def _windows_on_the_bin_grid(self) -> Config:
        step = self.signal.qtransform.time_step
        for key in ("window", "stride"):
            value = getattr(self.preprocess, key)
            if abs(value / step - round(value / step)) > 1e-6:
                raise ValueError(
                    f"preprocess.{key} ({value} s) must be a multiple of "
                    f"signal.qtransform.time_step ({step} s)"
                )
        fr = self.train.split_fractions
        if abs(sum(fr) - 1) > 1e-6 or min(fr) < 0:
            raise ValueError(f"train.split_fractions {list(fr)} must be >= 0 and sum to 1")
        if self.train.crop > self.signal.qtransform.n_freq:
            raise ValueError(
                f"train.crop ({self.train.crop}) exceeds signal.qtransform.n_freq "
                f"({self.signal.qtransform.n_freq})"
            )
        try:
            self.scan_signal()
        except ConfigError as exc:
            msg = str(exc).replace("scan: invalid configuration", "scan settings:")
            raise ValueError(msg) from None
        return self


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) with ``key=value`` overrides."""
    return load_model(Config, path, overrides)


def validate_config(data: dict, source: str = "<config>") -> Config:
    """Validate a raw mapping (already merged) into a :class:`Config`."""
    return validate_model(Config, data, source)


def with_overrides(cfg: Config, overrides: list[str], source: str = "<config>") -> Config:
    """``cfg`` with ``key=value`` overrides applied, validated again."""
    return validate_config(apply_overrides(cfg.model_dump(mode="json"), overrides), source)
