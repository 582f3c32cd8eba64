"""Criteria that end the aggressive phase (see :class:`aggressive_vi.protocols.StoppingCriterion`).

A criterion is asked before every decoder update and at every epoch end while the trainer is still
aggressive; the first ``True`` switches the trainer to basic VAE training for the rest of the run.
A user-written criterion needs one method::

    class StopWhenKLAbove:
        def should_stop(self, event):
            return event.epoch_end and event.metrics["kl"] > 5.0
"""
from __future__ import annotations

from typing import Any, Dict

from .protocols import TrainingEvent, optional_state

__all__ = ["MIPlateau", "FixedSteps", "FixedEpochs", "Always", "AnyOf"]


class MIPlateau:
    """Stop once the validation mutual information stops increasing.

    Args:
        patience: how many non-improving epochs end the phase.
        min_delta: an epoch improves when ``mi - reference >= min_delta``; with the default ``0.0``
            this is the paper's test (``cur - ref < 0`` means "worse").
        cumulative: ``False`` (the paper's text setting): the reference is the previous epoch's MI
            and failures must be consecutive. ``True`` (the image setting): the reference is the best
            MI so far and failures are counted in total, never reset.
        metric: the key of the epoch record to watch (``"val_mi"``: needs a validation loader).
        initial: the reference the first epoch is compared with, in nats (the paper's text and image
            code start from 0; its synthetic-data script from -1).

    ``MIPlateau()`` stops the first time validation MI is below the previous epoch's (text);
    ``MIPlateau(patience=5, cumulative=True)`` stops after 5 epochs in total that fail to beat the
    best MI (images). Both start from a reference of ``initial`` = 0 nats, as the paper's code does.
    """

    requires_validation = True

    def __init__(
        self,
        patience: int = 1,
        min_delta: float = 0.0,
        *,
        cumulative: bool = False,
        metric: str = "val_mi",
        initial: float = 0.0,
    ) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1; got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0; got {min_delta}")
        self.patience = patience
        self.min_delta = min_delta
        self.cumulative = cumulative
        self.metric = metric
        self.requires_validation = metric.startswith("val_")
        self.initial = float(initial)
        self.reference = self.initial
        self.failures = 0

    def should_stop(self, event: TrainingEvent) -> bool:
        if not event.epoch_end:
            return False
        value = event.metrics.get(self.metric)
        if value is None:
            raise ValueError(
                f"MIPlateau watches {self.metric!r} but the epoch record has no value for it; "
                "pass val_loader to fit() (or choose a metric the trainer records)"
            )
        value = float(value)
        improved = value - self.reference >= self.min_delta
        if improved:
            self.reference = value
            if not self.cumulative:
                self.failures = 0
        else:
            self.failures += 1
            if not self.cumulative:
                self.reference = value
        return self.failures >= self.patience

    def state_dict(self) -> Dict[str, Any]:
        return {"reference": self.reference, "failures": self.failures}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.reference = float(state["reference"])
        self.failures = int(state["failures"])

    def __repr__(self) -> str:
        return (f"MIPlateau(patience={self.patience}, min_delta={self.min_delta}, "
                f"cumulative={self.cumulative}, metric={self.metric!r}, initial={self.initial})")


class FixedSteps:
    """Aggressive for the first ``n`` decoder updates, then basic training."""

    def __init__(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}")
        self.n = n

    def should_stop(self, event: TrainingEvent) -> bool:
        return event.step >= self.n

    def __repr__(self) -> str:
        return f"FixedSteps({self.n})"


class FixedEpochs:
    """Aggressive for the first ``n`` epochs, then basic training."""

    def __init__(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}")
        self.n = n

    def should_stop(self, event: TrainingEvent) -> bool:
        return event.epoch >= self.n or (event.epoch_end and event.epoch + 1 >= self.n)

    def __repr__(self) -> str:
        return f"FixedEpochs({self.n})"


class Always:
    """Never leave the aggressive phase."""

    def should_stop(self, event: TrainingEvent) -> bool:
        return False

    def __repr__(self) -> str:
        return "Always()"


class AnyOf:
    """Leave the aggressive phase as soon as any of ``criteria`` says so.

    Every criterion sees every event (so stateful ones such as :class:`MIPlateau` stay up to date),
    e.g. ``AnyOf(MIPlateau(), FixedEpochs(10))``: the MI rule, but aggressive for 10 epochs at most.
    """

    def __init__(self, *criteria: Any) -> None:
        if not criteria:
            raise ValueError("AnyOf needs at least one stopping criterion; got none")
        for c in criteria:
            if not callable(getattr(c, "should_stop", None)):
                raise TypeError(f"AnyOf takes objects with should_stop(event); got {type(c).__name__}")
        self.criteria = criteria
        self.requires_validation = any(getattr(c, "requires_validation", False) for c in criteria)

    def should_stop(self, event: TrainingEvent) -> bool:
        return any([c.should_stop(event) for c in self.criteria])

    def state_dict(self) -> Dict[str, Any]:
        return {"criteria": [optional_state(c) for c in self.criteria]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for c, s in zip(self.criteria, state["criteria"]):
            if s is not None:
                c.load_state_dict(s)

    def __repr__(self) -> str:
        return f"AnyOf({', '.join(map(repr, self.criteria))})"
