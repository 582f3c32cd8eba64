"""Criteria that end the aggressive phase (see :class:`aggressive_vi.protocols.StoppingCriterion`).

A criterion is asked before every decoder update and at every epoch end while the trainer is still
aggressive; the first ``True`` switches the trainer to basic VAE training for the rest of the run.
A user-written criterion needs one method::

    class StopWhenKLAbove:
        def should_stop(self, event):
            return event.epoch_end and event.metrics["kl"] > 5.0
"""
from __future__ import annotations

import math
from typing import Any, Dict

from ._impl.checks import non_negative_float, non_negative_int, positive_int
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
        k_stderr: with ``k > 0`` an epoch improves only when the rise is more than ``k`` standard
            errors of the difference, ``mi - reference > k * sqrt(se_mi^2 + se_ref^2)``, reading the
            standard error from ``metric + "_stderr"`` (``val_mi_stderr``; the initial reference has
            none). A rise inside the estimator's noise then counts as no rise.
        min_epochs: the aggressive phase lasts at least this many epochs: failures in earlier
            epochs are not counted (the reference still follows the estimates).

    ``MIPlateau()`` is the paper's text rule exactly: it stops the first time validation MI is below
    the previous epoch's; ``MIPlateau(patience=5, cumulative=True)`` is its image rule (5 epochs in
    total that fail to beat the best MI). Both start from a reference of ``initial`` = 0 nats, as the
    paper's code does. At CPU scale the paper's minibatch MI at epoch 0 is often a little below 0, so
    that rule can end the phase after one epoch on noise; ``MIPlateau(k_stderr=2, min_epochs=2)``
    with ``AggressiveTrainer(mi_estimator="dataset")`` reads a quieter estimate and tolerates it.
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
        k_stderr: float = 0.0,
        min_epochs: int = 0,
    ) -> None:
        self.patience = positive_int("patience", patience)
        self.min_delta = non_negative_float("min_delta", min_delta)
        self.k_stderr = non_negative_float("k_stderr", k_stderr)
        self.min_epochs = non_negative_int("min_epochs", min_epochs)
        self.cumulative = cumulative
        self.metric = metric
        self.requires_validation = metric.startswith("val_")
        self.initial = float(initial)
        self.reference = self.initial
        self.reference_stderr = 0.0
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
        stderr = self._stderr(event)
        rise = value - self.reference
        improved = rise >= self.min_delta
        if self.k_stderr > 0:
            improved = improved and rise > self.k_stderr * math.hypot(stderr, self.reference_stderr)
        counted = event.epoch + 1 > self.min_epochs
        if improved:
            self.reference, self.reference_stderr = value, stderr
            if not self.cumulative:
                self.failures = 0
        else:
            if counted:
                self.failures += 1
            if not self.cumulative:
                self.reference, self.reference_stderr = value, stderr
        return counted and self.failures >= self.patience

    def _stderr(self, event: TrainingEvent) -> float:
        if self.k_stderr == 0:
            return 0.0
        stderr = event.metrics.get(self.metric + "_stderr")
        if stderr is None or not math.isfinite(float(stderr)):
            raise ValueError(
                f"MIPlateau(k_stderr={self.k_stderr}) needs the standard error {self.metric + '_stderr'!r} "
                f"in the epoch record; got {stderr!r} (a validation loader of one batch gives the "
                "minibatch estimator no spread: use more batches or mi_estimator='dataset')"
            )
        return float(stderr)

    def state_dict(self) -> Dict[str, Any]:
        return {"reference": self.reference, "reference_stderr": self.reference_stderr,
                "failures": self.failures}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.reference = float(state["reference"])
        self.reference_stderr = float(state.get("reference_stderr", 0.0))
        self.failures = int(state["failures"])

    def __repr__(self) -> str:
        return (f"MIPlateau(patience={self.patience}, min_delta={self.min_delta}, "
                f"cumulative={self.cumulative}, metric={self.metric!r}, initial={self.initial}, "
                f"k_stderr={self.k_stderr}, min_epochs={self.min_epochs})")


class FixedSteps:
    """Aggressive for the first ``n`` decoder updates, then basic training."""

    def __init__(self, n: int) -> None:
        self.n = non_negative_int("n", n)

    def should_stop(self, event: TrainingEvent) -> bool:
        return event.step >= self.n

    def __repr__(self) -> str:
        return f"FixedSteps({self.n})"


class FixedEpochs:
    """Aggressive for the first ``n`` epochs, then basic training."""

    def __init__(self, n: int) -> None:
        self.n = non_negative_int("n", n)

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
