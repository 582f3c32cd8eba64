"""Greyscale PNG output with the standard library (``zlib``), and image grids."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Union

import torch

__all__ = ["write_png", "image_grid"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: Union[str, Path], image: torch.Tensor) -> Path:
    """Write an 8-bit greyscale PNG.

    Args:
        path: output file.
        image: ``[H, W]`` (or ``[1, H, W]``) floats in [0, 1] (1 is white) or uint8.
    """
    if image.dim() == 3 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 2:
        raise ValueError(f"image must be [H, W] or [1, H, W], got {list(image.shape)}")
    if image.dtype != torch.uint8:
        image = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    height, width = image.shape
    rows = torch.cat([torch.zeros(height, 1, dtype=torch.uint8), image.cpu()], dim=1)  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.numpy().tobytes(), 9)) \
        + _chunk(b"IEND", b"")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def image_grid(images: torch.Tensor, ncol: int = 8, padding: int = 2, pad_value: float = 0.5) -> torch.Tensor:
    """Tile ``[N, 1, H, W]`` (or ``[N, H, W]``) images into one ``[rows*(H+p)+p, ncol*(W+p)+p]`` image."""
    if images.dim() == 4:
        images = images[:, 0]
    if images.dim() != 3 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty [N, 1, H, W] or [N, H, W], got {list(images.shape)}")
    n, h, w = images.shape
    ncol = max(1, min(ncol, n))
    nrow = (n + ncol - 1) // ncol
    grid = torch.full((nrow * (h + padding) + padding, ncol * (w + padding) + padding), pad_value)
    for k in range(n):
        r, c = divmod(k, ncol)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top:top + h, left:left + w] = images[k].float()
    return grid
