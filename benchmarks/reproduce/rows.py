"""The rows of the study (the paper's Table 1): names, labels, and what each row changes in training.

Every row trains the same model on the same data for the same epochs; a row decides only

* its KL weight schedule (:func:`kl_schedule_for`): 1 throughout, ``LinearKLAnnealing(KL_START, warm-up)``
  for the ``*anneal`` rows, ``ConstantKL(BETA)`` for ``beta``;
* whether the trainer starts in the aggressive phase (:func:`is_aggressive`), and, for the aggressive
  rows, when it leaves it (:func:`stopping_for`: the data set's rule, or exactly
  ``Budget.fixed_aggressive_epochs`` epochs);
* ``ar`` is the autoregressive decoder alone with ``z = 0`` (no latent variable; see
  :func:`benchmarks.reproduce.runner.train_ar_baseline`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict

from aggressive_vi import ConstantKL, FixedEpochs, LinearKLAnnealing

if TYPE_CHECKING:  # annotations only: datasets.py does not depend on this module
    from .datasets import Budget, Setup

__all__ = ["ROWS", "ROW_LABELS", "BETA", "KL_START", "is_aggressive", "kl_schedule_for", "stopping_for"]

ROWS = ("basic", "anneal", "beta", "aggressive", "aggressive_anneal", "ar")
ROW_LABELS: Dict[str, str] = {
    "basic": "VAE (basic)",
    "anneal": "VAE + anneal",
    "beta": "beta-VAE (0.4)",
    "aggressive": "aggressive",
    "aggressive_anneal": "aggressive + anneal",
    "ar": "AR baseline (z = 0)",
}
BETA = 0.4  # the beta row's constant KL weight
KL_START = 0.1  # the anneal rows' KL weight at step 0, raised linearly to 1 over Budget.warm_up epochs


def is_aggressive(row: str) -> bool:
    """Whether ``row`` trains with aggressive inference-network training (He et al., 2019)."""
    return row.startswith("aggressive")


def kl_schedule_for(row: str, budget: "Budget") -> Any:
    """The KL weight schedule of ``row`` (annealed over ``budget.warm_up`` epochs for the anneal rows)."""
    if row in ("anneal", "aggressive_anneal"):
        return LinearKLAnnealing(start=KL_START, warmup_epochs=budget.warm_up)
    if row == "beta":
        return ConstantKL(BETA)
    return ConstantKL(1.0)


def stopping_for(setup: "Setup", budget: "Budget") -> Any:
    """The data set's rule (MI plateau, capped), or exactly ``budget.fixed_aggressive_epochs`` epochs."""
    if budget.fixed_aggressive_epochs is not None:
        return FixedEpochs(budget.fixed_aggressive_epochs)
    return setup.make_stopping()
