"""Self-describing checkpoints: a checkpoint alone rebuilds the model and its preprocessing.

On disk (``model.pt``) a checkpoint is a dict of tensors and plain Python values only,
so it loads with ``torch.load(weights_only=True)`` (no unpickling of code):

``format``           "glitchflow-checkpoint/1"
``model``            {"name": registry name, "kwargs": that architecture's arguments}
``state_dict``       the network's weights
``signal``           the SignalConfig (conditioner) as a plain dict
``channels``         [strain, aux...] in input order (strain is the target)
``normalisation``    {"aux": [divisor per aux channel], "strain": divisor, "transform"}
``sample``           {"crop", "clamp", "window", "stride", "rates"}: crop size (pixels), input
                     ceiling (SNR^2), window and stride (s), and each channel's native sample
                     rate (Hz) in the training frames
``thresholds``       {"snr2": denoise/metric threshold, "min_area": pixels, "veto": the
                     veto's operating point calibrated on validation glitch-free time
                     (:mod:`glitchflow.models.operating_point`; absent = uncalibrated)}
``epoch``, ``metrics`` and optionally ``optimizer`` / ``scheduler`` states for resuming

In memory it is a :class:`Checkpoint`: the typed, validated :class:`CheckpointMeta`
plus the weights.  :func:`read_checkpoint` validates every field and names the file
and the field when one is missing or wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glitchflow.config import ConfigError, SignalConfig, validate_model
from glitchflow.models.registry import create_model, model_arguments
from glitchflow.models.scaling import TRANSFORMS

FORMAT = "glitchflow-checkpoint/1"
FILENAME = "model.pt"


class CheckpointError(ValueError):
    """A checkpoint file is not a glitchflow checkpoint or a field of it is wrong."""


@dataclass(frozen=True)
class ModelSpec:
    """Architecture name and its arguments (see :mod:`glitchflow.models.registry`)."""

    name: str
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class SampleMeta:
    """How training inputs were cut: ``crop`` pixels square (rows = bins), inputs clamped
    at ``clamp`` SNR^2, ``window`` / ``stride`` s, native ``rates`` (Hz) per channel."""

    crop: int
    clamp: float
    window: float
    stride: float
    rates: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything about a trained model except its weights, validated on load."""

    model: ModelSpec
    signal: SignalConfig
    channels: tuple[str, ...]
    normalisation: dict[str, Any]
    sample: SampleMeta
    thresholds: dict[str, Any]
    epoch: int
    metrics: dict[str, float]

    @property
    def strain_channel(self) -> str:
        return self.channels[0]

    @property
    def aux_channels(self) -> list[str]:
        return list(self.channels[1:])

    @property
    def time_step(self) -> float:
        """Spectrogram bin width (s)."""
        return float(self.signal.qtransform.time_step)

    @property
    def n_freq(self) -> int:
        return int(self.signal.qtransform.n_freq)


@dataclass(frozen=True)
class Checkpoint(CheckpointMeta):
    """A validated checkpoint: :class:`CheckpointMeta` and the weights (and, in training
    checkpoints, the optimiser and scheduler states)."""

    state_dict: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    optimizer: dict | None = field(default=None, repr=False)
    scheduler: dict | None = field(default=None, repr=False)

    def with_thresholds(self, **changes) -> Checkpoint:
        """A copy whose ``thresholds`` dict has ``changes`` applied."""
        return replace(self, thresholds=dict(self.thresholds, **changes))

    def to_dict(self) -> dict:
        """The on-disk dict (plain values and tensors only)."""
        ckpt = {
            "format": FORMAT,
            "model": {"name": self.model.name, "kwargs": dict(self.model.kwargs)},
            "state_dict": self.state_dict,
            "signal": self.signal.model_dump(mode="json"),
            "channels": list(self.channels),
            "normalisation": self.normalisation,
            "sample": asdict(self.sample),
            "thresholds": self.thresholds,
            "epoch": self.epoch,
            "metrics": dict(self.metrics),
        }
        if self.optimizer is not None:
            ckpt["optimizer"] = self.optimizer
        if self.scheduler is not None:
            ckpt["scheduler"] = self.scheduler
        return ckpt

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<checkpoint>") -> Checkpoint:
        """Validate an on-disk dict; errors name ``source`` and the field."""
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise CheckpointError(f"{source}: not a glitchflow checkpoint ({FORMAT!r} expected)")
        return _validated(raw, source)


