"""The paper's ResNet inference network q(z|x) for 28x28 single-channel images."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from .masked import init_conv_
from .shapes import as_image_batch

__all__ = ["ResNetEncoder", "ResidualBlock"]


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and ELU, plus a (1x1-projected when needed) shortcut.

    ``[batch, in_channels, H, W] -> [batch, out_channels, ceil(H / stride), ceil(W / stride)]``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ELU(),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.activation = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """Diagonal-Gaussian encoder: stride-2 residual blocks, a conv to ``hidden`` units, a linear layer.

    With the paper's ``channels=(64, 64, 64)`` the maps go 28 -> 14 -> 7 -> 4; a 4x4 convolution then
    gives ``hidden`` features (512 in the paper), BatchNorm and ELU, and a linear layer gives
    ``(mean, logvar)``.

    Args:
        latent_dim: size of z (32 in the paper).
        channels: output channels of each stride-2 residual block.
        hidden: width of the feature vector fed to the final linear layer.

    Input ``x``: ``[batch, 1, 28, 28]`` or ``[batch, 28, 28]`` (binary or grey levels in [0, 1]).
    Returns ``(mean, logvar)``, each ``[batch, latent_dim]``.
    """

    def __init__(self, latent_dim: int = 32, channels: Sequence[int] = (64, 64, 64), hidden: int = 512,
                 image_size: int = 28) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if len(channels) < 1:
            raise ValueError("channels must name at least one residual block")
        self.latent_dim = latent_dim
        self.image_size = image_size
        blocks = []
        in_ch, size = 1, image_size
        for ch in channels:
            blocks.append(ResidualBlock(in_ch, int(ch), stride=2))
            in_ch, size = int(ch), (size + 1) // 2
        self.features = nn.Sequential(
            *blocks,
            nn.Conv2d(in_ch, hidden, size, 1, 0, bias=False),  # whole remaining map -> 1x1
            nn.BatchNorm2d(hidden), nn.ELU(),
        )
        self.to_params = nn.Linear(hidden, 2 * latent_dim)
        init_conv_(self.features)
        nn.init.xavier_uniform_(self.to_params.weight)
        nn.init.zeros_(self.to_params.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.features(as_image_batch(x, "x", self.image_size)).flatten(1)
        mean, logvar = self.to_params(h).chunk(2, dim=-1)
        return mean, logvar
