"""The paper's image learning-rate rule as an ``AggressiveTrainer`` callback."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

__all__ = ["BestModelLRDecay"]


class BestModelLRDecay:
    """Keep the best model by validation loss; halve the lr after ``patience`` epochs without a new best.

    The image setting of He et al.: after each epoch the validation loss (``-record.val_elbo``, nats
    per image) is compared with the best so far. ``patience`` (20) epochs in a row without a new best
    multiply both optimisers' lr by ``factor`` (0.5), reload the best weights and clear the optimisers'
    state; after ``max_decays`` (5) decays training stops. At the end of ``fit`` the best weights are
    restored (``restore_best``), so the model evaluated and saved is the best one.

    Needs ``fit(..., val_loader=...)``; keeps a CPU copy of the best weights (saved in ``state_dict``
    so that a resumed run continues the same rule).
    """

    def __init__(self, *, patience: int = 20, factor: float = 0.5, max_decays: int = 5,
                 restore_best: bool = True) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if max_decays < 1:
            raise ValueError(f"max_decays must be >= 1, got {max_decays}")
        self.patience, self.factor, self.max_decays, self.restore_best = patience, factor, max_decays, restore_best
        self.best_loss = float("inf")
        self.best_epoch: Optional[int] = None
        self.best_state: Optional[Dict[str, torch.Tensor]] = None
        self.not_improved = 0
        self.decays = 0

    def on_epoch_end(self, trainer: Any, record: Any) -> None:
        if record.val_elbo is None:
            raise ValueError("BestModelLRDecay needs validation metrics: pass fit(..., val_loader=...)")
        loss = -float(record.val_elbo)
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.not_improved = loss, record.epoch, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in trainer.model.state_dict().items()}
            return
        self.not_improved += 1
        if self.not_improved >= self.patience:
            for opt in (trainer.enc_opt, trainer.dec_opt):
                for group in opt.param_groups:
                    group["lr"] *= self.factor
                opt.state.clear()
            if self.best_state is not None:
                trainer.model.load_state_dict(self.best_state)
            self.not_improved = 0
            self.decays += 1
            if self.decays >= self.max_decays:
                trainer.stop_training = True

    def on_fit_end(self, trainer: Any) -> None:
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> Dict[str, Any]:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "best_state": self.best_state,
                "not_improved": self.not_improved, "decays": self.decays}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best_loss, self.best_epoch = float(state["best_loss"]), state["best_epoch"]
        self.best_state, self.not_improved = state["best_state"], int(state["not_improved"])
        self.decays = int(state["decays"])
