"""Run image specs on either side, each in its own process with one thread, ``jobs`` at a time
(default 1: on a shared machine, runs side by side would slow each other and skew the times;
:mod:`benchmarks.core.side_by_side` does the running, this module says what runs a spec)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..core import side_by_side
from .reference import run_image_reference
from .spec import ImageRunSpec

__all__ = ["TWO_SIDES", "run_image_side", "task_order", "run_all"]

PathLike = Union[str, Path]


def _ours_args(spec: ImageRunSpec, reference_dir: Optional[PathLike]) -> List[str]:
    """Our side starting from the paper's weights needs the paper's code."""
    if spec.ours_init == "reference" and reference_dir is not None:
        return ["--reference-dir", str(Path(reference_dir).resolve())]
    return []


#: the paper's image.py (through the launcher) on one side, ``python -m benchmarks.image_parity.ours``
#: on the other
TWO_SIDES = side_by_side.TwoSides(run_image_reference, "benchmarks.image_parity.ours", _ours_args)
#: ``run_image_side(spec, side, work_dir, *, reference_dir=None, python=sys.executable, reference_python=None,
#: timeout=None)``: one run (:meth:`benchmarks.core.side_by_side.TwoSides.run`)
run_image_side = TWO_SIDES.run


def task_order(specs: Sequence[ImageRunSpec], sides: Sequence[str]) -> List[Tuple[ImageRunSpec, str]]:
    """Every (spec, side), the two sides of a spec one after the other, which one goes first
    alternating from spec to spec (slow spells of a shared machine then fall on both sides alike)."""
    tasks: List[Tuple[ImageRunSpec, str]] = []
    for i, spec in enumerate(specs):
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        tasks += [(spec, side) for side in order]
    return tasks


def run_all(specs: Sequence[ImageRunSpec], sides: Sequence[str], work_root: PathLike, *, jobs: int = 1,
            on_result: Optional[Callable[[Dict[str, Any]], None]] = None, **launch: Any) -> List[Dict[str, Any]]:
    """Every (spec, side) in :func:`task_order`, ``jobs`` at a time; ``on_result`` as each finishes.
    ``launch``: :func:`run_image_side`'s ``reference_dir``, ``python``, ``reference_python``, ``timeout``."""
    tasks = [(spec, side, Path(work_root) / f"{spec.data}-{spec.mode}-{side}-{spec.seed}-{spec.ours_clip}-{spec.ours_init}")
             for spec, side in task_order(specs, sides)]
    return TWO_SIDES.run_all(tasks, jobs=jobs, on_result=on_result, **launch)
