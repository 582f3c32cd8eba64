"""Our side: ``examples.text.models`` with the reference's initial weights, trained by
``aggressive_vi.AggressiveTrainer`` and evaluated by ``aggressive_vi.estimators.iw_nll``.

Set up as the paper's loop is: SGD lr 1.0 (no momentum) for both networks, gradient norm clipped at
5, KL weight 1, dropout 0.5 on the decoder's input and output, window 15 and at most 99 inner steps
(the paper's ``while sub_iter < 100``), further inner batches drawn uniformly with replacement.
What differs is the library's documented behaviour: inner steps compute no decoder gradients and
clip the encoder's norm only; the window loss is per sentence (the paper's: per word).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch

from aggressive_vi import VAE, AggressiveTrainer, Always, ConstantKL, estimators
from benchmarks.parity.batches import RandomBatches, ShuffledBatches
from examples.text.models import LSTMDecoder, LSTMEncoder

from .reference import CLIP, MAX_SUB_ITER, WINDOW
from .sizes import Size

__all__ = ["build_ours", "make_trainer", "our_epoch", "our_iw_nll"]


def build_ours(size: Size) -> VAE:
    """Our LSTM VAE at ``size`` (weights to be copied from the reference with
    :func:`benchmarks.core.paper_modules.load_from_paper`)."""
    enc = LSTMEncoder(size.vocab_size, size.embed_dim, size.hidden_dim, size.latent_dim)
    dec = LSTMDecoder(size.vocab_size, size.embed_dim, size.hidden_dim, size.latent_dim,
                      dropout_in=0.5, dropout_out=0.5)
    return VAE(enc, dec)


def make_trainer(vae: VAE, aggressive: bool, fixed_steps: int = 0) -> AggressiveTrainer:
    """A trainer as the paper's loop is set up; ``fixed_steps > 0``: exactly that many inner steps per
    update (the window is made longer than the cap, so the window test never runs)."""
    window, cap = (fixed_steps + 1, fixed_steps) if fixed_steps else (WINDOW, MAX_SUB_ITER - 1)
    return AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=1.0, momentum=0),
                             torch.optim.SGD(vae.decoder.parameters(), lr=1.0, momentum=0),
                             stopping=Always(), kl_schedule=ConstantKL(1.0), aggressive=aggressive,
                             window=window, max_inner_steps=cap, clip_grad_norm=CLIP)


def our_epoch(trainer: AggressiveTrainer, batches: Sequence[torch.Tensor], seed: int = 0) -> Dict[str, Any]:
    """One ``fit`` epoch over ``batches`` in a random order; returns ``{"inner_steps": total}``."""
    history = trainer.fit(ShuffledBatches(batches, seed), epochs=trainer.epoch + 1,
                          inner_loader=RandomBatches(batches, seed + 1))
    record = history[-1]
    return {"inner_steps": int(round(record.inner_steps_mean * len(batches)))}


def our_iw_nll(vae: VAE, sentences: torch.Tensor, n_samples: int, batch_size: int,
               max_rows: Optional[int] = None) -> float:
    """``estimators.iw_nll`` over ``sentences: [n, len]`` in batches of ``batch_size``; nats per sentence.
    ``max_rows=None``: the library's default (``"auto"``)."""
    batches = [sentences[i:i + batch_size] for i in range(0, sentences.shape[0], batch_size)]
    return estimators.iw_nll(vae, batches, n_samples=n_samples, chunk_size=min(100, n_samples),
                             max_rows="auto" if max_rows is None else max_rows).nll
