"""Run image specs on either side, each in its own process with one thread, ``jobs`` at a time
(default 1: on a shared machine, runs side by side would slow each other and skew the times)."""
from __future__ import annotations

import json
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from benchmarks.core.side_by_side import kill_children, run_command
from benchmarks.parity.runner import REPO_ROOT, _ours_env
from benchmarks.parity.table import make_result

from .reference import run_image_reference
from .spec import SIDES, ImageRunSpec

__all__ = ["run_ours_process", "run_image_side", "task_order", "run_all"]

PathLike = Union[str, Path]


def run_ours_process(spec: ImageRunSpec, work_dir: PathLike, *, python: str = sys.executable,
                     timeout: Optional[float] = None, reference_dir: Optional[PathLike] = None) -> Dict[str, Any]:
    """:func:`benchmarks.image_parity.ours.run_ours` in a child process, as the reference runs."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = work / "spec.json", work / "ours.json"
    spec_path.write_text(json.dumps(spec.to_dict(), indent=1))
    if out_path.exists():
        out_path.unlink()
    command = [python, "-m", "benchmarks.image_parity.ours", str(spec_path), str(out_path), "--threads", "1"]
    if spec.ours_init == "reference" and reference_dir is not None:
        command += ["--reference-dir", str(Path(reference_dir).resolve())]
    code, lines, wall = run_command(command, REPO_ROOT, _ours_env(), work / "ours.log", timeout)
    if code != 0 or not out_path.is_file():
        tail = "\n".join(text for _, text in lines[-15:])
        raise RuntimeError(f"our side exited with code {code}: {' '.join(command)}\n{tail}")
    result = json.loads(out_path.read_text())
    result.update(wall_seconds=wall, log=str(work / "ours.log"))
    return result


def run_image_side(spec: ImageRunSpec, side: str, work_dir: PathLike, *, reference_dir: Optional[PathLike] = None,
                   python: str = sys.executable, reference_python: Optional[str] = None,
                   timeout: Optional[float] = None) -> Dict[str, Any]:
    """One run; returns its record (``benchmarks.parity.table.make_result``). A failure is recorded
    under ``"error"`` instead of raised."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    try:
        if side == "reference":
            if reference_dir is None:
                raise ValueError("the reference side needs --reference-dir (a checkout of the paper's code)")
            outcome = run_image_reference(spec, reference_dir, work_dir, python=reference_python or python,
                                          timeout=timeout)
        else:
            outcome = run_ours_process(spec, work_dir, python=python, timeout=timeout, reference_dir=reference_dir)
    except Exception as err:  # recorded, so one broken run does not lose the others
        outcome = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
    return make_result(spec.to_dict(), side, outcome)


def task_order(specs: Sequence[ImageRunSpec], sides: Sequence[str]) -> List[Tuple[ImageRunSpec, str]]:
    """Every (spec, side), the two sides of a spec one after the other, which one goes first
    alternating from spec to spec (slow spells of a shared machine then fall on both sides alike)."""
    tasks: List[Tuple[ImageRunSpec, str]] = []
    for i, spec in enumerate(specs):
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        tasks += [(spec, side) for side in order]
    return tasks


def run_all(specs: Sequence[ImageRunSpec], sides: Sequence[str], work_root: PathLike, *, jobs: int = 1,
            reference_dir: Optional[PathLike] = None, python: str = sys.executable,
            reference_python: Optional[str] = None, timeout: Optional[float] = None,
            on_result: Optional[Callable[[Dict[str, Any]], None]] = None) -> List[Dict[str, Any]]:
    """Every (spec, side) in :func:`task_order`, ``jobs`` at a time; ``on_result`` as each finishes."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    tasks = [(spec, side, Path(work_root) / f"{spec.data}-{spec.mode}-{side}-{spec.seed}-{spec.ours_clip}-{spec.ours_init}")
             for spec, side in task_order(specs, sides)]
    results: List[Dict[str, Any]] = []
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(run_image_side, spec, side, work, reference_dir=reference_dir, python=python,
                               reference_python=reference_python, timeout=timeout)
                   for spec, side, work in tasks]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            if on_result is not None:
                on_result(result)
    except BaseException:  # Ctrl-C / SIGTERM: start nothing more, and end the runs under way
        pool.shutdown(wait=False, cancel_futures=True)
        kill_children()
        raise
    pool.shutdown()
    return results
