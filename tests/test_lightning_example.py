"""examples/lightning runs end to end (one short epoch each) and reports what the page promises."""
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(module, *args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_lightning_example_writes_only_under_its_out(tmp_path):
    # run from an empty directory with the default --out: runs/lightning (git-ignored) is all it leaves
    out = run("examples.lightning", "--epochs", "2", cwd=tmp_path)
    assert len(re.findall(r"^epoch \d: val_mi -?\d+\.\d+ \| val_au", out, re.M)) == 2
    match = re.search(r"global_step (\d+) \(decoder updates\)", out)
    assert match and int(match.group(1)) == 2 * 40  # 2000 examples / batch 50, two epochs
    assert re.search(r"^test: IW-NLL \d+\.\d+ nats", out, re.M)
    assert os.listdir(tmp_path) == ["runs"] and os.listdir(tmp_path / "runs") == ["lightning"]
    assert list((tmp_path / "runs" / "lightning" / "lightning_logs").glob("version_*/checkpoints/last.ckpt"))


def test_lightning_example_default_out_is_ignored_by_git():
    if not os.path.exists(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/lightning/lightning_logs/x.csv"], cwd=ROOT)
    assert ignored.returncode == 0


def test_fabric_example(tmp_path):
    out = run("examples.lightning.fabric", "--epochs", "1", cwd=tmp_path)
    assert os.listdir(tmp_path) == []  # the Fabric variant writes no file
    assert re.search(r"^epoch +0 \|.*val_mi", out, re.M)
    assert re.search(r"^test: IW-NLL \d+\.\d+ nats", out, re.M)
