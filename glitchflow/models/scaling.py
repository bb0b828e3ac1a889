"""SNR^2 <-> model units, one definition for training, inference and serving.

Spectrogram values span four decades (background ~1, loud glitches ~1e3-1e4
SNR^2).  With ``transform="log1p"`` values are compressed by ``log(1 + x)``
before each channel is divided by its normalisation constant, so the loss
sees the glitch shape and not only its brightest pixels; ``"linear"`` skips
the compression (the seed's choice).  The constants and the transform travel
in the checkpoint's ``normalisation`` dict: ``{"aux": [...], "strain": s,
"transform": "log1p" | "linear"}`` (no ``transform`` key means linear).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

TRANSFORMS = ("log1p", "linear")


class Scaling(nn.Module):
    """Maps ``(batch, n_aux, F, T)`` inputs and ``(batch, 1, F, T)`` targets to model units
    and model outputs back to SNR^2.  The divisors are buffers: they move with ``.to()``
    and travel inside a pickled :class:`~glitchflow.models.glitch_model.GlitchModel`."""

    def __init__(self, normalisation: dict, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.transform = normalisation.get("transform", "linear")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.transform!r}; expected one of {TRANSFORMS}")
        aux = torch.tensor(normalisation["aux"], dtype=torch.float32, device=device)
        self.register_buffer("aux", aux[None, :, None, None])
        self.strain = float(normalisation["strain"])

    def compress(self, x: Tensor) -> Tensor:
        return torch.log1p(x) if self.transform == "log1p" else x

    def inputs(self, x: Tensor) -> Tensor:
        """Auxiliary SNR^2 -> model input."""
        return self.compress(x) / self.aux

    def targets(self, y: Tensor) -> Tensor:
        """Strain SNR^2 -> model target."""
        return self.compress(y) / self.strain

    def target_level(self, snr2: float) -> float:
        """Strain SNR^2 ``snr2`` in model units (a target value)."""
        return float(self.targets(torch.tensor(float(snr2))))

    def outputs(self, pred: Tensor) -> Tensor:
        """Model output -> generated strain SNR^2."""
        z = pred * self.strain
        return torch.expm1(z) if self.transform == "log1p" else z
