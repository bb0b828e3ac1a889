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


class SpectrogramLoss(nn.Module):
    """``l1_weight * L1 + ssim_weight * (1 - SSIM)`` (seed: 0.8 / 0.2), or plain L1 / MSE."""

    def __init__(self, kind: str = "l1_ssim", l1_weight: float = 0.8, ssim_weight: float = 0.2):
        super().__init__()
        if kind not in ("l1_ssim", "l1", "mse"):
            raise ValueError(f"unknown loss {kind!r}: l1_ssim, l1 or mse")
        if kind == "l1_ssim" and not math.isclose(l1_weight + ssim_weight, 1.0, abs_tol=1e-6):
            raise ValueError("l1_weight + ssim_weight must be 1")
        self.kind, self.l1_weight, self.ssim_weight = kind, l1_weight, ssim_weight

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.kind == "mse":
            return nn.functional.mse_loss(pred, target)
        l1 = nn.functional.l1_loss(pred, target)
        if self.kind == "l1":
            return l1
        return self.l1_weight * l1 + self.ssim_weight * (1 - ssim(pred, target))
