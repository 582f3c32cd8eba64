"""The encoder's catch-up loop and when it ends (He et al., ICLR 2019, Algorithm 1, lines 4-9).

:func:`catch_up_encoder` runs encoder-only steps, the first on the decoder update's minibatch and
each later one on a fresh minibatch, until a :class:`CatchUpRule` says the inference network has
caught up, or the cap is reached. The rules:

* :class:`PaperWindowTest` (the default): every ``window`` steps, the mean loss per example of the
  window's applied steps is compared with the previous window's (+inf at first, so at least two
  windows run); the loop ends when it went up. A tie continues, as in the paper's code
  (``pre_loss - cur_loss < 0`` breaks). With ``start="first_loss"`` the first window is compared
  with the loss of the first step instead (the loop can end after one window).
* :class:`ProbeTest`: a paired comparison on one probe minibatch (the decoder update's own): its
  loss with the same random numbers before the loop and after every ``window`` steps; the loop ends
  when it did not fall by more than ``tolerance`` nats per example.
* :class:`FixedCount`: a fixed number of steps, no test.

Measured steps against quality: docs/performance.md ("A cheaper catch-up test").

**Host syncs.** A rule accumulates what it compares on the device (:meth:`CatchUpRule.observe`)
and says on the host, from the step number alone, when it decides (:meth:`CatchUpRule.due`); the
loop then reads the rule's sums together with its own counters (skipped steps, the first error) in
one ``tolist``. With the window test that is one host sync per window, plus one when the cap ends
a partial window. Under ``torch.distributed`` the rule's sums are all-reduced first, so every rank
leaves on the same step.
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, NamedTuple, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import torch

from ._impl.checks import describe, non_negative_float, one_of, positive_int
from .distributed import all_reduce_sum

__all__ = ["CatchUpRule", "PaperWindowTest", "ProbeTest", "FixedCount", "EncoderUpdate", "CatchUpResult",
           "Evaluate", "RULES", "catch_up_encoder", "catch_up_rule", "probe_evaluator"]

Flag = Union[bool, torch.Tensor]

#: ``evaluate(x) -> (summed loss, examples)``: the training loss of ``x`` without gradient and
#: without changing any parameter (a float64 0-d tensor on the device, nats). Within one catch-up
#: loop every call uses the same random numbers (see :func:`probe_evaluator`).
Evaluate = Callable[[Any], Tuple[torch.Tensor, int]]

#: Names accepted by ``catch_up=`` besides ``None`` (the paper's test) and rule objects.
RULES = ("paper", "first_loss", "probe")


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


class CatchUpResult(NamedTuple):
    """``steps`` taken; ``skipped`` (not applied); ``first_error``: the 1-based step of the first
    error (see :attr:`EncoderUpdate.error`), 0 when there was none."""

    steps: int
    skipped: int
    first_error: int = 0


@runtime_checkable
class CatchUpRule(Protocol):
    """Decides when the encoder's catch-up loop ends, reading the host only when it decides."""

    def begin(self, x: Any, *, evaluate: Optional[Evaluate], device: Optional[torch.device]) -> None:
        """A loop starts; ``x`` is the decoder update's minibatch (model input), which the first
        step uses. ``evaluate`` computes a loss without updating (``None`` where the caller has none)."""

    def observe(self, step: int, update: EncoderUpdate) -> None:
        """After the ``step``-th (1-based) encoder step: accumulate on the device, read nothing."""

    def due(self, step: int) -> bool:
        """Whether the rule decides after the ``step``-th step (from the step number alone)."""

    def pending(self) -> torch.Tensor:
        """What the decision reads: a 1-d float64 tensor of sums over this rank's examples (the loop
        all-reduces it over ranks and reads it on the host with its own counters)."""

    def decide(self, values: Sequence[float]) -> bool:
        """``values``: :meth:`pending` summed over ranks, on the host. ``True``: take another step."""


def _as_float64(value: Flag, device: Optional[torch.device]) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.double()
    return torch.tensor(float(value), dtype=torch.float64, device=device)


def _applied_part(update: EncoderUpdate) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(summed loss if applied else 0, examples if applied else 0)``, on the loss's device."""
    loss = update.loss
    if isinstance(update.applied, torch.Tensor):
        applied = update.applied
        return torch.where(applied, loss, torch.zeros_like(loss)), applied.double() * update.examples
    if update.applied:
        return loss, loss.new_tensor(float(update.examples))
    return torch.zeros_like(loss), loss.new_zeros(())


