"""A training callback that records where fixed points sit in posterior mean space over training.

Every ``every`` decoder updates (and once before the first and after the last),
:class:`PosteriorMeanSnapshots`
computes, for the same held-out inputs, the model posterior mean (grid quadrature) and the
inference mean, with the model in eval mode (no dropout) and without touching any random number
generator, so recording does not change the training run.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

import torch

from .posterior import eval_mode, inference_mean, model_posterior_mean, z_grid

__all__ = ["Snapshot", "PosteriorMeanSnapshots", "save_snapshots", "load_snapshots"]


@dataclass
class Snapshot:
    """Posterior mean space at one moment of training.

    Attributes:
        step: decoder updates done so far (0 = before training).
        epoch: the epoch this step belongs to (0 before training).
        aggressive: whether the trainer was in the aggressive phase at this step.
        model_mean: ``[n]`` E_{p(z|x)}[z] of each tracked point (first latent dimension).
        inference_mean: ``[n]`` mean of q(z|x) of each tracked point.
    """

    step: int
    epoch: int
    aggressive: bool
    model_mean: List[float]
    inference_mean: List[float]


class PosteriorMeanSnapshots:
    """Callback for ``AggressiveTrainer``: snapshot posterior mean space every ``every`` steps.

    Args:
        model: the VAE being trained (``encode`` and ``log_joint``); a scalar latent is expected,
            for a larger one only the first dimension is recorded.
        x: ``[n, ...]`` the inputs to track (the paper: 500 held-out points).
        every: snapshot every this many decoder updates (``StepInfo.step``).
        grid: ``[K, latent_dim]`` quadrature grid, default [-20, 20] step 0.1.
        max_sequences: memory bound passed to :func:`model_posterior_mean`.
        at_start: also snapshot in ``on_fit_start`` (step 0 for a fresh trainer).
        at_end: also snapshot in ``on_fit_end`` if the last update was not snapshotted already
            (labelled with that update's epoch and phase).
        until: take no snapshot after this many decoder updates (``None``: no limit).

    After ``fit``, ``self.snapshots`` is the list of :class:`Snapshot` in step order.
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, *, every: int = 50,
                 grid: Optional[torch.Tensor] = None, max_sequences: int = 8192,
                 at_start: bool = True, at_end: bool = True, until: Optional[int] = None) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 1:
            raise ValueError("x must be a non-empty tensor [n, ...] of inputs to track")
        self.model, self.x, self.every = model, x, every
        self.grid = z_grid() if grid is None else grid
        if until is not None and (isinstance(until, bool) or not isinstance(until, int) or until < 0):
            raise ValueError(f"until must be a non-negative integer or None, got {until!r}")
        self.max_sequences, self.at_start, self.at_end, self.until = max_sequences, at_start, at_end, until
        self.snapshots: List[Snapshot] = []
        self._last: Optional[Any] = None  # the last StepInfo seen

    def take(self, step: int, epoch: int, aggressive: bool) -> Snapshot:
        """Compute and store one snapshot now."""
        with eval_mode(self.model):
            model_mean = model_posterior_mean(self.model, self.x, self.grid,
                                              max_sequences=self.max_sequences)
            infer_mean = inference_mean(self.model, self.x)
        snap = Snapshot(step=int(step), epoch=int(epoch), aggressive=bool(aggressive),
                        model_mean=model_mean[:, 0].tolist(),
                        inference_mean=infer_mean[:, 0].float().tolist())
        self.snapshots.append(snap)
        return snap

    # -- trainer hooks ---------------------------------------------------------------------------
    def on_fit_start(self, trainer: Any) -> None:
        step = int(getattr(trainer, "step", 0))
        if self.at_start and not any(s.step == step for s in self.snapshots):
            self.take(step, int(getattr(trainer, "epoch", 0)),
                      bool(getattr(trainer, "is_aggressive", False)))

    def on_step_end(self, trainer: Any, info: Any) -> None:
        if self.until is not None and info.step > self.until:
            return
        self._last = info
        if info.step % self.every == 0:
            self.take(info.step, info.epoch, info.aggressive)

    def on_fit_end(self, trainer: Any) -> None:
        last = self._last
        if self.at_end and last is not None and not any(s.step == last.step for s in self.snapshots):
            self.take(last.step, last.epoch, last.aggressive)


def save_snapshots(path: str, runs: Dict[str, List[Snapshot]], meta: Optional[Dict[str, Any]] = None) -> None:
    """Write ``{run name: [snapshot, ...]}`` (plus ``meta``) as JSON to ``path``."""
    payload = {"meta": meta or {}, "runs": {name: [asdict(s) for s in snaps] for name, snaps in runs.items()}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(payload, fh)


def load_snapshots(path: str) -> Dict[str, Any]:
    """Read a file written by :func:`save_snapshots`: ``{"meta": {...}, "runs": {name: [Snapshot]}}``."""
    with open(path) as fh:
        payload = json.load(fh)
    payload["runs"] = {name: [Snapshot(**s) for s in snaps] for name, snaps in payload["runs"].items()}
    return payload
