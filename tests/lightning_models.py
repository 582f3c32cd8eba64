"""A LightningModule over the test VAE, for tests/test_lightning*.py and their worker scripts."""
from __future__ import annotations

from typing import Any, List, Optional

import lightning.pytorch as pl
import torch

from aggressive_vi import VAE
from aggressive_vi.lightning import AggressiveVI
from conftest import BernoulliDecoder, MLPEncoder


class LitVAE(pl.LightningModule):
    """The user's module: a VAE, two Adam optimisers, manual optimisation, ``AggressiveVI``.

    Records, for the tests, every optimiser step (``steps``: ``"enc"``/``"dec"`` in order, counted in
    ``on_before_optimizer_step``) and the decoder's parameters before and after each inner step.
    """

    def __init__(self, lr: float = 1e-2, watch_decoder: bool = False, **options: Any) -> None:
        super().__init__()
        self.vae = VAE(MLPEncoder(), BernoulliDecoder())
        self.automatic_optimization = False
        self.lr = lr
        self.aggressive = AggressiveVI(self.vae, **options)
        self.steps: List[str] = []
        self.per_batch: List[List[str]] = []
        self.watch_decoder = watch_decoder
        self.decoder_changed_in_inner = False
        self.inner_decoder_grads: List[Optional[torch.Tensor]] = []

    def configure_callbacks(self):
        return [self.aggressive]

    def configure_optimizers(self):
        return [torch.optim.Adam(self.vae.encoder.parameters(), lr=self.lr),
                torch.optim.Adam(self.vae.decoder.parameters(), lr=self.lr)]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.steps = []
        loss = self.aggressive.training_step(self, batch)
        self.per_batch.append(self.steps)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        pass

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        enc = any(p is q for g in optimizer.param_groups for p in g["params"]
                  for q in self.vae.encoder.parameters())
        self.steps.append("enc" if enc else "dec")
        if enc and self.aggressive.is_aggressive and self.watch_decoder:
            self.inner_decoder_grads.append(next(self.vae.decoder.parameters()).grad)
            self._before = [p.detach().clone() for p in self.vae.decoder.parameters()]

    def on_train_batch_end(self, *args: Any) -> None:
        pass


def decoder_unchanged_by_inner_steps(module: LitVAE) -> bool:
    """Whether the decoder's parameters equal those recorded before the last inner step."""
    return all(torch.equal(a, b) for a, b in zip(module._before, module.vae.decoder.parameters()))
