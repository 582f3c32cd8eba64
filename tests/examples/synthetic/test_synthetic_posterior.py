"""Posterior mean by grid quadrature, against a conjugate model with a closed-form posterior,
and the snapshot callback."""
import math

import pytest
import torch
from torch import nn

from aggressive_vi import VAE
from examples.synthetic.posterior import eval_mode, inference_mean, model_posterior_mean, z_grid
from examples.synthetic.snapshots import (PosteriorMeanSnapshots, Snapshot, load_snapshots,
                                          save_snapshots)


class GaussianDecoder(nn.Module):
    """x_d ~ N(scale * z, sigma^2) for d = 1..D, scalar z: p(z|x) is Gaussian with mean
    scale * sum(x) / sigma^2 / (1 + D * scale^2 / sigma^2) under the N(0, 1) prior."""

    def __init__(self, sigma: float, scale: float = 1.0):
        super().__init__()
        self.sigma, self.scale = sigma, scale
        self.dummy = nn.Parameter(torch.zeros(()))
        self.dropout = nn.Dropout(0.5)

    def log_prob(self, x, z):  # x [b, D], z [b, n, 1] -> [b, n]
        mu = self.scale * z  # [b, n, 1]
        var = self.sigma ** 2
        return (-0.5 * (x.unsqueeze(1) - mu) ** 2 / var - 0.5 * math.log(2 * math.pi * var)).sum(-1)

    @staticmethod
    def closed_form_mean(x, sigma, scale=1.0):
        d = x.shape[1]
        return (scale * x.sum(1) / sigma ** 2) / (1 + d * scale ** 2 / sigma ** 2)


class LinearEncoder(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.linear = nn.Linear(d, 2)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        mean, logvar = self.linear(self.dropout(x)).chunk(2, dim=-1)
        return mean, logvar


def make_vae(d=3, sigma=1.0, scale=1.0):
    torch.manual_seed(0)
    return VAE(LinearEncoder(d), GaussianDecoder(sigma, scale))


def test_grid_matches_the_papers_grid():
    grid = z_grid()
    assert grid.shape == (401, 1)
    assert grid[0, 0] == -20.0 and grid[-1, 0] == 20.0
    assert torch.allclose(grid[1:] - grid[:-1], torch.full((400, 1), 0.1), atol=1e-5)
    with pytest.raises(ValueError, match="dz"):
        z_grid(dz=0.0)
    with pytest.raises(ValueError, match="zmin"):
        z_grid(1.0, -1.0)


@pytest.mark.parametrize("sigma, scale", [(1.0, 1.0), (0.5, 2.0), (3.0, 0.5)])
def test_posterior_mean_matches_the_conjugate_closed_form(sigma, scale):
    vae = make_vae(sigma=sigma, scale=scale)
    g = torch.Generator().manual_seed(1)
    x = 3.0 * torch.randn((64, 3), generator=g)
    got = model_posterior_mean(vae, x)  # [-20, 20] step 0.1
    want = GaussianDecoder.closed_form_mean(x, sigma, scale)
    assert got.shape == (64, 1)
    # the posterior std here is >= 0.16 and its mean within [-10, 10]: a 0.1 grid integrates a
    # Gaussian of that width to ~1e-10 relative error, so 1e-4 leaves room for float32 log-densities
    assert torch.allclose(got[:, 0], want, atol=1e-4)


def test_posterior_mean_is_independent_of_chunking():
    vae = make_vae()
    x = torch.randn(37, 3)
    a = model_posterior_mean(vae, x, max_sequences=1)  # one example at a time
    b = model_posterior_mean(vae, x, max_sequences=10 ** 6)  # all at once
    assert torch.allclose(a, b, atol=1e-6)


def test_posterior_mean_rejects_a_bad_log_joint():
    class Bad:
        def log_joint(self, x, z):
            return torch.zeros(x.shape[0])

    with pytest.raises(ValueError, match="log_joint"):
        model_posterior_mean(Bad(), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="grid"):
        model_posterior_mean(make_vae(), torch.zeros(2, 3), torch.zeros(5))


def test_inference_mean_is_the_encoder_mean_and_eval_mode_restores():
    vae = make_vae()
    x = torch.randn(10, 3)
    vae.train()
    with eval_mode(vae):
        assert not vae.training and not vae.encoder.dropout.training
        got = inference_mean(vae, x, batch_size=3)
        assert torch.allclose(got, vae.encoder.linear(x)[:, :1], atol=1e-6)
    assert vae.training and vae.encoder.dropout.training


class FakeTrainer:
    step, epoch, is_aggressive = 0, 0, True


class Info:
    def __init__(self, step, aggressive):
        self.step, self.epoch, self.aggressive = step, 0, aggressive


def test_snapshot_callback_records_every_n_steps_in_eval_mode_without_touching_rng(tmp_path):
    vae = make_vae()
    x = torch.randn(20, 3)
    cb = PosteriorMeanSnapshots(vae, x, every=3)
    vae.train()
    torch.manual_seed(5)
    before = torch.get_rng_state()
    cb.on_fit_start(FakeTrainer())
    for step in range(1, 11):
        cb.on_step_end(FakeTrainer(), Info(step, aggressive=step < 5))
    assert torch.equal(torch.get_rng_state(), before)  # recording draws no random numbers
    assert vae.training  # mode restored
    assert [s.step for s in cb.snapshots] == [0, 3, 6, 9]
    assert [s.aggressive for s in cb.snapshots] == [True, True, False, False]
    # nothing trained between snapshots, and dropout is off: all four are identical and exact
    want_model = GaussianDecoder.closed_form_mean(x, 1.0).tolist()
    want_infer = vae.encoder.linear(x)[:, 0].tolist()
    for snap in cb.snapshots:
        assert snap.model_mean == pytest.approx(want_model, abs=1e-4)
        assert snap.inference_mean == pytest.approx(want_infer, abs=1e-6)

    path = tmp_path / "snaps.json"
    save_snapshots(str(path), {"basic": cb.snapshots}, meta={"seed": 1})
    loaded = load_snapshots(str(path))
    assert loaded["meta"] == {"seed": 1}
    assert loaded["runs"]["basic"] == cb.snapshots and isinstance(loaded["runs"]["basic"][0], Snapshot)


def test_snapshot_callback_validates_arguments():
    with pytest.raises(ValueError, match="every"):
        PosteriorMeanSnapshots(make_vae(), torch.zeros(2, 3), every=0)
    with pytest.raises(ValueError, match="x"):
        PosteriorMeanSnapshots(make_vae(), torch.zeros(0, 3))


def test_snapshot_callback_stops_after_until_and_adds_the_last_update_at_fit_end():
    vae = make_vae()
    x = torch.randn(4, 3)
    limited = PosteriorMeanSnapshots(vae, x, every=1, until=3)
    closing = PosteriorMeanSnapshots(vae, x, every=4)
    for cb in (limited, closing):
        cb.on_fit_start(FakeTrainer())
        for step in range(1, 11):
            cb.on_step_end(FakeTrainer(), Info(step, aggressive=True))
        cb.on_fit_end(FakeTrainer())
    assert [s.step for s in limited.snapshots] == [0, 1, 2, 3]
    assert [s.step for s in closing.snapshots] == [0, 4, 8, 10]
    with pytest.raises(ValueError, match="until"):
        PosteriorMeanSnapshots(vae, x, until=-1)
