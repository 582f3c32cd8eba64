"""Batches as the reference makes them: sentences of exactly equal length, so no padding.

The reference sorts the sentences of a split by length and cuts each run of equal length into
batches of at most ``batch_size`` (so a split with many lengths has many small batches), visits the
training batches in a fresh random order every epoch, and draws the aggressive inner loop's extra
batches uniformly at random with replacement. These classes give our trainer the same stream.
"""
from __future__ import annotations

from typing import Iterator, List, Sequence

import torch

from examples.text.corpus import Vocab, pad_batch

__all__ = ["equal_length_batches", "ShuffledBatches", "RandomBatches"]


def equal_length_batches(ids: Sequence[Sequence[int]], batch_size: int) -> List[torch.Tensor]:
    """Group sentences (id lists without ``<s>``/``</s>``) by length, shortest first, into batches of
    at most ``batch_size``: a list of ``LongTensor [b, length + 2]`` (``<s>`` ... ``</s>``, no pad)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(ids) == 0:
        raise ValueError("ids is empty; expected at least one sentence")
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches: List[torch.Tensor] = []
    start = 0
    while start < len(order):
        length = len(ids[order[start]])
        stop = start
        while stop < len(order) and len(ids[order[stop]]) == length and stop - start < batch_size:
            stop += 1
        batches.append(pad_batch([ids[i] for i in order[start:stop]], Vocab.pad_id, Vocab.bos_id, Vocab.eos_id))
        start = stop
    return batches


class _SeededBatches:
    """A pass over ``batches`` in an order drawn by :meth:`_order` from its own seeded generator
    (the trainer saves and restores ``generator`` with the run's random state)."""

    def __init__(self, batches: Sequence[torch.Tensor], seed: int) -> None:
        if len(batches) == 0:
            raise ValueError("batches is empty")
        self.batches = list(batches)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in self._order().tolist():
            yield self.batches[i]

    def _order(self) -> torch.Tensor:
        raise NotImplementedError


class ShuffledBatches(_SeededBatches):
    """Every pass visits all ``batches`` once, in an order drawn from its own seeded generator."""

    def _order(self) -> torch.Tensor:
        return torch.randperm(len(self.batches), generator=self.generator)


class RandomBatches(_SeededBatches):
    """Every pass yields ``len(batches)`` batches drawn uniformly with replacement (the inner loop's)."""

    def _order(self) -> torch.Tensor:
        return torch.randint(len(self.batches), (len(self.batches),), generator=self.generator)
