"""``VAE``: a user's encoder and decoder composed with a standard normal prior.

All log densities are in nats. Shapes: ``x`` is ``[batch, ...]``; ``mean``/``logvar`` are
``[batch, latent_dim]``; ``z`` is ``[batch, n_samples, latent_dim]``; per-sample log densities are
``[batch, n_samples]``; per-example terms are ``[batch]``.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, ContextManager, NamedTuple, Optional, Tuple

import torch
from torch import nn

from ._impl.loaders import InputFn, extract_input
from .protocols import KLThreshold

__all__ = ["VAE", "ELBOTerms", "as_vae", "gaussian_kl_to_standard_normal", "gaussian_kl_per_dimension"]

_LOG_2PI = math.log(2.0 * math.pi)


class ELBOTerms(NamedTuple):
    """Per-example terms of the (weighted) negative ELBO, each ``[batch]``, in nats.

    ``loss`` is the training objective: ``reconstruction + kl_weight * kl``, or, on a model with a
    ``kl_threshold``, ``reconstruction + kl_weight * kl_threshold(KL per dimension)``.
    ``reconstruction = -E_q[log p(x|z)]`` (averaged over the ``n_samples`` draws) and
    ``kl = KL(q(z|x) || N(0, I))`` in closed form are always the true terms: the negative ELBO is
    ``reconstruction + kl``, whatever the loss.
    """

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def gaussian_kl_per_dimension(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) of each dimension: ``[batch, latent_dim]``, nats."""
    return 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1.0)


def gaussian_kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over the last dimension: ``[batch]``, nats."""
    return gaussian_kl_per_dimension(mean, logvar).sum(dim=-1)


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float32 when it is a lower-precision float (bf16, fp16), else unchanged."""
    return t.float() if t.is_floating_point() and t.element_size() < 4 else t


