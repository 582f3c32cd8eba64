"""The helpers the subprocess tests rely on: workers die with their group, scripts import the checkout.

* :func:`process_group.run_group` leaves no process behind, even workers that ignore SIGTERM (as
  the trainer's DDP workers do: it defers the first SIGTERM to write a checkpoint) and their children.
* ``tests/resume_run.py`` and ``tests/ddp_run.py``, run as scripts, import the ``aggressive_vi`` of
  the checkout they belong to, not whichever one is installed (here a decoy placed first on
  ``PYTHONPATH`` stands for the installed one).
"""
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from process_group import run_group

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent

# ignores SIGTERM, writes its pid (and its child's, with "spawn") to argv[1], then sleeps
STUBBORN = r"""
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pids = [os.getpid()]
if len(sys.argv) > 2 and sys.argv[2] == "spawn":
    pids.append(subprocess.Popen([sys.executable, "-c", sys.argv[3]]).pid)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(" ".join(map(str, pids)))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""
GRANDCHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel (a zombie counts as alive here)
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def read_pids(path: pathlib.Path, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.05)
    return [int(p) for p in path.read_text().split()]


def stubborn(path: pathlib.Path, spawn: bool = False):
    args = [sys.executable, "-c", STUBBORN, str(path)] + (["spawn", GRANDCHILD] if spawn else [])
    return dict(args=args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_a_timeout_kills_workers_that_ignore_sigterm_and_their_children(tmp_path):
    files = [tmp_path / "a", tmp_path / "b"]
    pids = []
    try:
        started = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):  # 5 s: far beyond a bare Python's start-up
            run_group([stubborn(files[0]), stubborn(files[1], spawn=True)], timeout=5)
        assert time.monotonic() - started < 30  # run_group returned promptly after its timeout
        pids = [p for f in files for p in read_pids(f, timeout=0)]
        assert len(pids) == 3  # two workers and the second one's child
        deadline = time.monotonic() + 10  # the orphaned grandchild is reaped by init, not by us
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in pids if alive(p)]
    finally:
        for p in pids:  # whatever failed above, leave nothing behind
            if alive(p):
                os.kill(p, signal.SIGKILL)


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_a_failed_worker_ends_the_wait_and_the_others_are_killed(tmp_path):
    pids = []
    try:
        started = time.monotonic()
        failing = dict(args=[sys.executable, "-c", "import time, sys; time.sleep(1); sys.exit(3)"])
        codes = run_group([stubborn(tmp_path / "a"), failing], timeout=120)
        assert codes == [-signal.SIGKILL, 3]
        assert time.monotonic() - started < 60  # not the 120 s timeout
        pids = read_pids(tmp_path / "a", timeout=0)
        assert not alive(pids[0])
    finally:
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)


def test_workers_that_finish_report_their_exit_codes():
    ok = dict(args=[sys.executable, "-c", "pass"])
    assert run_group([ok, ok], timeout=120) == [0, 0]


# ---------------------------------------------------------------------------- which package
def decoy_env(tmp_path):
    """An environment whose PYTHONPATH starts with a decoy ``aggressive_vi`` (an "installed" one)."""
    decoy = tmp_path / "site" / "aggressive_vi"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("")
    path = os.pathsep.join(filter(None, [str(decoy.parent), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path), decoy


@pytest.mark.parametrize("script", ["resume_run.py", "ddp_run.py"])
def test_worker_scripts_import_the_checkout_not_the_installed_package(tmp_path, script):
    env, decoy = decoy_env(tmp_path)
    out = subprocess.run([sys.executable, str(HERE / script), "--print-package"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    where = pathlib.Path(out.stdout.strip()).resolve()
    assert where == ROOT / "aggressive_vi" / "__init__.py", f"{script} imported {where}, not the checkout"
