"""Self-describing checkpoints: a checkpoint alone rebuilds the model and its preprocessing.

The file (``model.pt``) is a dict of tensors and plain Python values only, so it
loads with ``torch.load(weights_only=True)`` (no unpickling of code):

``format``           "glitchflow-checkpoint/1"
``model``            {"name": registry name, "kwargs": constructor arguments}
``state_dict``       the weights
``signal``           the SignalConfig (conditioner) as a plain dict
``channels``         [strain, aux...] in input order (strain is the target)
``normalisation``    {"aux": [divisor per aux channel], "strain": divisor, "transform"}
``sample``           {"crop", "clamp", "window", "stride", "rates"}: how inputs were cut,
                     and each channel's native sample rate (Hz) in the training frames
``thresholds``       {"snr2": denoise/metric threshold, "min_area": pixels, "veto": the
                     veto's operating point calibrated on validation glitch-free time
                     (:mod:`glitchflow.models.operating_point`; absent = uncalibrated)}
``epoch``, ``metrics`` and optionally ``optimizer`` / ``scheduler`` states for resuming
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from glitchflow.models.registry import create_model

FORMAT = "glitchflow-checkpoint/1"
FILENAME = "model.pt"


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
) -> dict:
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    ckpt = {
        "format": FORMAT,
        "model": {"name": model_spec["name"], "kwargs": dict(model_spec["kwargs"])},
        "state_dict": state,
        "signal": signal,
        "channels": list(channels),
        "normalisation": normalisation,
        "sample": sample,
        "thresholds": thresholds,
        "epoch": int(epoch),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer
    if scheduler is not None:
        ckpt["scheduler"] = scheduler
    return ckpt


def save_checkpoint(ckpt: dict, directory: str | Path) -> Path:
    path = Path(directory) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict (file or directory holding ``model.pt``) with weights_only."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a glitchflow checkpoint (format {FORMAT!r} expected)")
    return ckpt


def build_model(ckpt: dict) -> nn.Module:
    """The trained model of a checkpoint, in eval mode."""
    model = create_model(ckpt["model"]["name"], **ckpt["model"]["kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
