"""``--device`` in ``python -m examples.text``: parsed, passed through, refused clearly without CUDA;
generation draws with generators on the model's device. CPU-only: no GPU is faked."""
import random
import types

import pytest
import torch

from examples.devices import module_device
from examples.text import cli, generation
from examples.text.cli import main
from examples.text.corpus import Corpus, TextDataset, Vocab, make_loader
from examples.text.experiment import build_vae
from examples.text.presets import get_preset

WORDS = "the a cat dog sat ran on under mat log big small".split()


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(1)
    for split, n in (("train", 32), ("valid", 16), ("test", 16)):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for _ in range(n)]
        (root / f"toy.{split}.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        main(["train", "--data", str(root / "toy"), "--preset", "tiny", "--epochs", "1", "--out", str(out),
              "--no-progress", "--iw-samples", "2", "--device", "auto"])
    return out


@pytest.mark.parametrize("command", [
    ["train", "--data", "bundled", "--preset", "tiny", "--out", "never"],
    ["evaluate", "--checkpoint", "never"],
    ["generate", "--checkpoint", "never", "--prior", "1"],
])
def test_cuda_without_cuda_is_an_error_naming_the_option(no_cuda, capsys, command):
    with pytest.raises(SystemExit) as info:
        main([*command, "--device", "cuda"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --device: --device cuda: CUDA is not available" in err and "is_available() is False" in err


def test_auto_without_cuda_trains_on_the_cpu_and_records_it(run):
    saved = torch.load(run / "model.pt", weights_only=True)
    assert saved["args"]["device"] == "cpu"
    assert all(t.device.type == "cpu" for t in saved["model"].values())  # the export is CPU tensors


def test_evaluate_and_generate_load_on_the_device_asked_for(run, monkeypatch):
    """The option reaches load_model, and generate's generator is made on the loaded model's device."""
    seen = {}
    real_load, real_make = cli.load_model, cli.make_generator

    def load_model(path, map_location="cpu"):
        seen["map_location"] = map_location
        loaded = real_load(path, map_location=map_location)
        seen["model_device"] = module_device(loaded[0])
        return loaded

    def make_generator(seed, device):
        seen["generator_device"] = torch.device(device)
        return real_make(seed, device)

    monkeypatch.setattr(cli, "load_model", load_model)
    monkeypatch.setattr(cli, "make_generator", make_generator)
    main(["evaluate", "--checkpoint", str(run), "--iw-samples", "2", "--device", "cpu"])
    assert seen["map_location"] == torch.device("cpu")
    seen.clear()
    lines = main(["generate", "--checkpoint", str(run), "--prior", "2", "--strategy", "sample",
                  "--interpolate", "the cat", "a dog", "--steps", "2", "--device", "cpu", "--seed", "4"])
    assert seen == {"map_location": torch.device("cpu"), "model_device": torch.device("cpu"),
                    "generator_device": torch.device("cpu")}
    assert len(lines) == (1 + 2) + (1 + 2)


def test_loaders_pin_memory_only_for_cuda():
    vocab = Vocab.build([["a", "b"]])
    dataset = TextDataset(Corpus([["a", "b"], ["b"]], None, 0), vocab)
    assert make_loader(dataset, 2, pin_memory=True).pin_memory
    assert not make_loader(dataset, 2).pin_memory
    assert cli.pin_memory(torch.device("cuda", 0)) and not cli.pin_memory(torch.device("cpu"))


def test_generation_refuses_a_generator_on_another_device(monkeypatch):
    """What the issue saw: a CPU generator reaching randn(..., device=cuda). A stand-in generator
    that says it lives on cuda:0 must be refused for CPU tensors, before any draw; and from_prior
    checks the generator against the decoder's device."""
    vae = build_vae(get_preset("tiny"), 20)
    on_cuda = types.SimpleNamespace(device=torch.device("cuda", 0))
    z = torch.zeros(2, vae.decoder.latent_dim)
    with pytest.raises(ValueError, match="generator is on cuda:0 but draws tensors on cpu"):
        generation.sample_decode(vae.decoder, z, generator=on_cuda)
    with pytest.raises(ValueError, match="generator is on cuda:0 but draws tensors on cpu"):
        generation.from_prior(vae.decoder, 2, generator=on_cuda)
    x = torch.tensor([[1, 5, 6, 2]])
    with pytest.raises(ValueError, match="generator is on cuda:0 but draws tensors on cpu"):
        generation.reconstruct(vae.encoder, vae.decoder, x, use_mean=False, generator=on_cuda)
    # a decoder on cuda:0 (as module_device reports it) with the CPU generator the CLI used to make
    monkeypatch.setattr(generation, "module_device", lambda module: torch.device("cuda", 0))
    with pytest.raises(ValueError, match=r"generator is on cpu but draws tensors on cuda:0"):
        generation.from_prior(vae.decoder, 2, generator=torch.Generator().manual_seed(0))
