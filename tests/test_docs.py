"""The user-facing examples stay true: the bring-your-own-model guide's code and the quick start run."""
import pathlib
import re
import subprocess
import sys

import torch
from torch.utils.data import DataLoader

ROOT = pathlib.Path(__file__).resolve().parents[1]


def python_blocks(path: pathlib.Path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_bring_your_own_model_guide_example_trains(capsys):
    code = [b for b in python_blocks(ROOT / "docs" / "bring-your-own-model.md") if "AggressiveTrainer(" in b]
    assert len(code) == 1
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(48, 1, 28, 28, generator=g) > 0.5).float()
    namespace = {
        "train_loader": DataLoader(images[:32], batch_size=16),
        "val_loader": DataLoader(images[32:], batch_size=16),
        "test_loader": DataLoader(images[32:], batch_size=16),
    }
    # the guide trains 20 epochs with 500 importance samples; 2 and 5 keep the test quick
    source = code[0].replace("epochs=20", "epochs=2").replace("n_samples=500", "n_samples=5")
    exec(compile(source, "bring-your-own-model.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert len(trainer.history) == 2 and trainer.history[0].aggressive
    assert trainer.history[0].inner_steps_mean >= 2 * trainer.window
    out = capsys.readouterr().out
    assert "val_mi" in out
    assert float(out.strip().splitlines()[-1]) > 0  # the printed IW-NLL, nats per image


def test_readme_snippet_names_exist():
    import aggressive_vi

    code = python_blocks(ROOT / "README.md")[0]
    names = re.search(r"from aggressive_vi import (.*)", code).group(1).split(", ")
    assert all(hasattr(aggressive_vi, n.strip()) for n in names)


def test_quickstart_runs_and_prints_the_test_line():
    out = subprocess.run([sys.executable, "-m", "examples.quickstart", "--epochs", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "val_mi" in out.stdout and "test: IW-NLL" in out.stdout


def test_relative_links_in_docs_and_readme_resolve():
    """Every relative link and image in README.md and docs/*.md names a file of the repository."""
    missing = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor on the same page
            if not (page.parent / target.split("#")[0]).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, missing
