"""The side-by-side harnesses with the paper's code, written once: :mod:`benchmarks.parity` (its
``text.py``) and :mod:`benchmarks.image_parity` (its ``image.py``) run the same specs on the paper's
script and on our side, each run in a child process, and differ only in what a spec is, how the
script is configured and read, and the table's columns.

Processes: :func:`run_command` (a child process, its output time-stamped line by line into a log,
killed after a timeout), :func:`kill_children` (every child still running, when the harness is
stopped) and :func:`run_reference_script` (the paper's script in its scratch copy, its exit code
checked and its output parsed).
"""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .reference import Line, ReferenceOutputError, reference_env

__all__ = ["run_command", "kill_children", "run_reference_script"]

PathLike = Union[str, Path]
Result = Dict[str, Any]

_LIVE: "set[subprocess.Popen[str]]" = set()  # child processes running now (see kill_children)
_LIVE_LOCK = threading.Lock()


# ---------------------------------------------------------------- processes
def kill_children() -> int:
    """Kill every child process :func:`run_command` has running (when the harness is stopped);
    returns how many."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        proc.kill()
    return len(procs)


def run_command(command: Sequence[str], cwd: PathLike, env: Dict[str, str], log_path: Optional[PathLike] = None,
                timeout: Optional[float] = None) -> Tuple[int, List[Line], float]:
    """Run ``command``, stamping each line of its (merged) output with the seconds since start.

    Returns ``(exit code, lines, wall seconds)``; after ``timeout`` seconds the process is killed
    (exit code -9).
    """
    start = time.perf_counter()
    lines: List[Line] = []
    proc = subprocess.Popen(list(command), cwd=str(cwd), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    with _LIVE_LOCK:
        _LIVE.add(proc)
    timer = threading.Timer(timeout, proc.kill) if timeout is not None else None
    if timer is not None:
        timer.start()
    log = open(log_path, "w") if log_path is not None else None
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            stamp = time.perf_counter() - start
            lines.append((stamp, raw.rstrip("\n")))
            if log is not None:
                log.write(f"{stamp:10.3f} {raw}")
                log.flush()
        code = proc.wait()
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)
        if timer is not None:
            timer.cancel()
        if log is not None:
            log.close()
    return code, lines, time.perf_counter() - start


def _tail(lines: Sequence[Line], n: int = 15) -> str:
    return "\n".join(text for _, text in lines[-n:])


def run_reference_script(command: Sequence[str], copy_dir: PathLike, work_dir: PathLike,
                         parse: Callable[[List[Line]], Result], timeout: Optional[float] = None) -> Result:
    """Run the paper's script (``command``) in its scratch copy ``copy_dir`` with one thread and no
    GPU (:func:`benchmarks.core.reference.reference_env`), its output logged to
    ``work_dir/reference.log``; returns ``parse(lines)`` with ``wall_seconds``, ``log`` and
    ``command`` (without the interpreter) added.

    Raises:
        ReferenceOutputError: the script exited with another code than 0 (the message has the last
            lines of its output), or ``parse`` found a line missing.
    """
    log_path = Path(work_dir) / "reference.log"
    code, lines, wall = run_command(command, copy_dir, reference_env(), log_path, timeout)
    if code != 0:
        raise ReferenceOutputError(f"the reference exited with code {code}: {' '.join(command)} (in {copy_dir})\n"
                                   f"{_tail(lines)}")
    parsed = parse(lines)
    parsed.update(wall_seconds=wall, log=str(log_path), command=" ".join(command[1:]))
    return parsed
