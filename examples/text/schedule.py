"""The paper's text learning-rate schedule as an ``AggressiveTrainer`` callback, and a stopping rule
that ends the aggressive phase on whichever of several criteria fires first."""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

import torch

__all__ = ["PaperLRDecay", "FirstOf"]


class PaperLRDecay:
    """Halve the learning rate after ``patience`` non-improving epochs once ``epoch >= min_epoch``,
    reloading the best model; stop training after ``max_decays`` decays (He et al., text setting).

    After every epoch the validation loss (negative ELBO with KL weight 1, ``-record.val_elbo``,
    nats per example) is compared with a reference: the previous epoch's loss if that improved,
    else the loss at the last decay. When it fails to improve ``patience`` epochs in a row (and
    ``epoch >= min_epoch``, 0-based), every optimiser's lr is multiplied by ``factor``, the model's
    weights go back to the best epoch's, and the optimisers' states (e.g. momentum) are cleared, so the
    optimiser never pairs the best weights with later statistics. The best weights are also restored
    at the end of ``fit`` (``restore_best=True``), so what is evaluated and saved is the best model.

    Needs ``fit(..., val_loader=...)``. Holds the best weights in memory (a CPU copy).
    """

    def __init__(self, *, patience: int = 2, factor: float = 0.5, min_epoch: int = 15, max_decays: int = 5,
                 restore_best: bool = True) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if max_decays < 1:
            raise ValueError(f"max_decays must be >= 1, got {max_decays}")
        self.patience, self.factor, self.min_epoch = patience, factor, min_epoch
        self.max_decays, self.restore_best = max_decays, restore_best
        self.best_loss = float("inf")
        self.best_epoch: Optional[int] = None
        self.best_state: Optional[Dict[str, torch.Tensor]] = None
        self.reference = float("inf")
        self.not_improved = 0
        self.decays = 0

    @staticmethod
    def _optimizers(trainer: Any) -> List[torch.optim.Optimizer]:
        return [trainer.enc_opt, trainer.dec_opt]

    def current_lr(self, trainer: Any) -> float:
        return float(trainer.enc_opt.param_groups[0]["lr"])

    def on_epoch_end(self, trainer: Any, record: Any) -> None:
        if record.val_elbo is None:
            raise ValueError("PaperLRDecay needs validation metrics: pass fit(..., val_loader=...)")
        loss = -float(record.val_elbo)
        if loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, record.epoch
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in trainer.model.state_dict().items()}
        if loss > self.reference:
            self.not_improved += 1
            if self.not_improved >= self.patience and record.epoch >= self.min_epoch:
                self._decay(trainer)
                self.reference, self.not_improved = loss, 0
        else:
            self.reference, self.not_improved = loss, 0
        if self.decays >= self.max_decays:
            trainer.stop_training = True

    def _decay(self, trainer: Any) -> None:
        for opt in self._optimizers(trainer):
            for group in opt.param_groups:
                group["lr"] *= self.factor
            opt.state.clear()
        if self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)
        self.decays += 1

    def on_fit_end(self, trainer: Any) -> None:
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> Dict[str, Any]:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "best_state": self.best_state,
                "reference": self.reference, "not_improved": self.not_improved, "decays": self.decays}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best_loss, self.best_epoch = float(state["best_loss"]), state["best_epoch"]
        self.best_state = copy.copy(state["best_state"])
        self.reference, self.not_improved = float(state["reference"]), int(state["not_improved"])
        self.decays = int(state["decays"])


class FirstOf:
    """Leave the aggressive phase when any of ``criteria`` says so. Every criterion sees every event
    (so stateful ones such as ``MIPlateau`` stay up to date)."""

    def __init__(self, *criteria: Any) -> None:
        if not criteria:
            raise ValueError("FirstOf needs at least one stopping criterion")
        self.criteria = criteria
        self.requires_validation = any(getattr(c, "requires_validation", False) for c in criteria)

    def should_stop(self, event: Any) -> bool:
        return any([c.should_stop(event) for c in self.criteria])

    def state_dict(self) -> Dict[str, Any]:
        return {"criteria": [c.state_dict() if hasattr(c, "state_dict") else None for c in self.criteria]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for c, s in zip(self.criteria, state["criteria"]):
            if s is not None:
                c.load_state_dict(s)

    def __repr__(self) -> str:
        return f"FirstOf({', '.join(map(repr, self.criteria))})"
