"""``--device`` in ``python -m examples.image``: parsed, passed through, refused clearly without CUDA;
sampling draws with generators on the model's device. CPU-only: no GPU is faked."""
import json
import types

import pytest
import torch

from examples.image import PRESETS, Preset, experiment
from examples.image.cli import main
from examples.image.datasets import load_bundled_mnist

TINY = Preset("tiny", latent_dim=4, encoder_channels=(4, 4, 4), encoder_hidden=8, decoder_channels=4,
              decoder_kernel_sizes=(3, 3, 3), latent_maps=1, batch_size=5)
QUICK = ["--data", "bundled", "--preset", "tiny", "--max-train", "10", "--max-eval", "5", "--window", "1",
         "--max-inner-steps", "2", "--iw-samples", "2", "--iw-chunk", "2", "--no-progress", "--threads", "1",
         "--epochs", "1"]


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(PRESETS, "tiny", TINY)
        patch.setattr(torch.cuda, "is_available", lambda: False)
        main(["train", *QUICK, "--out", str(out), "--device", "auto"])
    return out


@pytest.mark.parametrize("command", [
    ["train", "--out", "never"],
    ["evaluate", "--checkpoint", "never"],
    ["sample", "--checkpoint", "never"],
])
def test_cuda_without_cuda_is_an_error_naming_the_option(no_cuda, capsys, command):
    with pytest.raises(SystemExit) as info:
        main([*command, "--device", "cuda:1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --device: --device cuda:1: CUDA is not available" in err and "is_available() is False" in err


def test_auto_without_cuda_trains_on_the_cpu_and_records_it(run):
    assert json.loads((run / "config.json").read_text())["device"] == "cpu"
    saved = torch.load(run / "model.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in saved["model"].values())  # the export is CPU tensors


def test_evaluate_and_sample_load_on_the_device_asked_for(run, tmp_path, monkeypatch):
    """The option reaches load_model, and the sampling generators are made on the model's device."""
    from examples.image import cli

    seen = {"generators": []}
    real_load, real_make = cli.load_model, experiment.make_generator

    def load_model(path, map_location="cpu"):
        seen["map_location"] = map_location
        return real_load(path, map_location=map_location)

    def make_generator(seed, device):
        seen["generators"].append(torch.device(device))
        return real_make(seed, device)

    monkeypatch.setattr(cli, "load_model", load_model)
    monkeypatch.setattr(experiment, "make_generator", make_generator)
    main(["evaluate", "--checkpoint", str(run), "--iw-samples", "2", "--max-eval", "5", "--device", "cpu"])
    assert seen["map_location"] == torch.device("cpu")
    main(["sample", "--checkpoint", str(run), "--n", "2", "--reconstructions", "2", "--out", str(tmp_path),
          "--device", "cpu"])
    assert seen["map_location"] == torch.device("cpu")
    assert seen["generators"] == [torch.device("cpu")] * 2  # prior samples, reconstructions


def test_sampling_refuses_a_generator_on_another_device(run):
    """What the issue saw: torch.bernoulli(cuda_probs, generator=cpu_generator). The decoder refuses a
    generator that is not on z's device before any draw (a stand-in says it lives on cuda:0)."""
    vae = experiment.load_model(run)[0]
    on_cuda = types.SimpleNamespace(device=torch.device("cuda", 0))
    with pytest.raises(ValueError, match="generator is on cuda:0 but draws tensors on cpu"):
        vae.decoder.sample(torch.zeros(1, 4), generator=on_cuda)
    images, _ = vae.decoder.sample(torch.zeros(1, 4), generator=torch.Generator().manual_seed(0))
    assert images.shape == (1, 1, 28, 28)


def test_loaders_pin_memory_when_asked():
    splits = experiment.subset(load_bundled_mnist(), 10, 5)
    assert all(dl.pin_memory for dl in experiment.make_loaders(splits, 5, pin_memory=True))
    assert not any(dl.pin_memory for dl in experiment.make_loaders(splits, 5))
