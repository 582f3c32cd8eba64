"""Where training stands inside an epoch, and how to get back there after a crash.

Two pieces of state make a mid-epoch checkpoint exact:

* :class:`LoaderPosition`: an iterator over a data loader that remembers the random state at the
  moment it was created (a shuffling loader draws its permutation, and worker seeds, from it) and how
  many batches it has yielded. :meth:`LoaderPosition.replay` rebuilds the same iterator under the same
  random state and skips the batches already consumed, so the batches that follow are the ones the
  interrupted run would have seen. The requirement on the loader: given the same random state (the
  global torch/Python/NumPy generators and the loader's own ``generator``, all restored here) and the
  same ``sampler.set_epoch`` value, it yields the same batches in the same order. ``DataLoader`` with
  ``shuffle=True``, a seeded ``generator`` or a ``DistributedSampler`` all qualify; a loader that
  streams from a source whose order changes between runs does not. Skipping loads the skipped batches
  (it does not seek), so resuming late in a long epoch costs one pass over its first part.
* :class:`EpochProgress`: the running sums behind the epoch's :class:`~aggressive_vi.EpochRecord`.
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, Iterator, List, Optional

import torch

from .distributed import all_reduce_sum
from .history import EpochRecord
from .rng import loader_generators, rng_state, set_rng_state

__all__ = ["LoaderPosition", "EpochProgress", "set_sampler_epoch"]


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the loader's sampler and batch sampler when they have one
    (``DistributedSampler`` needs it for a new shuffle every epoch)."""
    seen: List[int] = []
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (sampler, batch_sampler, getattr(batch_sampler, "sampler", None)):
        if owner is not None and id(owner) not in seen and callable(getattr(owner, "set_epoch", None)):
            seen.append(id(owner))
            owner.set_epoch(epoch)


class LoaderPosition(Iterator[Any]):
    """An iterator over ``loader`` that knows how far it got and how to get back there.

    Args:
        loader: any iterable of batches.
        sampler_epoch: passed to ``set_epoch`` of the loader's sampler(s) before iterating.
    """

    def __init__(self, loader: Any, sampler_epoch: int) -> None:
        self.loader = loader
        self.sampler_epoch = sampler_epoch
        self.consumed = 0
        set_sampler_epoch(loader, sampler_epoch)
        self.random_state = rng_state(loader_generators(loader))
        self._it = iter(loader)

    def __next__(self) -> Any:
        batch = next(self._it)
        self.consumed += 1
        return batch

    def __iter__(self) -> "LoaderPosition":
        return self

    def state_dict(self) -> Dict[str, Any]:
        """Where the iterator stands (the same on every rank)."""
        return {"sampler_epoch": self.sampler_epoch, "consumed": self.consumed}

    @classmethod
    def replay(cls, loader: Any, state: Dict[str, Any], random_state: Dict[str, Any],
               what: str) -> "LoaderPosition":
        """Rebuild the iterator a checkpoint described and skip the batches it had consumed.

        Leaves the global random generators in the snapshot's state plus whatever iterating drew:
        the caller restores the run's current random state afterwards.

        Raises:
            ValueError: the loader ran out before reaching the saved position.
        """
        set_rng_state(random_state, loader_generators(loader))
        position = cls(loader, int(state["sampler_epoch"]))
        position.random_state = random_state
        target = int(state["consumed"])
        for _ in range(target):
            try:
                next(position)
            except StopIteration:
                raise ValueError(
                    f"{what} yielded {position.consumed} batches while resuming a checkpoint taken "
                    f"after {target} of them; on resume the loader must yield the same batches in "
                    "the same order (see docs/checkpointing.md)"
                ) from None
        return position


