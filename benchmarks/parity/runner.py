"""Run specs on either side, each in its own process with one thread, at most ``jobs`` at a time."""
from __future__ import annotations

import json
import os
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..core.side_by_side import kill_children, run_command
from .reference import run_reference
from .spec import SIDES, RunSpec
from .table import make_result

__all__ = ["run_side", "run_ours_process", "run_all", "REPO_ROOT"]

PathLike = Union[str, Path]
REPO_ROOT = Path(__file__).resolve().parents[2]


def _ours_env() -> Dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def run_ours_process(spec: RunSpec, work_dir: PathLike, *, python: str = sys.executable,
                     timeout: Optional[float] = None) -> Dict[str, Any]:
    """:func:`benchmarks.parity.ours.run_ours` in a child process (as the reference runs), so that both
    sides' ``wall_seconds`` count interpreter start-up and imports alike."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = work / "spec.json", work / "ours.json"
    spec_path.write_text(json.dumps(spec.to_dict(), indent=1))
    if out_path.exists():
        out_path.unlink()
    command = [python, "-m", "benchmarks.parity.ours", str(spec_path), str(out_path), "--threads", "1"]
    code, lines, wall = run_command(command, REPO_ROOT, _ours_env(), work / "ours.log", timeout)
    if code != 0 or not out_path.is_file():
        tail = "\n".join(text for _, text in lines[-15:])
        raise RuntimeError(f"our side exited with code {code}: {' '.join(command)}\n{tail}")
    result = json.loads(out_path.read_text())
    result.update(wall_seconds=wall, log=str(work / "ours.log"))
    return result


def run_side(spec: RunSpec, side: str, work_dir: PathLike, *, reference_dir: Optional[PathLike] = None,
             python: str = sys.executable, reference_python: Optional[str] = None,
             timeout: Optional[float] = None) -> Dict[str, Any]:
    """One run; returns its record (:func:`benchmarks.parity.table.make_result`). A failure is
    recorded under ``"error"`` (with the traceback's last lines) instead of raised."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    try:
        if side == "reference":
            if reference_dir is None:
                raise ValueError("the reference side needs --reference-dir (a checkout of the paper's code)")
            outcome = run_reference(spec, reference_dir, work_dir, python=reference_python or python,
                                    timeout=timeout)
        else:
            outcome = run_ours_process(spec, work_dir, python=python, timeout=timeout)
    except Exception as err:  # recorded, so one broken run does not lose the others
        outcome = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
    return make_result(spec.to_dict(), side, outcome)


def run_all(specs: Sequence[RunSpec], sides: Sequence[str], work_root: PathLike, *, jobs: int = 2,
            reference_dir: Optional[PathLike] = None, python: str = sys.executable,
            reference_python: Optional[str] = None, timeout: Optional[float] = None,
            on_result: Optional[Callable[[Dict[str, Any]], None]] = None) -> List[Dict[str, Any]]:
    """Every (spec, side), ``jobs`` at a time; ``on_result`` is called as each one finishes."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    tasks: List[Tuple[RunSpec, str, Path]] = []
    for spec in specs:
        for side in sides:
            tasks.append((spec, side, Path(work_root) / f"{spec.data}-{spec.mode}-{side}-{spec.seed}"))
    results: List[Dict[str, Any]] = []
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(run_side, spec, side, work, reference_dir=reference_dir, python=python,
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
