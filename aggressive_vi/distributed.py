"""What the trainer and the estimators need under ``torch.distributed`` (launched with ``torchrun``).

Every function is a no-op (or returns the single-process answer) when no process group of more than
one process is initialised, so the same code runs with and without ``torchrun``.

Gradient synchronisation: encoder and decoder get **separate** ``DistributedDataParallel`` wrappers
(:func:`data_parallel`). One wrapper around the whole VAE cannot work here: in an inner step only the
encoder has gradients (the decoder's are not computed at all), and a single DDP reducer would wait for
the decoder's. With two wrappers, each training phase calls exactly the wrappers whose gradients it
computes (:class:`TrainingNetworks`):

=============  ============================  ============================
phase          encoder                       decoder
=============  ============================  ============================
inner step     DDP (gradients all-reduced)   plain module (no gradient)
decoder step   plain module, ``no_grad``     DDP (gradients all-reduced)
joint step     DDP                           DDP
=============  ============================  ============================

The model itself (``trainer.model``) is never modified: its ``state_dict`` has no ``module.``
prefixes, and checkpoints move freely between single-process and distributed runs.
"""
from __future__ import annotations

from typing import Any, List, Optional

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "is_distributed", "rank", "world_size", "is_main_process", "all_reduce_sum", "any_rank",
    "all_gather_object", "DistributedDecoder", "data_parallel", "unwrap", "TrainingNetworks",
    "collective_device", "check_collective_device",
]


def is_distributed() -> bool:
    """``True`` inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """``True`` on rank 0: the one process that writes files, logs and progress bars."""
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; returns it. Identity without a process group."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def collective_device() -> torch.device:
    """Where this rank's collectives stage their tensors: the current CUDA device under NCCL (which
    only moves CUDA tensors), else the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_collective_device(model_device: Optional[torch.device]) -> None:
    """Under NCCL, the model must live on the current CUDA device (``torch.cuda.set_device``).

    NCCL collectives, ``all_gather_object`` among them (checkpoints gather every rank's random
    state with it), stage their data on ``torch.cuda.current_device()``. Without
    ``torch.cuda.set_device(local_rank)`` every rank uses cuda:0, and saving hangs or fails.

    Raises:
        ValueError: naming the rank, the model's device, the current device and the fix.
    """
    if not is_distributed() or dist.get_backend() != "nccl":
        return
    current = torch.cuda.current_device()
    if model_device is None or model_device.type != "cuda" or (model_device.index or 0) != current:
        raise ValueError(
            f"under the NCCL backend rank {rank()}'s model is on {model_device} but "
            f"torch.cuda.current_device() is cuda:{current}: call "
            "torch.cuda.set_device(int(os.environ['LOCAL_RANK'])) and move the model there before "
            "building the trainer (NCCL collectives stage their data on the current device)"
        )


def any_rank(*flags: bool, device: Optional[torch.device] = None) -> List[bool]:
    """Each flag OR-ed over all ranks (one all-reduce of ``len(flags)`` numbers; none alone).
    ``device``: where to stage them (default :func:`collective_device`)."""
    if not is_distributed():
        return [bool(f) for f in flags]
    t = torch.tensor([float(bool(f)) for f in flags], device=device or collective_device())
    return [v > 0 for v in all_reduce_sum(t).tolist()]