class EpochProgress:
    """Running totals of one epoch: what its :class:`~aggressive_vi.EpochRecord` is made of.

    ``sums`` holds the float64 sums over examples of loss, reconstruction and KL (nats) on the
    model's device; adding a batch does not sync with the host.
    """

    def __init__(self, epoch: int, began_aggressive: bool, device: Optional[torch.device]) -> None:
        self.epoch = epoch
        self.began_aggressive = began_aggressive
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.examples = 0
        self.batches = 0
        self.aggressive_steps = 0
        self.inner_total = 0
        self.skipped_batches = 0
        self.skipped_inner_steps = 0
        self.kl_weight = math.nan
        self.left_aggressive_at: Optional[int] = None  # decoder updates done at the phase switch
        self.elapsed_before = 0.0  # seconds spent in this epoch before a resume
        self._started = time.perf_counter()

    def add(self, loss: Optional[torch.Tensor], reconstruction: Optional[torch.Tensor],
            kl: Optional[torch.Tensor], *, inner_steps: int, aggressive: bool, kl_weight: float,
            skipped_inner: int) -> None:
        """Count one decoder (or joint) update; ``loss is None`` when the batch was skipped."""
        self.batches += 1
        self.kl_weight = kl_weight
        self.skipped_inner_steps += skipped_inner
        if aggressive:
            self.aggressive_steps += 1
            self.inner_total += inner_steps
        if loss is None or reconstruction is None or kl is None:
            self.skipped_batches += 1
            return
        self.examples += loss.shape[0]
        self.sums += torch.stack([loss.sum(), reconstruction.sum(), kl.sum()]).double()

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._started

    def record(self, val: Dict[str, Any]) -> EpochRecord:
        """The epoch's record; training sums are summed over ranks under ``torch.distributed`` so
        every rank records (and decides on) the same numbers."""
        totals = torch.cat([self.sums, self.sums.new_tensor([self.examples])])
        loss_sum, rec_sum, kl_sum, examples = all_reduce_sum(totals).tolist()
        mean = (lambda s: s / examples) if examples > 0 else (lambda s: math.nan)
        return EpochRecord(
            epoch=self.epoch, steps=self.batches, loss=mean(loss_sum),
            reconstruction=mean(rec_sum), kl=mean(kl_sum), kl_weight=self.kl_weight,
            aggressive=self.began_aggressive, aggressive_steps=self.aggressive_steps,
            inner_steps_mean=self.inner_total / self.aggressive_steps if self.aggressive_steps else 0.0,
            val_mi=val.get("mi"), val_au=val.get("au"), val_kl=val.get("kl"),
            val_elbo=val.get("elbo"), val_reconstruction=val.get("reconstruction"),
            skipped_batches=self.skipped_batches, skipped_inner_steps=self.skipped_inner_steps,
            left_aggressive_at=self.left_aggressive_at,
        )

    def state_dict(self) -> Dict[str, Any]:
        """Counters, the same on every rank (the sums are per rank: :meth:`local_state`)."""
        return {
            "epoch": self.epoch, "began_aggressive": self.began_aggressive,
            "batches": self.batches, "aggressive_steps": self.aggressive_steps,
            "inner_total": self.inner_total, "skipped_batches": self.skipped_batches,
            "skipped_inner_steps": self.skipped_inner_steps, "kl_weight": self.kl_weight,
            "left_aggressive_at": self.left_aggressive_at, "elapsed": self.elapsed,
        }

    def local_state(self) -> Dict[str, Any]:
        """This rank's running sums (they are reduced over ranks only when the epoch ends)."""
        return {"sums": self.sums.detach().cpu().clone(), "examples": self.examples}

    @classmethod
    def from_state(cls, state: Dict[str, Any], local: Dict[str, Any],
                   device: Optional[torch.device]) -> "EpochProgress":
        progress = cls(int(state["epoch"]), bool(state["began_aggressive"]), device)
        progress.sums = local["sums"].to(device=device, dtype=torch.float64).clone()
        progress.examples = int(local["examples"])
        for name in ("batches", "aggressive_steps", "inner_total", "skipped_batches",
                     "skipped_inner_steps"):
            setattr(progress, name, int(state[name]))
        progress.kl_weight = float(state["kl_weight"])
        left = state.get("left_aggressive_at")
        progress.left_aggressive_at = None if left is None else int(left)
        progress.elapsed_before = float(state["elapsed"])
        return progress