def _mean(loss_total: float, count: float) -> float:
    return loss_total / count if count > 0 else math.inf


class PaperWindowTest:
    """The paper's window test: every ``window`` steps, the window's mean loss per example (over its
    applied steps, each on its own minibatch) against the previous window's; the loop ends when it
    went up (a tie continues, as in the paper's code).

    Args:
        window: steps per window (paper: 15 text, 10 images).
        start: what the first window is compared with: ``"inf"`` (the paper's; at least two windows
            run) or ``"first_loss"`` (the loss per example of the first applied step, i.e. the
            decoder update's minibatch before any encoder update; the loop can end after one window).
    """

    def __init__(self, window: int = 15, *, start: str = "inf") -> None:
        self.window = positive_int("window", window)
        self.start = one_of("start", start, ("inf", "first_loss"))
        self.begin(None)

    def begin(self, x: Any, *, evaluate: Optional[Evaluate] = None, device: Optional[torch.device] = None) -> None:
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self._loss, self._count = zero.clone(), zero.clone()  # the window's applied steps
        self._first: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._previous = math.inf

    def observe(self, step: int, update: EncoderUpdate) -> None:
        loss, count = _applied_part(update)
        if self.start == "first_loss" and step <= self.window:
            if self._first is None:
                self._first = (loss.clone(), count.clone())
            else:  # the first applied step's loss: keep it until one has been applied
                kept = self._first[1] > 0
                self._first = (torch.where(kept, self._first[0], loss), torch.where(kept, self._first[1], count))
        self._loss += loss
        self._count += count

    def due(self, step: int) -> bool:
        return step % self.window == 0

    def pending(self) -> torch.Tensor:
        parts = [self._loss, self._count]
        if self._first is not None and self._previous == math.inf:
            parts += list(self._first)
        return torch.stack(parts)

    def decide(self, values: Sequence[float]) -> bool:
        if len(values) == 4:  # the first window under start="first_loss"
            self._previous = _mean(values[2], values[3])
            self._first = None
        current = _mean(values[0], values[1])
        if current > self._previous:
            return False
        self._previous = current
        self._loss.zero_()
        self._count.zero_()
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

    def _probe(self) -> torch.Tensor:
        assert self._evaluate is not None
        self.evaluations += 1
        loss, count = self._evaluate(self._x)
        return torch.stack([loss.double(), loss.new_tensor(float(count), dtype=torch.float64)])

    def begin(self, x: Any, *, evaluate: Optional[Evaluate] = None, device: Optional[torch.device] = None) -> None:
        if evaluate is None:
            raise ValueError("ProbeTest needs evaluate (a loss without update, evaluate(x) -> (summed loss, "
                             "examples)); got None: run it through AggressiveStep (catch_up=...)")
        self._evaluate, self._x = evaluate, x
        start = all_reduce_sum(self._probe()).tolist()
        self._previous = _mean(start[0], start[1])

    def observe(self, step: int, update: EncoderUpdate) -> None:
        pass

    def due(self, step: int) -> bool:
        return step % self.window == 0

    def pending(self) -> torch.Tensor:
        return self._probe()

    def decide(self, values: Sequence[float]) -> bool:
        current = _mean(values[0], values[1])
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
        self._device = device

    def observe(self, step: int, update: EncoderUpdate) -> None:
        pass

    def due(self, step: int) -> bool:
        return step >= self.steps

    def pending(self) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.float64, device=self._device)

    def decide(self, values: Sequence[float]) -> bool:
        return False

    def __repr__(self) -> str:
        return f"FixedCount(steps={self.steps})"


class _Counters:
    """The loop's own counters on the device: skipped steps, steps before the first error, and
    whether an error was seen (host-known flags are added on the host)."""

    def __init__(self, device: Optional[torch.device]) -> None:
        zeros = lambda dtype: torch.zeros((), dtype=dtype, device=device)  # noqa: E731
        self.skipped, self.clean, self.erred = zeros(torch.int64), zeros(torch.int64), zeros(torch.bool)
        self.host_skipped = 0

    def add(self, update: EncoderUpdate) -> None:
        if isinstance(update.applied, torch.Tensor):
            self.skipped += (~update.applied).long()
        elif not update.applied:
            self.host_skipped += 1
        self.erred |= update.error  # a host bool or a device flag alike
        self.clean += (~self.erred).long()  # steps before the first error

    def stacked(self) -> torch.Tensor:
        return torch.stack([self.skipped, self.clean, self.erred.long()]).double()

    @staticmethod
    def unpack(values: Sequence[float], host_skipped: int) -> Tuple[int, int]:
        skipped, clean, erred = values
        return int(skipped) + host_skipped, int(clean) + 1 if erred else 0