def all_gather_object(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (pickled; a collective every rank must call)."""
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------- DDP wrappers
class _LogProbAsForward(nn.Module):
    """``forward(x, z) = decoder.log_prob(x, z)``: DDP synchronises only what runs in ``forward``."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, x: Any, z: torch.Tensor) -> torch.Tensor:
        return self.decoder.log_prob(x, z)  # type: ignore[operator]  # a user module's method


class DistributedDecoder(nn.Module):
    """A decoder whose ``log_prob`` runs through ``DistributedDataParallel``.

    Args:
        decoder: the user's decoder (``log_prob(x, z) -> [batch, n_samples]``).
        **ddp_kwargs: passed to ``DistributedDataParallel`` (e.g. ``device_ids=[local_rank]``,
            ``find_unused_parameters=True``, ``broadcast_buffers=False``).
    """

    def __init__(self, decoder: nn.Module, **ddp_kwargs: Any) -> None:
        super().__init__()
        self.ddp = nn.parallel.DistributedDataParallel(_LogProbAsForward(decoder), **ddp_kwargs)

    @property
    def module(self) -> nn.Module:
        """The user's decoder."""
        return self.ddp.module.decoder

    def log_prob(self, x: Any, z: torch.Tensor) -> torch.Tensor:
        return self.ddp(x, z)


def unwrap(module: nn.Module) -> nn.Module:
    """The user's module inside a ``DistributedDataParallel``/``DataParallel``/
    :class:`DistributedDecoder` wrapper (the module itself when unwrapped)."""
    while isinstance(module, (DistributedDecoder, nn.parallel.DistributedDataParallel,
                              nn.DataParallel)):
        module = module.module
    return module


def _is_wrapped(module: nn.Module) -> bool:
    return unwrap(module) is not module


def data_parallel(model: nn.Module, **ddp_kwargs: Any) -> nn.Module:
    """A VAE sharing ``model``'s encoder and decoder, each in its own DDP wrapper.

    Parameters are shared, not copied (DDP broadcasts rank 0's values into them on construction), so
    optimisers built over ``model.encoder.parameters()`` keep working. ``AggressiveTrainer`` calls this
    itself under an initialised process group; call it yourself only to pass ``ddp_kwargs`` and hand
    the result to the trainer.
    """
    from .model import VAE, as_vae  # model.py does not depend on this module; avoid a cycle

    vae = as_vae(model)
    encoder, decoder = vae.encoder, vae.decoder
    if not _is_wrapped(encoder):
        encoder = nn.parallel.DistributedDataParallel(encoder, **ddp_kwargs)
    if not _is_wrapped(decoder):
        decoder = DistributedDecoder(decoder, **ddp_kwargs)
    return VAE(encoder, decoder, kl_threshold=vae.kl_threshold)


class TrainingNetworks:
    """The VAE views each training phase runs (see the table in the module docstring).

    Without a process group (or with ``ddp=False``) and without wrappers, all three are the model
    itself. Under a process group (``ddp=None`` or ``True``) every network the user has not wrapped
    yet gets its DDP wrapper (:func:`data_parallel`); networks already wrapped are used as they are.

    Attributes:
        inner: VAE for inner steps (encoder synchronised, decoder plain).
        decoder: VAE for decoder steps (decoder synchronised; the encoder runs plain, under no_grad).
        joint: VAE for joint steps (both synchronised).
        plain: the unwrapped VAE.
        synchronised: whether any gradient is all-reduced.
    """

    def __init__(self, model: nn.Module, ddp: Optional[bool] = None) -> None:
        from .model import VAE, as_vae

        vae = as_vae(model)
        threshold = vae.kl_threshold  # every view trains the model's objective
        self.plain = VAE(unwrap(vae.encoder), unwrap(vae.decoder), kl_threshold=threshold)
        encoder, decoder = vae.encoder, vae.decoder
        if ddp is None:
            ddp = is_distributed()
        if ddp:
            if not _is_wrapped(encoder):
                encoder = nn.parallel.DistributedDataParallel(encoder)
            if not _is_wrapped(decoder):
                decoder = DistributedDecoder(decoder)
        self.synchronised = _is_wrapped(encoder) or _is_wrapped(decoder)
        if not self.synchronised:
            self.inner = self.decoder = self.joint = vae
            return
        self.joint = (vae if (encoder is vae.encoder and decoder is vae.decoder)
                      else VAE(encoder, decoder, kl_threshold=threshold))
        self.inner = VAE(encoder, self.plain.decoder, kl_threshold=threshold)
        self.decoder = VAE(self.plain.encoder, decoder, kl_threshold=threshold)
