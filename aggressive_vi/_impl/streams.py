"""The two batch streams of a run, each able to say where it is and to get back there.

* :class:`EpochStream`: the iterator over the training loader for one epoch.
* :class:`InnerStream`: the endless stream the inner loop draws its fresh batches from.

Both remember the random state at the moment a pass over the loader began (a shuffling loader draws
its permutation, and worker seeds, from it) and how many batches they have yielded. Replaying a
position rebuilds the pass under the same random state and skips the batches already consumed, so
the batches that follow are the ones the interrupted run would have seen. The requirement on the
loader: given the same random state (global torch/Python/NumPy generators and the loader's own
``generator``) and the same ``sampler.set_epoch`` value, it yields the same batches in the same
order. ``DataLoader`` with ``shuffle=True``, a seeded ``generator`` or a ``DistributedSampler`` all
qualify. Skipping loads the skipped batches (it does not seek).

Each stream's :meth:`state_dict` is the same on every rank (positions); :meth:`local_state_dict`
is this rank's (random snapshots).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, Optional

from .loaders import loader_generators, set_sampler_epoch
from .rng import rng_state, set_rng_state

__all__ = ["EpochStream", "InnerStream", "INNER_SAMPLER_EPOCH_BASE"]

#: Pass ``p`` of the inner stream calls ``set_epoch(INNER_SAMPLER_EPOCH_BASE + p)`` on the loader's
#: sampler, so a ``DistributedSampler`` shuffles it differently from the epochs.
INNER_SAMPLER_EPOCH_BASE = 10_000


class EpochStream(Iterator[Any]):
    """One pass over ``loader``; knows how many batches it has yielded.

    Args:
        loader: any iterable of batches.
        sampler_epoch: passed to ``set_epoch`` of the loader's sampler(s) before iterating.
    """

    def __init__(self, loader: Iterable[Any], sampler_epoch: int) -> None:
        self.loader = loader
        self.sampler_epoch = sampler_epoch
        self.consumed = 0
        set_sampler_epoch(loader, sampler_epoch)
        self.random_state = rng_state(loader_generators(loader))  # what the pass began with
        self._it = iter(loader)

    def __next__(self) -> Any:
        batch = next(self._it)
        self.consumed += 1
        return batch

    def __iter__(self) -> "EpochStream":
        return self

    def state_dict(self) -> Dict[str, Any]:
        return {"sampler_epoch": self.sampler_epoch, "consumed": self.consumed}

    def local_state_dict(self) -> Dict[str, Any]:
        return {"random": self.random_state}

    @classmethod
    def replay(cls, loader: Iterable[Any], state: Dict[str, Any], local: Dict[str, Any],
               what: str) -> "EpochStream":
        """Rebuild the pass ``state``/``local`` describe and skip the batches it had consumed.

        Leaves the global random generators as the pass left them: the caller restores the run's
        current random state afterwards.

        Raises:
            ValueError: the loader ran out before reaching the saved position (``what`` names it).
        """
        set_rng_state(local["random"], loader_generators(loader))
        stream = cls(loader, int(state["sampler_epoch"]))
        stream.random_state = local["random"]
        target = int(state["consumed"])
        for _ in range(target):
            try:
                next(stream)
            except StopIteration:
                raise ValueError(
                    f"{what} yielded {stream.consumed} batches while resuming a checkpoint taken "
                    f"after {target} of them; on resume the loader must yield the same batches in "
                    "the same order (see docs/checkpointing.md)"
                ) from None
        return stream


class InnerStream(Iterator[Any]):
    """An endless stream of minibatches from a loader, re-iterated (re-shuffled) when exhausted.

    The aggressive inner loop draws its fresh batches from here, independent of the epoch's
    iterator. Its position is the number of passes begun and the current pass's
    :class:`EpochStream` position.
    """

    def __init__(self, loader: Iterable[Any]) -> None:
        self.loader = loader
        self.passes = 0
        self.current: Optional[EpochStream] = None

    def __next__(self) -> Any:
        for _ in range(2):
            if self.current is None:
                self.current = EpochStream(self.loader, INNER_SAMPLER_EPOCH_BASE + self.passes)
                self.passes += 1
            try:
                return next(self.current)
            except StopIteration:
                self.current = None
        raise ValueError("inner_loader yielded no batch; expected a non-empty loader")

    def __iter__(self) -> "InnerStream":
        return self

    def state_dict(self) -> Dict[str, Any]:
        return {"passes": self.passes,
                "current": self.current.state_dict() if self.current is not None else None}

    def local_state_dict(self) -> Dict[str, Any]:
        return {"current": self.current.local_state_dict() if self.current is not None else None}

    @classmethod
    def replay(cls, loader: Iterable[Any], state: Dict[str, Any],
               local: Optional[Dict[str, Any]]) -> "InnerStream":
        """The stream at a saved position (``local``: this rank's random snapshot of the pass)."""
        stream = cls(loader)
        stream.passes = int(state["passes"])
        current_local = (local or {}).get("current")
        if state.get("current") is not None and current_local is not None:
            stream.current = EpochStream.replay(loader, state["current"], current_local,
                                                "the inner loop's loader")
        return stream
