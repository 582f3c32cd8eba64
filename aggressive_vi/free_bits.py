"""KL thresholding ("free bits", Kingma et al., NeurIPS 2016) as a training objective.

Free bits let the encoder spend up to ``nats`` of KL at no cost: the KL term of the training loss is
replaced by ``max(nats, KL)``, so below the threshold it has no gradient and the latent is not pushed
back onto the prior. Li et al. (EMNLP 2019, "A Surprisingly Effective Fix for Deep Latent Variable
Modeling of Text") and Optimus (Li et al., EMNLP 2020) combine it with KL annealing.

The threshold is part of the model, ``VAE(encoder, decoder, kl_threshold=FreeBits(0.25))``, not an
option of a trainer: every loop computes its loss with :meth:`aggressive_vi.VAE.elbo`
(:class:`~aggressive_vi.AggressiveTrainer`, the Lightning callback, Fabric, a hand-written loop over
:class:`~aggressive_vi.AggressiveStep`, or ``vae.elbo(x).loss.mean().backward()``), so all of them
train the thresholded objective, in the aggressive phase and in basic training, under every KL
schedule (the schedule's weight multiplies the thresholded term). Only ``ELBOTerms.loss`` changes:
``ELBOTerms.kl`` and ``ELBOTerms.reconstruction``, the validation record, and every estimator (ELBO,
KL, MI, active units, IW-NLL) stay the true ones. The catch-up test of the aggressive phase watches
the loss the encoder is trained on, i.e. the thresholded one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ._impl.checks import describe

__all__ = ["FreeBits"]


@dataclass(frozen=True)
class FreeBits:
    """Free bits: the training loss's KL term thresholded at ``nats`` (``lambda`` in the papers).

    Args:
        nats: the threshold lambda >= 0, in nats: per latent dimension with ``per_dimension=True``,
            on the total KL otherwise.
        per_dimension: ``True`` (default): each latent dimension's batch-averaged KL is replaced by
            ``max(nats, KL_d)`` (Kingma et al.'s objective with one group per dimension); ``False``:
            the batch-averaged total KL is replaced by ``max(nats, KL)`` (one group).

    Called with the KL per example and dimension, ``kl: [batch, latent_dim]`` (nats), it returns
    per-example terms ``[batch]`` (nats) whose batch mean is exactly the thresholded KL, and whose
    gradient is the KL's where the batch average is above the threshold and zero where it is below:
    example ``i`` contributes ``KL_id`` for a dimension whose batch average is above ``nats``, and
    ``nats`` for one below. The batch is the minibatch of one process (under DDP, each rank's own).
    Only tensor operations, no host read, so it also runs inside a captured CUDA graph.

    ``per_dimension=False`` also accepts the total KL alone, ``[batch]``; ``per_dimension=True``
    refuses it (a model that reports no per-dimension KL cannot be thresholded per dimension).

    Settings from the papers: Li et al.'s public code thresholds each dimension at ``target_kl / nz``
    with ``target_kl = 8`` and nz = 32, i.e. 0.25 nats per dimension, after KL annealing from 0 over
    10 epochs; it masks each example's KL (per example and dimension) where Kingma et al. and this
    class threshold the batch average.

    Example::

        vae = VAE(encoder, decoder, kl_threshold=FreeBits(0.25))   # 0.25 nats per dimension

    Raises:
        ValueError: ``nats`` negative, not finite or not a number; ``per_dimension`` not a bool;
            at call time a ``kl`` of the wrong shape (named).
    """

    nats: float
    per_dimension: bool = True

    def __post_init__(self) -> None:
        value: Any = self.nats
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0):
            raise ValueError(f"FreeBits(nats=...) must be a finite number >= 0 (the threshold lambda in "
                             f"nats); got {describe(value)}")
        if not isinstance(self.per_dimension, bool):
            raise ValueError(f"FreeBits(per_dimension=...) must be True or False; got {describe(self.per_dimension)}")
        object.__setattr__(self, "nats", float(value))

    def __call__(self, kl: torch.Tensor) -> torch.Tensor:
        """The thresholded KL term per example: ``kl: [batch, latent_dim]`` (or ``[batch]`` with
        ``per_dimension=False``) -> ``[batch]``, nats."""
        if not isinstance(kl, torch.Tensor):
            raise TypeError(f"FreeBits expects the KL as a tensor [batch, latent_dim]; got {type(kl).__name__}")
        if self.per_dimension:
            if kl.dim() != 2:
                raise ValueError(
                    f"FreeBits(per_dimension=True) needs the KL per latent dimension, [batch, latent_dim]; "
                    f"got shape {tuple(kl.shape)}. A model that reports only the total KL can use "
                    f"FreeBits({self.nats:g}, per_dimension=False)")
            above = kl.mean(dim=0, keepdim=True) > self.nats  # [1, latent_dim], stays on the device
            return torch.where(above, kl, torch.full_like(kl, self.nats)).sum(dim=-1)
        if kl.dim() == 2:
            kl = kl.sum(dim=-1)
        elif kl.dim() != 1:
            raise ValueError(f"FreeBits(per_dimension=False) needs the KL as [batch, latent_dim] or [batch]; "
                             f"got shape {tuple(kl.shape)}")
        return torch.where(kl.mean() > self.nats, kl, torch.full_like(kl, self.nats))
