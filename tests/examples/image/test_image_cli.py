"""End-to-end: train (aggressive and basic), resume, evaluate and sample, with a tiny model."""
import json

import pytest
import torch
from matplotlib.image import imread

from examples.image import PRESETS, Preset
from examples.image.cli import main
from examples.image.experiment import image_grid, write_grid


TINY = Preset("tiny", latent_dim=4, encoder_channels=(4, 4, 4), encoder_hidden=8, decoder_channels=4,
              decoder_kernel_sizes=(3, 3, 3), latent_maps=1, batch_size=5)
QUICK = ["--data", "bundled", "--preset", "tiny", "--max-train", "10", "--max-eval", "5", "--window", "1",
         "--max-inner-steps", "2", "--iw-samples", "3", "--iw-chunk", "2", "--no-progress", "--threads", "1"]


@pytest.fixture
def tiny_preset(monkeypatch):
    monkeypatch.setitem(PRESETS, "tiny", TINY)


def read_image(path):
    """The grey levels of a PNG that write_grid made, read back by matplotlib: ``[H, W]`` in [0, 1]."""
    image = torch.from_numpy(imread(path))  # [H, W, 4] RGBA
    assert image.dim() == 3 and image.shape[2] == 4
    assert torch.equal(image[..., 0], image[..., 1]) and torch.equal(image[..., 0], image[..., 2])  # grey
    return image[..., 0]


def test_image_grid_tiles_with_padding_and_writes_a_readable_png(tmp_path):
    grid = image_grid(torch.ones(3, 1, 2, 2), ncol=2, padding=1, pad_value=0.0)
    assert grid.shape == (7, 7) and grid.sum() == 12  # 2 rows of 2 cells (one empty), 3 white images
    back = read_image(write_grid(tmp_path / "sub" / "grid.png", grid))
    assert torch.equal(back, grid)


def test_train_evaluate_sample(tmp_path, tiny_preset, capsys, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # every command below writes only where it is told
    out = tmp_path / "run"
    metrics = main(["train", *QUICK, "--aggressive", "on", "--epochs", "2", "--out", str(out)])
    for name in ("config.json", "history.json", "model.pt", "metrics.json"):
        assert (out / name).exists(), name
    assert len(list((out / "checkpoints").glob("*.pt"))) == 2  # one per epoch, the last two kept
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1]
    assert history[0]["aggressive"] and history[0]["inner_steps_mean"] == 2.0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["iw_nll"] == pytest.approx(metrics["iw_nll"]) and saved["n_examples"] == 5
    assert len(saved["epoch_cpu_seconds"]) == 2 and all(t > 0 for t in saved["epoch_cpu_seconds"])
    assert 0 < saved["iw_nll"] < 784 * 2  # nats per image: between 0 and far worse than coin flips
    assert saved["au"] <= 4 and saved["kl"] >= 0

    # resume continues from epoch 2 with the saved history
    main(["train", *QUICK, "--aggressive", "on", "--epochs", "3", "--out", str(out), "--resume"])
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [0, 1, 2]

    capsys.readouterr()
    ev = main(["evaluate", "--checkpoint", str(out), "--iw-samples", "4", "--max-eval", "5",
               "--json", str(tmp_path / "ev.json")])
    table = capsys.readouterr().out
    for label in ("IW-NLL", "KL", "MI", "AU"):
        assert label in table
    assert json.loads((tmp_path / "ev.json").read_text())["iw_samples"] == 4 and ev["n_examples"] == 5

    paths = main(["sample", "--checkpoint", str(out / "model.pt"), "--n", "3", "--reconstructions", "2",
                  "--out", str(tmp_path / "img"), "--threads", "1"])
    assert [p.name for p in paths] == ["samples.png", "sample_probs.png", "reconstructions.png"]
    samples = read_image(tmp_path / "img" / "samples.png")
    assert samples.shape == (2 + 30, 2 + 3 * 30)  # one row of three 28x28 images with 2-pixel padding
    inner = samples[2:30, 2:30]
    assert set(inner.unique().tolist()) <= {0.0, 1.0}  # binary samples
    probs = read_image(tmp_path / "img" / "sample_probs.png")
    assert probs.shape == samples.shape and 0 <= probs.min() and probs.max() <= 1
    assert read_image(tmp_path / "img" / "reconstructions.png").shape == (2 + 2 * 30, 2 + 2 * 30)
    assert list(cwd.iterdir()) == []


def test_basic_training_never_runs_inner_steps(tmp_path, tiny_preset):
    out = tmp_path / "basic"
    main(["train", *QUICK, "--aggressive", "off", "--epochs", "1", "--out", str(out), "--iw-samples", "0"])
    history = json.loads((out / "history.json").read_text())
    assert not history[0]["aggressive"] and history[0]["inner_steps_mean"] == 0
    assert "iw_nll" not in json.loads((out / "metrics.json").read_text())


def test_cli_errors(tmp_path, tiny_preset):
    with pytest.raises(SystemExit):
        main(["train", "--aggressive", "maybe", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError):
        main(["train", *QUICK, "--data", str(tmp_path / "none.npy"), "--out", str(tmp_path / "x")])
    with pytest.raises(FileNotFoundError):
        main(["evaluate", "--checkpoint", str(tmp_path / "missing")])
