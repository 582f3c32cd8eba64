"""Estimators over a data loader: importance-weighted NLL, mutual information, active units, KL, ELBO.

Each is a pure function of ``(model, loader, options)``: it streams the loader batch by batch
(batched over examples and samples, no per-example Python loop), runs the model in eval mode under
``torch.no_grad`` and restores every submodule's train/eval mode afterwards. Under
``torch.distributed`` the per-rank sums are all-reduced, so every rank returns the number for the
union of the ranks' shards.

``model`` is a :class:`~aggressive_vi.model.VAE` or any module with ``.encoder``/``.decoder`` that
meet the protocols. All results are in nats.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Union

import torch
from torch import nn

from .batches import extract_input, model_device, move_to_device
from .distributed import all_reduce_sum
from .model import VAE, as_vae, gaussian_kl_to_standard_normal

__all__ = [
    "IWNLLResult",
    "ActiveUnits",
    "ELBOEstimate",
    "evaluation_mode",
    "iw_log_likelihood",
    "iw_nll",
    "batch_mutual_information",
    "mutual_information",
    "active_units",
    "kl",
    "elbo",
    "summary",
]


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``torch.no_grad`` inside; every submodule's previous mode restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


def _inputs(vae: VAE, loader: Iterable[Any]) -> Iterator[Any]:
    device = model_device(vae)
    seen = False
    for batch in loader:
        seen = True
        yield move_to_device(extract_input(batch), device)
    if not seen:
        raise ValueError("loader yielded no batch; expected a non-empty loader")


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


# ---------------------------------------------------------------------------- IW-NLL
@dataclass(frozen=True)
class IWNLLResult:
    """Importance-weighted negative log-likelihood over a data set.

    Attributes:
        nll: mean of -log p(x) over examples, nats per example.
        n_examples: examples evaluated (all ranks together).
        n_tokens: the total of ``count_tokens`` over examples when it was given, else ``None``.
    """

    nll: float
    n_examples: int
    n_tokens: Optional[int] = None

    @property
    def perplexity(self) -> Optional[float]:
        """``exp(sum of NLL / n_tokens)`` (per-token perplexity), ``None`` without token counts."""
        if self.n_tokens is None:
            return None
        return math.exp(self.nll * self.n_examples / self.n_tokens)

    def __float__(self) -> float:
        return self.nll


def iw_log_likelihood(
    model: nn.Module, x: Any, *, n_samples: int = 500, chunk_size: int = 100
) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) for one batch: ``[batch]``, nats.

    ``log p(x) ~= logsumexp_k [log p(x, z_k) - log q(z_k|x)] - log K`` with ``z_k ~ q(z|x)``,
    K = ``n_samples``, drawn ``chunk_size`` samples at a time to bound memory (the decoder sees
    ``z`` of shape ``[batch, chunk_size, latent_dim]``). A lower bound on log p(x) in expectation that
    tightens as K grows; exact for any K when q(z|x) is the true posterior. Does not change the model's
    mode or disable gradients: call inside :func:`evaluation_mode` (as :func:`iw_nll` does).
    """
    _check_positive("n_samples", n_samples)
    _check_positive("chunk_size", chunk_size)
    vae = as_vae(model)
    mean, logvar = vae.encode(x)
    log_w = []
    for start in range(0, n_samples, chunk_size):
        k = min(chunk_size, n_samples - start)
        z = vae.reparameterize(mean, logvar, k)
        log_w.append(vae.log_joint(x, z) - vae.log_q_given(z, mean, logvar))
    return torch.logsumexp(torch.cat(log_w, dim=1), dim=1) - math.log(n_samples)


def iw_nll(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    n_samples: int = 500,
    chunk_size: int = 100,
    count_tokens: Optional[Callable[[Any], Union[int, torch.Tensor]]] = None,
) -> IWNLLResult:
    """Importance-weighted NLL over a loader (the paper's reported likelihood), nats per example.

    Args:
        n_samples: importance samples per example (the paper uses 500).
        chunk_size: samples per decoder call; lower it to save memory.
        count_tokens: optional ``x -> number of tokens in the batch`` (for text: words plus
            end-of-sentence symbols) so that :attr:`IWNLLResult.perplexity` can be reported.
    """
    vae = as_vae(model)
    device = model_device(vae)
    total = torch.zeros(3, dtype=torch.float64, device=device)  # nll sum, examples, tokens
    with evaluation_mode(model):
        for x in _inputs(vae, loader):
            ll = iw_log_likelihood(vae, x, n_samples=n_samples, chunk_size=chunk_size)
            total[0] -= ll.double().sum()
            total[1] += ll.shape[0]
            if count_tokens is not None:
                total[2] += torch.as_tensor(count_tokens(x), dtype=torch.float64).sum().to(total)
    all_reduce_sum(total)
    nll_sum, count, tokens = total.tolist()
    return IWNLLResult(
        nll=nll_sum / count,
        n_examples=int(count),
        n_tokens=int(round(tokens)) if count_tokens is not None else None,
    )


