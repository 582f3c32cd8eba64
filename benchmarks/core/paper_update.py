"""The paper's update, written once: what the training loop of its ``text.py`` (He et al., 2019) does
per step, as read from its source, on any model with the paper's
``loss(x, kl_weight, nsamples) -> (loss, reconstruction, kl)`` (each ``[batch]``), or on ours through
:func:`elbo_loss`.

* :func:`paper_update` with ``phase="encoder"`` (an inner step): zero both optimisers' gradients; the
  loss; read its sum to the host (``.item()``); back-propagate the mean through encoder *and*
  decoder; clip the joint gradient norm at 5; step the encoder's optimiser only.
* ``phase="decoder"`` (the aggressive decoder update) or ``"joint"`` (basic training): the same
  without the early read, stepping the decoder's optimiser (and the encoder's first when joint);
  then read the summed reconstruction and KL to the host.
* :func:`paper_catch_up`: the inner loop, from ``sub_iter = 1`` while ``sub_iter < 100``, every
  further batch drawn by ``draw()``; every 15 steps the window's loss *per word* is compared with the
  previous window's (from 1e4), breaking when it went up.
* :class:`PaperLoop`: those on one model with the paper's optimisers (SGD lr 1.0, no momentum) and its
  numpy draws: an inner step, an update, a catch-up loop, an epoch.

Its per-iteration logging (validation MI and AU ten times an epoch while aggressive) is left out.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["CLIP", "WINDOW", "MAX_SUB_ITER", "PHASES", "PaperStep", "CatchUp", "paper_loss", "elbo_loss",
           "paper_update", "paper_catch_up", "paper_optimizers", "PaperLoop"]

CLIP = 5.0
WINDOW = 15
MAX_SUB_ITER = 100  # `while sub_iter < 100` from 1: at most 99 inner steps
PHASES = ("encoder", "decoder", "joint")

Forward = Callable[[nn.Module, torch.Tensor, float], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class PaperStep(NamedTuple):
    """One update of the paper's loop.

    Attributes:
        read: what the paper reads to the host: the summed loss (an inner step) or the summed
            reconstruction and KL (a decoder or joint update).
        loss, kl: the batch's values, ``[batch]``, detached.
        grad_norm: the joint gradient norm before clipping (a tensor; no host read).
        encoder_norm: the encoder's gradient norm before clipping (with ``encoder_norm=True``).
    """

    read: Any
    loss: torch.Tensor
    kl: torch.Tensor
    grad_norm: torch.Tensor
    encoder_norm: Optional[float] = None


class CatchUp(NamedTuple):
    """The inner loop's ``steps`` taken and its counter ``sub_iter`` when it stopped (100 at the cap)."""

    steps: int
    sub_iter: int


