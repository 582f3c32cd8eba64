"""Everything the library knows about data loaders, in one place.

* From a batch to the model's input: :func:`extract_input` (the default ``get_input``),
  :func:`move_to_device`, :func:`model_device`.
* The walk over a loader's parts: :func:`sampler_owners` finds the samplers (for ``set_epoch``) and
  :func:`loader_generators` the ``torch.Generator`` objects that shuffle; :func:`set_sampler_epoch`.
* :func:`loader_length` and :func:`check_inner_source` (loaders that cannot be iterated twice at
  once).
"""
from __future__ import annotations

import warnings

from typing import Any, Callable, Iterable, List, Mapping, Optional

import torch

__all__ = ["InputFn", "extract_input", "move_to_device", "model_device", "loader_length",
           "sampler_owners", "set_sampler_epoch", "loader_generators", "check_inner_source"]

#: ``get_input(batch) -> x``: how the model's input is taken from one loader batch.
InputFn = Callable[[Any], Any]


def extract_input(batch: Any) -> Any:
    """The model input inside one loader batch (the default ``get_input``).

    A batch may be a tensor (the input itself), a tuple/list whose first element is the input
    (``(x, y)`` from a ``TensorDataset``), or a mapping with an ``"x"`` key (only ``batch["x"]`` is
    passed on: build the model with ``VAE(..., get_input=...)`` to pass more, e.g.
    ``get_input=lambda b: (b["x"], b["lengths"])``).

    Raises:
        TypeError: any other container, or a list/tuple of strings (text that was not turned into
            tensors), naming what came.
        ValueError: an empty tuple/list or a mapping without ``"x"``.
    """
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)):
        if len(batch) == 0:
            raise ValueError("a loader batch is an empty tuple/list; expected (x, ...) with x first")
        if isinstance(batch[0], (str, bytes)):
            raise TypeError(
                f"a loader batch is a {type(batch).__name__} of {len(batch)} elements whose first is a "
                f"{type(batch[0]).__name__}; expected tensors: give the DataLoader a collate_fn that "
                "turns the text into token ids, or build the model with VAE(..., get_input=batch -> input) to say how"
            )
        return batch[0]
    if isinstance(batch, Mapping):
        if "x" not in batch:
            raise ValueError(
                f"a loader batch is a mapping with keys {sorted(map(str, batch))}; "
                "expected a key 'x' holding the model input (or build the model with VAE(..., get_input=batch -> input))"
            )
        return batch["x"]
    raise TypeError(
        f"a loader batch is a {type(batch).__name__}; expected a tensor, a tuple/list whose first "
        "element is the input, or a dict with key 'x' (or build the model with VAE(..., get_input=batch -> input))"
    )


_UNPINNED_WARNED = [False]


def _warn_unpinned_once() -> None:
    if not _UNPINNED_WARNED[0]:
        _UNPINNED_WARNED[0] = True
        warnings.warn("batches reach the GPU from pageable CPU memory: each copy blocks the host "
                      "(a host sync per inner step); build the DataLoader with pin_memory=True so "
                      "that they are copied asynchronously", stacklevel=3)


def move_to_device(x: Any, device: Optional[torch.device]) -> Any:
    """Move tensors (also inside tuples, lists and dicts) to ``device``, keeping their dtype."""
    if device is None:
        return x
    if isinstance(x, torch.Tensor):
        if x.device == device:
            return x
        pinned = x.is_pinned() if x.device.type == "cpu" else False
        if not pinned and x.device.type == "cpu" and device.type == "cuda":
            _warn_unpinned_once()
        return x.to(device, non_blocking=pinned)
    if isinstance(x, (tuple, list)):
        return type(x)(move_to_device(v, device) for v in x)
    if isinstance(x, Mapping):
        return {k: move_to_device(v, device) for k, v in x.items()}
    return x


def model_device(module: torch.nn.Module) -> Optional[torch.device]:
    """The device of the module's first parameter or buffer, ``None`` when it has neither."""
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return None


def loader_length(loader: Iterable[Any]) -> Optional[int]:
    """``len(loader)`` when the loader defines it, else ``None``."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def sampler_owners(loader: Any) -> List[Any]:
    """The loader itself, its ``sampler``, ``batch_sampler`` and the batch sampler's ``sampler``
    (whichever exist), without duplicates: where ``set_epoch`` and shuffling generators live."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    found: List[Any] = []
    for owner in (loader, getattr(loader, "sampler", None), batch_sampler,
                  getattr(batch_sampler, "sampler", None)):
        if owner is not None and all(owner is not f for f in found):
            found.append(owner)
    return found


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the loader's samplers that have one (``DistributedSampler``
    needs it for a new shuffle every epoch)."""
    for owner in sampler_owners(loader)[1:]:
        if callable(getattr(owner, "set_epoch", None)):
            owner.set_epoch(epoch)


def loader_generators(*loaders: Any) -> List[torch.Generator]:
    """The ``torch.Generator`` objects that shuffle these loaders (``loader.generator``,
    ``loader.sampler.generator``, ``loader.batch_sampler.sampler.generator``), without duplicates."""
    found: List[torch.Generator] = []
    for loader in loaders:
        for owner in sampler_owners(loader):
            gen = getattr(owner, "generator", None)
            if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
                found.append(gen)
    return found


def check_inner_source(train_loader: Any, inner_loader: Optional[Any]) -> None:
    """Refuse a train loader the inner loop cannot draw from while the epoch iterates it.

    Without ``inner_loader`` the inner loop iterates ``train_loader`` a second time, alongside the
    epoch's iterator. A ``DataLoader`` with ``persistent_workers=True`` hands out one iterator and
    resets it on every ``iter()``, so that second pass would rewind the epoch.

    Raises:
        ValueError: naming the option and the fix.
    """
    if inner_loader is None and getattr(train_loader, "persistent_workers", False):
        raise ValueError(
            "train_loader has persistent_workers=True and no inner_loader was given: the inner loop "
            "would re-iterate train_loader, and a persistent-worker DataLoader resets its one iterator "
            "(the epoch would rewind). Pass fit(..., inner_loader=DataLoader(same_dataset, "
            "batch_size=..., shuffle=True, num_workers=..., persistent_workers=True)), a loader of its "
            "own, or build train_loader with persistent_workers=False"
        )
