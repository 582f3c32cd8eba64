"""What ``python -m examples.text train`` and ``compare`` do when stopped by Ctrl-C (SIGINT) or
SIGTERM: they checkpoint, print one line naming the checkpoint and the command that resumes from it
(no traceback), and exit with 130 or 143."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from toy_corpus import write_toy_corpus

from aggressive_vi import latest_checkpoint

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_toy_corpus(tmp_path_factory.mktemp("corpus"))


def start(argv, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
               OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "examples.text", *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoints(proc, *directories, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not all(latest_checkpoint(d) for d in directories):
        if proc.poll() is not None:
            pytest.fail(f"exited early ({proc.returncode}): {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint in time")
        time.sleep(0.1)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_train_stopped_by_a_signal_says_where_its_checkpoint_is(corpus, tmp_path, signum, code):
    out = tmp_path / "run"
    argv = ["train", "--data", str(corpus), "--preset", "tiny", "--epochs", "10000", "--save-every", "1",
            "--no-progress", "--threads", "1", "--out", str(out)]
    proc = start(argv, tmp_path)
    wait_for_checkpoints(proc, out / "checkpoints")
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    last = stderr.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert last.startswith(f"interrupted by {name}: checkpoint {out / 'checkpoints'}")
    saved = last.split("checkpoint ", 1)[1].split(";")[0]
    assert Path(saved).is_file() and saved == latest_checkpoint(out / "checkpoints")
    assert last.endswith("resume with: python -m examples.text " + " ".join(argv) + " --resume")


def test_compare_stopped_by_sigterm_stops_both_runs_at_a_checkpoint(corpus, tmp_path):
    out = tmp_path / "both"
    argv = ["compare", "--data", str(corpus), "--preset", "tiny", "--epochs", "10000", "--save-every", "1",
            "--out", str(out)]
    proc = start(argv, tmp_path)
    wait_for_checkpoints(proc, out / "aggressive" / "checkpoints", out / "basic" / "checkpoints")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stdout + stderr
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted by SIGTERM: checkpoints in {out / 'aggressive' / 'checkpoints'} and "
        f"{out / 'basic' / 'checkpoints'}; resume with: python -m examples.text {' '.join(argv)} --resume")
    for mode in ("aggressive", "basic"):  # each run said where its own checkpoint is
        prefix = f"{mode:<10} | interrupted by SIGTERM: checkpoint {out / mode / 'checkpoints'}"
        assert any(line.startswith(prefix) for line in stdout.splitlines()), stdout
    assert not (out / "compare.json").exists()
