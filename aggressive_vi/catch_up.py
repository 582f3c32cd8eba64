"""When the encoder's catch-up loop ends: rule objects for :func:`~aggressive_vi.inner_loop.catch_up_encoder`.

The paper's test (He et al., ICLR 2019, Algorithm 1; :class:`PaperWindowTest`) compares the mean
loss of a window of encoder steps, each on another minibatch, with the previous window's, the first
with +inf: every decoder update costs at least two windows (30 steps with the paper's window 15).
Other rules here trade that for a cheaper decision:

* :class:`PaperWindowTest` (``start="inf"``): the paper's test, as a rule object. With
  ``start="first_loss"`` the first window is compared with the loss of the first step (the
  minibatch of the decoder update, before any encoder update), so the loop can end after one window.
* :class:`ProbeTest`: a paired comparison on one probe minibatch (the decoder update's own): its
  loss with the same random numbers (z noise, dropout masks) before the loop and after every
  ``window`` steps; the loop ends when it did not fall by more than ``tolerance`` nats per example.
  Each comparison costs one forward pass without gradient (built by the trainer, see
  :func:`probe_evaluator`); it is not troubled by the batch-to-batch spread of the window means.
* :class:`FixedCount`: a fixed number of steps, no test (the reference for the steps-quality curve).

``AggressiveTrainer(..., catch_up=None)`` (the default) runs the paper's test in
:func:`~aggressive_vi.inner_loop.catch_up_encoder` itself, unchanged; ``catch_up="paper"`` gives the
same decisions through :class:`PaperWindowTest`; ``catch_up="first_loss"`` a
``PaperWindowTest(window, start="first_loss")``; ``catch_up="probe"`` a :class:`ProbeTest` with the
trainer's window; or pass a rule object (any :class:`CatchUpRule`). Measured steps against quality:
docs/performance.md ("A cheaper catch-up test").

A rule is asked once per loop (:meth:`CatchUpRule.begin`) and after every step
(:meth:`CatchUpRule.after_step`); the loop's cap (``max_inner_steps``) binds whatever the rule says.
Under ``torch.distributed`` every decision all-reduces what it compares, so all ranks leave on the
same step.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Protocol, Tuple, runtime_checkable

import torch

from ._impl.checks import describe, non_negative_float, one_of, positive_int
from .distributed import all_reduce_sum

__all__ = ["CatchUpRule", "PaperWindowTest", "ProbeTest", "FixedCount", "Evaluate", "RULES", "catch_up_rule",
           "probe_evaluator"]

#: ``evaluate(x) -> (summed loss, examples)``: the training loss of ``x`` without gradient and
#: without changing any parameter (a float64 0-d tensor on the device, nats). Within one catch-up
#: loop every call uses the same random numbers (see :func:`probe_evaluator`).
Evaluate = Callable[[Any], Tuple[torch.Tensor, int]]
#: What one encoder step reports: ``(summed loss, examples)`` or ``None`` for a skipped step.
Applied = Optional[Tuple[torch.Tensor, int]]

#: Names accepted by ``AggressiveTrainer(catch_up=...)`` besides ``None`` and rule objects.
RULES = ("paper", "first_loss", "probe")


@runtime_checkable
class CatchUpRule(Protocol):
    """Decides when the encoder's catch-up loop ends."""

    def begin(self, x: Any, *, evaluate: Optional[Evaluate], device: Optional[torch.device]) -> None:
        """A loop starts; ``x`` is the decoder update's minibatch (model input), which the first
        step uses. ``evaluate`` computes a loss without updating (``None`` where the caller has none)."""

    def after_step(self, step: int, applied: Applied) -> bool:
        """After the ``step``-th (1-based) encoder step; ``True``: take another step."""


def _mean_over_ranks(loss_sum: Optional[torch.Tensor], count: int, device: Optional[torch.device]) -> float:
    """Per-example mean of a summed loss over all ranks (+inf when no example); one host sync."""
    total = loss_sum if loss_sum is not None else torch.zeros((), dtype=torch.float64, device=device)
    sums = torch.stack([total, total.new_tensor(float(count))])
    loss_total, n = all_reduce_sum(sums).tolist()
    return loss_total / n if n > 0 else math.inf


