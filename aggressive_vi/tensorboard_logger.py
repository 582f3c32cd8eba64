"""``TensorBoardLogger``: the training dynamics in TensorBoard (``pip install aggressive-vi[tensorboard]``).

Logs, with the number of decoder updates as the step (inner encoder steps are not counted):

* every ``every_n_steps`` updates: ``train/loss``, ``train/kl`` (nats per example), ``train/kl_weight``,
  ``train/inner_steps`` (encoder-only steps before that update) and ``train/aggressive`` (1 or 0);
* every epoch: each number of the :class:`~aggressive_vi.EpochRecord` under ``epoch/<field>``
  (``epoch/val_mi``, ``epoch/val_au``, ``epoch/val_kl``, ...);
* the switch out of the aggressive phase: ``train/aggressive`` drops to 0 at that update, and a
  text entry ``phase`` says when.

Rank 0 only. On resume the writer purges events after the resumed step, so the curves do not fold
back on themselves.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Optional, Union

from ._impl.checks import positive_int
from .distributed import is_main_process
from .history import EpochRecord
from .protocols import Trainer

if TYPE_CHECKING:  # pragma: no cover
    from .callbacks import StepInfo

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger:
    """A callback writing TensorBoard scalars (see the module docstring).

    Args:
        log_dir: the run's directory for event files (``tensorboard --logdir`` its parent).
        every_n_steps: log the per-update scalars every this many decoder updates (each logged
            update reads two numbers from the device).
        writer: an existing ``torch.utils.tensorboard.SummaryWriter`` to use instead of ``log_dir``.

    Raises:
        ImportError: TensorBoard is not installed (``pip install tensorboard``).
    """

    def __init__(self, log_dir: Optional[Union[str, "os.PathLike[str]"]] = None, *,
                 every_n_steps: int = 10, writer: Any = None) -> None:
        if (log_dir is None) == (writer is None):
            raise ValueError("TensorBoardLogger needs exactly one of log_dir or writer; got "
                             f"log_dir={log_dir!r}, writer={type(writer).__name__}")
        self.log_dir = os.fspath(log_dir) if log_dir is not None else None
        self.every_n_steps = positive_int("every_n_steps", every_n_steps)
        self.writer = writer
        if writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ImportError("TensorBoardLogger needs TensorBoard: pip install tensorboard "
                                  "(or aggressive-vi[tensorboard])") from exc

    def _open(self, step: int) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(self.log_dir, purge_step=step if step > 0 else None)
        return self.writer

    def on_fit_start(self, trainer: Trainer) -> None:
        if is_main_process():
            self._open(trainer.step).add_scalar("train/aggressive", float(trainer.is_aggressive),
                                                trainer.step)

    def on_step_end(self, trainer: Trainer, info: "StepInfo") -> None:
        if not is_main_process() or info.step % self.every_n_steps:
            return
        w = self._open(info.step)
        w.add_scalar("train/loss", float(info.loss), info.step)
        w.add_scalar("train/kl", float(info.kl), info.step)
        w.add_scalar("train/kl_weight", info.kl_weight, info.step)
        w.add_scalar("train/inner_steps", info.inner_steps, info.step)
        w.add_scalar("train/aggressive", float(info.aggressive), info.step)

    def on_phase_change(self, trainer: Trainer, step: int) -> None:
        if is_main_process():
            w = self._open(step)
            w.add_scalar("train/aggressive", 0.0, step)
            w.add_text("phase", f"left the aggressive phase after {step} decoder updates", step)

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        if not is_main_process():
            return
        w = self._open(trainer.step)
        for name, value in record.to_dict().items():
            if isinstance(value, bool):
                value = float(value)
            if isinstance(value, (int, float)) and math.isfinite(value):
                w.add_scalar(f"epoch/{name}", value, trainer.step)
        w.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None and is_main_process():
            self.writer.flush()

    def __repr__(self) -> str:
        return f"TensorBoardLogger({self.log_dir!r}, every_n_steps={self.every_n_steps})"
