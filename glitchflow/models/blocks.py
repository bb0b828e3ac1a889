"""Network blocks: convolution stacks, residual blocks, additive attention gates.

All blocks take and return ``(batch, channels, freq, time)`` tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvBlock(nn.Module):
    """(conv 3x3 -> BatchNorm -> LeakyReLU) x 2, optionally with a 1x1 residual shortcut."""

    def __init__(self, c_in: int, c_out: int, residual: bool = True, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=pad, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=pad, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = None
        if residual:
            self.shortcut = (
                nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1, bias=False)
            )
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.act(y)


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018) on a skip connection.

    The gating signal ``g`` (decoder, coarser) and the skip ``x`` are projected
    to ``c_mid`` channels, summed, passed through ReLU, a 1x1 conv and a sigmoid
    to give one weight per pixel that multiplies ``x``.  Memory is linear in the
    number of pixels (the seed's full self-attention was quadratic).
    """

    def __init__(self, c_skip: int, c_gate: int, c_mid: int) -> None:
        super().__init__()
        self.proj_x = nn.Conv2d(c_skip, c_mid, 1, bias=False)
        self.proj_g = nn.Conv2d(c_gate, c_mid, 1, bias=True)
        self.psi = nn.Conv2d(c_mid, 1, 1, bias=True)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        if g.shape[-2:] != x.shape[-2:]:
            g = nn.functional.interpolate(
                g, size=x.shape[-2:], mode="bilinear", align_corners=False
            )
        alpha = torch.sigmoid(self.psi(torch.relu(self.proj_x(x) + self.proj_g(g))))
        return x * alpha


class OpenSkip(nn.Module):
    """The skip connection without a gate: ``forward(x, g)`` returns ``x`` (the same call
    as :class:`AttentionGate`, so the U-Net needs no switch on the gate's type)."""

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        del g
        return x


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions (LeakyReLU slope 0.1), unit BatchNorm, zero biases.

    Call after every layer exists (the seed called its initialiser on an empty model).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0.1, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
