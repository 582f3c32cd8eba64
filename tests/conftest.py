"""Shared fixtures: tiny models that meet the protocols, and a linear-Gaussian model with a closed form.

Tests run with one intra-op thread (the ``one_thread`` fixture, for every test under ``tests/``): the
models are tiny, and on a shared 2-core machine a second thread only adds contention (one image
sampling call was >50x slower with two).
"""
from __future__ import annotations

from typing import List, Tuple

import pytest
import torch
from torch import nn

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for each test, restored after it (a CLI under test may change it)."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


class MLPEncoder(nn.Module):
    """x: [batch, data_dim] -> (mean, logvar): [batch, latent_dim] each."""

    def __init__(self, data_dim: int = 6, hidden: int = 16, latent_dim: int = 2) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(nn.Linear(data_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent_dim))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.net(x).chunk(2, dim=-1)
        return mean, logvar


class BernoulliDecoder(nn.Module):
    """log p(x|z) of binary x: [batch, data_dim] under Bernoulli logits from an MLP of z."""

    def __init__(self, data_dim: int = 6, hidden: int = 16, latent_dim: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, data_dim))

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        logits = self.net(z)  # [batch, n, data_dim]
        target = x.unsqueeze(1).expand_as(logits)
        return -nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)


def binary_data(n: int, data_dim: int = 6, seed: int = 0) -> torch.Tensor:
    """Binary vectors from 4 prototypes with 10% of bits flipped: [n, data_dim] float."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(4, data_dim, generator=g) > 0.5).float()
    idx = torch.randint(0, 4, (n,), generator=g)
    flips = (torch.rand(n, data_dim, generator=g) < 0.1).float()
    return (protos[idx] - flips).abs()


class LinearGaussianDecoder(nn.Module):
    """p(x|z) = N(x; W z + b, s^2 I): with a N(0, I) prior, p(x) = N(b, W W^T + s^2 I) exactly."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor, s: float) -> None:
        super().__init__()
        self.W = nn.Parameter(W.clone())
        self.b = nn.Parameter(b.clone())
        self.s = s

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        mean = z @ self.W.T + self.b  # [batch, n, data_dim]
        return torch.distributions.Normal(mean, self.s).log_prob(x.unsqueeze(1)).sum(-1)

    def exact_log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.W @ self.W.T + self.s ** 2 * torch.eye(self.W.shape[0], dtype=self.W.dtype)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def exact_posterior(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A, c, var) with posterior mean A x + c and covariance diag(var) (W has orthogonal columns)."""
        k = self.W.shape[1]
        precision = torch.eye(k, dtype=self.W.dtype) + self.W.T @ self.W / self.s ** 2
        cov = torch.linalg.inv(precision)
        A = cov @ self.W.T / self.s ** 2
        return A, -A @ self.b, torch.diagonal(cov)


class AffineEncoder(nn.Module):
    """q(z|x) = N(A x + c, diag(exp(logvar))): with the right A, c, logvar, the exact posterior."""

    def __init__(self, A: torch.Tensor, c: torch.Tensor, logvar: torch.Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A.clone())
        self.c = nn.Parameter(c.clone())
        self.logvar = nn.Parameter(logvar.clone())

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean = x @ self.A.T + self.c
        return mean, self.logvar.expand_as(mean)


def linear_gaussian(data_dim: int, latent_dim: int, s: float, seed: int = 0,
                    scales: List[float] = None) -> LinearGaussianDecoder:
    """A linear-Gaussian decoder in float64 whose W has orthogonal columns (diagonal posterior)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64))
    scale = torch.tensor(scales or [1.0 + i for i in range(latent_dim)], dtype=torch.float64)
    b = torch.randn(data_dim, generator=g, dtype=torch.float64)
    return LinearGaussianDecoder(q * scale, b, s)


@pytest.fixture
def mlp_pair():
    torch.manual_seed(0)
    return MLPEncoder(), BernoulliDecoder()
