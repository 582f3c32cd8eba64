"""The inner loop's window test on ties: only a window loss strictly above the previous one ends it.

This is the paper's rule: its text code breaks out of the inner loop when ``pre_loss - cur_loss < 0``,
so a window that is exactly as good as the previous one lets the loop go on (and so does a NaN
comparison, e.g. two windows of infinite loss). Here the first window is compared with +inf.

The model makes every inner step's loss a known function of its batch alone: the decoder ignores z,
the encoder is N(0, I) for every x (KL 0), and both learning rates are 0.
"""
from typing import List

import pytest
import torch
from torch import nn

from aggressive_vi import VAE, AggressiveTrainer, Always

WINDOW, CAP = 4, 20


class ZDeafDecoder(nn.Module):
    """log p(x|z) = -sum(x^2) per example: [batch, n] for z [batch, n, latent_dim]."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -(x ** 2).sum(-1, keepdim=True).expand(-1, z.shape[1]) + 0 * self.w * z.sum(-1)


class StandardNormalEncoder(nn.Module):
    """q(z|x) = N(0, I) for every x: mean, logvar [batch, 2] of zeros; the KL term is 0."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor):
        out = self.p.expand(x.shape[0], 2)
        return out, out


class InnerSteps:
    """Records StepInfo.inner_steps of every decoder update."""

    def __init__(self) -> None:
        self.steps: List[int] = []

    def on_step_end(self, trainer, info) -> None:
        self.steps.append(info.inner_steps)


def run(values: List[float], **kwargs):
    """One decoder update whose inner step k (1-based) sees a batch of loss ``3 * values[k-1]**2``
    per example: the first step takes the training batch, each later one a fresh batch."""
    torch.manual_seed(0)
    vae = VAE(StandardNormalEncoder(), ZDeafDecoder())
    spy = InnerSteps()
    trainer = AggressiveTrainer(vae, torch.optim.SGD(vae.encoder.parameters(), lr=0.0),
                                torch.optim.SGD(vae.decoder.parameters(), lr=0.0), stopping=Always(),
                                window=WINDOW, max_inner_steps=CAP, callbacks=[spy], **kwargs)
    batches = [torch.full((2, 3), v) for v in values]
    history = trainer.fit(batches[:1], epochs=1, inner_loader=batches[1:])
    return spy.steps, history[0]


@pytest.mark.parametrize("windows,expected", [
    ([1.0] * 5, CAP),             # every window ties with the one before: the cap ends the loop
    ([1.0, 1.0, 1.1, 1.0, 1.0], 3 * WINDOW),  # a tie goes on; the rise in window 3 ends it there
    ([1.0, 0.9, 0.9, 0.95, 0.9], 4 * WINDOW),  # an improvement, a tie, then a rise
])
def test_a_tie_between_windows_does_not_end_the_inner_loop(windows, expected):
    values = [v for v in windows for _ in range(WINDOW)] + [1.0] * 10  # enough fresh batches
    steps, record = run(values)
    assert steps == [expected]
    assert record.skipped_inner_steps == 0


def test_windows_whose_steps_were_all_skipped_tie_at_inf_and_the_cap_ends_the_loop():
    # every loss is inf: each step is skipped, so each window's loss is inf, as is the first
    # reference; inf is not above inf (nor is NaN below 0 in the paper's test), so the loop runs on
    steps, record = run([float("inf")] * (CAP + 10), on_nonfinite="skip")
    assert steps == [CAP]
    assert record.skipped_inner_steps == CAP and record.skipped_batches == 1
