"""Interleaved repetitions and their medians: :mod:`benchmarks.core.timing`, with the two sides of
this comparison named ``paper`` and ``ours`` in :func:`paired_steps`."""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Sequence

from ..core.timing import alternating, interleave, median, per_unit, ratio

__all__ = ["interleave", "paired_steps", "median", "ratio", "per_unit"]


def paired_steps(paper_step: Callable[[Any], Any], our_step: Callable[[Any], Any], batches: Sequence[Any],
                 n_steps: int, *, warmup: int = 2, clock: Callable[[], float] = time.process_time,
                 wall_clock: Callable[[], float] = time.perf_counter) -> Dict[str, Dict[str, List[float]]]:
    """One step of each side per batch, the order swapped every batch (P O, O P, P O, ...), over
    ``n_steps`` batches cycling through ``batches``; the first ``warmup`` pairs untimed.

    Returns:
        ``{"paper": {"seconds": [...], "wall": [...]}, "ours": {...}}``, one entry per timed step.

    Raises:
        ValueError: no batches, ``n_steps < 1`` or ``warmup`` not in ``[0, n_steps)``.
    """
    return alternating({"paper": paper_step, "ours": our_step}, batches, n_steps, warmup=warmup, clock=clock,
                       wall_clock=wall_clock)
