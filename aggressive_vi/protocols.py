"""The seams where users plug in their own code, as structural ``typing`` Protocols.

Nothing here needs to be inherited from: any object with the right methods fits.

Shapes used throughout the library:

* ``x``: one minibatch of inputs, ``[batch, ...]``, of any dtype (token ids, binary pixels, floats).
* ``mean``, ``logvar``: parameters of the diagonal Gaussian q(z|x), each ``[batch, latent_dim]``.
* ``z``: latent samples, ``[batch, n_samples, latent_dim]``.
* log densities: ``[batch, n_samples]`` in nats, summed over the dimensions of one example.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from typing_extensions import Protocol, runtime_checkable

__all__ = [
    "Encoder",
    "Decoder",
    "KLSchedule",
    "KLThreshold",
    "StoppingCriterion",
    "TrainingEvent",
    "Trainer",
]


@runtime_checkable
class Encoder(Protocol):
    """An inference network: ``encoder(x) -> (mean, logvar)``, each ``[batch, latent_dim]``.

    ``logvar`` is the log-variance of the diagonal Gaussian q(z|x).
    """

    def __call__(self, x: Any) -> Tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class Decoder(Protocol):
    """A generative network with ``log_prob(x, z) -> [batch, n_samples]``.

    ``z`` is ``[batch, n_samples, latent_dim]``; the result is log p(x|z) in nats, summed over all the
    dimensions (pixels, tokens) of one example.
    """

    def log_prob(self, x: Any, z: torch.Tensor) -> torch.Tensor: ...


class KLSchedule(Protocol):
    """The weight of the KL term at a given decoder update.

    ``step`` counts decoder updates (outer iterations) from 0; ``steps_per_epoch`` is the number of
    minibatches in one pass over the training loader. A schedule is a pure function of these, so it
    needs no state to resume.
    """

    def __call__(self, step: int, steps_per_epoch: int) -> float: ...


class KLThreshold(Protocol):
    """What the training loss uses in place of the KL term (``VAE(..., kl_threshold=...)``).

    Called with ``kl``, KL(q(z|x) || N(0, I)) per example and latent dimension, ``[batch, latent_dim]``
    in nats, it returns the KL term of each example's loss, ``[batch]`` in nats; the loss is
    ``reconstruction + kl_weight * threshold(kl)``. Only the loss sees it: the reported KL and ELBO
    stay the true ones. Use tensor operations only (no ``.item()``, no Python branch on a tensor's
    value) so that the captured CUDA-graph inner step can run it. A stateless object, so nothing to
    checkpoint; its ``repr`` is recorded with a checkpoint's options and checked on resume.
    Example: :class:`~aggressive_vi.FreeBits`.
    """

    def __call__(self, kl: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class TrainingEvent:
    """What a stopping criterion sees.

    Attributes:
        epoch: 0-based epoch index.
        step: decoder updates taken so far (encoder-only inner steps are not counted).
        epoch_end: ``True`` when the event closes an epoch, ``False`` before a decoder update.
        metrics: at an epoch end, that epoch's record as a dict (``loss``, ``kl``, ``val_mi``, ...);
            empty after a single step.
    """

    epoch: int
    step: int
    epoch_end: bool
    metrics: Mapping[str, Any] = field(default_factory=dict)


class StoppingCriterion(Protocol):
    """Decides when the trainer leaves the aggressive phase for good.

    The trainer calls ``should_stop`` before every decoder update (``epoch_end=False``, ``step`` updates
    done so far) and at the end of every epoch (``epoch_end=True``, after validation metrics are computed), only while it is still
    aggressive. Returning ``True`` switches to basic VAE training.

    Optional members the trainer uses when present:

    * ``requires_validation: bool``: ``fit`` raises if no ``val_loader`` is given.
    * ``state_dict()`` / ``load_state_dict(state)``: saved with the trainer's checkpoint.
    """

    def should_stop(self, event: TrainingEvent) -> bool: ...


class Trainer(Protocol):
    """What a callback sees of the trainer (``AggressiveTrainer`` meets it).

    Attributes:
        model: the VAE being trained; ``enc_opt`` / ``dec_opt``: its two optimisers.
        epoch: epochs completed; ``step``: decoder updates taken (inner encoder steps not counted).
        is_aggressive: whether the trainer is still in the aggressive phase.
        steps_per_epoch: batches per epoch of the current ``fit``.
        stop_training: set it to ``True`` to end ``fit`` after the current update.
        last_checkpoint: the newest checkpoint a ``Checkpoint`` callback wrote, if any.
        at_step_boundary: ``False`` while a decoder update is under way.
        epoch_in_progress: an epoch has begun and not ended.
        history: the records of the epochs completed.
    """

    model: Any
    enc_opt: Any
    dec_opt: Any
    epoch: int
    step: int
    is_aggressive: bool
    steps_per_epoch: Optional[int]
    stop_training: bool
    last_checkpoint: Optional[str]
    at_step_boundary: bool
    history: Any

    @property
    def epoch_in_progress(self) -> bool: ...

    def state_dict(self) -> Dict[str, Any]: ...


def optional_state(obj: object) -> Optional[Dict[str, Any]]:
    """``obj.state_dict()`` when ``obj`` has one, else ``None``."""
    fn = getattr(obj, "state_dict", None)
    return fn() if callable(fn) else None