def _as_update(result: Union[None, Tuple[torch.Tensor, int], EncoderUpdate]) -> EncoderUpdate:
    if isinstance(result, EncoderUpdate):
        return result
    if result is None:  # skipped on the host: the loss is not needed
        return EncoderUpdate(torch.zeros((), dtype=torch.float64), 0, False, True)
    return EncoderUpdate(result[0], result[1])


#: ``step(x)`` runs one encoder-only update on ``x`` and returns an :class:`EncoderUpdate`, a
#: ``(summed loss, examples)`` pair (applied), or ``None`` (skipped for a non-finite value).
EncoderStep = Callable[[Any], Union[None, Tuple[torch.Tensor, int], EncoderUpdate]]


def catch_up_encoder(step: EncoderStep, x: Any, next_input: Callable[[], Any], *, rule: CatchUpRule,
                     max_steps: int, device: Optional[torch.device],
                     on_step: Optional[Callable[[int], None]] = None, stop_on_error: bool = False,
                     evaluate: Optional[Evaluate] = None) -> CatchUpResult:
    """Encoder-only steps until ``rule`` says the inference network has caught up.

    Args:
        step: one encoder update (see :data:`EncoderStep`).
        x: the minibatch of the decoder update to come; the first step uses it.
        next_input: a fresh minibatch's model input, for every later step.
        rule: when to stop (:class:`PaperWindowTest` is the paper's).
        max_steps: cap on the steps (paper: 100); binds whatever the rule says.
        device: where the sums are kept.
        on_step: called with the 1-based step number before each step (for error messages).
        stop_on_error: end the loop at the first decision that sees an error step (the caller
            raises; its gated steps applied nothing from the error on).
        evaluate: a loss without update, for rules that need one (:class:`ProbeTest`).

    Returns:
        A :class:`CatchUpResult`.
    """
    rule.begin(x, evaluate=evaluate, device=device)
    counters = _Counters(device)
    steps = 0
    while True:
        if on_step is not None:
            on_step(steps + 1)
        update = _as_update(step(x))
        steps += 1
        rule.observe(steps, update)
        counters.add(update)
        due, capped = rule.due(steps), steps >= max_steps
        if due or capped:  # the loop's only host sync
            sums = all_reduce_sum(rule.pending()) if due else torch.zeros(0, dtype=torch.float64, device=device)
            values: List[float] = torch.cat([sums.to(counters.skipped.device), counters.stacked()]).tolist()
            n = len(values) - 3
            skipped, first_error = _Counters.unpack(values[n:], counters.host_skipped)
            if (stop_on_error and first_error) or capped or not rule.decide(values[:n]):
                return CatchUpResult(steps, skipped, first_error)
        x = next_input()


def catch_up_rule(name: str, value: Any, window: Optional[int]) -> CatchUpRule:
    """The rule for ``catch_up=value``: ``None`` or ``"paper"`` (the paper's window test),
    ``"first_loss"``, ``"probe"`` (built with ``window``, default 15) or a rule object (then
    ``window`` must be ``None``: the rule holds its own).

    Raises:
        TypeError: a value that is neither.
        ValueError: an unknown name, or a rule object together with ``window``.
    """
    if value is None or isinstance(value, str):
        size = 15 if window is None else positive_int("window", window)
        kind = one_of(name, value, RULES) if value is not None else "paper"
        if kind == "probe":
            return ProbeTest(size)
        return PaperWindowTest(size, start="inf" if kind == "paper" else "first_loss")
    if not all(callable(getattr(value, verb, None)) for verb in ("begin", "observe", "due", "pending", "decide")):
        raise TypeError(f"{name} must be None, one of {RULES} or a CatchUpRule (begin, observe, due, pending, "
                        f"decide; see aggressive_vi.catch_up); got {describe(value)}")
    if window is not None:
        raise ValueError(f"window={window} has no effect with {name}={value!r}: the rule holds its own window; "
                         f"pass window= to the rule instead, or leave window unset")
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
