"""Shape checks shared by the image modules."""
from __future__ import annotations

import torch

__all__ = ["as_image_batch"]


def as_image_batch(x: torch.Tensor, name: str, image_size: int = 28) -> torch.Tensor:
    """Return ``x`` as a float ``[batch, 1, H, W]`` tensor; accepts ``[batch, H, W]`` too.

    Raises ``TypeError``/``ValueError`` naming ``name`` for anything else.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of images, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != image_size or x.shape[3] != image_size:
        raise ValueError(f"{name} must be [batch, 1, {image_size}, {image_size}] or "
                         f"[batch, {image_size}, {image_size}], got {list(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    return x
