"""The rows of the study: names, labels, and what each row changes in training.

:data:`ROWS` are the paper's Table 1 rows (the study's default); :data:`ALL_ROWS` adds the other
remedies for posterior collapse that ``python -m benchmarks.remedies`` sets beside them (cyclical
annealing, free bits, aggressive training with free bits). Every row trains the same model on the same
data for the same epochs; a row decides only

* its KL weight schedule (:func:`kl_schedule_for`): 1 throughout, ``LinearKLAnnealing(KL_START, warm-up)``
  for the ``*anneal`` rows, ``ConstantKL(BETA)`` for ``beta``, ``CyclicalKLAnnealing`` with
  :data:`CYCLES` cycles over the run and ramp ratio :data:`CYCLE_RATIO` for ``cyclical`` (Fu et al.,
  NAACL 2019);
* its KL threshold (:func:`kl_threshold_for`): ``FreeBits(FREE_BITS)`` per dimension for the
  ``*free_bits`` rows (on the model: ``VAE(..., kl_threshold=...)``), none otherwise;
* whether the trainer starts in the aggressive phase (:func:`is_aggressive`), and, for the aggressive
  rows, when it leaves it (:func:`stopping_for`: the data set's rule, or exactly
  ``Budget.fixed_aggressive_epochs`` epochs);
* ``ar`` is the autoregressive decoder alone with ``z = 0`` (no latent variable; see
  :func:`benchmarks.reproduce.runner.train_ar_baseline`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

from aggressive_vi import ConstantKL, CyclicalKLAnnealing, FixedEpochs, FreeBits, LinearKLAnnealing

if TYPE_CHECKING:  # annotations only: datasets.py does not depend on this module
    from .datasets import Budget, Setup

__all__ = ["ROWS", "ALL_ROWS", "ROW_LABELS", "BETA", "KL_START", "CYCLES", "CYCLE_RATIO", "FREE_BITS",
           "is_aggressive", "kl_schedule_for", "kl_threshold_for", "stopping_for"]

#: The paper's Table 1 rows: what ``python -m benchmarks.reproduce`` trains by default.
ROWS = ("basic", "anneal", "beta", "aggressive", "aggressive_anneal", "ar")
#: Every row, in the order of the tables.
ALL_ROWS = ("basic", "anneal", "cyclical", "beta", "free_bits", "aggressive", "aggressive_anneal",
            "aggressive_free_bits", "ar")
ROW_LABELS: Dict[str, str] = {
    "basic": "VAE (basic)",
    "anneal": "VAE + anneal",
    "cyclical": "VAE + cyclical anneal",
    "beta": "beta-VAE (0.4)",
    "free_bits": "VAE + free bits (0.25)",
    "aggressive": "aggressive",
    "aggressive_anneal": "aggressive + anneal",
    "aggressive_free_bits": "aggressive + free bits",
    "ar": "AR baseline (z = 0)",
}
BETA = 0.4  # the beta row's constant KL weight
KL_START = 0.1  # the anneal rows' KL weight at step 0, raised linearly to 1 over Budget.warm_up epochs
CYCLES, CYCLE_RATIO = 4, 0.5  # Fu et al. (2019): 4 cycles over the run, weight 0 -> 1 over each half
FREE_BITS = 0.25  # nats per latent dimension: Li et al.'s published command, target_kl 8 over nz = 32


def is_aggressive(row: str) -> bool:
    """Whether ``row`` trains with aggressive inference-network training (He et al., 2019)."""
    return row.startswith("aggressive")


def kl_schedule_for(row: str, budget: "Budget") -> Any:
    """The KL weight schedule of ``row`` (annealed over ``budget.warm_up`` epochs for the anneal rows)."""
    if row in ("anneal", "aggressive_anneal"):
        return LinearKLAnnealing(start=KL_START, warmup_epochs=budget.warm_up)
    if row == "beta":
        return ConstantKL(BETA)
    if row == "cyclical":
        return CyclicalKLAnnealing(cycle_epochs=budget.epochs / CYCLES, ratio=CYCLE_RATIO, start=0.0)
    return ConstantKL(1.0)


def kl_threshold_for(row: str) -> Optional[FreeBits]:
    """The KL threshold of ``row``'s model: ``FreeBits(FREE_BITS)`` per dimension for the free-bits rows."""
    return FreeBits(FREE_BITS) if row.endswith("free_bits") else None


def stopping_for(setup: "Setup", budget: "Budget") -> Any:
    """The data set's rule (MI plateau, capped), or exactly ``budget.fixed_aggressive_epochs`` epochs."""
    if budget.fixed_aggressive_epochs is not None:
        return FixedEpochs(budget.fixed_aggressive_epochs)
    return setup.make_stopping()
