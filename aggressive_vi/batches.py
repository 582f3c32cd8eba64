"""Turning whatever a data loader yields into the model's input on the model's device."""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional

import torch

from .resume import LoaderPosition

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
    drives the epoch. Pass ``p`` (from 0) calls ``set_epoch(10_000 + p)`` on the loader's sampler when
    it has one, so a ``DistributedSampler`` gives distinct shuffles. Its position (passes, batches
    drawn in the current pass, the random state the pass began with) is part of a checkpoint:
    :meth:`state_dict` / :meth:`replay`.
    """

    def __init__(self, loader: Iterable[Any]) -> None:
        self.loader = loader
        self.passes = 0
        self.current: Optional[LoaderPosition] = None

    def __next__(self) -> Any:
        for _ in range(2):
            if self.current is None:
                self.current = LoaderPosition(self.loader, 10_000 + self.passes)
                self.passes += 1
            try:
                return next(self.current)
            except StopIteration:
                self.current = None
        raise ValueError("inner_loader yielded no batch; expected a non-empty loader")

    def __iter__(self) -> "FreshBatches":
        return self

    def state_dict(self) -> Dict[str, Any]:
        """Passes begun and the current pass's position (the same on every rank)."""
        return {"passes": self.passes,
                "current": self.current.state_dict() if self.current is not None else None}

    def replay(self, state: Dict[str, Any], random_state: Optional[Dict[str, Any]]) -> None:
        """Return to a saved position (``random_state``: the current pass's starting snapshot)."""
        self.passes = int(state["passes"])
        self.current = None
        if state.get("current") is not None and random_state is not None:
            self.current = LoaderPosition.replay(self.loader, state["current"], random_state,
                                                 "the inner loop's loader")
