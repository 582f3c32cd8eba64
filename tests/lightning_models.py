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
    ``on_before_optimizer_step``), whether each inner step left the decoder's parameters as they were
    (``inner_decoder_unchanged``), the decoder's gradient at each inner step and the encoder's at
    the first.
    """

    def __init__(self, lr: float = 1e-2, watch_decoder: bool = False, **options: Any) -> None:
        super().__init__()
        self.vae = VAE(MLPEncoder(), BernoulliDecoder(), get_input=options.pop("get_input", None),
                       kl_threshold=options.pop("kl_threshold", None))
        self.automatic_optimization = False
        self.lr = lr
        self.aggressive = AggressiveVI(self.vae, **options)
        self.steps: List[str] = []
        self.per_batch: List[List[str]] = []
        self.watch_decoder = watch_decoder
        self.decoder_changed_in_inner = False
        self.inner_decoder_grads: List[Optional[torch.Tensor]] = []
        self.inner_decoder_unchanged: List[bool] = []
        self.first_inner_encoder_grad: Optional[torch.Tensor] = None
        self.first_inner_decoder_grad: Optional[torch.Tensor] = None
        self._before: Optional[List[torch.Tensor]] = None

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
        if self._before is not None:  # an inner step was applied since the snapshot
            self.inner_decoder_unchanged.append(
                all(torch.equal(a, b) for a, b in zip(self._before, self.vae.decoder.parameters())))
            self._before = None
        enc = any(p is q for g in optimizer.param_groups for p in g["params"]
                  for q in self.vae.encoder.parameters())
        self.steps.append("enc" if enc else "dec")
        if enc and self.aggressive.is_aggressive and self.watch_decoder:
            self.inner_decoder_grads.append(next(self.vae.decoder.parameters()).grad)
            if self.first_inner_encoder_grad is None:
                self.first_inner_encoder_grad = torch.cat(
                    [p.grad.detach().flatten().clone() for p in self.vae.encoder.parameters()])
                if self.inner_decoder_grads[-1] is not None:  # clip_scope="joint": computed for the norm
                    self.first_inner_decoder_grad = torch.cat(
                        [p.grad.detach().flatten().clone() for p in self.vae.decoder.parameters()])
            self._before = [p.detach().clone() for p in self.vae.decoder.parameters()]
