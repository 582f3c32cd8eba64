"""Mixed precision for the trainer's forward passes: autocast, and loss scaling for fp16.

* ``"fp32"``: nothing changes (the default).
* ``"bf16"``: the forward passes of inner, decoder and joint steps run under
  ``torch.autocast(dtype=torch.bfloat16)``. The VAE keeps z, log q(z|x), the prior and the KL in
  float32 (:mod:`aggressive_vi.model`): drawing eps in bf16 moves log q by about half a nat per sample.
* ``"fp16"``: the same with ``torch.float16``, and a ``torch.amp.GradScaler`` per phase: one for
  the encoder's inner steps, one for the decoder steps (the joint steps of basic training use the
  decoder's for both optimisers, as PyTorch's recipe for several optimisers on one loss does).
  Gradients are unscaled before clipping and the finiteness check; a step whose loss is finite but
  whose gradients overflowed is skipped as routine (the scaler lowers its scale), not an error.

Validation estimates are never autocast by the trainer (a bf16 importance-weighted estimate was
measured 0.7 nats away from the fp32 one: not fit for a reported likelihood).
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Dict, Iterator, List, Optional, Tuple

import torch

__all__ = ["PRECISIONS", "Precision", "allow_tf32"]

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """The trainer's precision: autocast contexts and the fp16 grad scalers.

    Args:
        name: one of :data:`PRECISIONS`.
        device_type: the model's device type (``"cpu"``, ``"cuda"``, ...).

    Attributes:
        scalers: ``{"encoder": GradScaler, "decoder": GradScaler}`` for ``"fp16"``, else ``{}``.
    """

    def __init__(self, name: str, device_type: str) -> None:
        self.name = name
        self.device_type = device_type
        self.dtype: Optional[torch.dtype] = _DTYPES.get(name)
        self.scalers: Dict[str, torch.amp.GradScaler] = {}
        if name == "fp16":
            self.scalers = {phase: torch.amp.GradScaler(device_type) for phase in ("encoder", "decoder")}

    def autocast(self, cache_enabled: bool = True) -> ContextManager[Any]:
        """The context for a training forward pass (a no-op for ``"fp32"``); ``cache_enabled=False``
        inside a CUDA graph capture (autocast's weight cache must not outlive it)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype, cache_enabled=cache_enabled)

    def scaler(self, phase: str) -> Optional[torch.amp.GradScaler]:
        """The grad scaler of ``phase`` (``"encoder"`` or ``"decoder"``), ``None`` unless fp16."""
        return self.scalers.get(phase)

    def state_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "scalers": {k: s.state_dict() for k, s in self.scalers.items()}}

    def load_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        """Restore the scalers' scales and growth trackers (a state without them changes nothing)."""
        if not state:
            return
        for phase, saved in (state.get("scalers") or {}).items():
            if phase in self.scalers:
                self.scalers[phase].load_state_dict(saved)


def _tf32_settings() -> List[Tuple[Any, str]]:
    """The per-operator precision settings (torch >= 2.9): ``(backend object, attribute)`` pairs."""
    backends: Any = torch.backends
    return [(backends.cuda.matmul, "fp32_precision"), (backends.cudnn.conv, "fp32_precision"),
            (backends.cudnn.rnn, "fp32_precision")]


@contextlib.contextmanager
def allow_tf32(enabled: bool = True) -> Iterator[None]:
    """Inside, CUDA matmuls and cuDNN convolutions and RNNs may use TF32 (``enabled=False``: may not:
    full fp32); every previous setting is restored on exit, also after an error. No effect on the CPU.

    For the estimators on an Ampere-or-newer GPU, e.g.
    ``with aggressive_vi.allow_tf32(): iw_nll(model, loader, n_samples=500)``: TF32 keeps float32's
    range with a 10-bit mantissa in matmul inputs; accumulation stays float32. With torch's
    per-operator API (``torch.backends.cuda.matmul.fp32_precision`` and the cuDNN ``conv`` / ``rnn``
    ones) each of the three is set and restored on its own, so settings made that way survive; with an
    older torch the legacy ``allow_tf32`` flags are used.
    """
    if all(hasattr(obj, name) for obj, name in _tf32_settings()):
        saved = [(obj, name, getattr(obj, name)) for obj, name in _tf32_settings()]
        try:
            for obj, name, _ in saved:
                setattr(obj, name, "tf32" if enabled else "ieee")
            yield
        finally:
            for obj, name, value in saved:
                setattr(obj, name, value)
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32  # pragma: no cover
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(enabled)  # pragma: no cover
    try:  # pragma: no cover - torch < 2.9
        yield
    finally:  # pragma: no cover
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
