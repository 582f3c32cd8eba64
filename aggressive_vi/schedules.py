"""KL weight schedules: pure functions of (decoder update, updates per epoch) -> weight.

Any callable ``schedule(step, steps_per_epoch) -> float`` can replace these (see
:class:`aggressive_vi.protocols.KLSchedule`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ._impl.checks import in_range, non_negative_float, non_negative_int, positive_int

__all__ = ["ConstantKL", "LinearKLAnnealing", "CyclicalKLAnnealing"]


def _check_weight(name: str, value: float) -> None:
    in_range(name, value, 0.0, 1.0)


def _check_steps(step: int, steps_per_epoch: int) -> None:
    positive_int("steps_per_epoch", steps_per_epoch)
    non_negative_int("step", step)


@dataclass(frozen=True)
class ConstantKL:
    """The same KL weight at every step (1.0: the plain ELBO; < 1: a beta-VAE)."""

    weight: float = 1.0

    def __post_init__(self) -> None:
        non_negative_float("weight", self.weight)

    def __call__(self, step: int, steps_per_epoch: int) -> float:
        return float(self.weight)


@dataclass(frozen=True)
class LinearKLAnnealing:
    """The paper's annealing: from ``start`` up to 1 linearly over ``warmup_epochs`` epochs.

    Updated every decoder step, as in the paper's code: at decoder update ``step`` (from 0) the
    weight is ``min(1, start + (step + 1) * (1 - start) / (warmup_epochs * steps_per_epoch))``.
    ``warmup_epochs=0`` gives weight 1 from the first step.
    """

    start: float = 0.1
    warmup_epochs: float = 10.0

    def __post_init__(self) -> None:
        _check_weight("start", self.start)
        non_negative_float("warmup_epochs", self.warmup_epochs)

    def __call__(self, step: int, steps_per_epoch: int) -> float:
        _check_steps(step, steps_per_epoch)
        if self.warmup_epochs == 0:
            return 1.0
        rate = (1.0 - self.start) / (self.warmup_epochs * steps_per_epoch)
        return min(1.0, self.start + (step + 1) * rate)


@dataclass(frozen=True)
class CyclicalKLAnnealing:
    """Cyclical annealing (Fu et al., 2019): repeated linear ramps from ``start`` to 1.

    Each cycle lasts ``cycle_epochs`` epochs; the weight rises linearly over the first ``ratio`` of
    the cycle and stays at 1 for the rest.
    """

    cycle_epochs: float = 10.0
    ratio: float = 0.5
    start: float = 0.0

    def __post_init__(self) -> None:
        in_range("cycle_epochs", self.cycle_epochs, 0.0, float("inf"), low_open=True)
        in_range("ratio", self.ratio, 0.0, 1.0, low_open=True)
        _check_weight("start", self.start)

    def __call__(self, step: int, steps_per_epoch: int) -> float:
        _check_steps(step, steps_per_epoch)
        period = self.cycle_epochs * steps_per_epoch
        position = (step % period) / period
        return min(1.0, self.start + (1.0 - self.start) * position / self.ratio)