def paper_loss(model: nn.Module, x: torch.Tensor, kl_weight: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's ``vae.loss(x, kl_weight, nsamples=1)``."""
    return model.loss(x, kl_weight, nsamples=1)


def elbo_loss(model: nn.Module, x: torch.Tensor, kl_weight: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same from our :class:`aggressive_vi.VAE` (``model.elbo``), for the paper's procedure on ours."""
    terms = model.elbo(x, kl_weight=kl_weight)
    return terms.loss, terms.reconstruction, terms.kl


def _norm(params: Sequence[torch.Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))


def paper_update(model: nn.Module, enc_opt: torch.optim.Optimizer, dec_opt: torch.optim.Optimizer,
                 x: torch.Tensor, *, phase: str, kl_weight: float = 1.0, clip: float = CLIP,
                 forward: Forward = paper_loss, encoder_norm: bool = False) -> PaperStep:
    """One update as the paper's loop makes it (see the module doc).

    Args:
        model: has ``encoder`` and ``decoder``; ``forward(model, x, kl_weight)`` gives its per-example
            loss, reconstruction and KL.
        phase: ``"encoder"`` (inner step), ``"decoder"`` (aggressive update) or ``"joint"`` (basic).
        encoder_norm: also measure the encoder's gradient norm before clipping (one host read).

    Raises:
        ValueError: ``phase`` is not one of :data:`PHASES`.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    enc_opt.zero_grad()
    dec_opt.zero_grad()
    loss, rec, kl = forward(model, x, kl_weight)
    read: Any = loss.sum().item() if phase == "encoder" else None
    loss.mean(dim=-1).backward()
    enc = _norm(list(model.encoder.parameters())) if encoder_norm else None
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    if phase != "decoder":
        enc_opt.step()
    if phase != "encoder":
        dec_opt.step()
        read = (rec.sum().item(), kl.sum().item())
    return PaperStep(read, loss.detach(), kl.detach(), norm, enc)


def paper_catch_up(model: nn.Module, enc_opt: torch.optim.Optimizer, dec_opt: torch.optim.Optimizer,
                   x: torch.Tensor, draw: Callable[[], torch.Tensor], *, fixed_steps: int = 0,
                   kl_weight: float = 1.0, clip: float = CLIP, forward: Forward = paper_loss,
                   encoder_norm: bool = False, on_step: Optional[Callable[[PaperStep], Any]] = None) -> CatchUp:
    """The paper's inner loop before the update on ``x`` (``x: [batch, length]`` token ids; later
    batches from ``draw()``, called after every step). ``fixed_steps > 0``: exactly that many steps,
    without the window test. ``on_step`` sees every step's :class:`PaperStep`."""
    sub_iter, steps, batch = 1, 0, x
    words, previous, current = 0, 1e4, 0.0
    while sub_iter < (fixed_steps + 1 if fixed_steps else MAX_SUB_ITER):
        words += (batch.shape[1] - 1) * batch.shape[0]
        step = paper_update(model, enc_opt, dec_opt, batch, phase="encoder", kl_weight=kl_weight, clip=clip,
                            forward=forward, encoder_norm=encoder_norm)
        current += step.read
        steps += 1
        if on_step is not None:
            on_step(step)
        batch = draw()
        if not fixed_steps and sub_iter % WINDOW == 0:
            current /= words
            if previous - current < 0:
                break
            previous, current, words = current, 0.0, 0
        sub_iter += 1
    return CatchUp(steps, sub_iter)


def paper_optimizers(vae: nn.Module) -> Tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """The paper's optimisers: SGD lr 1.0, no momentum, one per network."""
    return (torch.optim.SGD(vae.encoder.parameters(), lr=1.0, momentum=0),
            torch.optim.SGD(vae.decoder.parameters(), lr=1.0, momentum=0))


class PaperLoop:
    """The per-step work of the paper's ``text.py`` training loop on one model (see the module doc).

    Args:
        vae: the paper's VAE (or any model with its ``loss``).
        batches: its training batches (the catch-up loop draws from them at random).
        seed: seeds numpy's generator for those draws and the epoch's order (the paper's code uses
            ``np.random``).
    """

    def __init__(self, vae: nn.Module, batches: Sequence[torch.Tensor], seed: int = 0) -> None:
        self.vae = vae
        self.batches = list(batches)
        self.enc_opt, self.dec_opt = paper_optimizers(vae)
        self.rng = np.random.RandomState(seed)

    def encoder_step(self, x: torch.Tensor, kl_weight: float = 1.0) -> float:
        """One inner step; returns the batch's summed loss (nats), read to the host as the paper does."""
        return paper_update(self.vae, self.enc_opt, self.dec_opt, x, phase="encoder", kl_weight=kl_weight).read

    def update(self, x: torch.Tensor, aggressive: bool, kl_weight: float = 1.0) -> Tuple[float, float]:
        """The decoder update (``aggressive``) or joint step; returns (summed reconstruction, KL)."""
        return paper_update(self.vae, self.enc_opt, self.dec_opt, x, phase="decoder" if aggressive else "joint",
                            kl_weight=kl_weight).read

    def draw(self) -> torch.Tensor:
        """A training batch drawn uniformly at random."""
        return self.batches[int(self.rng.randint(0, len(self.batches)))]

    def catch_up(self, x: torch.Tensor, fixed_steps: int = 0) -> int:
        """The catch-up loop before the update on ``x``; returns the steps taken. ``fixed_steps > 0``:
        exactly that many steps, without the window test."""
        return paper_catch_up(self.vae, self.enc_opt, self.dec_opt, x, self.draw, fixed_steps=fixed_steps).steps

    def epoch(self, aggressive: bool, fixed_steps: int = 0) -> Dict[str, Any]:
        """One epoch over the batches in a random order; returns ``{"inner_steps": total}``."""
        self.vae.train()
        inner = 0
        for i in self.rng.permutation(len(self.batches)):
            x = self.batches[i]
            if aggressive:
                inner += self.catch_up(x, fixed_steps)
            self.update(x, aggressive)
        return {"inner_steps": inner}
