"""Image data for the reference VAE: loaders, checks and (dynamic) binarisation.

Every loader returns :class:`ImageSplits`: float32 grey levels in [0, 1], ``[N, 1, 28, 28]`` per split.
Training batches are re-binarised at every draw (:class:`DynamicBinarization`, a ``collate_fn``),
as in the paper; validation and test images are binarised once with a fixed seed
(:func:`binarize_fixed`) so that their likelihoods are comparable across runs and epochs.

Sources:

* ``"bundled"``: 5,000 MNIST digits shipped in this repository (``data/mnist_5k.npz``, 4,000 / 500 /
  500; see ``data/NOTICE`` and ``data/build_mnist.py``).
* The paper's OMNIGLOT file: ``torch.save((train, valid, test))`` tensors of 28x28 grey levels.
* Any ``[N, 28, 28]`` (or ``[N, 1, 28, 28]``) array in ``.npy``/``.pt``, cut into train/valid/test.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "ImageSplits",
    "BUNDLED_MNIST",
    "to_grey_levels",
    "load_bundled_mnist",
    "load_omniglot",
    "load_image_array",
    "load_images",
    "binarize_fixed",
    "DynamicBinarization",
    "GreyImages",
    "train_loader",
    "eval_loader",
]

IMAGE_SIZE = 28
BUNDLED_MNIST = Path(__file__).resolve().parent / "data" / "mnist_5k.npz"
PathLike = Union[str, Path]


@dataclass(frozen=True)
class ImageSplits:
    """Train/valid/test grey levels, each float32 ``[N, 1, 28, 28]`` in [0, 1]."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    source: str = ""

    def sizes(self) -> Dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


# --------------------------------------------------------------------------------------- checks
def to_grey_levels(array: Any, name: str = "images") -> torch.Tensor:
    """Check and convert an image array to float32 ``[N, 1, 28, 28]`` grey levels in [0, 1].

    Accepted: a ``numpy.ndarray`` or ``torch.Tensor`` of shape ``[N, 28, 28]`` or ``[N, 1, 28, 28]``,
    N >= 1, with dtype ``uint8`` (0-255, divided by 255), ``bool``, another integer type whose values
    lie in [0, 255], or a float type with finite values in [0, 1].

    Raises:
        TypeError: not an array, or an unsupported dtype (complex, object, strings, ...).
        ValueError: wrong shape, no images, or values out of range.
    """
    if isinstance(array, np.ndarray):
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers (uint8 0-255, bool, or floats in [0, 1]); "
                            f"got numpy dtype {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    elif isinstance(array, torch.Tensor):
        tensor = array.detach().cpu()
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor of shape [N, {IMAGE_SIZE}, "
                        f"{IMAGE_SIZE}], got {type(array).__name__}")
    shape = list(tensor.shape)
    if tensor.dim() == 4 and shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.dim() != 3 or tuple(tensor.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{name} must have shape [N, {IMAGE_SIZE}, {IMAGE_SIZE}] or "
                         f"[N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}], got {shape}")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} holds no images (shape {shape})")
    if tensor.dtype == torch.bool:
        return tensor.float().unsqueeze(1)
    if tensor.dtype == torch.uint8:
        return (tensor.float() / 255.0).unsqueeze(1)
    if tensor.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {tensor.dtype}")
    if tensor.is_floating_point():
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        lo, hi = tensor.min().item(), tensor.max().item()
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name} has float values in [{lo:g}, {hi:g}]; expected grey levels in "
                             f"[0, 1] (divide 0-255 data by 255, or pass it as uint8)")
        return tensor.float().unsqueeze(1)
    if tensor.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16,
                        torch.uint32, torch.uint64):
        lo, hi = int(tensor.min().item()), int(tensor.max().item())
        if lo < 0 or hi > 255:
            raise ValueError(f"{name} has integer values in [{lo}, {hi}]; expected grey levels 0-255")
        return (tensor.float() / 255.0).unsqueeze(1)
    raise TypeError(f"{name} has unsupported dtype {tensor.dtype}; expected uint8, bool or float")


