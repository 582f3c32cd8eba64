"""The example CLIs' ``--device`` option, and random generators that live where they draw.

A ``torch.Generator`` belongs to one device: ``torch.randn(..., device="cuda", generator=g)`` and
``torch.bernoulli(cuda_probs, generator=g)`` need ``g`` on that CUDA device, so the examples make
their generators with :func:`make_generator` on the model's device (:func:`module_device`), and
their sampling functions check what they are given with :func:`check_generator`.
"""
from __future__ import annotations

import argparse
from typing import Optional, Union

import torch
from torch import nn

__all__ = ["DEVICE_HELP", "resolve_device", "device_option", "module_device", "make_generator",
           "check_generator", "pin_memory"]

DEVICE_HELP = ("where the model and batches live: cpu (default), cuda, cuda:N, or auto (cuda when "
               "torch.cuda.is_available(), else cpu)")
DeviceLike = Union[str, torch.device]


def resolve_device(name: DeviceLike, option: str = "--device") -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` -> a ``torch.device`` that exists here.

    Raises:
        ValueError: another name, or a CUDA device this machine does not have; the message names
            ``option`` and says what was found.
    """
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise ValueError(f"{option} must be cpu, cuda, cuda:N or auto; got {str(name)!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {name}: CUDA is not available here (torch.cuda.is_available() is "
                             f"False: no GPU, or a CPU-only torch build); use {option} cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{option} {name}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    return device


def device_option(value: str) -> torch.device:
    """``argparse`` type for ``--device`` (errors read ``argument --device: ...``)."""
    try:
        return resolve_device(value, option="--device")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer); CPU for a module with neither."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _same(a: torch.device, b: torch.device) -> bool:
    """Same device type, and same index where both name one (``cuda`` means the current one)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def make_generator(seed: int, device: DeviceLike = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device``, seeded with ``seed``. The same seed gives different
    streams on different device types (CPU and CUDA generators are different algorithms)."""
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def check_generator(generator: Optional[torch.Generator], device: DeviceLike, name: str = "generator") -> None:
    """Raise ``ValueError`` when ``generator`` cannot draw tensors on ``device`` (``None`` passes:
    the device's default generator is used)."""
    if generator is None:
        return
    device = torch.device(device)
    if not _same(generator.device, device):
        raise ValueError(f"{name} is on {generator.device} but draws tensors on {device}; create it there: "
                         f"torch.Generator(device={str(device)!r}) (examples.devices.make_generator)")


def pin_memory(device: DeviceLike) -> bool:
    """Whether loaders feeding ``device`` should pin their batches (page-locked host memory makes
    the copy to a CUDA device faster and lets it overlap with compute): only for CUDA."""
    return torch.device(device).type == "cuda"
