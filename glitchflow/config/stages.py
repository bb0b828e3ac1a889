"""Configuration sections of the pipeline stages (units in each field's description)."""

from __future__ import annotations

from pydantic import Field

from glitchflow.config.base import Strict


class ResourcesConfig(Strict):
    """Ray resources for a stage's workers; a GPU is used when ``gpus_per_worker > 0``."""

    workers: int = Field(2, ge=1, description="actors (or training workers) to run")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)


class PreprocessConfig(Strict):
    """Cutting conditioned segments into windows and writing the spectrogram dataset."""

    window: float = Field(6.0, gt=0, description="window duration (s), a multiple of time_step")
    stride: float = Field(3.0, gt=0, description="window start spacing (s); starts at GPS k*stride")
    channels: list[str] | None = Field(
        None, description="auxiliary channels; None = every channel in the frames"
    )
    frames_per_block: int = Field(
        4, ge=1, description="consecutive frames conditioned together (one Ray Data block)"
    )
    resources: ResourcesConfig = ResourcesConfig(workers=2, cpus_per_worker=0.5)
    rows_per_file: int = Field(64, ge=1, description="windows per Parquet file")
