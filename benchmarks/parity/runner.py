"""Run specs on either side, each in its own process with one thread, at most ``jobs`` at a time
(:mod:`benchmarks.core.side_by_side` does the running; this module says what runs a spec)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from ..core import side_by_side
from .reference import run_reference
from .spec import RunSpec

__all__ = ["TWO_SIDES", "run_side", "run_all"]

PathLike = Union[str, Path]
#: the paper's text.py on one side, ``python -m benchmarks.parity.ours`` on the other
TWO_SIDES = side_by_side.TwoSides(run_reference, "benchmarks.parity.ours")
#: ``run_side(spec, side, work_dir, *, reference_dir=None, python=sys.executable, reference_python=None,
#: timeout=None)``: one run (:meth:`benchmarks.core.side_by_side.TwoSides.run`)
run_side = TWO_SIDES.run


def run_all(specs: Sequence[RunSpec], sides: Sequence[str], work_root: PathLike, *, jobs: int = 2,
            on_result: Optional[Callable[[Dict[str, Any]], None]] = None, **launch: Any) -> List[Dict[str, Any]]:
    """Every (spec, side), ``jobs`` at a time; ``on_result`` is called as each one finishes. ``launch``:
    :func:`run_side`'s ``reference_dir``, ``python``, ``reference_python`` and ``timeout``."""
    tasks = [(spec, side, Path(work_root) / f"{spec.data}-{spec.mode}-{side}-{spec.seed}")
             for spec in specs for side in sides]
    return TWO_SIDES.run_all(tasks, jobs=jobs, on_result=on_result, **launch)
