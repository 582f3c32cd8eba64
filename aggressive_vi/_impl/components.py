"""Loading the states of the pluggable parts (stopping criterion, KL schedule, callbacks) and
keeping an optimiser's construction flags across ``load_state_dict``."""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..checkpoint import CheckpointError
from ..protocols import KLSchedule, StoppingCriterion
from ..schedules import ConstantKL
from ..stopping import MIPlateau
from .checks import has_method, is_callable

__all__ = ["stopping_or_default", "kl_schedule_or_default", "load_component", "load_callbacks",
           "optimizer_flags", "restore_optimizer_flags"]


def stopping_or_default(stopping: Optional[StoppingCriterion]) -> StoppingCriterion:
    """``stopping``, checked, or the paper's text rule ``MIPlateau()`` when it is ``None``."""
    return has_method("stopping", stopping if stopping is not None else MIPlateau(), "should_stop",
                      "should_stop(event) -> bool")


def kl_schedule_or_default(kl_schedule: Optional[KLSchedule]) -> KLSchedule:
    """``kl_schedule``, checked, or ``ConstantKL(1.0)`` (the plain ELBO) when it is ``None``."""
    return is_callable("kl_schedule", kl_schedule if kl_schedule is not None else ConstantKL(1.0),
                       "schedule(step, steps_per_epoch) -> float")

#: Options that say how an optimiser runs, not where it is: the user's choice wins on resume.
OPTIMIZER_FLAGS = ("foreach", "fused", "capturable", "differentiable", "maximize")


def load_component(name: str, component: Any, saved: Any, saved_type: Optional[str], source: str) -> None:
    """Give ``component`` its saved state (nothing when it has no ``load_state_dict``).

    Raises:
        CheckpointError: the state was saved by a component of another class.
    """
    if saved is None or not callable(getattr(component, "load_state_dict", None)):
        return  # nothing saved, or the user swapped in a stateless component on purpose
    if saved_type is not None and saved_type != type(component).__name__:
        raise CheckpointError(f"{source} holds the state of {name}={saved_type}; this trainer "
                              f"has {name}={type(component).__name__}")
    component.load_state_dict(saved)


def load_callbacks(callbacks: Sequence[Any], saved: List[Any], source: str) -> None:
    """Give each callback with ``load_state_dict`` the saved state of the same class (in order)."""
    unused = [entry for entry in saved if isinstance(entry, dict) and "type" in entry]
    for callback in callbacks:
        if not callable(getattr(callback, "load_state_dict", None)):
            continue
        match = next((e for e in unused if e["type"] == type(callback).__name__), None)
        if match is not None:
            unused.remove(match)
            callback.load_state_dict(match["state"])
    if unused:
        warnings.warn(f"{source} holds state for callbacks {[e['type'] for e in unused]} that "
                      "this trainer does not have; it was not restored")


def optimizer_flags(optimizer: torch.optim.Optimizer) -> List[Dict[str, Any]]:
    """Each parameter group's run flags (see :data:`OPTIMIZER_FLAGS`)."""
    return [{k: g[k] for k in OPTIMIZER_FLAGS if k in g} for g in optimizer.param_groups]


def restore_optimizer_flags(optimizer: torch.optim.Optimizer, flags: List[Dict[str, Any]]) -> None:
    """Put back flags that ``Optimizer.load_state_dict`` replaced with the saved groups' values."""
    for group, own in zip(optimizer.param_groups, flags):
        group.update(own)
