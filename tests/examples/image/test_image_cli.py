"""End-to-end: train (aggressive and basic), resume, evaluate and sample, with a tiny model."""
import json
import struct
import zlib

import pytest
import torch

from examples.image import PRESETS, Preset
from examples.image.cli import main
from examples.image.png import image_grid, write_png


TINY = Preset("tiny", latent_dim=4, encoder_channels=(4, 4, 4), encoder_hidden=8, decoder_channels=4,
              decoder_kernel_sizes=(3, 3, 3), latent_maps=1, batch_size=5)
QUICK = ["--data", "bundled", "--preset", "tiny", "--max-train", "10", "--max-eval", "5", "--window", "1",
         "--max-inner-steps", "2", "--iw-samples", "3", "--iw-chunk", "2", "--no-progress", "--threads", "1"]


@pytest.fixture
def tiny_preset(monkeypatch):
    monkeypatch.setitem(PRESETS, "tiny", TINY)


def read_png(path):
    """Decode the 8-bit greyscale PNGs write_png makes: ``[H, W]`` uint8."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        chunks[kind] = body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 0)
    raw = torch.frombuffer(bytearray(zlib.decompress(chunks[b"IDAT"])), dtype=torch.uint8).view(height, width + 1)
    assert raw[:, 0].eq(0).all()
    return raw[:, 1:]


def test_png_round_trip(tmp_path):
    img = torch.rand(5, 7)
    back = read_png(write_png(tmp_path / "a.png", img))
    assert torch.equal(back, (img * 255).round().to(torch.uint8))
    grid = image_grid(torch.ones(3, 1, 2, 2), ncol=2, padding=1, pad_value=0.0)
    assert grid.shape == (7, 7) and grid.sum() == 12


def test_train_evaluate_sample(tmp_path, tiny_preset, capsys):
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
    samples = read_png(tmp_path / "img" / "samples.png")
    assert samples.shape == (2 + 30, 2 + 3 * 30)  # one row of three 28x28 images with 2-pixel padding
    inner = samples[2:30, 2:30]
    assert set(inner.unique().tolist()) <= {0, 255}  # binary samples
    assert read_png(tmp_path / "img" / "reconstructions.png").shape == (2 + 2 * 30, 2 + 2 * 30)


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
