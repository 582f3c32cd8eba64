"""Masked convolutions and the gated-free residual PixelCNN stack of the paper's image decoder.

Pixels are ordered in raster order (row by row, left to right). A mask of type ``"A"`` hides the
centre pixel and everything after it; type ``"B"`` shows the centre pixel (used after the first
layer, whose outputs at a pixel already exclude that pixel's input). Only the first
``masked_channels`` input channels are masked: the latent feature maps that the decoder concatenates
to the image are not autoregressive and stay fully visible.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskedConv2d", "causal_mask", "ResidualMaskedBlock", "MaskedStack"]


def causal_mask(kernel_size: int, mask_type: str) -> torch.Tensor:
    """The spatial raster-order mask of a ``kernel_size x kernel_size`` kernel: ``[k, k]`` of 0/1.

    ``"A"`` zeroes the centre and everything after it; ``"B"`` keeps the centre.
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    centre = kernel_size // 2
    mask = torch.ones(kernel_size, kernel_size)
    mask[centre, centre + (1 if mask_type == "B" else 0):] = 0
    mask[centre + 1:, :] = 0
    return mask


class MaskedConv2d(nn.Conv2d):
    """A same-padded ``Conv2d`` whose kernel cannot see the current pixel (A) or later pixels (A, B).

    Args:
        mask_type: ``"A"`` or ``"B"``.
        in_channels, out_channels, kernel_size: as for ``nn.Conv2d`` (square, odd kernel).
        masked_channels: how many of the leading input channels are masked (default: all).
        bias: as for ``nn.Conv2d``.

    Shapes: ``[batch, in_channels, H, W] -> [batch, out_channels, H, W]``.
    """

    mask: torch.Tensor

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int, *,
                 masked_channels: int | None = None, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        masked = in_channels if masked_channels is None else masked_channels
        if not 0 <= masked <= in_channels:
            raise ValueError(f"masked_channels must be in [0, {in_channels}], got {masked}")
        self.mask_type = mask_type
        self.masked_channels = masked
        full = torch.ones_like(self.weight)
        full[:, :masked] = causal_mask(kernel_size, mask_type)
        self.register_buffer("mask", full, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Multiplying here (not in place on the weight) keeps masked weights' gradients at zero too.
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return f"mask_type={self.mask_type!r}, masked_channels={self.masked_channels}, " + super().extra_repr()


def _norm(channels: int, norm: str) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch' or 'none', got {norm!r}")


class ResidualMaskedBlock(nn.Module):
    """Bottleneck residual block: 1x1 (C -> C/2), masked-B kxk, 1x1 (C/2 -> C), ELU(out + input).

    ``[batch, channels, H, W] -> [batch, channels, H, W]``; causal because 1x1 convolutions and
    type-B masks never look at later pixels.
    """

    def __init__(self, channels: int, kernel_size: int, *, norm: str = "batch") -> None:
        super().__init__()
        inner = max(channels // 2, 1)
        self.body = nn.Sequential(
            nn.Conv2d(channels, inner, 1, bias=False), _norm(inner, norm), nn.ELU(),
            MaskedConv2d("B", inner, inner, kernel_size), _norm(inner, norm), nn.ELU(),
            nn.Conv2d(inner, channels, 1, bias=False), _norm(channels, norm),
        )
        self.activation = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + x)


class MaskedStack(nn.Module):
    """The paper's PixelCNN trunk: one mask-A layer, then residual mask-B blocks with skip links.

    Block 0 is ``MaskedConv2d("A")`` + norm + ELU mapping ``in_channels -> channels`` (masking only the
    first ``masked_channels`` inputs, the image). Blocks 1..n-1 are :class:`ResidualMaskedBlock`.
    As in the paper's decoder, the output of block ``i - 3`` is passed through its own residual
    block and added to the input of block ``i`` (for ``i >= 3``), and the output of block ``n - 3``
    likewise to the final output. ``kernel_sizes[i]`` is block ``i``'s kernel; the skip block fed by
    block ``j`` uses ``kernel_sizes[j + 1]``.

    Shapes: ``[batch, in_channels, H, W] -> [batch, channels, H, W]``.
    """

    def __init__(self, in_channels: int, channels: int, kernel_sizes: Sequence[int], *,
                 masked_channels: int, norm: str = "batch") -> None:
        super().__init__()
        sizes: List[int] = [int(k) for k in kernel_sizes]
        if len(sizes) < 3:
            raise ValueError(f"kernel_sizes needs at least 3 blocks, got {len(sizes)}: {sizes}")
        self.first = nn.Sequential(
            MaskedConv2d("A", in_channels, channels, sizes[0], masked_channels=masked_channels),
            _norm(channels, norm), nn.ELU(),
        )
        self.blocks = nn.ModuleList(ResidualMaskedBlock(channels, k, norm=norm) for k in sizes[1:])
        self.skips = nn.ModuleList(ResidualMaskedBlock(channels, k, norm=norm) for k in sizes[1:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        recent = [h]  # outputs of the last three blocks (oldest first): the skip links' inputs
        for i, block in enumerate(self.blocks, start=1):
            if i >= 3:
                h = h + self.skips[i - 3](recent.pop(0))
            h = block(h)
            recent.append(h)
        return h + self.skips[-1](recent[0])


def init_conv_(module: nn.Module) -> None:
    """He initialisation by fan-out for every conv (as the paper's code); BatchNorm to identity."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
