"""``python -m examples.text train --resume``: the library's checkpoints carry the run, an interrupted
run continues to the same parameters as an uninterrupted one, and other settings are refused."""
import json
import random

import pytest
import torch

from aggressive_vi import Checkpoint, latest_checkpoint
from aggressive_vi.checkpoint import load_checkpoint
from examples.run_spec import RunMismatchError
from examples.text import cli
from examples.text.cli import main

WORDS = "the a cat dog sat ran on under mat log big small red blue".split()
# 96 training sentences in batches of 16 (tiny preset): 6 decoder updates per epoch, 12 in all
STEPS_PER_EPOCH = 6


def write_corpus(root, words, name="toy"):
    rng = random.Random(0)
    for split, n in (("train", 96), ("valid", 32), ("test", 32)):
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 7))) for _ in range(n)]
        (root / f"{name}.{split}.txt").write_text("\n".join(lines) + "\n")
    return root / name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), WORDS)


def train_args(corpus, out, *extra):
    return ["train", "--data", str(corpus), "--preset", "tiny", "--epochs", "2", "--out", str(out),
            "--no-progress", "--seed", "3", "--iw-samples", "2", "--save-every", "2", *extra]


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    main(train_args(corpus, out))
    return out


def stop_at(monkeypatch, step, error):
    """Make the CLI's Checkpoint callback raise ``error`` right after decoder update ``step`` (after
    its own periodic save): a Ctrl-C (``KeyboardInterrupt``) or a crash (any other exception)."""

    class Stopping(Checkpoint):
        def on_step_end(self, trainer, info):
            super().on_step_end(trainer, info)
            if trainer.step == step:
                raise error

    monkeypatch.setattr(cli, "Checkpoint", Stopping)


def model_weights(out):
    return torch.load(out / "model.pt", weights_only=True)["model"]


def history_without_times(out):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in json.loads((out / "history.json").read_text())]


@pytest.mark.parametrize("error, resumes_at", [
    (KeyboardInterrupt(), 9),  # Ctrl-C: the callback saves at the step boundary where it stopped
    (RuntimeError("simulated crash"), 8),  # a crash: only the periodic save (every 2 updates) is left
])
def test_a_stopped_run_resumes_to_the_same_parameters(corpus, uninterrupted, tmp_path, monkeypatch, error,
                                                      resumes_at):
    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        stop_at(patch, 9, error)  # epoch 1, its 3rd batch
        with pytest.raises(type(error)):
            main(train_args(corpus, out))
    assert not (out / "model.pt").exists()  # it did stop before the end
    latest = latest_checkpoint(out / "checkpoints")
    assert load_checkpoint(latest)["algorithm"]["updates"] == resumes_at
    assert resumes_at % STEPS_PER_EPOCH != 0  # mid-epoch: the loaders' positions are replayed

    main(train_args(corpus, out, "--resume"))
    whole, resumed = model_weights(uninterrupted), model_weights(out)
    assert whole.keys() == resumed.keys()
    for name in whole:  # bitwise on CPU: the same batches, the same random draws
        assert torch.equal(whole[name], resumed[name]), name
    last = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    whole_last = load_checkpoint(latest_checkpoint(uninterrupted / "checkpoints"))
    assert last["algorithm"]["updates"] == whole_last["algorithm"]["updates"] == 2 * STEPS_PER_EPOCH
    for name in whole_last["model"]:  # the last epoch's weights too (model.pt holds the best epoch's)
        assert torch.equal(whole_last["model"][name], last["model"][name]), name
    assert history_without_times(out) == history_without_times(uninterrupted)


def test_resume_continues_with_more_epochs(corpus, uninterrupted, tmp_path):
    out = tmp_path / "more"
    main(train_args(corpus, out, "--epochs", "1"))
    main(train_args(corpus, out, "--resume"))  # --epochs 2: the one option (with --iw-samples) that may change
    for name, value in model_weights(uninterrupted).items():
        assert torch.equal(value, model_weights(out)[name]), name


@pytest.mark.parametrize("change, named", [
    (["--hidden-dim", "24"], "preset.hidden_dim: 16 in the checkpoint, 24 now"),  # another architecture
    (["--kl-start", "0.5"], "preset.kl_start: 1.0 in the checkpoint, 0.5 now"),  # same shapes, other training
    (["--seed", "4"], "options.seed: 3 in the checkpoint, 4 now"),
    (["--aggressive", "off"], 'options.aggressive: "on" in the checkpoint, "off" now'),
])
def test_resume_with_other_settings_names_them(corpus, uninterrupted, tmp_path, change, named):
    before = sorted(p.name for p in (uninterrupted / "checkpoints").iterdir())
    with pytest.raises(RunMismatchError) as info:
        main(train_args(corpus, uninterrupted, "--resume", *change))
    assert named in str(info.value) and "--resume" in str(info.value)
    assert sorted(p.name for p in (uninterrupted / "checkpoints").iterdir()) == before  # nothing written


def test_resume_with_another_vocabulary_names_the_first_different_word(corpus, uninterrupted, tmp_path):
    # the same corpus with one word renamed: same vocabulary size, so the same tensor shapes
    other = write_corpus(tmp_path, ["kitten" if w == "cat" else w for w in WORDS])
    with pytest.raises(RunMismatchError, match=r"vocab: \d+ items in the checkpoint, \d+ now; first difference "
                                               r'at index \d+: "cat" in the checkpoint, "kitten" now'):
        main(train_args(other, uninterrupted, "--resume"))


def test_fresh_run_refuses_a_directory_with_checkpoints_and_resume_needs_one(corpus, uninterrupted, tmp_path):
    with pytest.raises(FileExistsError, match="--resume"):
        main(train_args(corpus, uninterrupted))
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint"):
        main(train_args(corpus, tmp_path / "empty", "--resume"))


def test_evaluate_points_an_unfinished_run_to_resume(corpus, tmp_path, monkeypatch):
    out = tmp_path / "unfinished"
    stop_at(monkeypatch, 3, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        main(train_args(corpus, out))
    with pytest.raises(FileNotFoundError, match=r"no model.pt yet .* --resume"):
        main(["evaluate", "--checkpoint", str(out), "--iw-samples", "2"])
