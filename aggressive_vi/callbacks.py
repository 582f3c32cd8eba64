"""Hooks into ``AggressiveTrainer.fit``: a no-op base plus printing and progress-bar callbacks.

A callback is any object with some of these methods (duck-typed; subclassing :class:`Callback` is
optional)::

    on_fit_start(trainer)
    on_epoch_start(trainer, epoch)
    on_step_end(trainer, info: StepInfo)      # after every decoder (or joint) update
    on_phase_change(trainer, step)            # the trainer just left the aggressive phase
    on_epoch_end(trainer, record: EpochRecord)
    on_interrupt(trainer)                     # Ctrl-C / KeyboardInterrupt inside fit, before it
                                              # propagates (trainer.at_step_boundary tells whether
                                              # the state is a clean step boundary)
    on_fit_end(trainer)

``on_epoch_start`` runs again when a checkpoint taken mid-epoch is resumed.

Setting ``trainer.stop_training = True`` in any hook ends ``fit`` after the current step (the epoch
is closed and recorded first).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Optional, TextIO

import torch

from ._impl.checks import positive_int
from .distributed import is_main_process
from .history import EpochRecord
from .protocols import Trainer


__all__ = ["StepInfo", "Callback", "PrintLogger", "ProgressBar"]


@dataclass(frozen=True)
class StepInfo:
    """One decoder (or joint) update.

    Attributes:
        epoch: 0-based epoch.
        step: decoder updates so far, this one included.
        batch_index: index of the minibatch within the epoch.
        loss: the batch's training objective (weighted negative ELBO, with the model's
            ``kl_threshold`` applied), nats per example (a 0-d tensor, not synced to the host: call
            ``.item()`` only when you need the number).
        kl: mean KL of the batch (0-d tensor), nats per example.
        kl_weight: the KL weight used.
        aggressive: whether an inner loop preceded this update.
        inner_steps: encoder-only steps taken before it (0 in basic training).
        skipped: the update was not applied: its loss or gradient was not finite
            (``on_nonfinite="skip"``).
    """

    epoch: int
    step: int
    batch_index: int
    loss: torch.Tensor
    kl: torch.Tensor
    kl_weight: float
    aggressive: bool
    inner_steps: int
    skipped: bool = False


class Callback:
    """Base class with every hook as a no-op; override the ones you need."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None: ...

    def on_phase_change(self, trainer: Trainer, step: int) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None: ...

    def on_interrupt(self, trainer: Trainer) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


def format_record(record: EpochRecord) -> str:
    """One line for an epoch: losses, KL weight, validation MI/AU/KL, phase and time."""
    parts = [
        f"epoch {record.epoch:3d}",
        f"loss {record.loss:.4f}",
        f"rec {record.reconstruction:.4f}",
        f"kl {record.kl:.4f}",
        f"klw {record.kl_weight:.3f}",
    ]
    if record.val_mi is not None:
        parts.append(f"val_mi {record.val_mi:.4f}")
    if record.val_au is not None:
        parts.append(f"val_au {record.val_au}")
    if record.val_kl is not None:
        parts.append(f"val_kl {record.val_kl:.4f}")
    if record.val_elbo is not None:
        parts.append(f"val_elbo {record.val_elbo:.4f}")
    if record.skipped_batches or record.skipped_inner_steps:
        parts.append(f"skipped {record.skipped_batches} batches, {record.skipped_inner_steps} inner steps")
    phase = f"aggressive (inner {record.inner_steps_mean:.1f})" if record.aggressive else "basic"
    if record.left_aggressive_at is not None:
        phase += f", then basic: left the aggressive phase after {record.left_aggressive_at} decoder updates"
    parts += [phase, f"{record.wall_time:.1f}s"]
    return " | ".join(parts)


class PrintLogger(Callback):
    """Prints one line per epoch, on rank 0 only; the line of the epoch in which training left the
    aggressive phase says so, with the decoder update at which it did.

    Args:
        stream: where to write (``sys.stdout`` by default).
    """

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream

    def _print(self, text: str) -> None:
        if is_main_process():
            print(text, file=self.stream or sys.stdout, flush=True)

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        self._print(format_record(record))


class ProgressBar(Callback):
    """A progress bar over each epoch's batches (``tqdm`` when installed, else a plain line).

    Shows the running loss, KL, the last epoch's validation MI (when there is a validation loader)
    and whether the trainer is aggressive, refreshed every ``refresh_every`` steps (each refresh
    syncs two numbers from the device). Rank 0 only.
    """

    def __init__(self, refresh_every: int = 10, stream: Optional[TextIO] = None) -> None:
        self.refresh_every = positive_int("refresh_every", refresh_every)
        self.stream = stream
        self._bar: Any = None
        self._total: Optional[int] = None
        self._last_mi: Optional[float] = None
        self._line_open = False  # the plain fallback's \r line awaits its newline

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if not is_main_process():
            return
        self._total = trainer.steps_per_epoch
        try:
            from tqdm.auto import tqdm  # type: ignore[import-untyped]
        except ImportError:
            self._bar = None
            return
        self._bar = tqdm(total=self._total, desc=f"epoch {epoch}", leave=False,
                         file=self.stream or sys.stderr)

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        if not is_main_process():
            return
        if self._bar is not None:
            self._bar.update(1)
        if info.batch_index % self.refresh_every:
            return
        phase = f"aggr({info.inner_steps})" if info.aggressive else "basic"
        mi = "" if self._last_mi is None else f" mi {self._last_mi:.3f}"
        loss, kl = torch.stack([info.loss.detach().float(), info.kl.detach().float()]).tolist()  # one read
        text = f"loss {loss:.3f} kl {kl:.3f}{mi} {phase}"
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)
        else:
            stream = self.stream or sys.stderr
            stream.write(f"\repoch {info.epoch} [{info.batch_index + 1}/{self._total or '?'}] {text}")
            stream.flush()
            self._line_open = True

    def on_phase_change(self, trainer: Trainer, step: int) -> None:
        # make room for the switch message: tqdm's bar is cleared (it redraws at the next update), the
        # plain line gets its newline
        if self._bar is not None:
            self._bar.clear()
        self._close_line()

    def _close_line(self) -> None:
        if self._line_open:
            (self.stream or sys.stderr).write("\n")
            self._line_open = False

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        if not is_main_process():
            return
        self._last_mi = record.val_mi
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._close_line()
