"""Snapshots of every random-number generator a training run draws from, for exact resume.

A snapshot is a dict of tensors and Python primitives (so that ``torch.load(..., weights_only=True)``
reads it back): the global torch CPU generator, the CUDA generators when CUDA is initialised, Python's
``random``, NumPy's legacy global generator when NumPy has been imported, and any extra
``torch.Generator`` passed in (e.g. a data loader's own shuffling generator, see
:func:`~aggressive_vi._impl.loaders.loader_generators`).
"""
from __future__ import annotations

import random
import sys
from typing import Any, Dict, Iterable, List, Optional

import torch

__all__ = ["rng_state", "set_rng_state"]


def rng_state(generators: Iterable[torch.Generator] = ()) -> Dict[str, Any]:
    """The state of every generator the run may draw from (see the module docstring)."""
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _python_state(),
        "generators": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        name, key, pos, has_gauss, gauss = numpy.random.get_state(legacy=True)
        state["numpy"] = {"name": str(name), "key": torch.from_numpy(key.astype("int64")),
                          "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
    return state


def set_rng_state(state: Dict[str, Any], generators: Iterable[torch.Generator] = ()) -> None:
    """Restore a snapshot from :func:`rng_state` (the extra ``generators`` in the same order)."""
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    for gen, saved in zip(generators, state.get("generators", [])):
        gen.set_state(saved.cpu())
    cuda: Optional[List[torch.Tensor]] = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda[: torch.cuda.device_count()]])
    np_state = state.get("numpy")
    if np_state is not None:
        import numpy  # the run had NumPy imported: restore it so that user code draws the same

        numpy.random.set_state((np_state["name"], np_state["key"].numpy().astype("uint32"),
                                np_state["pos"], np_state["has_gauss"], np_state["gauss"]))


def _python_state() -> Any:
    version, internal, gauss = random.getstate()
    return (version, list(internal), gauss)