# ------------------------------------------------------------------------------------- loaders
def load_bundled_mnist(path: PathLike = BUNDLED_MNIST) -> ImageSplits:
    """The bundled 5,000 MNIST digits: 4,000 train, 500 valid, 500 test (balanced classes).

    ``path`` may name another ``.npz`` with ``train_x``, ``valid_x`` and ``test_x`` image arrays.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bundled digits not found at {path}; rebuild them with "
                                f"examples/image/data/build_mnist.py")
    with np.load(path, allow_pickle=False) as arrays:
        missing = [f"{s}_x" for s in ("train", "valid", "test") if f"{s}_x" not in arrays.files]
        if missing:
            raise ValueError(f"{path.name} must hold arrays train_x, valid_x and test_x; missing {missing} "
                             f"(found {arrays.files})")
        return ImageSplits(*(to_grey_levels(arrays[f"{s}_x"], f"{path.name}:{s}_x")
                             for s in ("train", "valid", "test")), source="bundled MNIST (5k)")


def load_omniglot(path: PathLike) -> ImageSplits:
    """The paper's OMNIGLOT file: ``torch.load(path)`` gives ``(train, valid, test)`` image tensors.

    Each element is checked with :func:`to_grey_levels` (``[N, 28, 28]`` or ``[N, 1, 28, 28]``).
    """
    obj = _torch_load(Path(path))
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        what = f"a {type(obj).__name__}" + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else "")
        raise ValueError(f"{path} must hold a (train, valid, test) tuple of image tensors as the "
                         f"paper's omniglot.pt does; got {what}")
    names = ("train", "valid", "test")
    return ImageSplits(*(to_grey_levels(t, f"{Path(path).name}[{n}]") for t, n in zip(obj, names)),
                       source=str(path))


def load_image_array(path: PathLike, *, valid_fraction: float = 0.1, test_fraction: float = 0.1,
                     seed: int = 0) -> ImageSplits:
    """One ``[N, 28, 28]`` array from ``.npy`` or ``.pt``, shuffled (``seed``) and cut into splits.

    ``valid_fraction`` and ``test_fraction`` of the images (at least one each) go to valid and test.
    """
    path = Path(path)
    if not (0.0 < valid_fraction < 1.0 and 0.0 < test_fraction < 1.0 and valid_fraction + test_fraction < 1.0):
        raise ValueError(f"valid_fraction and test_fraction must be in (0, 1) with a sum below 1, got "
                         f"{valid_fraction} and {test_fraction}")
    if path.suffix == ".npy":
        images = to_grey_levels(np.load(path, allow_pickle=False), path.name)
    elif path.suffix == ".pt":
        images = to_grey_levels(_torch_load(path), path.name)
    else:
        raise ValueError(f"image file must end in .npy or .pt, got {path.name!r}")
    n = images.shape[0]
    n_valid, n_test = max(1, int(round(n * valid_fraction))), max(1, int(round(n * test_fraction)))
    if n - n_valid - n_test < 1:
        raise ValueError(f"{path.name} has {n} images: too few to cut into train/valid/test")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    images = images[order]
    return ImageSplits(images[n_valid + n_test:], images[:n_valid], images[n_valid:n_valid + n_test],
                       source=str(path))


def load_images(source: PathLike, **kwargs: Any) -> ImageSplits:
    """Dispatch: ``"bundled"``, a ``.npz`` with ``{train,valid,test}_x``, a ``.pt`` holding three
    tensors (the paper's OMNIGLOT file), or a single-array ``.npy``/``.pt`` (``kwargs`` go to
    :func:`load_image_array`)."""
    if str(source) == "bundled":
        return load_bundled_mnist()
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"data must be 'bundled' or an existing .npy/.pt/.npz file; "
                                f"{str(source)!r} does not exist")
    if path.suffix == ".npz":
        return load_bundled_mnist(path)
    if path.suffix == ".pt":
        obj = _torch_load(path)
        if isinstance(obj, (tuple, list)):
            return load_omniglot(path)
    return load_image_array(path, **kwargs)


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"could not read {path} with torch.load(weights_only=True): {err}") from err


# -------------------------------------------------------------------------------- binarisation
def binarize_fixed(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One Bernoulli draw per pixel with a fixed seed: same grey levels, same binary images.

    ``images``: ``[N, 1, 28, 28]`` in [0, 1]; returns float32 of the same shape with values in {0, 1}.
    """
    return torch.bernoulli(images, generator=torch.Generator().manual_seed(seed))


class GreyImages(Dataset):
    """A map-style dataset over a ``[N, 1, 28, 28]`` grey-level tensor (items ``[1, 28, 28]``)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


class DynamicBinarization:
    """``collate_fn`` that stacks grey-level items and draws fresh binary pixels: ``x ~ Bernoulli(p)``.

    A new draw happens every time a batch is formed, so every epoch (and every extra batch the
    aggressive inner loop draws) sees new binary images. Returns ``[batch, 1, 28, 28]`` float32.
    """

    def __init__(self, generator: Optional[torch.Generator] = None) -> None:
        self.generator = generator

    def __call__(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.bernoulli(torch.stack(list(items)), generator=self.generator)


def train_loader(images: torch.Tensor, batch_size: int = 50, *, shuffle: bool = True,
                 generator: Optional[torch.Generator] = None, pin_memory: bool = False) -> DataLoader:
    """Shuffled loader of dynamically binarised batches ``[batch, 1, 28, 28]`` over grey levels.

    Batches are made (and binarised, with CPU generators) on the CPU; the trainer moves them to the
    model's device. ``pin_memory=True`` (for a CUDA model) puts them in page-locked memory, which
    makes that copy faster."""
    return DataLoader(GreyImages(images), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=DynamicBinarization(), generator=generator, pin_memory=pin_memory)


def eval_loader(images: torch.Tensor, batch_size: int = 50, *, seed: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """Loader over images binarised once (:func:`binarize_fixed`), in order: ``[batch, 1, 28, 28]``
    on the CPU (``pin_memory`` as in :func:`train_loader`)."""
    return DataLoader(GreyImages(binarize_fixed(images, seed)), batch_size=batch_size, shuffle=False,
                      pin_memory=pin_memory)
