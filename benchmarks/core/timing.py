"""Interleaved timing, written once: the variants alternate (round by round, or call by call with the
order swapped every call), each from the same state, and medians are compared.

On a shared machine the load changes from second to second; running the variants in alternation and
comparing medians keeps a ratio honest. The clock is the process's CPU time by default
(``time.process_time``): with one intra-op thread it is the work's own time and, unlike wall time,
it does not count the moments other jobs held the core. Wall time is recorded beside it. A GPU
benchmark passes :func:`synced_clock` (wall time after a device synchronisation).
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

__all__ = ["interleave", "alternating", "medians", "median", "per_unit", "ratio", "ratios_to", "synced_clock"]

Clock = Callable[[], float]


def interleave(runs: Mapping[str, Callable[[], Any]], reps: int, *, warmup: int = 1,
               setup: Optional[Mapping[str, Callable[[], None]]] = None, clock: Clock = time.process_time,
               wall_clock: Clock = time.perf_counter) -> Dict[str, Dict[str, List[Any]]]:
    """Call every run of ``runs`` once per round, in the given order, for ``warmup`` untimed rounds
    then ``reps`` timed ones.

    Args:
        runs: ``{name: fn}``; ``fn()``'s return value is kept as the round's ``info``.
        reps: timed rounds (>= 1).
        warmup: untimed rounds first (>= 0).
        setup: ``{name: fn}`` called before that run every round, outside the timing (e.g. to load the
            initial weights again).
        clock: seconds of work (default ``time.process_time``, the process's CPU time; tests pass a fake).
        wall_clock: wall seconds, recorded as ``"wall"``.

    Returns:
        ``{name: {"seconds": [per round, by clock], "wall": [per round], "info": [per round]}}``.

    Raises:
        ValueError: ``runs`` empty, ``reps < 1``, ``warmup < 0`` or a ``setup`` name not in ``runs``.
    """
    if not runs:
        raise ValueError("runs is empty; expected at least one {name: fn}")
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    setup = dict(setup or {})
    unknown = sorted(set(setup) - set(runs))
    if unknown:
        raise ValueError(f"setup names {unknown} are not among the runs {sorted(runs)}")
    out: Dict[str, Dict[str, List[Any]]] = {name: {"seconds": [], "wall": [], "info": []} for name in runs}
    for round_ in range(warmup + reps):
        for name, fn in runs.items():
            if name in setup:
                setup[name]()
            wall, start = wall_clock(), clock()
            info = fn()
            elapsed, wall = clock() - start, wall_clock() - wall
            if round_ >= warmup:
                out[name]["seconds"].append(elapsed)
                out[name]["wall"].append(wall)
                out[name]["info"].append(info)
    return out


def alternating(steps: Mapping[str, Callable[[Any], Any]], inputs: Sequence[Any], n: int, *, warmup: int = 0,
                clock: Clock = time.process_time,
                wall_clock: Clock = time.perf_counter) -> Dict[str, Dict[str, List[float]]]:
    """The finest interleaving: ``n`` calls of every step, call ``i`` on ``inputs[i % len(inputs)]``,
    the steps in the given order on even ``i`` and in reverse on odd ``i`` (A B, B A, A B, ...), so that
    a burst of load hits all of them; the first ``warmup`` calls untimed.

    Returns:
        ``{name: {"seconds": [...], "wall": [...]}}``, one entry per timed call.

    Raises:
        ValueError: no steps or inputs, ``n < 1`` or ``warmup`` not in ``[0, n)``.
    """
    if not steps:
        raise ValueError("steps is empty; expected at least one {name: fn}")
    if len(inputs) == 0:
        raise ValueError("batches is empty")
    if n < 1 or not 0 <= warmup < n:
        raise ValueError(f"need n_steps >= 1 and 0 <= warmup < n_steps, got n_steps {n}, warmup {warmup}")
    out: Dict[str, Dict[str, List[float]]] = {name: {"seconds": [], "wall": []} for name in steps}
    order = list(steps.items())
    for i in range(n):
        x = inputs[i % len(inputs)]
        for name, step in (order if i % 2 == 0 else order[::-1]):
            wall, start = wall_clock(), clock()
            step(x)
            elapsed, wall = clock() - start, wall_clock() - wall
            if i >= warmup:
                out[name]["seconds"].append(elapsed)
                out[name]["wall"].append(wall)
    return out


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence.

    Raises:
        ValueError: ``values`` is empty.
    """
    if len(values) == 0:
        raise ValueError("median of no values; expected at least one")
    return float(statistics.median(values))


def medians(timings: Mapping[str, Mapping[str, Sequence[float]]], key: str = "seconds") -> Dict[str, float]:
    """``{name: median of timings[name][key]}`` for what :func:`interleave` or :func:`alternating` returned."""
    return {name: median(t[key]) for name, t in timings.items()}


def per_unit(seconds: Sequence[float], units: Sequence[float]) -> List[float]:
    """Seconds per unit (step, sentence...) of each round: ``seconds[i] / units[i]``.

    Raises:
        ValueError: lengths differ, or a unit count is not positive.
    """
    if len(seconds) != len(units):
        raise ValueError(f"seconds and units must have the same length, got {len(seconds)} and {len(units)}")
    bad = [u for u in units if not u > 0]
    if bad:
        raise ValueError(f"units must be positive, got {bad}")
    return [s / u for s, u in zip(seconds, units)]


def ratio(reference: float, ours: float) -> float:
    """``reference / ours``: above 1 means ours is faster.

    Raises:
        ValueError: a time is not positive.
    """
    if not reference > 0 or not ours > 0:
        raise ValueError(f"times must be positive, got reference {reference!r} and ours {ours!r}")
    return reference / ours


def ratios_to(values: Mapping[str, float], base: str) -> Dict[str, float]:
    """Every value over ``values[base]`` (the base's own ratio is 1)."""
    return {name: v / values[base] for name, v in values.items()}


def synced_clock(device: torch.device) -> Clock:
    """Wall seconds read after waiting for ``device``'s queued work (plain ``perf_counter`` on a CPU)."""
    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()
    return clock
