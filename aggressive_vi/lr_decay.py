"""The paper's learning-rate rule as a callback: decay on a validation plateau, reloading the best model.

He et al. (2019) halve both learning rates when the validation loss stops improving, reload the best
model seen so far and rebuild the optimisers (so their statistics are cleared), and end training after
5 decays. The text and image code differ in what "improving" is compared with; both are here.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ._impl.checks import in_range, one_of, positive_int
from .history import EpochRecord
from .protocols import Trainer


__all__ = ["LRDecayOnPlateau"]


class LRDecayOnPlateau:
    """Multiply both optimisers' lr by ``factor`` after ``patience`` non-improving epochs.

    After every epoch the validation loss ``-record.val_elbo`` (negative ELBO with KL weight 1, nats
    per example) is compared with a reference:

    * ``compare_to="previous"`` (the paper's text code): the previous epoch's loss if it improved on
      its own reference, else the reference stays; it is reset to the current loss at every decay.
    * ``compare_to="best"`` (the paper's image code): the best loss so far.

    When ``patience`` epochs in a row fail (and ``epoch >= min_epoch``, 0-based), the lr of every param
    group of ``enc_opt`` and ``dec_opt`` is multiplied by ``factor``, the weights of the best epoch are
    loaded back, and the optimisers' state is cleared (never the best weights with later statistics).
    After ``max_decays`` decays, ``trainer.stop_training`` is set. With ``restore_best`` the best
    weights are loaded at the end of ``fit`` too, so what is evaluated is the best model.

    Paper settings: text ``LRDecayOnPlateau(patience=2, min_epoch=15)``; images
    ``LRDecayOnPlateau(patience=20, compare_to="best")``. Needs ``fit(..., val_loader=...)``. Keeps a
    CPU copy of the best weights, saved in :meth:`state_dict` so a resumed run continues the rule.
    """

    def __init__(self, *, patience: int = 2, factor: float = 0.5, min_epoch: int = 0,
                 max_decays: int = 5, compare_to: str = "previous", restore_best: bool = True) -> None:
        positive_int("patience", patience)
        in_range("factor", factor, 0.0, 1.0, low_open=True, high_open=True)
        positive_int("max_decays", max_decays)
        one_of("compare_to", compare_to, ("previous", "best"))
        self.patience, self.factor, self.min_epoch = patience, factor, min_epoch
        self.max_decays, self.compare_to, self.restore_best = max_decays, compare_to, restore_best
        self.best_loss = float("inf")
        self.best_epoch: Optional[int] = None
        self.best_state: Optional[Dict[str, torch.Tensor]] = None
        self.reference = float("inf")
        self.not_improved = 0
        self.decays = 0

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        if record.val_elbo is None:
            raise ValueError("LRDecayOnPlateau needs validation metrics: pass fit(..., val_loader=...)")
        loss = -float(record.val_elbo)
        if loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, record.epoch
            self.best_state = {k: v.detach().to("cpu", copy=True)
                               for k, v in trainer.model.state_dict().items()}
        reference = self.best_loss if self.compare_to == "best" else self.reference
        if loss > reference:
            self.not_improved += 1
            if self.not_improved >= self.patience and record.epoch >= self.min_epoch:
                self._decay(trainer)
                self.reference, self.not_improved = loss, 0
        else:
            self.reference, self.not_improved = loss, 0
        if self.decays >= self.max_decays:
            trainer.stop_training = True

    def _decay(self, trainer: Trainer) -> None:
        for opt in (trainer.enc_opt, trainer.dec_opt):
            for group in opt.param_groups:
                group["lr"] *= self.factor
            opt.state.clear()
        if self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)
        self.decays += 1

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> Dict[str, Any]:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "best_state": self.best_state, "reference": self.reference,
                "not_improved": self.not_improved, "decays": self.decays}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best_loss, self.best_epoch = float(state["best_loss"]), state["best_epoch"]
        self.best_state = dict(state["best_state"]) if state["best_state"] is not None else None
        self.reference, self.not_improved = float(state["reference"]), int(state["not_improved"])
        self.decays = int(state["decays"])
