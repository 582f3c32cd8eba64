"""How many rows (``batch x samples``) an estimator sends through the decoder per call.

An estimate that scores many z samples per example (the IW-NLL's 500, an ELBO with several draws)
draws them all at once and hands the decoder a slice of them at a time; how the samples are sliced
never changes the estimate. :class:`RowBound` chooses the slice:

* ``max_rows="auto"`` (the estimators' default): :data:`CPU_ROWS` on the CPU, where large calls fall
  out of the cache, and :data:`GPU_ROWS` on any other device, where large calls run fastest but a
  text decoder's logits (``[rows, length, vocabulary]``) grow with the rows. Under ``"auto"`` a call
  that runs out of device memory (``torch.OutOfMemoryError``) is retried with half the samples, and
  the bound remembers the smaller slice for the rest of its estimate.
* an int: at most that many rows per call, never changed (an out-of-memory error is the user's);
* ``None``: no bound (``chunk_size`` samples per call).

A call always scores at least one sample of every example: the batch itself is never split.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch

from .checks import positive_int

__all__ = ["CPU_ROWS", "GPU_ROWS", "RowBound", "rows_per_call"]

#: ``max_rows="auto"`` on the CPU: rows per decoder call. Measured with the paper's own LSTM modules
#: behind our protocols (vocabularies 1000 and 3000, hidden 50 and 128, 10 tokens): 64 rows ran
#: 1.5-1.8x faster per sentence than 1,600, whose activations fall out of the cache
#: (benchmarks/results/vs_paper_paper_modules_iw.json and docs/performance.md).
CPU_ROWS = 64

#: ``max_rows="auto"`` on a GPU (any device but the CPU): rows per decoder call before any
#: out-of-memory halving. A plain text decoder's peak is about 2.1 x (tokens - 1) x vocabulary x 4
#: bytes per row (its logits and their log-softmax at once): measured at the paper's text size
#: (vocabulary 20k), 1.75 MiB per row at 12 tokens and 6.2 MiB at 40, so 512 rows peak near 0.9 and
#: 3.1 GiB where one call of 32 sentences x 100 samples peaked at 5.5 GiB at 12 tokens
#: (benchmarks/results/iw-memory-record.md). Enough rows to fill a GPU's matrix units; not yet
#: timed on a GPU (``benchmarks.gpu`` sweeps the bound).
GPU_ROWS = 512

OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def rows_per_call(max_rows: Union[int, str, None], device: Optional[torch.device]) -> Optional[int]:
    """The bound on decoder rows per call that ``max_rows`` means on ``device``: ``"auto"`` is
    :data:`CPU_ROWS` on the CPU and :data:`GPU_ROWS` elsewhere; an int is itself; ``None``: no bound.

    Raises:
        ValueError: ``max_rows`` is neither ``"auto"``, ``None`` nor a positive int (named).
    """
    if max_rows == "auto":
        return CPU_ROWS if device is None or device.type == "cpu" else GPU_ROWS
    if max_rows is None:
        return None
    return positive_int("max_rows", max_rows)


class RowBound:
    """The slicing of one estimator's samples (see the module doc).

    Args:
        max_rows: ``"auto"``, a positive int, or ``None``.
        chunk_size: samples per call at most (e.g. the IW-NLL's 100).

    Attributes:
        halvings: how many times an out-of-memory error halved the slice (``"auto"`` only).
    """

    def __init__(self, max_rows: Union[int, str, None] = "auto", chunk_size: Optional[int] = None) -> None:
        if max_rows != "auto" and max_rows is not None and (
                isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
            raise ValueError(f"max_rows must be \"auto\", a positive int or None; got {max_rows!r}")
        self.max_rows = max_rows
        self.chunk_size = None if chunk_size is None else positive_int("chunk_size", chunk_size)
        self.halvings = 0
        self._learned: Optional[int] = None  # samples per call after an out-of-memory halving

    def samples_per_call(self, batch: int, n_samples: int, device: Optional[torch.device]) -> int:
        """Samples of every example per decoder call, for a ``[batch, n_samples, latent]`` draw."""
        cap = n_samples if self.chunk_size is None else min(self.chunk_size, n_samples)
        rows = rows_per_call(self.max_rows, device)
        if rows is not None:
            cap = min(cap, rows // max(1, batch))
        if self._learned is not None:
            cap = min(cap, self._learned)
        return max(1, cap)

    def score(self, fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """``fn`` applied to slices of ``z: [batch, n_samples, latent_dim]`` along the samples and
        concatenated: ``[batch, n_samples]``, as ``fn(z)`` would give in one call.

        Raises:
            torch.OutOfMemoryError: with an int or ``None`` bound, or at one sample per call.
        """
        n = z.shape[1]
        per_call = self.samples_per_call(z.shape[0], n, z.device)
        while True:
            try:
                return torch.cat([fn(z[:, start:start + per_call].contiguous()) for start in range(0, n, per_call)],
                                 dim=1)
            except OutOfMemory:
                if self.max_rows != "auto" or per_call == 1:
                    raise
            # outside the handler: the failed call's tensors are freed with its traceback
            per_call = max(1, per_call // 2)
            self._learned = per_call
            self.halvings += 1
