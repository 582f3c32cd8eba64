"""What the trainer does when something goes wrong: non-finite numbers, bad batches, Ctrl-C.

* :func:`clip_and_check`: clips the gradient norm and tells whether loss and gradients are finite,
  with one host sync per optimiser step (the loss sum and the gradient norm are added into a single
  scalar: any NaN or inf in either makes it non-finite) and, under ``torch.distributed``, one scalar
  all-reduce, so every rank takes the same decision.
* :class:`NonFiniteError`: raised (by default) before the optimiser step that would have applied a
  non-finite gradient, so the model stays at its last finite state.
* :func:`batch_context`: adds "epoch e, batch b" (and the batch's type, dtype and shape when they
  changed since the first batch) to any error a user's module raises on a batch, keeping its type.
* :class:`DeferredInterrupt`: the first Ctrl-C (or SIGTERM) lets the current decoder update finish so
  that the trainer can write an exact checkpoint at a step boundary; a second one interrupts at once.
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch

from ._impl.gate import finite_flag
from .distributed import is_main_process

__all__ = ["NonFiniteError", "clip_and_check", "describe_input", "batch_context", "DeferredInterrupt"]

PHASES = ("inner", "decoder", "joint")
ON_NONFINITE = ("raise", "skip")


class NonFiniteError(FloatingPointError):
    """A loss or gradient was NaN or infinite; the step was not applied.

    Attributes:
        epoch: 0-based epoch.
        step: the decoder update being computed (1-based: ``trainer.step + 1``).
        batch_index: index of the epoch's minibatch.
        phase: ``"inner"`` (encoder-only catch-up step), ``"decoder"`` or ``"joint"``.
        inner_step: 1-based inner step when ``phase == "inner"``, else ``None``.
        checkpoint: path of the last checkpoint written by a
            :class:`~aggressive_vi.Checkpoint` callback, ``None`` when there is none.
    """

    def __init__(self, message: str, *, epoch: int, step: int, batch_index: int, phase: str,
                 inner_step: Optional[int], checkpoint: Optional[str]) -> None:
        super().__init__(message)
        self.epoch, self.step, self.batch_index = epoch, step, batch_index
        self.phase, self.inner_step, self.checkpoint = phase, inner_step, checkpoint


def clip_and_check(loss: torch.Tensor, params: Sequence[torch.Tensor],
                   max_norm: Optional[float]) -> bool:
    """Clip the gradients of ``params`` to ``max_norm`` (``None``: no clipping) and return whether
    ``loss`` and every gradient are finite, on every rank (one host sync; one all-reduce under DDP).

    Args:
        loss: the scalar (or per-example) loss that was back-propagated.
    """
    return bool(finite_flag(loss, params, max_norm))  # the one host sync


def describe_input(x: Any) -> str:
    """A short host-side description of a model input (no device sync): type, dtype, shape."""
    if isinstance(x, torch.Tensor):
        return f"Tensor({str(x.dtype).replace('torch.', '')}, shape {list(x.shape)})"
    if isinstance(x, (tuple, list)):
        return f"{type(x).__name__}[{', '.join(describe_input(v) for v in x[:4])}]"
    if isinstance(x, dict):
        return "dict{" + ", ".join(f"{k!r}: {describe_input(v)}" for k, v in list(x.items())[:4]) + "}"
    return type(x).__name__


def nonfinite_inputs(x: Any) -> List[str]:
    """Descriptions of the floating-point tensors in ``x`` that hold NaN or inf (syncs: error path)."""
    found: List[str] = []
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() or x.is_complex():
            nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
            if nan or inf:
                found.append(f"{describe_input(x)} with {nan} NaN and {inf} inf values")
    elif isinstance(x, (tuple, list)):
        for v in x:
            found += nonfinite_inputs(v)
    elif isinstance(x, dict):
        for v in x.values():
            found += nonfinite_inputs(v)
    return found


def nonfinite_message(*, epoch: int, step: int, batch_index: int, phase: str,
                      inner_step: Optional[int], loss: torch.Tensor, x: Any,
                      checkpoint: Optional[str]) -> str:
    """The text of a :class:`NonFiniteError` (computes what it reports: call on the error path)."""
    where = {"inner": f"inner (encoder-only) step {inner_step}", "decoder": "the decoder step",
             "joint": "the joint step"}[phase]
    loss_value = float(loss.detach().double().sum())
    lines = [
        f"non-finite {'loss' if not math.isfinite(loss_value) else 'gradient'} in {where} of "
        f"decoder update {step} (epoch {epoch}, batch {batch_index}); loss = {loss_value}. "
        "The update was not applied: the model holds its last finite parameters."
    ]
    bad = nonfinite_inputs(x)
    if bad:
        lines.append("The input batch itself is not finite: " + "; ".join(bad) + ".")
    lines.append(f"Last good checkpoint: {checkpoint}." if checkpoint else
                 "No checkpoint was written (add aggressive_vi.Checkpoint to callbacks to have one).")
    lines.append('Pass on_nonfinite="skip" to AggressiveTrainer to skip such batches and count them '
                 "(EpochRecord.skipped_batches / skipped_inner_steps).")
    return " ".join(lines)


@contextlib.contextmanager
def batch_context(where: Callable[[], str], x: Any, first: Optional[str]) -> Iterator[None]:
    """Prefix errors raised inside with ``where()`` (e.g. "epoch 2, batch 7", computed only on
    error) and the input's description, keeping the exception's type; note when the input's
    type/dtype/shape differs from the first batch's (``first``). The context is also left on the
    exception as ``exc.aggressive_vi_context`` (a string) for programs that handle it."""
    try:
        yield
    except Exception as exc:  # any type: a KeyError or a user's own exception needs the context too
        if isinstance(exc, (NonFiniteError, StopIteration)) or getattr(exc, "aggressive_vi_context", None):
            raise
        described = describe_input(x)
        context = f"{where()}, input {described}"
        if first is not None and first != described:
            context += f" (the first batch was {first})"
        _add_context(exc, context)
        raise


def _add_context(exc: BaseException, context: str) -> None:
    """Put ``context`` in front of the exception's message, keeping its type (also for types whose
    ``str`` ignores ``args``: then as a note, where Python has notes)."""
    before = str(exc)
    try:
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (f"{context}: {exc.args[0]}",) + exc.args[1:]
        else:
            exc.args = (context,) + exc.args
    except Exception:  # pragma: no cover - an exception type with read-only args
        pass
    if context not in str(exc) or str(exc) == before:
        add_note = getattr(exc, "add_note", None)
        if callable(add_note):
            add_note(context)
    try:
        exc.aggressive_vi_context = context  # type: ignore[attr-defined]  # also marks it as done
    except Exception:  # pragma: no cover - __slots__ exceptions
        pass


class DeferredInterrupt:
    """A context in which the first SIGINT (Ctrl-C) or SIGTERM only sets :attr:`requested`.

    The trainer looks at the flag after every decoder update, writes a checkpoint and raises
    ``KeyboardInterrupt`` there. A second signal raises ``KeyboardInterrupt`` at once. SIGTERM is
    what ``torchrun``, SLURM and Kubernetes send before killing a job (``torchrun`` waits 30 s): it gets
    the same treatment. Installed only in the main thread and only over the default handlers (a
    handler of the user's is left alone).
    """

    _DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "DeferredInterrupt":
        self.requested = False
        self.signal_name = None
        if threading.current_thread() is threading.main_thread():
            for signum, default in self._DEFAULTS.items():
                if signal.getsignal(signum) is default:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if is_main_process():
            print(f"\n{self.signal_name}: finishing the current update to checkpoint there; send it "
                  "again to stop at once", file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