class _Fields:
    """Reads one raw checkpoint dict; every refusal names the file and the field."""

    def __init__(self, raw: dict, source: str) -> None:
        self.raw, self.source = raw, source

    def need(self, key: str, kind: type | tuple[type, ...]):
        if key not in self.raw:
            raise CheckpointError(f"{self.source}: field {key!r} is missing")
        if not isinstance(self.raw[key], kind):
            kind_name = type(self.raw[key]).__name__
            raise CheckpointError(f"{self.source}: field {key!r} is {kind_name}")
        return self.raw[key]

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            raise CheckpointError(f"{self.source}: {what}")

    def model(self) -> ModelSpec:
        spec = self.need("model", dict)
        self.check(
            isinstance(spec.get("name"), str) and isinstance(spec.get("kwargs"), dict),
            "field 'model' needs a 'name' and a 'kwargs' dict",
        )
        try:
            return ModelSpec(spec["name"], model_arguments(spec["name"], **spec["kwargs"]))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{self.source}: field 'model': {exc}") from None

    def signal(self) -> SignalConfig:
        where = f"{self.source}: field 'signal'"
        try:
            return validate_model(SignalConfig, self.need("signal", dict), where)
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None

    def channels(self, n_aux: int) -> tuple[str, ...]:
        channels = tuple(self.need("channels", list))
        self.check(
            len(channels) >= 2 and all(isinstance(c, str) and c for c in channels),
            "field 'channels' needs the strain channel and at least one auxiliary channel",
        )
        self.check(len(set(channels)) == len(channels), "field 'channels' names a channel twice")
        self.check(
            n_aux == len(channels) - 1,
            f"field 'model': n_aux {n_aux} but {len(channels) - 1} aux channels",
        )
        return channels

    def normalisation(self, n_aux: int) -> dict:
        norm = self.need("normalisation", dict)
        aux = norm.get("aux")
        self.check(
            isinstance(aux, list)
            and len(aux) == n_aux
            and all(isinstance(a, (int, float)) and a > 0 for a in aux),
            "field 'normalisation.aux' needs one positive divisor per auxiliary channel",
        )
        strain = norm.get("strain", 0)
        self.check(
            isinstance(strain, (int, float)) and strain > 0,
            "field 'normalisation.strain' must be positive",
        )
        self.check(
            norm.get("transform", "linear") in TRANSFORMS,
            f"field 'normalisation.transform' must be one of {TRANSFORMS}",
        )
        return dict(norm)

    def sample(self, n_freq: int) -> SampleMeta:
        sample = self.need("sample", dict)
        try:
            meta = SampleMeta(
                crop=int(sample["crop"]),
                clamp=float(sample["clamp"]),
                window=float(sample["window"]),
                stride=float(sample["stride"]),
                rates={str(c): float(r) for c, r in (sample.get("rates") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.source}: field 'sample': {exc!r}") from None
        self.check(
            meta.crop > 0 and meta.clamp > 0 and meta.window > 0 and meta.stride > 0,
            "field 'sample': crop, clamp, window and stride must be positive",
        )
        self.check(all(r > 0 for r in meta.rates.values()), "field 'sample.rates' must be > 0")
        self.check(meta.crop <= n_freq, "field 'sample.crop' exceeds signal n_freq")
        return meta

    def thresholds(self) -> dict:
        thresholds = self.need("thresholds", dict)
        snr2, area = thresholds.get("snr2", 0), thresholds.get("min_area", 0)
        self.check(
            isinstance(snr2, (int, float)) and snr2 > 0 and isinstance(area, int) and area >= 1,
            "field 'thresholds' needs snr2 > 0 and min_area >= 1",
        )
        return dict(thresholds)


def _validated(raw: dict, source: str) -> Checkpoint:
    fields_ = _Fields(raw, source)
    spec = fields_.model()
    signal = fields_.signal()
    n_aux = spec.kwargs.get("n_aux")
    return Checkpoint(
        model=spec,
        signal=signal,
        channels=fields_.channels(n_aux),
        normalisation=fields_.normalisation(n_aux),
        sample=fields_.sample(signal.qtransform.n_freq),
        thresholds=fields_.thresholds(),
        epoch=int(fields_.need("epoch", int)),
        metrics={k: float(v) for k, v in raw.get("metrics", {}).items()},
        state_dict=fields_.need("state_dict", dict),
        optimizer=raw.get("optimizer"),
        scheduler=raw.get("scheduler"),
    )


def make_checkpoint(
    model: nn.Module,
    model_spec: dict,
    signal: dict,
    channels: list[str],
    normalisation: dict,
    sample: dict,
    thresholds: dict,
    epoch: int,
    metrics: dict,
    optimizer: dict | None = None,
    scheduler: dict | None = None,
) -> Checkpoint:
    """A validated checkpoint of ``model`` (a DDP wrapper is unwrapped)."""
    module = getattr(model, "module", model)
    raw = {
        "format": FORMAT,
        "model": {"name": model_spec["name"], "kwargs": dict(model_spec["kwargs"])},
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "signal": signal,
        "channels": list(channels),
        "normalisation": normalisation,
        "sample": sample,
        "thresholds": thresholds,
        "epoch": int(epoch),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "optimizer": optimizer,
        "scheduler": scheduler,
    }
    return _validated(raw, "new checkpoint")


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write ``ckpt`` to ``path`` (a ``.pt`` file, or a directory: ``path/model.pt``)."""
    path = Path(path)
    if path.suffix != ".pt":
        path = path / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt.to_dict(), path)
    return path


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load and validate a checkpoint (a file, or a directory holding ``model.pt``)."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({exc})") from None
    return Checkpoint.from_dict(raw, str(path))


def build_network(ckpt: Checkpoint) -> nn.Module:
    """The trained network of a checkpoint (model units in and out), in eval mode."""
    network = create_model(ckpt.model.name, **ckpt.model.kwargs)
    network.load_state_dict(ckpt.state_dict)
    return network.eval()
