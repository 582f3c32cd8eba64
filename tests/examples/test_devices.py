"""examples.devices: the --device option and generators on the device they draw on (CPU-only checks:
no GPU is faked; the CUDA paths are checked by what they refuse)."""
import argparse
import types

import pytest
import torch

from examples.devices import (check_generator, device_option, make_generator, module_device, pin_memory,
                              resolve_device)


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_and_auto_resolve_to_the_cpu_without_cuda(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "auto-not"])
def test_unavailable_or_unknown_devices_are_refused_naming_the_option(no_cuda, name):
    with pytest.raises(ValueError, match="--device") as info:
        resolve_device(name)
    if name.startswith("cuda"):
        assert "torch.cuda.is_available() is False" in str(info.value) and "--device cpu" in str(info.value)


@pytest.mark.parametrize("name", ["gpu", "tpu", "", "cuda:x", "meta", "cpu:1"])
def test_only_cpu_cuda_and_auto_are_accepted(name):
    with pytest.raises(ValueError, match=r"--device must be cpu, cuda, cuda:N or auto; got"):
        resolve_device(name)


def test_the_argparse_type_reports_through_argparse(no_cuda):
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", type=device_option, default="cpu")
    assert parser.parse_args([]).device == torch.device("cpu")
    with pytest.raises(argparse.ArgumentTypeError, match="is_available"):
        device_option("cuda")


def test_make_generator_is_seeded_on_the_device_it_is_given():
    a, b = make_generator(7, torch.device("cpu")), make_generator(7, "cpu")
    assert a.device == torch.device("cpu")
    assert torch.equal(torch.randn(5, generator=a), torch.randn(5, generator=b))
    assert not torch.equal(torch.randn(5, generator=make_generator(8)), torch.randn(5, generator=make_generator(7)))


def test_check_generator_refuses_a_cpu_generator_for_cuda_tensors():
    check_generator(None, "cuda:0")  # the device's default generator
    check_generator(torch.Generator(), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"generator is on cpu but draws tensors on cuda:0; .*"
                                         r"torch.Generator\(device='cuda:0'\)"):
        check_generator(torch.Generator(), torch.device("cuda:0"))
    # a stand-in with a .device (a CUDA generator cannot be made here): wrong index, wrong type
    on_cuda1 = types.SimpleNamespace(device=torch.device("cuda", 1))
    with pytest.raises(ValueError, match="cuda:1 but draws tensors on cuda:0"):
        check_generator(on_cuda1, "cuda:0")
    with pytest.raises(ValueError, match="cuda:1 but draws tensors on cpu"):
        check_generator(on_cuda1, "cpu")
    check_generator(on_cuda1, "cuda")  # the current CUDA device: no index to compare


def test_module_device_and_pin_memory():
    assert module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")  # no parameters: CPU
    assert pin_memory("cuda:1") and pin_memory(torch.device("cuda")) and not pin_memory("cpu")
