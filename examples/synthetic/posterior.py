"""Where a data point sits in "posterior mean space" (He et al., ICLR 2019, section 3).

For a model with a scalar latent, each ``x`` maps to two numbers:

* the **model posterior mean** ``E_{p(z|x)}[z]``, with ``p(z|x) ∝ p(x|z) p(z)`` evaluated on a
  uniform grid over ``z`` (the paper: [-20, 20] in steps of 0.1) and normalised with ``logsumexp``
  (the grid spacing cancels);
* the **inference mean**, the mean of ``q(z|x)`` returned by the encoder.

When the inference network keeps up with the model, points lie on the diagonal.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

__all__ = ["z_grid", "model_posterior_mean", "inference_mean", "eval_mode"]


def z_grid(zmin: float = -20.0, zmax: float = 20.0, dz: float = 0.1) -> torch.Tensor:
    """A uniform grid including both ends: ``[K, 1]`` (K = 401 for the defaults)."""
    if not (math.isfinite(zmin) and math.isfinite(zmax) and zmax > zmin):
        raise ValueError(f"need finite zmin < zmax, got zmin={zmin}, zmax={zmax}")
    if not (math.isfinite(dz) and dz > 0):
        raise ValueError(f"dz must be a positive number, got {dz}")
    k = int(round((zmax - zmin) / dz)) + 1
    if k < 2:
        raise ValueError(f"dz={dz} leaves fewer than two grid points in [{zmin}, {zmax}]")
    return torch.linspace(zmin, zmax, k).unsqueeze(1)


class eval_mode:
    """Context manager: put ``module`` in eval mode (no dropout) and restore its mode after."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __enter__(self) -> torch.nn.Module:
        self.was_training = self.module.training
        self.module.eval()
        return self.module

    def __exit__(self, *exc: Any) -> None:
        self.module.train(self.was_training)


def _check_grid(grid: torch.Tensor) -> torch.Tensor:
    if not isinstance(grid, torch.Tensor) or grid.dim() != 2 or grid.shape[0] < 2:
        got = tuple(grid.shape) if isinstance(grid, torch.Tensor) else type(grid).__name__
        raise ValueError(f"grid must be a tensor [K >= 2, latent_dim], got {got}")
    return grid


@torch.no_grad()
def model_posterior_mean(model: Any, x: torch.Tensor, grid: Optional[torch.Tensor] = None, *,
                         max_sequences: int = 8192) -> torch.Tensor:
    """``E_{p(z|x)}[z]`` for every row of ``x`` by quadrature on ``grid``.

    Args:
        model: anything with ``log_joint(x, z) -> [batch, K]`` = log p(x|z) + log p(z) in nats for
            ``z: [batch, K, latent_dim]`` (an ``aggressive_vi.VAE``). It is used as it is: put it in
            eval mode first (see :class:`eval_mode`) if its decoder has dropout.
        x: ``[n, ...]`` inputs.
        grid: ``[K, latent_dim]`` evaluation points, default :func:`z_grid` ().
        max_sequences: at most this many (example, grid point) pairs go through ``log_joint`` at
            once; examples are processed in chunks of ``max(1, max_sequences // K)``.
    Returns:
        ``[n, latent_dim]``, the posterior mean of each example (same units as ``grid``).
    """
    grid = _check_grid(z_grid() if grid is None else grid)
    if isinstance(max_sequences, bool) or not isinstance(max_sequences, int) or max_sequences < 1:
        raise ValueError(f"max_sequences must be a positive integer, got {max_sequences!r}")
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError("x must be a tensor [n, ...] of inputs")
    chunk = max(1, max_sequences // grid.shape[0])
    means = []
    for xb in x.split(chunk):
        z = grid.to(dtype=torch.get_default_dtype()).unsqueeze(0).expand(xb.shape[0], -1, -1)
        log_joint = model.log_joint(xb, z)  # [b, K]
        if log_joint.shape != z.shape[:2]:
            raise ValueError(
                f"model.log_joint(x, z) returned shape {tuple(log_joint.shape)}; expected {tuple(z.shape[:2])}"
            )
        log_joint = log_joint.double()
        weights = (log_joint - torch.logsumexp(log_joint, dim=1, keepdim=True)).exp()  # p(z_k|x)
        means.append(weights @ grid.double())
    return torch.cat(means).to(grid.dtype)


@torch.no_grad()
def inference_mean(model: Any, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """The mean of q(z|x): ``model.encode(x)[0]`` in batches -> ``[n, latent_dim]``. Use it under
    :class:`eval_mode` if the encoder has dropout."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return torch.cat([model.encode(xb)[0] for xb in x.split(batch_size)])
