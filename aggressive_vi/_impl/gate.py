"""Optimiser steps gated on a flag that stays on the device.

The inner loop decides whether each encoder step may be applied (loss and gradients finite, no
earlier error in the loop) without reading that decision on the host, so that a catch-up loop of
100 steps costs one host sync per window instead of one per step. :class:`GatedStep` applies
``optimizer.step()`` only where a 0-d boolean tensor says so, by the cheapest exact means the
optimiser allows:

* ``"found_inf"``: optimisers whose step reads ``found_inf`` (those built with ``fused=True``:
  Adam, AdamW, SGD, Adagrad) skip the update inside their kernel, as under ``GradScaler``;
* ``"select"``: every other optimiser whose state tensors live on its parameters' device (SGD, or
  Adam with ``capturable=True`` on a GPU, or any optimiser on the CPU): the parameters and state are
  snapshotted, the step is taken, and ``torch.where(ok, new, old)`` keeps the old values where the
  flag is false;
* ``"host"``: the flag is read on the host (one sync) when neither works, e.g. the default Adam on a
  GPU (its step counters are CPU tensors), or while an optimiser still has to create its state.

On the CPU a host read costs nothing (there is no device to wait for) while the snapshot costs a
copy of parameters and state (about +4% on an aggressive epoch at the ``cpu`` text preset's
sizes: ``python -m benchmarks.nonfinite_check --model text``), so
``mode="auto"`` reads on the host there unless the optimiser is fused; ``mode="window"`` gates on
the device everywhere (what the CPU sync-count test exercises), ``mode="step"`` always reads.

Every strategy leaves parameters and optimiser state bitwise as they were when the flag is false.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence, Set

import torch

from ..distributed import all_reduce_sum, is_distributed

__all__ = ["GATE_MODES", "GatedStep", "finite_flag", "gradient_norm"]

GATE_MODES = ("auto", "window", "step")

#: ``mode="auto"`` reads the flag on the host when it is on the CPU, where a read costs nothing (tests
#: set it to ``False`` to exercise the device-side gate on the CPU, as it runs on a GPU).
HOST_READS_ON_CPU = True


def gradient_norm(params: Sequence[torch.Tensor], max_norm: Optional[float],
                  scaled: Sequence[torch.Tensor] = (), inv_scale: float = 1.0) -> torch.Tensor:
    """The gradients' joint L2 norm (0-d, on their device), clipping them to ``max_norm`` first
    when it is given (``torch.nn.utils.clip_grad_norm_``; no host sync).

    ``scaled``: parameters whose gradients are still multiplied by a grad scaler's scale (unscaled
    later, e.g. by Lightning's precision plugin at their own optimiser's step): they count in the norm
    multiplied by ``inv_scale``, and are clipped by the same factor as the others."""
    if scaled:
        grads = [p.grad for p in params if p.grad is not None]
        later = [p.grad for p in scaled if p.grad is not None]
        norms = [torch.linalg.vector_norm(g) for g in grads] + [torch.linalg.vector_norm(g) * inv_scale for g in later]
        total = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
        if max_norm is not None:
            factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # clip_grad_norm_'s rule
            for g in grads + later:
                g.mul_(factor.to(g.device))
        return total
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:  # on the parameters' device: no host-to-device copy (e.g. inside a graph)
        return torch.zeros((), device=params[0].device if len(params) else None)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def finite_flag(loss: torch.Tensor, params: Sequence[torch.Tensor], max_norm: Optional[float],
                scaled: Sequence[torch.Tensor] = (), inv_scale: float = 1.0) -> torch.Tensor:
    """Clip the gradients of ``params`` (and ``scaled``, see :func:`gradient_norm`) and return whether
    ``loss`` and every gradient are finite: a 0-d bool tensor on the loss's device, the same on every
    rank (one all-reduce under ``torch.distributed``, no host sync)."""
    norm = gradient_norm(params, max_norm, scaled, inv_scale)
    value = loss.detach().sum() + norm.to(loss.device)  # NaN/inf in either makes it non-finite
    if is_distributed():
        value = all_reduce_sum(value.double().reshape(1)).reshape(())
    return torch.isfinite(value)


class GatedStep:
    """``gate(ok)``: ``optimizer.step()`` where the 0-d bool tensor ``ok`` is true, nothing where
    it is false (parameters and optimiser state unchanged, bitwise).

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        name: how errors and warnings name it (e.g. ``"enc_opt"``).
        mode: ``"auto"``, ``"window"`` (never read on the host when the optimiser allows it) or
            ``"step"`` (always read on the host), see the module's docstring.

    Attributes:
        strategy: the one used by the last call (``"found_inf"``, ``"select"`` or ``"host"``).
        host_reads: how many calls read ``ok`` on the host.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, name: str = "optimizer",
                 mode: str = "auto") -> None:
        if mode not in GATE_MODES:
            raise ValueError(f"mode must be one of {list(GATE_MODES)}; got {mode!r}")
        self.optimizer = optimizer
        self.name = name
        self.mode = mode
        self.strategy: Optional[str] = None
        self.host_reads = 0
        self._warned = False

    def __call__(self, ok: torch.Tensor) -> None:
        opt = self.optimizer
        if self.mode == "step":
            self._host_step(ok, [])
            return
        if getattr(opt, "_step_supports_amp_scaling", False):
            self.strategy = "found_inf"
            stateful = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
            before: Set[int] = {id(p) for p in stateful if opt.state.get(p)}
            opt.found_inf = (~ok).float()  # type: ignore[attr-defined]  # read by the fused step
            try:
                opt.step()
            finally:
                del opt.found_inf  # type: ignore[attr-defined]
            # a refused first step still creates the state (a fused SGD's momentum buffers with
            # empty_like: garbage that the next applied step would write into the weights)
            self._drop_state_created_if_refused(stateful, before, ok)
            return
        if self.mode == "auto" and ok.device.type == "cpu" and HOST_READS_ON_CPU:  # a host read is free there
            self._host_step(ok, [])
            return
        params = [p for group in opt.param_groups for p in group["params"]]
        stateful = [p for p in params if p.grad is not None]
        if not all(self._state_on_device(p) for p in stateful):
            self._host_step(ok, params)
            return
        self.strategy = "select"
        before = {id(p) for p in stateful if opt.state.get(p)}
        tensors: List[torch.Tensor] = list(params)
        for p in stateful:
            tensors += [v for v in opt.state.get(p, {}).values() if isinstance(v, torch.Tensor)]
        saved = [t.detach().clone() for t in tensors]
        opt.step()
        with torch.no_grad():
            for t, old in zip(tensors, saved):
                t.copy_(torch.where(ok, t, old))
        self._drop_state_created_if_refused(stateful, before, ok)

    def _drop_state_created_if_refused(self, stateful: List[torch.Tensor], before: Set[int],
                                       ok: torch.Tensor) -> None:
        """State this step created was not there to keep: only the host can undo it (one read, at an
        optimiser's first steps only)."""
        created = [p for p in stateful if id(p) not in before and self.optimizer.state.get(p)]
        if created:
            self.host_reads += 1
            if not bool(ok):
                for p in created:
                    del self.optimizer.state[p]

    def _state_on_device(self, p: torch.Tensor) -> bool:
        state: Dict[str, object] = self.optimizer.state.get(p, {})
        return all(isinstance(v, torch.Tensor) and v.device == p.device
                   for v in state.values() if v is not None)

    def _host_step(self, ok: torch.Tensor, params: List[torch.Tensor]) -> None:
        self.strategy = "host"
        self.host_reads += 1
        if (not self._warned and params and params[0].device.type != "cpu"
                and any(self.optimizer.state.get(p) for p in params)):
            self._warned = True
            warnings.warn(
                f"{self.name} keeps state off its parameters' device (e.g. Adam's step counters on "
                "the CPU), so every inner step reads its finiteness flag on the host; build it with "
                "fused=True (or capturable=True) to keep the inner loop at one host sync per window",
                stacklevel=3)
        if bool(ok):
            self.optimizer.step()