def full_precision(device_type: str) -> ContextManager[Any]:
    """Autocast switched off for ``device_type`` while it is on (else a no-op): the VAE's own
    arithmetic on z and q (sampling, log densities, KL) runs in at least float32."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of {len(value)} elements"
    return type(value).__name__


def _batch_size(x: Any) -> Optional[int]:
    """The leading dimension of ``x`` when it is a tensor, else ``None`` (no check possible)."""
    return x.shape[0] if isinstance(x, torch.Tensor) and x.dim() > 0 else None


class VAE(nn.Module):
    """A VAE made of any encoder/decoder pair that meets the protocols.

    Args:
        encoder: module with ``encoder(x) -> (mean, logvar)``, each ``[batch, latent_dim]``.
        decoder: module with ``decoder.log_prob(x, z) -> [batch, n_samples]`` for ``z`` of shape
            ``[batch, n_samples, latent_dim]`` (log p(x|z) in nats, summed over one example).
        get_input: ``batch -> x``, how the model's input is taken from a loader batch, for every
            consumer (trainer, Lightning callback, estimators, metrics). Default: the batch itself when
            it is a tensor, its first element when it is a tuple/list, ``batch["x"]`` when it is a
            dict; e.g. ``get_input=lambda b: (b["input_ids"], b["attention_mask"])`` for a Hugging
            Face batch. A module that is not a ``VAE`` may define a ``get_input`` method instead.
        kl_threshold: what the training loss uses in place of the KL term (default ``None``: the KL
            itself), e.g. :class:`~aggressive_vi.FreeBits` ``(0.25)``; any
            :class:`~aggressive_vi.protocols.KLThreshold`. It changes ``ELBOTerms.loss`` only; the
            reported KL, ELBO and every estimator stay the true ones (see :mod:`aggressive_vi.free_bits`
            for why it lives on the model).

    The prior is N(0, I). Every call checks the shapes the user's modules return, so a mistake in a
    custom module fails with a message that names it instead of broadcasting silently.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, *, get_input: Optional[InputFn] = None,
                 kl_threshold: Optional[KLThreshold] = None) -> None:
        super().__init__()
        if get_input is not None and not callable(get_input):
            raise TypeError(f"get_input must be callable, get_input(batch) -> model input; got "
                            f"{type(get_input).__name__}")
        if kl_threshold is not None and not callable(kl_threshold):
            raise TypeError(f"kl_threshold must be callable, kl_threshold(kl [batch, latent_dim]) -> [batch], "
                            f"e.g. FreeBits(0.25); got {type(kl_threshold).__name__}")
        self.get_input: InputFn = get_input if get_input is not None else extract_input
        self.kl_threshold: Optional[KLThreshold] = kl_threshold
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be a torch.nn.Module; got {type(encoder).__name__}")
        if not isinstance(decoder, nn.Module):
            raise TypeError(f"decoder must be a torch.nn.Module; got {type(decoder).__name__}")
        if not callable(getattr(decoder, "log_prob", None)):
            raise TypeError(
                f"decoder must have a method log_prob(x, z) -> [batch, n_samples]; "
                f"{type(decoder).__name__} has none"
            )
        self.encoder = encoder
        self.decoder = decoder

    # ------------------------------------------------------------------ posterior q(z|x)
    def encode(self, x: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the encoder and check its output.

        Returns:
            ``(mean, logvar)``, each ``[batch, latent_dim]``.

        Raises:
            TypeError: the encoder did not return a pair of tensors.
            ValueError: ``mean`` and ``logvar`` differ in shape, are not 2-d, or their batch size is
                not the input's.
        """
        out = self.encoder(x)
        if not (isinstance(out, (tuple, list)) and len(out) == 2
                and all(isinstance(t, torch.Tensor) for t in out)):
            raise TypeError(
                "encoder(x) must return a tuple (mean, logvar) of two tensors, each "
                f"[batch, latent_dim]; got {_describe(out)}"
            )
        mean, logvar = out
        if mean.shape != logvar.shape:
            raise ValueError(
                "encoder(x) returned mean and logvar of different shapes: mean "
                f"{tuple(mean.shape)}, logvar {tuple(logvar.shape)}; expected both [batch, latent_dim]"
            )
        if mean.dim() != 2:
            raise ValueError(
                f"encoder(x) returned mean of shape {tuple(mean.shape)}; expected [batch, latent_dim]"
            )
        batch = _batch_size(x)
        if batch is not None and mean.shape[0] != batch:
            raise ValueError(
                f"encoder(x) returned mean of shape {tuple(mean.shape)} for an input of batch size "
                f"{batch}; expected [{batch}, latent_dim]"
            )
        return mean, logvar

    @staticmethod
    def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
        """Draw ``z = mean + std * eps``: ``[batch, n_samples, latent_dim]`` (differentiable).

        At least float32, also under autocast (a bf16 eps moves log q(z|x) by about half a nat)."""
        with full_precision(mean.device.type):
            mean, logvar = at_least_fp32(mean), at_least_fp32(logvar)
            std = (0.5 * logvar).exp()
            eps = torch.randn(
                (mean.shape[0], n_samples, mean.shape[1]), dtype=mean.dtype, device=mean.device
            )
            return mean.unsqueeze(1) + std.unsqueeze(1) * eps

    def sample_posterior(self, x: Any, n_samples: int = 1) -> torch.Tensor:
        """Samples from q(z|x): ``[batch, n_samples, latent_dim]``."""
        mean, logvar = self.encode(x)
        return self.reparameterize(mean, logvar, n_samples)

    @staticmethod
    def log_q_given(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """log q(z|x) for ``z: [batch, n, latent_dim]`` given q's ``mean, logvar: [batch, latent_dim]``.

        Returns ``[batch, n]`` in nats.
        """
        with full_precision(z.device.type):
            z, mean, logvar = at_least_fp32(z), at_least_fp32(mean).unsqueeze(1), at_least_fp32(logvar).unsqueeze(1)
            sq = (z - mean).pow(2) * (-logvar).exp()
            return -0.5 * (sq + logvar + _LOG_2PI).sum(dim=-1)

    def log_q(self, z: torch.Tensor, x: Any) -> torch.Tensor:
        """log q(z|x) for ``z: [batch, n_samples, latent_dim]``: ``[batch, n_samples]`` nats."""
        mean, logvar = self.encode(x)
        return self.log_q_given(z, mean, logvar)

    # ------------------------------------------------------------------ model p(x, z)
    @staticmethod
    def log_prior(z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) for ``z: [..., latent_dim]``: ``[...]`` nats (at least float32)."""
        with full_precision(z.device.type):
            z = at_least_fp32(z)
            return -0.5 * (z.pow(2) + _LOG_2PI).sum(dim=-1)

    def log_likelihood(self, x: Any, z: torch.Tensor) -> torch.Tensor:
        """The decoder's log p(x|z), checked: ``[batch, n_samples]`` nats."""
        if z.dim() != 3:
            raise ValueError(
                f"z must be [batch, n_samples, latent_dim]; got shape {tuple(z.shape)}"
            )
        out = self.decoder.log_prob(x, z)  # type: ignore[operator]  # a user module's method
        expected = tuple(z.shape[:2])
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            raise ValueError(
                "decoder.log_prob(x, z) must return log p(x|z) of shape [batch, n_samples] = "
                f"{list(expected)} for z of shape {tuple(z.shape)}; got {_describe(out)}"
            )
        return out

    def log_joint(self, x: Any, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log p(x|z) + log p(z): ``[batch, n_samples]`` nats."""
        return self.log_likelihood(x, z) + self.log_prior(z)

    # ------------------------------------------------------------------ objective
    def elbo(self, x: Any, kl_weight: float = 1.0, n_samples: int = 1) -> ELBOTerms:
        """Per-example terms of the negative ELBO and the training loss, each ``[batch]`` nats.

        ``loss = -E_q[log p(x|z)] + kl_weight * KL(q(z|x) || p(z))``, the expectation estimated with
        ``n_samples`` reparameterised draws, the KL in closed form; with a ``kl_threshold`` the loss's
        KL term is ``kl_threshold(KL per dimension)`` (the returned ``kl`` is still the true KL).
        ``kl_weight`` may be a float or a 0-d tensor.
        """
        mean, logvar = self.encode(x)
        return self.elbo_given(x, mean, logvar, kl_weight=kl_weight, n_samples=n_samples)

    def elbo_given(
        self,
        x: Any,
        mean: torch.Tensor,
        logvar: torch.Tensor,
        kl_weight: float = 1.0,
        n_samples: int = 1,
    ) -> ELBOTerms:
        """``elbo`` from an already computed q(z|x) (``mean, logvar: [batch, latent_dim]``).

        Raises:
            ValueError: the ``kl_threshold`` returned something other than a ``[batch]`` tensor.
        """
        z = self.reparameterize(mean, logvar, n_samples)
        reconstruction = -at_least_fp32(self.log_likelihood(x, z)).mean(dim=1)
        with full_precision(z.device.type):
            per_dimension = gaussian_kl_per_dimension(at_least_fp32(mean), at_least_fp32(logvar))
            kl = per_dimension.sum(dim=-1)
            trained = kl if self.kl_threshold is None else self._thresholded(per_dimension)
            return ELBOTerms(reconstruction + kl_weight * trained, reconstruction, kl)

    def _thresholded(self, per_dimension: torch.Tensor) -> torch.Tensor:
        """The ``kl_threshold``'s KL term for ``per_dimension: [batch, latent_dim]``, checked: ``[batch]``."""
        assert self.kl_threshold is not None
        out = self.kl_threshold(per_dimension)
        expected = (per_dimension.shape[0],)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            raise ValueError(
                f"kl_threshold {self.kl_threshold!r} must return the KL term per example, [batch] = "
                f"{list(expected)}, for a KL of shape {tuple(per_dimension.shape)}; got {_describe(out)}")
        return out

    def forward(self, x: Any, kl_weight: float = 1.0, n_samples: int = 1) -> ELBOTerms:
        """Same as :meth:`elbo`, so the VAE can be wrapped in ``DistributedDataParallel``."""
        return self.elbo(x, kl_weight=kl_weight, n_samples=n_samples)

    @property
    def latent_dim(self) -> Optional[int]:
        """The latent size when the encoder declares it (``latent_dim`` attribute), else ``None``."""
        value = getattr(self.encoder, "latent_dim", None)
        return int(value) if value is not None else None


def as_vae(model: nn.Module) -> VAE:
    """``model`` itself when it is a :class:`VAE`, else a VAE sharing its ``.encoder``/``.decoder``
    (and its ``get_input`` method, when it has one).

    Unwraps ``DistributedDataParallel``/``DataParallel`` (``.module``) first.

    Raises:
        TypeError: the model has no ``encoder`` or ``decoder`` module.
    """
    inner = getattr(model, "module", model) if not isinstance(model, VAE) else model
    if isinstance(inner, VAE):
        return inner
    encoder = getattr(inner, "encoder", None)
    decoder = getattr(inner, "decoder", None)
    if not isinstance(encoder, nn.Module) or not isinstance(decoder, nn.Module):
        raise TypeError(
            f"model must be a VAE or a module with .encoder and .decoder submodules; got "
            f"{type(model).__name__} (encoder: {type(encoder).__name__}, decoder: "
            f"{type(decoder).__name__})"
        )
    get_input = getattr(inner, "get_input", None)
    return VAE(encoder, decoder, get_input=get_input if callable(get_input) else None)
