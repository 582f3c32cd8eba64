"""The epoch in progress: its batch stream, its running sums and counters, and its record.

:class:`EpochInProgress` owns everything a checkpoint taken in the middle of an epoch must hold
about that epoch; the trainer composes its :meth:`~EpochInProgress.state_dict` (the same on every
rank) and :meth:`~EpochInProgress.local_state_dict` (this rank's sums and random snapshot).
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, Iterable, Optional

import torch

from ..history import EpochRecord
from ..metrics import Metric
from .streams import EpochStream

__all__ = ["TrainingSums", "EpochInProgress", "validation_fields"]

VALIDATION_FIELDS = ("val_mi", "val_mi_stderr", "val_au", "val_kl", "val_elbo", "val_reconstruction")


def validation_fields(val: Dict[str, Any]) -> Dict[str, Any]:
    """The ``val_*`` fields of :class:`~aggressive_vi.history.EpochRecord` from a validation record
    with ``val_*`` keys or a :func:`~aggressive_vi.estimators.summary` dict (keys without the prefix);
    a field neither holds is ``None``."""
    return {name: val.get(name, val.get(name[len("val_"):])) for name in VALIDATION_FIELDS}


class TrainingSums(Metric):
    """Running totals of one epoch's decoder (or joint) updates.

    ``loss_sum``, ``reconstruction_sum``, ``kl_sum`` (nats, float64) and ``examples`` live on
    ``device`` (the model's) from the start, so neither adding a batch nor reducing at the epoch's end
    copies anything from the host (on a GPU such a copy waits for the device); they are summed over
    ranks when the epoch ends. The counters are host numbers, the same on every rank.
    """

    loss_sum: torch.Tensor
    reconstruction_sum: torch.Tensor
    kl_sum: torch.Tensor
    examples: torch.Tensor
    batches: int
    aggressive_steps: int
    inner_total: int
    skipped_batches: int
    skipped_inner_steps: int

    def __init__(self, device: Optional[torch.device] = None) -> None:
        super().__init__()
        for name in ("loss_sum", "reconstruction_sum", "kl_sum", "examples"):
            self.add_state(name, torch.zeros((), dtype=torch.float64, device=device))
        for name in ("batches", "aggressive_steps", "inner_total", "skipped_batches",
                     "skipped_inner_steps"):
            self.add_state(name, 0, reduce=None)

    def update(self, loss: Optional[torch.Tensor], reconstruction: Optional[torch.Tensor],
               kl: Optional[torch.Tensor], *, inner_steps: int, aggressive: bool,
               skipped_inner: int) -> None:
        """Count one update; ``loss is None`` when it was skipped (non-finite)."""
        self.batches += 1
        self.skipped_inner_steps += skipped_inner
        if aggressive:
            self.aggressive_steps += 1
            self.inner_total += inner_steps
        if loss is None or reconstruction is None or kl is None:
            self.skipped_batches += 1
            return
        self.examples = self.examples + loss.shape[0]  # a device add: no host-to-device copy
        self._accumulate("loss_sum", loss.sum())
        self._accumulate("reconstruction_sum", reconstruction.sum())
        self._accumulate("kl_sum", kl.sum())

    def compute(self) -> Dict[str, float]:
        """Means per example over all ranks (``nan`` when every update was skipped)."""
        r = self.reduced()
        names = ("examples", "loss_sum", "reconstruction_sum", "kl_sum")
        n, loss, reconstruction, kl = torch.stack(
            [torch.as_tensor(r[k], dtype=torch.float64) for k in names]).tolist()  # one host read
        mean = (lambda s: s / n) if n > 0 else (lambda s: math.nan)
        return {"loss": mean(loss), "reconstruction": mean(reconstruction), "kl": mean(kl)}


class EpochInProgress:
    """One epoch being trained.

    Args:
        loader: the training loader (its sampler gets ``set_epoch(epoch)``).
        epoch: 0-based index.
        began_aggressive: whether the epoch starts in the aggressive phase.
        device: where the running sums live (the model's).
    """

    def __init__(self, loader: Iterable[Any], epoch: int, began_aggressive: bool,
                 stream: Optional[EpochStream] = None, device: Optional[torch.device] = None) -> None:
        self.loader = loader
        self.epoch = epoch
        self.began_aggressive = began_aggressive
        self.stream = stream if stream is not None else EpochStream(loader, epoch)
        self.sums = TrainingSums(device)
        self.kl_weight = math.nan  # at the epoch's last update
        self.left_aggressive_at: Optional[int] = None  # decoder updates done at the phase switch
        self.elapsed_before = 0.0  # seconds spent in this epoch before a resume
        self._started = time.perf_counter()

    @property
    def batches(self) -> int:
        """Updates completed in this epoch."""
        return self.sums.batches

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._started

    def add(self, loss: Optional[torch.Tensor], reconstruction: Optional[torch.Tensor],
            kl: Optional[torch.Tensor], *, inner_steps: int, aggressive: bool, kl_weight: float,
            skipped_inner: int) -> None:
        """Count one completed update (``loss is None``: skipped)."""
        self.kl_weight = kl_weight
        self.sums.update(loss, reconstruction, kl, inner_steps=inner_steps, aggressive=aggressive,
                         skipped_inner=skipped_inner)

    def record(self, val: Dict[str, Any]) -> EpochRecord:
        """The epoch's record (training means reduced over ranks) with validation metrics ``val``:
        :meth:`aggressive_vi.metrics.ValidationMetrics.compute`'s record (``val_mi``, ...) or
        :func:`aggressive_vi.estimators.summary`'s dict (the same names without ``val_``); ``{}``
        without validation."""
        means = self.sums.compute()
        s = self.sums
        return EpochRecord(
            epoch=self.epoch, steps=s.batches, loss=means["loss"],
            reconstruction=means["reconstruction"], kl=means["kl"], kl_weight=self.kl_weight,
            aggressive=self.began_aggressive, aggressive_steps=s.aggressive_steps,
            inner_steps_mean=s.inner_total / s.aggressive_steps if s.aggressive_steps else 0.0,
            **validation_fields(val),
            skipped_batches=s.skipped_batches, skipped_inner_steps=s.skipped_inner_steps,
            left_aggressive_at=self.left_aggressive_at, wall_time=self.elapsed,
        )

    def state_dict(self) -> Dict[str, Any]:
        """Position and bookkeeping, the same on every rank. The stream position counts the
        updates *completed* (an interrupt in the middle of one leaves one more batch drawn: it is
        redone on resume)."""
        return {"epoch": self.epoch, "began_aggressive": self.began_aggressive,
                "kl_weight": self.kl_weight, "left_aggressive_at": self.left_aggressive_at,
                "elapsed": self.elapsed,
                "stream": dict(self.stream.state_dict(), consumed=self.batches)}

    def local_state_dict(self) -> Dict[str, Any]:
        """This rank's running sums and the random snapshot its pass began with."""
        return {"sums": self.sums.state_dict(), "stream": self.stream.local_state_dict()}

    @classmethod
    def replay(cls, loader: Iterable[Any], state: Dict[str, Any], local: Dict[str, Any],
               device: Optional[torch.device]) -> "EpochInProgress":
        """The epoch at a saved position: the stream replayed to it, the sums restored."""
        stream = EpochStream.replay(loader, state["stream"], local["stream"], "train_loader")
        epoch = cls(loader, int(state["epoch"]), bool(state["began_aggressive"]), stream=stream, device=device)
        epoch.sums.load_state_dict(local["sums"], device=device)
        epoch.kl_weight = float(state["kl_weight"])
        left = state.get("left_aggressive_at")
        epoch.left_aggressive_at = None if left is None else int(left)
        epoch.elapsed_before = float(state["elapsed"])
        return epoch
