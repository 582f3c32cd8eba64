"""The data file both sides read: one ``torch.save((train, valid, test))`` of ``[N, 1, 28, 28]`` floats.

That is the form of the paper's ``omniglot.pt``, which its ``image.py`` reads with ``torch.load``:
training images as grey levels in [0, 1] (each training batch is binarised anew, ``torch.bernoulli``,
on both sides), validation and test images used as they are. So :func:`prepare_data` writes the
validation and test images binarised once (``examples.image.datasets.binarize_fixed``, seeds
``eval_seed`` and ``eval_seed + 1``, as the image example's own loaders do): both sides then score
the same binary images. Our side reads the file with ``examples.image.datasets.load_images``, whose
fixed binarisation leaves binary images unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Union

import torch

from examples.image.datasets import binarize_fixed, load_images

__all__ = ["prepare_data"]

PathLike = Union[str, Path]


def _cut(images: torch.Tensor, limit: Optional[int], split: str) -> torch.Tensor:
    if limit is None:
        return images
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"max_{split} must be None or a positive integer, got {limit!r}")
    if limit > len(images):
        raise ValueError(f"max_{split}={limit} but the {split} split has only {len(images)} images")
    return images[:limit]


def prepare_data(source: PathLike, out_file: PathLike, *, max_train: Optional[int] = None,
                 max_valid: Optional[int] = None, max_test: Optional[int] = None,
                 eval_seed: int = 0) -> Dict[str, int]:
    """Write ``out_file`` (``(train, valid, test)``, float32 ``[N, 1, 28, 28]``) from ``source``.

    Args:
        source: ``"bundled"`` (the 5,000 MNIST digits in ``examples/image/data``) or any data
            ``examples.image.datasets.load_images`` reads (the paper's ``omniglot.pt``...).
        out_file: where to write; its folder is created.
        max_train, max_valid, max_test: keep the first N images of a split (``None``: all).
        eval_seed: seed of the one binarisation of validation (``eval_seed``) and test
            (``eval_seed + 1``) images.

    Returns:
        ``{"train": n, "valid": n, "test": n}``.
    """
    splits = load_images(source)
    train = _cut(splits.train, max_train, "train").contiguous()
    valid = binarize_fixed(_cut(splits.valid, max_valid, "valid"), eval_seed).contiguous()
    test = binarize_fixed(_cut(splits.test, max_test, "test"), eval_seed + 1).contiguous()
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save((train, valid, test), tmp)
    tmp.replace(out)
    return {"train": len(train), "valid": len(valid), "test": len(test)}
