"""``python -m examples.image train --resume``: the library's checkpoints carry the run, an interrupted
run continues to the same parameters as an uninterrupted one, other settings are refused, and
``evaluate`` reads back what ``train`` evaluated."""
import json

import pytest
import torch

from aggressive_vi import Checkpoint, latest_checkpoint
from aggressive_vi.checkpoint import load_checkpoint
from examples.image import PRESETS, Preset
from examples.image import cli
from examples.image.cli import main
from examples.run_spec import RunMismatchError, saved_spec

TINY = Preset("tiny", latent_dim=4, encoder_channels=(4, 4, 4), encoder_hidden=8, decoder_channels=4,
              decoder_kernel_sizes=(3, 3, 3), latent_maps=1, batch_size=5)
# 20 training images in batches of 5: 4 decoder updates per epoch, 8 in two epochs
STEPS_PER_EPOCH = 4
QUICK = ["--data", "bundled", "--preset", "tiny", "--max-train", "20", "--max-eval", "5", "--window", "1",
         "--max-inner-steps", "2", "--iw-samples", "3", "--iw-chunk", "2", "--no-progress", "--threads", "1",
         "--epochs", "2", "--save-every", "2", "--seed", "5"]


@pytest.fixture(scope="module", autouse=True)
def tiny_preset():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(PRESETS, "tiny", TINY)
        yield


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    metrics = main(["train", *QUICK, "--out", str(out)])
    return out, metrics


def stop_at(monkeypatch, step, error):
    """Make the CLI's Checkpoint callback raise ``error`` right after decoder update ``step`` (after
    its own periodic save): a Ctrl-C (``KeyboardInterrupt``) or a crash (any other exception)."""

    class Stopping(Checkpoint):
        def on_step_end(self, trainer, info):
            super().on_step_end(trainer, info)
            if trainer.step == step:
                raise error

    monkeypatch.setattr(cli, "Checkpoint", Stopping)


def weights(state):
    return state["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:  # bitwise on CPU: the same batches, binarisations and random draws
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("error, resumes_at", [
    (KeyboardInterrupt(), 7),  # Ctrl-C: the callback saves at the step boundary where it stopped
    (RuntimeError("simulated crash"), 6),  # a crash: only the periodic save (every 2 updates) is left
])
def test_a_stopped_run_resumes_to_the_same_parameters(uninterrupted, tmp_path, monkeypatch, error, resumes_at):
    whole = uninterrupted[0]
    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        stop_at(patch, 7, error)  # epoch 1, its 3rd batch
        with pytest.raises(type(error)):
            main(["train", *QUICK, "--out", str(out)])
    assert not (out / "model.pt").exists()  # it did stop before the end
    assert load_checkpoint(latest_checkpoint(out / "checkpoints"))["algorithm"]["updates"] == resumes_at
    assert resumes_at % STEPS_PER_EPOCH != 0  # mid-epoch: the loaders' positions are replayed

    main(["train", *QUICK, "--out", str(out), "--resume"])
    assert_same_weights(weights(torch.load(whole / "model.pt", weights_only=True)),
                        weights(torch.load(out / "model.pt", weights_only=True)))
    last, whole_last = (load_checkpoint(latest_checkpoint(d / "checkpoints")) for d in (out, whole))
    assert last["algorithm"]["updates"] == whole_last["algorithm"]["updates"] == 2 * STEPS_PER_EPOCH
    assert_same_weights(weights(whole_last), weights(last))
    drop = lambda rows: [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]  # noqa: E731
    assert drop(json.loads((out / "history.json").read_text())) == drop(
        json.loads((whole / "history.json").read_text()))


@pytest.mark.parametrize("change, named", [
    (["--lr", "0.002"], "lr: 0.001 in the checkpoint, 0.002 now"),  # same shapes, other training
    (["--max-train", "15"], "max_train: 20 in the checkpoint, 15 now"),
    (["--aggressive", "off"], "aggressive: true in the checkpoint, false now"),
    (["--preset", "cpu"], 'preset: "tiny" in the checkpoint, "cpu" now'),  # another architecture
])
def test_resume_with_other_settings_names_them(uninterrupted, change, named):
    whole = uninterrupted[0]
    before = sorted(p.name for p in (whole / "checkpoints").iterdir())
    with pytest.raises(RunMismatchError) as info:
        main(["train", *QUICK, *change, "--out", str(whole), "--resume"])
    assert named in str(info.value) and "--resume" in str(info.value)
    assert sorted(p.name for p in (whole / "checkpoints").iterdir()) == before  # nothing written


def test_the_checkpoint_carries_the_run_settings(uninterrupted):
    whole = uninterrupted[0]
    spec = saved_spec(latest_checkpoint(whole / "checkpoints"))  # read with weights_only=True
    config = json.loads((whole / "config.json").read_text())
    assert spec["preset_sizes"] == config["preset_sizes"] and spec["seed"] == 5 and spec["max_train"] == 20
    assert "epochs" not in spec and "iw_samples" not in spec


def test_fresh_run_refuses_a_directory_with_checkpoints_and_resume_needs_one(uninterrupted, tmp_path):
    with pytest.raises(FileExistsError, match="--resume"):
        main(["train", *QUICK, "--out", str(uninterrupted[0])])
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint"):
        main(["train", *QUICK, "--out", str(tmp_path / "empty"), "--resume"])


def test_evaluate_reproduces_the_final_evaluation_of_train(uninterrupted):
    """model.pt holds the evaluated weights and preset: with train's seed, batch size and sample
    count, evaluate draws the same numbers as train's own test evaluation."""
    whole, metrics = uninterrupted
    again = main(["evaluate", "--checkpoint", str(whole), "--seed", "5", "--batch-size", "5",
                  "--iw-samples", "3", "--iw-chunk", "2", "--max-eval", "5", "--threads", "1"])
    for key in ("iw_nll", "neg_elbo", "reconstruction", "kl", "mi", "au", "n_examples"):
        assert again[key] == metrics[key], key


def test_evaluate_points_an_unfinished_run_to_resume(tmp_path, monkeypatch):
    out = tmp_path / "unfinished"
    stop_at(monkeypatch, 3, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        main(["train", *QUICK, "--out", str(out)])
    with pytest.raises(FileNotFoundError, match=r"no model.pt yet .* --resume"):
        main(["evaluate", "--checkpoint", str(out), "--iw-samples", "2"])
