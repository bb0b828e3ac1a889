"""U-Net family: auxiliary-channel spectrograms in, strain spectrogram out.

Input ``(batch, n_aux, freq, time)``, output ``(batch, 1, freq, time)``
(non-negative, Softplus head), for any ``freq`` and ``time`` divisible by
``2 ** depth``.  Encoder levels of conv blocks (residual or plain) with
max-pooling, a bottleneck, bilinear up-sampling, skip connections that can go
through additive attention gates, and a 1x1 head.

Parameter counts (``n_aux=8``):

==================================  ==========
``unet_res_att`` base 64, depth 3    8.35 M (the seed's layout, bottleneck 512;
                                     the seed's 17 M came from full self-attention)
``unet_res_att`` base 16, depth 3    0.52 M
``unet`` base 64, depth 3            7.79 M
``unet`` base 16, depth 2            0.12 M
``dilated_resnet`` width 32, 6 blks  0.11 M
==================================  ==========
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from glitchflow.models.blocks import AttentionGate, ConvBlock, OpenSkip, init_weights


class UNet(nn.Module):
    """Configurable U-Net.

    Args:
        n_aux: input channels (auxiliary spectrograms).
        base: channels of the first level; level ``k`` has ``base * 2**k``.
        depth: number of down-sampling levels (bottleneck at ``base * 2**depth``).
        residual: residual conv blocks (1x1 shortcut) instead of plain ones.
        attention: additive attention gate on every skip connection.
    """

    def __init__(self, n_aux: int, base: int, depth: int, residual: bool, attention: bool) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        #: input freq and time sizes must be multiples of this (the pooling levels)
        self.size_multiple = 2**depth
        widths = [base * 2**k for k in range(depth + 1)]
        self.encoders = nn.ModuleList()
        c_prev = n_aux
        for w in widths[:-1]:
            self.encoders.append(ConvBlock(c_prev, w, residual))
            c_prev = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(widths[-2], widths[-1], residual)
        self.gates = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for k in reversed(range(depth)):
            c_up, c_skip = widths[k + 1], widths[k]
            self.gates.append(
                AttentionGate(c_skip, c_up, max(c_skip // 2, 1)) if attention else OpenSkip()
            )
            self.decoders.append(ConvBlock(c_up + c_skip, c_skip, residual))
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.out = nn.Softplus()
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        div = 2**self.depth
        if x.shape[-1] % div or x.shape[-2] % div:
            raise ValueError(
                f"freq x time {tuple(x.shape[-2:])} must be divisible by 2**depth = {div}"
            )
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for gate, dec, skip in zip(self.gates, self.decoders, reversed(skips)):
            up = nn.functional.interpolate(
                x, size=skip.shape[-2:], mode="bilinear", align_corners=False
            )
            x = dec(torch.cat([up, gate(skip, x)], dim=1))
        return self.out(self.head(x))


class DilatedResNet(nn.Module):
    """A different inductive bias: full resolution throughout, growing receptive field from
    dilated residual blocks (dilations 1, 2, 4, ...), no down-sampling, no skips.

    Args:
        n_aux: input channels; width: channels per block; depth: number of blocks.
    """

    def __init__(self, n_aux: int, width: int, depth: int) -> None:
        super().__init__()
        self.size_multiple = 1
        self.stem = nn.Conv2d(n_aux, width, 3, padding=1)
        self.blocks = nn.Sequential(
            *[ConvBlock(width, width, residual=True, dilation=2 ** (k % 4)) for k in range(depth)]
        )
        self.head = nn.Conv2d(width, 1, 1)
        self.out = nn.Softplus()
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.head(self.blocks(self.stem(x))))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
