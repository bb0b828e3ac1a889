"""Architecture search (``glitchflow tune``): search space, scheduler, searcher, resources.

The space holds names and numbers only.  Keys are dotted ``train.*`` config
keys (``train.model.name``, ``train.lr``, ...); each trial is the base config
with the sampled values applied as overrides, trained by the same code as
``glitchflow train``.  When only one of ``train.loss.l1_weight`` /
``train.loss.ssim_weight`` is searched, the other is set to make them sum to 1.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from glitchflow.config.base import Strict


class SearchDimension(Strict):
    """One dimension: ``choice`` of ``values``, or ``uniform`` / ``loguniform`` /
    ``randint`` on ``[low, high]`` (``randint``: high exclusive)."""

    kind: Literal["choice", "uniform", "loguniform", "randint"]
    values: list[str | bool | int | float] | None = None
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchDimension:
        if self.kind == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty 'values' list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.kind} needs low < high")
        elif self.kind == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        return self


def default_space() -> dict[str, SearchDimension]:
    return {
        "train.model.name": SearchDimension(
            kind="choice", values=["unet_res_att", "unet", "dilated_resnet"]
        ),
        "train.model.depth": SearchDimension(kind="choice", values=[2, 3]),
        "train.model.base": SearchDimension(kind="choice", values=[8, 16, 32]),
        "train.model.attention": SearchDimension(kind="choice", values=[True, False]),
        "train.model.residual": SearchDimension(kind="choice", values=[True, False]),
        "train.lr": SearchDimension(kind="loguniform", low=1e-4, high=3e-3),
        "train.batch_size": SearchDimension(kind="choice", values=[8, 16]),
        "train.loss.ssim_weight": SearchDimension(kind="uniform", low=0.0, high=0.5),
    }


class AshaConfig(Strict):
    """Asynchronous successive halving on the epoch count."""

    max_t: int = Field(12, ge=1, description="most epochs a trial runs")
    grace_period: int = Field(2, ge=1, description="epochs before a trial can be stopped")
    reduction_factor: float = Field(2.0, gt=1)


class TuneConfig(Strict):
    space: dict[str, SearchDimension] = Field(default_factory=default_space)
    num_samples: int = Field(8, ge=1, description="trials")
    max_concurrent_trials: int = Field(1, ge=1)
    metric: Literal["val_l1", "val_loss", "val_veto_accuracy", "val_denoise_accuracy"] = Field(
        "val_l1",
        description="val_l1: validation L1 in model units, the loss at fixed weights (compares "
        "trials that search loss weights); val_loss: the training loss itself; accuracies: "
        "the seed's veto/denoise scores",
    )
    mode: Literal["min", "max"] = Field("min", description="min for losses, max for accuracies")
    search: Literal["random", "optuna"] = Field(
        "random", description="optuna: model-based (TPE) through Ray Tune's OptunaSearch"
    )
    scheduler: AshaConfig = AshaConfig()
    include_default: bool = Field(
        True, description="first trial = the base config's own values (the default architecture)"
    )
    trial_cpus: float = Field(
        0.05, gt=0, description="CPUs of each trial's driver (the training workers are separate)"
    )

    @model_validator(mode="after")
    def _keys(self) -> TuneConfig:
        bad = [k for k in self.space if not k.startswith("train.")]
        if bad:
            raise ValueError(f"search keys must be train.* config keys, got {bad}")
        wanted = "min" if self.metric in ("val_l1", "val_loss") else "max"
        if self.mode != wanted:
            raise ValueError(f"tune.mode: {self.metric} is best at its {wanted}, got {self.mode}")
        weights = [k for k in self.space if k.startswith("train.loss.")]
        if self.metric == "val_loss" and weights:
            raise ValueError(
                f"tune.metric val_loss ranks trials by losses with different weights "
                f"({', '.join(weights)} searched); use val_l1, which does not depend on them"
            )
        return self
