"""The encoder's catch-up loop and its window test (He et al., ICLR 2019, Algorithm 1, lines 4-9).

:func:`catch_up_encoder` is the one implementation, used by :class:`~aggressive_vi.AggressiveTrainer`
and by the Lightning callback (:mod:`aggressive_vi.lightning`); each passes its own encoder step
(how the gradient is computed and the optimiser stepped differs between them, the loop does not).

The test: every ``window`` steps, the mean loss per example over the window is compared with the
previous window's (+inf at first, so at least two windows run); the loop ends when it went up, or
after ``max_steps`` steps. A tie continues, as in the paper's code (``pre_loss - cur_loss < 0``
breaks). Under ``torch.distributed`` the window's sums are all-reduced first, so every rank leaves on
the same step; that all-reduce and its ``tolist`` are the loop's only host sync.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Tuple

import torch

from .catch_up import CatchUpRule, Evaluate, run_rule
from .distributed import all_reduce_sum

__all__ = ["EncoderStep", "catch_up_encoder"]

#: ``step(x) -> (summed loss, examples)`` of one encoder-only update on ``x`` (the loss a float64 0-d
#: tensor on the device, nats, not synced), or ``None`` when the update was skipped (non-finite).
EncoderStep = Callable[[Any], Optional[Tuple[torch.Tensor, int]]]


def catch_up_encoder(step: EncoderStep, x: Any, next_input: Callable[[], Any], *, window: int,
                     max_steps: int, device: Optional[torch.device],
                     on_step: Optional[Callable[[int], None]] = None,
                     rule: Optional[CatchUpRule] = None, evaluate: Optional[Evaluate] = None) -> Tuple[int, int]:
    """Encoder-only steps until the inference network stops improving.

    Args:
        step: one encoder update (see :data:`EncoderStep`).
        x: the minibatch of the decoder update to come; the first step uses it.
        next_input: a fresh minibatch's model input, for every later step.
        window: steps per window of the test (paper: 15 text, 10 images).
        max_steps: cap on the steps (paper: 100).
        device: where the window's loss is summed.
        on_step: called with the 1-based step number before each step (for error messages).
        rule: another stopping rule (:mod:`aggressive_vi.catch_up`); ``None``: the window test above.
        evaluate: a loss without update, for rules that need one (``ProbeTest``).

    Returns:
        ``(steps taken, steps skipped for a non-finite loss or gradient)``.
    """
    if rule is not None:
        return run_rule(step, x, next_input, rule=rule, max_steps=max_steps, device=device,
                        evaluate=evaluate, on_step=on_step)
    window_loss = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device
    window_count = 0  # examples in the window's applied steps (known on the host)
    previous = math.inf
    steps = skipped = 0
    while True:
        if on_step is not None:
            on_step(steps + 1)
        applied = step(x)
        if applied is None:
            skipped += 1
        else:
            window_loss += applied[0]
            window_count += applied[1]
        steps += 1
        if steps % window == 0:  # the only host sync of the loop
            sums = torch.stack([window_loss, window_loss.new_tensor(float(window_count))])
            loss_total, count = all_reduce_sum(sums).tolist()
            current = loss_total / count if count > 0 else math.inf
            if current > previous:
                break
            previous = current
            window_loss.zero_()
            window_count = 0
        if steps >= max_steps:
            break
        x = next_input()
    return steps, skipped
