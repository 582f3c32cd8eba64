"""The trainer leaves the aggressive phase when the validation MI really stops rising.

The encoder's posterior mean is ``scale * x``, with ``scale`` set by a callback at the start of every
epoch (its own weights are frozen: lr 0), so the validation MI of each epoch is chosen in advance:
it rises while the scale rises and falls when it falls. For x ~ N(0, 1) and q(z|x) = N(scale x, 0.25)
the MI is about 0.5 log(1 + 4 scale^2) nats: 0.35, 0.80, 1.15, 1.42, 1.81 for scales 0.5, 1, 1.5, 2, 3.
Over 200 seeds the paper's estimator on 512 validation examples in batches of 128 has a standard
deviation of at most 0.05 nats per epoch (0.047 at scale 0.5, 0.019 at scale 3), so the smallest step
between consecutive epochs below (0.26 nats) is more than 5 standard deviations of the difference,
and the first epoch's MI (0.35) lies 7 standard deviations above the starting reference of 0.
"""
import math
from typing import List, Tuple

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from aggressive_vi import VAE, AggressiveTrainer, MIPlateau
from conftest import LinearGaussianDecoder


class ScaledEncoder(nn.Module):
    """q(z|x) = N(scale * x + b, 0.25): x [batch, 1] -> mean, logvar [batch, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.scale = 1.0

    def forward(self, x: torch.Tensor):
        mean = self.scale * x + self.b
        return mean, torch.full_like(mean, math.log(0.25))


class Schedule:
    """Sets the encoder's scale for each epoch; records when the phase changed."""

    def __init__(self, scales: List[float]) -> None:
        self.scales = scales
        self.changes: List[Tuple[int, int]] = []

    def on_epoch_start(self, trainer, epoch) -> None:
        trainer.vae.encoder.scale = self.scales[epoch]

    def on_phase_change(self, trainer, step) -> None:
        self.changes.append((trainer.epoch, step))


def train(scales: List[float], stopping) -> Tuple[AggressiveTrainer, Schedule]:
    torch.manual_seed(0)
    vae = VAE(ScaledEncoder(), LinearGaussianDecoder(torch.ones(1, 1, dtype=torch.float64),
                                                     torch.zeros(1, dtype=torch.float64), 1.0))
    schedule = Schedule(scales)
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.0),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.01), stopping=stopping,
                                window=2, max_inner_steps=4, callbacks=[schedule])
    g = torch.Generator().manual_seed(1)
    train_x = torch.randn(64, 1, dtype=torch.float64, generator=g)
    val_x = torch.randn(512, 1, dtype=torch.float64, generator=g)
    trainer.fit(DataLoader(train_x, batch_size=32), val_loader=DataLoader(val_x, batch_size=128),
                epochs=len(scales))
    return trainer, schedule


def test_text_rule_switches_at_the_first_epoch_whose_mi_falls():
    # MI rises for epochs 0-3 and first falls in epoch 4
    trainer, schedule = train([0.5, 1.0, 2.0, 3.0, 1.0, 0.5], MIPlateau())
    mi = trainer.history.column("val_mi")
    assert 0 < mi[0] < mi[1] < mi[2] < mi[3] and mi[4] < mi[3]  # the data do what the test needs
    assert [r.aggressive for r in trainer.history] == [True] * 5 + [False]
    assert schedule.changes == [(4, 10)]  # at the end of epoch 4, after its 2 decoder updates
    assert [r.inner_steps_mean > 0 for r in trainer.history] == [True] * 5 + [False]


def test_image_rule_counts_failures_to_beat_the_best_mi():
    # best MI in epoch 2; epochs 3 and 4 both fall short of it although epoch 4 beats epoch 3: with
    # patience 2 the cumulative rule switches at the end of epoch 4
    trainer, schedule = train([0.5, 1.0, 3.0, 1.5, 2.0, 1.0, 1.0], MIPlateau(patience=2, cumulative=True))
    mi = trainer.history.column("val_mi")
    assert 0 < mi[0] < mi[1] < mi[2] and mi[3] < mi[4] < mi[2]
    assert [r.aggressive for r in trainer.history] == [True] * 5 + [False] * 2
    assert schedule.changes == [(4, 10)]
