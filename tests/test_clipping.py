"""Gradient clipping, seen from outside: the step an SGD optimiser applies is lr x the clipped gradient.

The model's gradients are known exactly, whatever z is drawn: the decoder's log p(x|z) = z.c + x.w is
linear in z, the encoder's q(z|x) = N(m, I) has a fixed variance, and the KL weight is 0. So

* every inner (encoder-only) step has the gradient -c with respect to m: norm |c|;
* every decoder step (and the decoder's half of a joint step) has -mean_batch(x) with respect to w;
* neither depends on the parameters, so each step is the same; SGD moves a network's parameters by
  exactly lr x (its part of the clipped gradient).

In inner and decoder steps the trainer clips, by default (``clip_scope="joint"``, the paper's rule),
the joint norm of both networks' gradients and steps one network; with ``clip_scope="network"`` it
clips the one network's gradient norm (no gradient of the other is computed). In a joint step (basic
training) it clips the joint norm of encoder and decoder gradients together either way.
"""
import math
from typing import List

import pytest
import torch
from torch import nn

from aggressive_vi import VAE, AggressiveTrainer, Always, ConstantKL

LR = 0.1
CLIP = 5.0
# torch.nn.utils.clip_grad_norm_ scales by max_norm / (norm + 1e-6): relative error < 1e-6 / 4 here
REL = 1e-6


class MeanOnlyEncoder(nn.Module):
    """q(z|x) = N(m, I) for every x: mean [batch, latent_dim] = m, logvar = 0 (not trained)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(latent_dim, dtype=torch.float64))

    def forward(self, x: torch.Tensor):
        mean = self.m.expand(x.shape[0], -1)
        return mean, torch.zeros_like(mean)


class LinearDecoder(nn.Module):
    """log p(x|z) = z.c + x.w (not a normalised density: only its gradients matter here).

    z: [batch, n, latent_dim], x: [batch, data_dim] -> [batch, n]."""

    def __init__(self, c: torch.Tensor, data_dim: int) -> None:
        super().__init__()
        self.register_buffer("c", c.to(torch.float64))
        self.w = nn.Parameter(torch.zeros(data_dim, dtype=torch.float64))

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z @ self.c + (x @ self.w).unsqueeze(1)


class RecordingSGD(torch.optim.SGD):
    """SGD that records the norm of the change each ``step`` makes to its parameters."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, lr=lr)
        self.changes: List[float] = []

    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"]]
        before = [p.detach().clone() for p in params]
        out = super().step(closure)
        self.changes.append(math.sqrt(sum(float((p.detach() - b).pow(2).sum())
                                          for p, b in zip(params, before))))
        return out


def make(c, data_value, data_dim=4, **kwargs):
    torch.manual_seed(0)
    c = torch.tensor(c, dtype=torch.float64)
    vae = VAE(MeanOnlyEncoder(len(c)), LinearDecoder(c, data_dim))
    enc_opt = RecordingSGD(vae.encoder.parameters(), LR)
    dec_opt = RecordingSGD(vae.decoder.parameters(), LR)
    trainer = AggressiveTrainer(vae, enc_opt, dec_opt, kl_schedule=ConstantKL(0.0), **kwargs)
    batches = [torch.full((2, data_dim), data_value, dtype=torch.float64) for _ in range(3)]
    return trainer, enc_opt, dec_opt, batches


@pytest.mark.parametrize("clip_scope", ["joint", "network"])
@pytest.mark.parametrize("clip", [CLIP, None])
def test_inner_and_decoder_steps_apply_lr_times_the_clipped_gradient(clip, clip_scope):
    # encoder gradient norm |c| = 12 > 5; decoder gradient -x.mean(0) = (-3, -3, -3, -3): norm 6 > 5;
    # jointly hypot(12, 6) = 13.4
    trainer, enc_opt, dec_opt, batches = make([7.2, 9.6], 3.0, stopping=Always(), window=2,
                                              max_inner_steps=4, clip_grad_norm=clip, clip_scope=clip_scope)
    trainer.fit(batches, epochs=1, inner_loader=batches * 10)
    assert len(dec_opt.changes) == 3 and len(enc_opt.changes) >= 3 * 4  # 2 windows at least per update
    if clip is None:
        enc_norm, dec_norm = 12.0, 6.0
    elif clip_scope == "network":  # each network's own norm clipped to 5
        enc_norm, dec_norm = CLIP, CLIP
    else:  # both scaled by 5 / the joint norm, whichever network steps
        enc_norm, dec_norm = 12.0 * CLIP / math.hypot(12.0, 6.0), 6.0 * CLIP / math.hypot(12.0, 6.0)
    assert enc_opt.changes == pytest.approx([LR * enc_norm] * len(enc_opt.changes), rel=REL)
    assert dec_opt.changes == pytest.approx([LR * dec_norm] * 3, rel=REL)
    # the direction is the gradient's: m moved along c, w along mean(x)
    steps = len(enc_opt.changes)
    along_c = torch.tensor([0.6, 0.8], dtype=torch.float64)  # c / |c|
    assert torch.allclose(trainer.vae.encoder.m.detach(), steps * LR * enc_norm * along_c, rtol=REL)
    each = 3 * LR * dec_norm / 2  # 3 decoder steps; the 4 equal components of a norm-dec_norm step
    assert torch.allclose(trainer.vae.decoder.w.detach(), torch.full((4,), each, dtype=torch.float64), rtol=REL)


@pytest.mark.parametrize("c,data_value", [
    ([2.4, 3.2], 2.0),   # encoder norm 4, decoder norm 4: each below 5, jointly sqrt(32) = 5.66 > 5
    ([3.6, 4.8], 0.5),   # encoder norm 6 > 5, decoder norm 1: jointly sqrt(37) = 6.08
])
@pytest.mark.parametrize("clip", [CLIP, None])
def test_joint_steps_clip_the_joint_norm_of_encoder_and_decoder_gradients(c, data_value, clip):
    trainer, enc_opt, dec_opt, batches = make(c, data_value, aggressive=False, clip_grad_norm=clip)
    trainer.fit(batches, epochs=1)
    enc_norm, dec_norm = math.hypot(*c), 2 * data_value  # |mean(x)| = data_value * sqrt(4)
    joint = math.hypot(enc_norm, dec_norm)
    scale = CLIP / joint if clip is not None else 1.0  # both scaled by the same factor
    assert enc_opt.changes == pytest.approx([LR * enc_norm * scale] * 3, rel=REL)
    assert dec_opt.changes == pytest.approx([LR * dec_norm * scale] * 3, rel=REL)
    if clip is not None:  # the joint step applied has norm exactly the clip value
        assert math.hypot(enc_opt.changes[0], dec_opt.changes[0]) == pytest.approx(LR * CLIP, rel=REL)
