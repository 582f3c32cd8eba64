"""The paper's modules behind our protocols: its ``LSTMEncoder`` / ``LSTMDecoder`` objects (built by
:func:`benchmarks.core.reference.paper_vae` from the checkout the user names) wrapped so that
:class:`aggressive_vi.VAE` and the trainer run them as they run any user's modules.

A benchmark that times the paper's update on the paper's modules and ours on these wrappers measures
the library's update, not a difference between two implementations of the model.

* :class:`PaperEncoder`: ``encoder(x) -> (mean, logvar)`` (:class:`aggressive_vi.protocols.Encoder`),
  the paper's ``forward``.
* :class:`PaperDecoder`: ``decoder.log_prob(x, z) -> [batch, n_samples]``
  (:class:`aggressive_vi.protocols.Decoder`), the paper's ``log_probability``.
* :func:`protocol_vae`: our ``VAE`` of the two, sharing the paper model's parameters.
* :func:`load_into_paper`: load one of our models' weights (``examples.text.models``, whose parameter
  names are the paper's) into the paper's modules, e.g. to run the paper's ``nll_iw`` on a model we
  trained; :func:`load_from_paper` the other way, e.g. to start ours from the paper's initial weights.

The paper's text modules batch sentences of one length (its ``create_data_batch``): they do not mask
padding, so feed them batches without padding.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Tuple

import torch
from torch import nn

from aggressive_vi import VAE

__all__ = ["PaperEncoder", "PaperDecoder", "protocol_vae", "load_into_paper", "load_from_paper"]


class PaperEncoder(nn.Module):
    """The paper's encoder (``forward(x) -> (mean, logvar)``, each ``[batch, nz]``) as our ``Encoder``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.net = encoder
        self.latent_dim = int(getattr(encoder, "nz"))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.net(x)
        return mean, logvar


class PaperDecoder(nn.Module):
    """The paper's decoder (``log_probability(x, z) -> [batch, n_samples]``) as our ``Decoder``."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.net: Any = decoder

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net.log_probability(x, z)


def protocol_vae(paper: Any) -> VAE:
    """Our :class:`~aggressive_vi.VAE` around the paper's ``VAE``'s encoder and decoder (the same
    parameter objects: a step of either moves both)."""
    return VAE(PaperEncoder(paper.encoder), PaperDecoder(paper.decoder))


def _networks(paper: Any, ours: Any) -> Iterator[Tuple[nn.Module, nn.Module, Dict[str, torch.Tensor]]]:
    """``(our network, the paper's, the paper's state)`` for the encoders, then the decoders.

    Raises:
        KeyError: a parameter of ours has no counterpart of the same name and shape in the paper's.
    """
    for mine, theirs in ((ours.encoder, paper.encoder), (ours.decoder, paper.decoder)):
        state = theirs.state_dict()
        missing = [k for k, v in mine.state_dict().items() if k not in state or state[k].shape != v.shape]
        if missing:
            raise KeyError(f"the paper's {type(theirs).__name__} has no parameters {missing} of our shapes")
        yield mine, theirs, state


def load_into_paper(paper: Any, ours: Any) -> None:
    """Copy ``ours``' encoder and decoder weights into the paper's (``ours`` has the paper's parameter
    names, as ``examples.text.models`` does; the paper's own buffers, e.g. its loss's class weights,
    are kept).

    Raises:
        KeyError: a parameter of ours has no counterpart of the same shape in the paper's module.
    """
    for mine, theirs, state in _networks(paper, ours):
        state.update(mine.state_dict())
        theirs.load_state_dict(state)


def load_from_paper(paper: Any, ours: Any) -> None:
    """Copy the paper's encoder and decoder weights into ``ours`` (which has the paper's parameter
    names, as ``examples.text.models`` does: ``embed``, ``lstm``, ``linear``; ``embed``,
    ``trans_linear``, ``lstm``, ``pred_linear``); the paper's tensors that ours lacks are left out.

    Raises:
        KeyError: a parameter of ours has no counterpart of the same shape in the paper's module.
    """
    for mine, _, state in _networks(paper, ours):
        mine.load_state_dict({k: state[k] for k in mine.state_dict()})