# ---------------------------------------------------------------------------- mutual information
def batch_mutual_information(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The paper's minibatch estimate of I_q(x; z), a scalar tensor in nats.

    ``I = E_x E_q(z|x)[log q(z|x) - log q(z)]`` where the aggregate posterior q(z) is the mixture of
    the batch's B posteriors, ``q(z) = (1/B) sum_j q(z|x_j)``, with one sample z per x. The first term
    is the exact negative entropy of each Gaussian. Equals ``E_x KL(q(z|x)||p) - KL(q(z)||p)`` in
    expectation; it is at most log B, so it depends on the batch size.

    Args:
        mean, logvar: ``[batch, latent_dim]``.
    """
    batch, latent_dim = mean.shape
    neg_entropy = (-0.5 * latent_dim * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1)).mean()
    z = VAE.reparameterize(mean, logvar, 1).transpose(0, 1)  # [1, batch, latent_dim]
    # log q(z_i | x_j) for every pair: [batch (i, the sample), batch (j, the component)]
    log_density = VAE.log_q_given(z.expand(batch, -1, -1), mean, logvar).t()
    log_qz = torch.logsumexp(log_density, dim=1) - math.log(batch)
    return neg_entropy - log_qz.mean()


def mutual_information(model: nn.Module, loader: Iterable[Any]) -> float:
    """I_q(x; z) in nats: :func:`batch_mutual_information` averaged over batches, weighted by size.

    This is the paper's estimator (aggregate posterior = each minibatch's mixture). It is bounded by
    log(batch size), so compare values computed with the same batch size.
    """
    return summary(model, loader, terms=("mi",))["mi"]


# ---------------------------------------------------------------------------- active units
@dataclass(frozen=True)
class ActiveUnits:
    """Active latent units (Burda et al., 2016).

    Attributes:
        count: dimensions whose posterior-mean variance exceeds the threshold.
        variances: ``[latent_dim]`` unbiased variance over the data of E_q(z|x)[z_d].
        threshold: the threshold used.
    """

    count: int
    variances: torch.Tensor
    threshold: float

    def __int__(self) -> int:
        return self.count


def active_units(model: nn.Module, loader: Iterable[Any], *, threshold: float = 0.01) -> ActiveUnits:
    """Count the latent dimensions with ``Var_x(E_q(z|x)[z_d]) > threshold`` (paper: 0.01)."""
    result = summary(model, loader, terms=("au",), au_threshold=threshold)
    return result["au_detail"]


# ---------------------------------------------------------------------------- KL and ELBO
@dataclass(frozen=True)
class ELBOEstimate:
    """Data-set averages in nats per example: ``elbo = -(reconstruction + kl)``."""

    elbo: float
    reconstruction: float
    kl: float


def kl(model: nn.Module, loader: Iterable[Any]) -> float:
    """Mean KL(q(z|x) || N(0, I)) over the data, nats per example (closed form)."""
    return summary(model, loader, terms=("kl",))["kl"]


def elbo(model: nn.Module, loader: Iterable[Any], *, n_samples: int = 1) -> ELBOEstimate:
    """Mean ELBO over the data with ``n_samples`` reparameterised draws per example."""
    result = summary(model, loader, terms=("elbo",), n_samples=n_samples)
    return ELBOEstimate(result["elbo"], result["reconstruction"], result["kl"])


# ---------------------------------------------------------------------------- one pass, many terms
_TERMS = ("elbo", "kl", "mi", "au")


def summary(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    terms: Iterable[str] = _TERMS,
    au_threshold: float = 0.01,
    n_samples: int = 1,
) -> Dict[str, Any]:
    """Several estimates in one pass over the loader (what the trainer records every epoch).

    Args:
        terms: any of ``"elbo"`` (also gives ``reconstruction`` and ``kl``), ``"kl"``, ``"mi"``,
            ``"au"`` (gives ``au`` and ``au_detail``, an :class:`ActiveUnits`).

    Returns:
        A dict of floats (nats per example; ``au`` an int) for the requested terms, plus
        ``n_examples``.
    """
    wanted = set(terms)
    unknown = wanted - set(_TERMS)
    if unknown:
        raise ValueError(f"terms must be among {_TERMS}; got unknown {sorted(unknown)}")
    _check_positive("n_samples", n_samples)
    vae = as_vae(model)
    device = model_device(vae)
    # float64 running sums: count, kl, reconstruction, mi; then mean and mean^2 for active units
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    mean_sum: Optional[torch.Tensor] = None
    mean_sq_sum: Optional[torch.Tensor] = None
    with evaluation_mode(model):
        for x in _inputs(vae, loader):
            mean, logvar = vae.encode(x)
            batch = mean.shape[0]
            sums[0] += batch
            if "elbo" in wanted:
                terms_ = vae.elbo_given(x, mean, logvar, n_samples=n_samples)
                sums[1] += terms_.kl.double().sum()
                sums[2] += terms_.reconstruction.double().sum()
            elif "kl" in wanted:
                sums[1] += gaussian_kl_to_standard_normal(mean, logvar).double().sum()
            if "mi" in wanted:
                sums[3] += batch_mutual_information(mean, logvar).double() * batch
            if "au" in wanted:
                m = mean.double()
                if mean_sum is None:
                    mean_sum, mean_sq_sum = m.sum(0), m.pow(2).sum(0)
                else:
                    mean_sum += m.sum(0)
                    mean_sq_sum += m.pow(2).sum(0)  # type: ignore[operator]
    all_reduce_sum(sums)
    count = sums[0].item()
    out: Dict[str, Any] = {"n_examples": int(count)}
    if "elbo" in wanted or "kl" in wanted:
        out["kl"] = sums[1].item() / count
    if "elbo" in wanted:
        out["reconstruction"] = sums[2].item() / count
        out["elbo"] = -(out["reconstruction"] + out["kl"])
    if "mi" in wanted:
        out["mi"] = sums[3].item() / count
    if "au" in wanted:
        assert mean_sum is not None and mean_sq_sum is not None
        all_reduce_sum(mean_sum)
        all_reduce_sum(mean_sq_sum)
        if count < 2:
            raise ValueError(f"active_units needs at least 2 examples; the loader gave {int(count)}")
        variances = ((mean_sq_sum - mean_sum.pow(2) / count) / (count - 1)).clamp_min(0.0)
        detail = ActiveUnits(int((variances > au_threshold).sum().item()), variances.float().cpu(),
                             au_threshold)
        out["au"] = detail.count
        out["au_detail"] = detail
    return out
