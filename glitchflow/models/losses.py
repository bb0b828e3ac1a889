"""Losses on (batch, 1, freq, time) spectrograms: weighted L1 + (1 - SSIM), L1, MSE."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _gaussian_window(size: int, sigma: float, device, dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(
    a: Tensor, b: Tensor, data_range: float = 1.0, size: int = 11, sigma: float = 1.5
) -> Tensor:
    """Mean structural similarity of two (batch, 1, H, W) images (Gaussian window)."""
    w = _gaussian_window(size, sigma, a.device, a.dtype)
    pad = size // 2
    mu_a = nn.functional.conv2d(a, w, padding=pad)
    mu_b = nn.functional.conv2d(b, w, padding=pad)
    var_a = nn.functional.conv2d(a * a, w, padding=pad) - mu_a**2
    var_b = nn.functional.conv2d(b * b, w, padding=pad) - mu_b**2
    cov = nn.functional.conv2d(a * b, w, padding=pad) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return s.mean()


def glitch_weights(
    pred: Tensor, target: Tensor, level: float, weight: float, on: str = "either"
) -> Tensor:
    """Per-pixel weights: ``weight`` where the target or (``on='either'``) the prediction is
    above ``level`` (a glitch pixel, missed or invented), 1 elsewhere; no gradient flows
    through them."""
    loud = torch.maximum(pred.detach(), target) > level if on == "either" else target > level
    return 1.0 + (weight - 1.0) * loud.to(pred.dtype)


class SpectrogramLoss(nn.Module):
    """``l1_weight * L1 + ssim_weight * (1 - SSIM)`` (seed: 0.8 / 0.2), or plain L1 / MSE,
    plus ``profile_weight`` times the L1 of the time profiles (per time bin, the maximum
    over frequency) of prediction and target.

    With ``glitch_weight > 1`` the L1 (or squared) error is a weighted mean whose
    weight is ``glitch_weight`` on glitch pixels (target or prediction above
    ``glitch_level``, model units) and 1 elsewhere: a glitch covers a few percent
    of a crop, and an unweighted error is smallest for a model that predicts the
    noise floor everywhere.
    """

    def __init__(
        self,
        kind: str = "l1_ssim",
        l1_weight: float = 0.8,
        ssim_weight: float = 0.2,
        glitch_weight: float = 1.0,
        glitch_level: float = float("inf"),
        weight_on: str = "either",
        profile_weight: float = 0.0,
    ):
        super().__init__()
        if kind not in ("l1_ssim", "l1", "mse"):
            raise ValueError(f"unknown loss {kind!r}: l1_ssim, l1 or mse")
        if kind == "l1_ssim" and not math.isclose(l1_weight + ssim_weight, 1.0, abs_tol=1e-6):
            raise ValueError("l1_weight + ssim_weight must be 1")
        if glitch_weight < 1:
            raise ValueError(f"glitch_weight must be >= 1, got {glitch_weight}")
        self.kind, self.l1_weight, self.ssim_weight = kind, l1_weight, ssim_weight
        if weight_on not in ("either", "target"):
            raise ValueError(f"weight_on must be 'either' or 'target', got {weight_on!r}")
        self.glitch_weight, self.glitch_level = float(glitch_weight), float(glitch_level)
        self.weight_on = weight_on
        if profile_weight < 0:
            raise ValueError(f"profile_weight must be >= 0, got {profile_weight}")
        self.profile_weight = float(profile_weight)

    def _error(self, pred: Tensor, target: Tensor, power: int) -> Tensor:
        err = (pred - target).abs() ** power
        if self.glitch_weight == 1.0:
            return err.mean()
        w = glitch_weights(pred, target, self.glitch_level, self.glitch_weight, self.weight_on)
        return (w * err).sum() / w.sum()

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        loss = self._pixels(pred, target)
        if self.profile_weight:
            # (batch, 1, freq, time) -> each time bin's loudest pixel
            profile = (pred.amax(dim=-2) - target.amax(dim=-2)).abs().mean()
            loss = loss + self.profile_weight * profile
        return loss

    def _pixels(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.kind == "mse":
            return self._error(pred, target, 2)
        l1 = self._error(pred, target, 1)
        if self.kind == "l1":
            return l1
        return self.l1_weight * l1 + self.ssim_weight * (1 - ssim(pred, target))
