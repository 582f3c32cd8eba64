"""Turning whatever a data loader yields into the model's input on the model's device."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Optional

import torch

__all__ = ["extract_input", "move_to_device", "model_device", "loader_length", "FreshBatches"]


def extract_input(batch: Any) -> Any:
    """The model input inside one loader batch.

    A batch may be a tensor (the input itself), a tuple/list whose first element is the input
    (``(x, y)`` from a ``TensorDataset``), or a mapping with an ``"x"`` key.

    Raises:
        TypeError: any other container, naming what came.
        ValueError: an empty tuple/list or a mapping without ``"x"``.
    """
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)):
        if len(batch) == 0:
            raise ValueError("a loader batch is an empty tuple/list; expected (x, ...) with x first")
        return batch[0]
    if isinstance(batch, Mapping):
        if "x" not in batch:
            raise ValueError(
                f"a loader batch is a mapping with keys {sorted(map(str, batch))}; "
                "expected a key 'x' holding the model input"
            )
        return batch["x"]
    raise TypeError(
        f"a loader batch is a {type(batch).__name__}; expected a tensor, a tuple/list whose first "
        "element is the input, or a dict with key 'x'"
    )


def move_to_device(x: Any, device: Optional[torch.device]) -> Any:
    """Move tensors (also inside tuples, lists and dicts) to ``device``, keeping their dtype."""
    if device is None:
        return x
    if isinstance(x, torch.Tensor):
        if x.device == device:
            return x
        return x.to(device, non_blocking=x.is_pinned())
    if isinstance(x, (tuple, list)):
        return type(x)(move_to_device(v, device) for v in x)
    if isinstance(x, Mapping):
        return {k: move_to_device(v, device) for k, v in x.items()}
    return x


def model_device(module: torch.nn.Module) -> Optional[torch.device]:
    """The device of the module's first parameter or buffer, ``None`` when it has neither."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


def loader_length(loader: Iterable[Any]) -> Optional[int]:
    """``len(loader)`` when the loader defines it, else ``None``."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


class FreshBatches:
    """An endless stream of minibatches from a loader, re-iterated (re-shuffled) whenever exhausted.

    The aggressive inner loop draws its "fresh" batches from here, independent of the iterator that
    drives the epoch. Calls ``sampler.set_epoch`` on every new pass when the loader has a sampler
    that supports it, so a ``DistributedSampler`` gives distinct shuffles.
    """

    def __init__(self, loader: Iterable[Any]) -> None:
        self.loader = loader
        self.passes = 0
        self._it: Optional[Iterator[Any]] = None

    def __next__(self) -> Any:
        for _ in range(2):
            if self._it is None:
                sampler = getattr(self.loader, "sampler", None)
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(10_000 + self.passes)  # type: ignore[union-attr]
                self._it = iter(self.loader)
                self.passes += 1
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
        raise ValueError("inner_loader yielded no batch; expected a non-empty loader")

    def __iter__(self) -> "FreshBatches":
        return self