class PaperWindowTest:
    """The paper's window test: every ``window`` steps, the window's mean loss per example (its
    applied steps, each on its own minibatch) against the previous window's; the loop ends when it
    went up (a tie continues, as in the paper's code).

    Args:
        window: steps per window (paper: 15 text, 10 images).
        start: what the first window is compared with: ``"inf"`` (the paper's; at least two windows
            run) or ``"first_loss"`` (the first step's loss per example, i.e. the decoder update's
            minibatch before any encoder update; the loop can end after one window).
    """

    def __init__(self, window: int = 15, *, start: str = "inf") -> None:
        self.window = positive_int("window", window)
        self.start = one_of("start", start, ("inf", "first_loss"))
        self._reset(None)

    def _reset(self, device: Optional[torch.device]) -> None:
        self._device = device
        self._sum: Optional[torch.Tensor] = None
        self._count = 0
        self._previous = math.inf
        self._first_pending = self.start == "first_loss"
        self._first: Optional[Tuple[torch.Tensor, int]] = None

    def begin(self, x: Any, *, evaluate: Optional[Evaluate] = None, device: Optional[torch.device] = None) -> None:
        self._reset(device)

    def after_step(self, step: int, applied: Applied) -> bool:
        if applied is not None:
            loss, count = applied
            if self._first_pending:  # the loss of the batch before its update (it was computed first)
                self._first = loss.detach().clone(), count
                self._first_pending = False
            self._sum = loss.detach().clone() if self._sum is None else self._sum + loss
            self._count += count
        if step % self.window:
            return True
        if self.start == "first_loss" and step == self.window:
            first, count = self._first if self._first is not None else (None, 0)
            self._previous = _mean_over_ranks(first, count, self._device)
        current = _mean_over_ranks(self._sum, self._count, self._device)
        if current > self._previous:
            return False
        self._previous = current
        self._sum, self._count = None, 0
        return True

    def __repr__(self) -> str:
        return f"PaperWindowTest(window={self.window}, start={self.start!r})"


class ProbeTest:
    """A paired test on one probe minibatch: its loss per example (same random numbers every time,
    no update) before the loop and after every ``window`` steps; the loop ends when it did not fall
    by more than ``tolerance`` nats since the last comparison.

    The probe is the decoder update's minibatch ``x`` (the one the decoder's gradient will be taken
    on). Costs one forward pass without gradient per comparison, besides the steps.

    Args:
        window: steps between comparisons.
        tolerance: the least fall per example (nats) that counts as an improvement (``0``: any fall).

    Attributes:
        evaluations: probe forward passes so far (over all loops; for cost accounting).
    """

    def __init__(self, window: int = 5, *, tolerance: float = 0.0) -> None:
        self.window = positive_int("window", window)
        self.tolerance = non_negative_float("tolerance", tolerance)
        self.evaluations = 0
        self._evaluate: Optional[Evaluate] = None

    def _probe(self) -> float:
        assert self._evaluate is not None
        self.evaluations += 1
        loss, count = self._evaluate(self._x)
        return _mean_over_ranks(loss, count, self._device)

    def begin(self, x: Any, *, evaluate: Optional[Evaluate] = None, device: Optional[torch.device] = None) -> None:
        if evaluate is None:
            raise ValueError("ProbeTest needs evaluate (a loss without update, evaluate(x) -> (summed loss, "
                             "examples)); got None: run it through AggressiveTrainer(catch_up=...)")
        self._evaluate, self._x, self._device = evaluate, x, device
        self._previous = self._probe()

    def after_step(self, step: int, applied: Applied) -> bool:
        if step % self.window:
            return True
        current = self._probe()
        if not current < self._previous - self.tolerance:
            return False
        self._previous = current
        return True

    def __repr__(self) -> str:
        return f"ProbeTest(window={self.window}, tolerance={self.tolerance:g})"


class FixedCount:
    """A fixed number of encoder steps per decoder update (no test; a reference point for the curve of
    steps against quality). The loop's cap still binds.

    Args:
        steps: encoder steps per decoder update.
    """

    def __init__(self, steps: int) -> None:
        self.steps = positive_int("steps", steps)

    def begin(self, x: Any, *, evaluate: Optional[Evaluate] = None, device: Optional[torch.device] = None) -> None:
        pass

    def after_step(self, step: int, applied: Applied) -> bool:
        return step < self.steps

    def __repr__(self) -> str:
        return f"FixedCount(steps={self.steps})"


def catch_up_rule(name: str, value: Any, window: int) -> Optional[CatchUpRule]:
    """``AggressiveTrainer(catch_up=...)``: ``None`` (the paper's test inside the loop itself), a
    name of :data:`RULES` (built with the trainer's ``window``) or a rule object."""
    if value is None:
        return None
    if isinstance(value, str):
        one_of(name, value, RULES)
        if value == "probe":
            return ProbeTest(window)
        return PaperWindowTest(window, start="inf" if value == "paper" else "first_loss")
    if not (callable(getattr(value, "begin", None)) and callable(getattr(value, "after_step", None))):
        raise TypeError(f"{name} must be None, one of {RULES} or a rule with begin(x, *, evaluate, device) "
                        f"and after_step(step, applied) -> bool; got {describe(value)}")
    return value


def probe_evaluator(loss_fn: Callable[[Any], torch.Tensor], device: Optional[torch.device]) -> Evaluate:
    """An :data:`Evaluate` for one catch-up loop from ``loss_fn(x) -> [batch]`` per-example losses
    (nats): run without gradient, every call with the same random numbers (a seed drawn from torch's
    global generator at the first call, so a rule that never evaluates leaves the random stream
    alone), the caller's random state restored afterwards."""
    seed: Optional[int] = None
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device is not None and device.type == "cuda" else []

    def evaluate(x: Any) -> Tuple[torch.Tensor, int]:
        nonlocal seed
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, (1,)).item())
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            loss = loss_fn(x)
        return loss.detach().sum().double(), int(loss.shape[0])

    return evaluate
