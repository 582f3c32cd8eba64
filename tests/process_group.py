"""Run a test's worker processes in a process group of their own, and kill the whole group after.

The DDP workers trap the first SIGTERM (the trainer defers it to the next step boundary to write a
checkpoint), so a test that timed out and only terminated its direct child left them running. Here
every worker joins one new process group, and whatever is left of that group when :func:`run_group`
returns or raises (a timeout, a failed rank, an error in the test) gets SIGKILL, which no process can
trap: the workers and any children they started.
"""
from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import time
from typing import Any, Dict, List, Optional, Sequence


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the process group ``pgid`` (nothing when it is gone)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is empty (PermissionError: macOS when only zombies remain)


def run_group(commands: Sequence[Dict[str, Any]], timeout: float, poll: float = 0.05) -> List[int]:
    """Start one process per ``subprocess.Popen`` keyword dict of ``commands``, all in one new process
    group, and wait for them.

    Returns their exit codes once all have exited. Stops waiting as soon as one exits with a non-zero
    code (a failed rank would leave the others blocked in a collective): those still running are
    killed and reported as ``-SIGKILL``.

    Raises:
        subprocess.TimeoutExpired: not all exited within ``timeout`` seconds.
    In every case the group is killed with SIGKILL before returning or raising, and the started
    processes are reaped.
    """
    procs: List[subprocess.Popen] = []
    pgid: Optional[int] = None
    try:
        for kwargs in commands:
            # the first becomes the leader of a new process group (in our session: a process may
            # join a group only within its own session), the others join it; the leader is not
            # reaped before all have started, so the group exists
            group = 0 if pgid is None else pgid
            procs.append(subprocess.Popen(preexec_fn=functools.partial(os.setpgid, 0, group), **kwargs))
            if pgid is None:
                pgid = procs[0].pid
        deadline = time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes):
                return codes
            if any(c not in (None, 0) for c in codes):  # the others are killed below
                return [-signal.SIGKILL if c is None else c for c in codes]
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired([str(k.get("args")) for k in commands], timeout)
            time.sleep(poll)
    finally:
        if pgid is not None:
            kill_group(pgid)
        for p in procs:
            try:
                p.wait(timeout=30)  # at once after SIGKILL; the bound keeps a broken kill from hanging
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"process {p.pid} still runs after SIGKILL of its group {pgid}") from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
