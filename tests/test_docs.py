"""The user-facing examples stay true: the README's and the bring-your-own-model guide's code and the
quick start run."""
import os
import pathlib
import re
import subprocess
import sys

import torch
from torch.utils.data import DataLoader

from conftest import BernoulliDecoder, MLPEncoder, binary_data

ROOT = pathlib.Path(__file__).resolve().parents[1]


def python_blocks(path: pathlib.Path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_bring_your_own_model_guide_example_trains(capsys):
    code = [b for b in python_blocks(ROOT / "docs" / "bring-your-own-model.md") if ".fit(" in b]
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
    assert trainer.history[0].inner_steps_mean >= 2 * trainer.algorithm.catch_up.window
    out = capsys.readouterr().out
    assert "val_mi" in out
    assert float(out.strip().splitlines()[-1]) > 0  # the printed IW-NLL, nats per image


def readme_namespace(seed):
    """Small stand-ins for the names the README's snippets leave to the user."""
    torch.manual_seed(seed)
    return {
        "my_encoder": MLPEncoder(), "my_decoder": BernoulliDecoder(),  # binary vectors [batch, 6]
        "train_loader": DataLoader(binary_data(32), batch_size=8, shuffle=True),
        "val_loader": DataLoader(binary_data(16, seed=1), batch_size=8),
        "test_loader": DataLoader(binary_data(16, seed=2), batch_size=8),
    }


def run_readme_snippets(seed):
    """Executes every python block of README.md in turn in one namespace, training 1 epoch (not 50)."""
    namespace = readme_namespace(seed)
    for i, block in enumerate(python_blocks(ROOT / "README.md")):
        source, fits = re.subn(r"\bepochs=\d+", "epochs=1", block)
        assert fits == block.count(".fit("), f"README block {i}: every fit call should name its epochs"
        exec(compile(source, f"README.md python block {i}", "exec"), namespace)
    return namespace


def test_readme_snippets_run_and_resume_from_their_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the snippets' runs/x lands in a temporary directory
    assert len(python_blocks(ROOT / "README.md")) >= 1
    first = run_readme_snippets(seed=0)
    assert len(first["history"]) == 1 and first["trainer"].epoch == 1
    assert "val_mi" in capsys.readouterr().out  # verbose=True printed the epoch line
    checkpoints = os.listdir(tmp_path / "runs" / "x")
    assert len(checkpoints) == 1 and checkpoints[0].endswith(".pt")  # written at the epoch end
    assert (tmp_path / "runs" / "x-dynamics.png").stat().st_size > 1000  # the training-dynamics figure
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "runs" / "x-tb"))
    # run again, as after a restart (other initial weights): latest_checkpoint("runs/x") now resumes
    # the finished epoch, so the weights are the first run's
    second = run_readme_snippets(seed=1)
    assert second["trainer"].epoch == 1 and second["history"].to_dicts() == first["history"].to_dicts()
    assert all(torch.equal(a, b) for a, b in zip(first["model"].parameters(), second["model"].parameters()))


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


def test_index_own_loop_example_runs():
    """docs/index.md's hand-written loop over AggressiveStep: it trains and leaves a coherent state."""
    code = [b for b in python_blocks(ROOT / "docs" / "index.md") if "AggressiveStep(" in b]
    assert len(code) == 1
    torch.manual_seed(0)
    namespace = {"encoder": MLPEncoder(), "decoder": BernoulliDecoder(),
                 "train_loader": DataLoader(binary_data(48), batch_size=8, shuffle=True),
                 "val_loader": DataLoader(binary_data(32, seed=1), batch_size=16)}
    exec(compile(code[0], "index.md", "exec"), namespace)
    step = namespace["step"]
    assert step.updates == 3 * 6  # one decoder (or joint) update per minibatch
    assert namespace["out"].terms.loss.shape == (8,)
    assert step.is_aggressive == (step.left_aggressive_at is None)


def test_bring_your_own_model_input_snippet_sets_the_input_once():
    """The guide's get_input snippet: the trainer and the estimators take the pair from dict batches."""
    code = [b for b in python_blocks(ROOT / "docs" / "bring-your-own-model.md") if "get_input=" in b]
    assert len(code) == 1
    seen = []

    class MyEncoder(MLPEncoder):
        def forward(self, x):
            ids, mask = x
            seen.append(mask.shape)
            return super().forward(ids * mask)

    class MyDecoder(BernoulliDecoder):
        def log_prob(self, x, z):
            return super().log_prob(x[0], z)

    batches = [{"input_ids": binary_data(4, seed=i), "attention_mask": torch.ones(4, 6)} for i in range(3)]
    namespace = {"MyEncoder": MyEncoder, "MyDecoder": MyDecoder, "test_loader": batches,
                 "enc_opt": None, "dec_opt": None}
    from aggressive_vi import VAE, AggressiveTrainer, estimators
    namespace.update(VAE=VAE, estimators=estimators,
                     AggressiveTrainer=lambda model, *_: AggressiveTrainer(
                         model, torch.optim.SGD(model.encoder.parameters(), lr=0.1),
                         torch.optim.SGD(model.decoder.parameters(), lr=0.1)))
    exec(compile(code[0], "bring-your-own-model.md", "exec"), namespace)
    assert len(seen) >= 3 and all(s == (4, 6) for s in seen)  # the estimator got the pair from each batch
