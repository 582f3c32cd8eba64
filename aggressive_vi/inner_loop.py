"""The encoder's catch-up loop and its window test (He et al., ICLR 2019, Algorithm 1, lines 4-9).

:func:`catch_up_encoder` is the one implementation, used by :class:`~aggressive_vi.AggressiveTrainer`
and by the Lightning callback (:mod:`aggressive_vi.lightning`); each passes its own encoder step
(how the gradient is computed and the optimiser stepped differs between them, the loop does not).

The test: every ``window`` steps, the mean loss per example over the window is compared with the
previous window's (+inf at first, so at least two windows run); the loop ends when it went up, or
after ``max_steps`` steps. A tie continues, as in the paper's code (``pre_loss - cur_loss < 0``
breaks). Under ``torch.distributed`` the window's sums are all-reduced first, so every rank leaves on
the same step.

**Host syncs.** A step may report whether it was applied as a host ``bool`` or as a 0-d bool tensor
on the device (the trainer's gated steps do, see :mod:`aggressive_vi._impl.gate`). Either way the
window's loss, example count, skipped steps and first error are summed on the device, and one
``tolist`` at each window boundary (plus one when the cap ends a partial window) is the loop's only
host sync.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import torch

from .catch_up import CatchUpRule, Evaluate
from .distributed import all_reduce_sum

__all__ = ["EncoderStep", "EncoderUpdate", "CatchUpResult", "catch_up_encoder"]

Flag = Union[bool, torch.Tensor]


class EncoderUpdate(NamedTuple):
    """What one encoder step reports.

    Attributes:
        loss: the batch's summed loss, a float64 0-d tensor on the device (nats); may be non-finite
            when the step was not applied.
        examples: the batch's number of examples.
        applied: whether the update was applied: a host ``bool`` or a 0-d bool tensor (not read).
        error: whether a step that was not applied is an error (a non-finite loss or gradient)
            rather than a routine skip (a grad scaler's overflow); same types as ``applied``.
    """

    loss: torch.Tensor
    examples: int
    applied: Flag = True
    error: Flag = False


#: ``step(x)`` runs one encoder-only update on ``x`` and returns an :class:`EncoderUpdate`, a
#: ``(summed loss, examples)`` pair (applied), or ``None`` (skipped for a non-finite value).
EncoderStep = Callable[[Any], Union[None, Tuple[torch.Tensor, int], EncoderUpdate]]


class CatchUpResult(NamedTuple):
    """``steps`` taken; ``skipped`` (not applied); ``first_error``: the 1-based step of the first
    error (see :attr:`EncoderUpdate.error`), 0 when there was none."""

    steps: int
    skipped: int
    first_error: int = 0


class _WindowSums:
    """The window's sums and the loop's counters, on the device (host-known parts on the host)."""

    def __init__(self, device: Optional[torch.device]) -> None:
        zeros = lambda dtype: torch.zeros((), dtype=dtype, device=device)  # noqa: E731
        self.loss, self.count = zeros(torch.float64), zeros(torch.float64)
        self.skipped, self.clean, self.erred = zeros(torch.int64), zeros(torch.int64), zeros(torch.bool)
        self.host_count = self.host_skipped = 0

    def add(self, update: EncoderUpdate) -> None:
        if isinstance(update.applied, torch.Tensor):
            applied = update.applied
            self.loss += torch.where(applied, update.loss, torch.zeros_like(update.loss))
            self.count += applied.double() * update.examples
            self.skipped += (~applied).long()
        elif update.applied:
            self.loss += update.loss
            self.host_count += update.examples
        else:
            self.host_skipped += 1
        self.erred |= update.error  # a host bool or a device flag alike
        self.clean += (~self.erred).long()  # steps before the first error

    def read(self) -> Tuple[float, float, int, int]:
        """``(loss, count, skipped, first_error)``: the one host sync (loss and count all-reduced)."""
        sums = all_reduce_sum(torch.stack([self.loss, self.count + self.host_count]))
        counters = torch.stack([self.skipped, self.clean, self.erred.long()]).to(sums.dtype)
        loss, count, skipped, clean, erred = torch.cat([sums, counters]).tolist()
        return loss, count, int(skipped) + self.host_skipped, int(clean) + 1 if erred else 0

    def next_window(self) -> None:
        self.loss.zero_()
        self.count.zero_()
        self.host_count = 0


def _as_update(result: Union[None, Tuple[torch.Tensor, int], EncoderUpdate]) -> EncoderUpdate:
    if isinstance(result, EncoderUpdate):
        return result
    if result is None:  # skipped on the host: the loss is not needed
        return EncoderUpdate(torch.zeros((), dtype=torch.float64), 0, False, True)
    return EncoderUpdate(result[0], result[1])


def catch_up_encoder(step: EncoderStep, x: Any, next_input: Callable[[], Any], *, window: int,
                     max_steps: int, device: Optional[torch.device],
                     on_step: Optional[Callable[[int], None]] = None,
                     stop_on_error: bool = False, rule: Optional[CatchUpRule] = None,
                     evaluate: Optional[Evaluate] = None) -> CatchUpResult:
    """Encoder-only steps until the inference network stops improving.

    Args:
        step: one encoder update (see :data:`EncoderStep`).
        x: the minibatch of the decoder update to come; the first step uses it.
        next_input: a fresh minibatch's model input, for every later step.
        window: steps per window of the test (paper: 15 text, 10 images).
        max_steps: cap on the steps (paper: 100).
        device: where the window's sums are kept.
        on_step: called with the 1-based step number before each step (for error messages).
        stop_on_error: end the loop at the first window boundary that sees an error step (the
            caller raises; its gated steps applied nothing from the error on).
        rule: another stopping rule (:mod:`aggressive_vi.catch_up`); ``None``: the window test above.
            A rule decides on the host after every step, so it reads each step's flag there.
        evaluate: a loss without update, for rules that need one (``ProbeTest``).

    Returns:
        A :class:`CatchUpResult`.
    """
    if rule is not None:
        return _run_rule(step, x, next_input, rule=rule, max_steps=max_steps, device=device,
                         evaluate=evaluate, on_step=on_step, stop_on_error=stop_on_error)
    sums = _WindowSums(device)
    previous = math.inf
    steps = 0
    while True:
        if on_step is not None:
            on_step(steps + 1)
        sums.add(_as_update(step(x)))
        steps += 1
        boundary = steps % window == 0
        if boundary or steps >= max_steps:  # the only host sync of the loop
            loss_total, count, skipped, first_error = sums.read()
            if stop_on_error and first_error:
                return CatchUpResult(steps, skipped, first_error)
            if boundary:
                current = loss_total / count if count > 0 else math.inf
                if current > previous:
                    return CatchUpResult(steps, skipped, first_error)
                previous = current
                sums.next_window()
            if steps >= max_steps:
                return CatchUpResult(steps, skipped, first_error)
        x = next_input()


def _run_rule(step: EncoderStep, x: Any, next_input: Callable[[], Any], *, rule: CatchUpRule,
              max_steps: int, device: Optional[torch.device], evaluate: Optional[Evaluate],
              on_step: Optional[Callable[[int], None]], stop_on_error: bool) -> CatchUpResult:
    """The catch-up loop under ``rule``: encoder steps, the first on ``x``, until the rule says stop
    or ``max_steps`` are taken. Each step's flags are read on the host (the rule sees
    ``(summed loss, examples)`` of an applied step, ``None`` for a skipped one)."""
    rule.begin(x, evaluate=evaluate, device=device)
    steps = skipped = first_error = 0
    while True:
        if on_step is not None:
            on_step(steps + 1)
        update = _as_update(step(x))
        steps += 1
        applied = bool(update.applied)
        if not applied:
            skipped += 1
            if bool(update.error) and not first_error:
                first_error = steps
                if stop_on_error:
                    break
        if not rule.after_step(steps, (update.loss, update.examples) if applied else None) or steps >= max_steps:
            break
        x = next_input()
    return CatchUpResult(steps, skipped, first_error)
