"""Run the paper's ``image.py`` unchanged, its two networks built at the sizes the harness asks for.

This file is copied next to a scratch copy of the paper's code and run there as
``python run_image.py <image.py's own arguments>``; it imports nothing of this project (only torch
and the paper's ``modules``), so it runs under the reference's interpreter and path.

Why a launcher: ``image.py`` reads the latent size, the latent maps, the batch size, the epochs and
the data file from its config module, but its ``ResNetEncoderV2`` and ``PixelCNNDecoderV2`` fix
their widths and depth in their constructors (encoder blocks of 64 channels and 512 features; 13
PixelCNN blocks of 64 channels, kernels 7 to 3); the config's ``enc_layers`` / ``dec_kernel_size``
are read only by the older modules it does not import. When the config (written by
:mod:`benchmarks.image_parity.reference`) holds ``parity_sizes``, the launcher replaces the two
classes in the ``modules`` package by subclasses that build the paper's object and then rebuild its
trunk from the paper's own ``ResNet`` and ``PixelCNN`` classes at those sizes, with the paper's
initialisation (``reset_parameters``); every method (``encode``, ``reconstruct_error``, ``nll_iw``,
``calc_mi``...) and the whole training script stay the paper's. :func:`check_rebuild` verifies that
rebuilding at the paper's own sizes gives the paper's modules exactly (same layers, same shapes).
Without ``parity_sizes`` nothing is replaced.

``image.py`` imports ``torchvision.utils.save_image`` for its sampling mode only; where torchvision
is not installed a stand-in module is put in its place that raises if called.

Two measurements that change nothing the script does: every printed line starts with the process's
CPU seconds (:class:`CPUStamped`), and at the end the launcher prints how many steps each optimiser
took (torch's global step hook), from which the harness gets the script's inner steps per decoder
update (the script does not print them).
"""
from __future__ import annotations

import argparse
import importlib
import runpy
import sys
import time
import types
from typing import Any, Dict, Sequence, TextIO

import torch
from torch import nn

__all__ = ["rebuild_encoder", "rebuild_decoder", "sized_classes", "check_rebuild", "stub_torchvision", "CPUStamped",
           "CPU_PREFIX", "STEPS_LINE", "count_optimizer_steps", "main"]

PAPER_SIZES: Dict[str, Any] = {  # as in benchmarks.image_parity.spec (this file imports nothing of ours)
    "encoder_channels": [64, 64, 64], "encoder_hidden": 512, "decoder_channels": 64,
    "decoder_kernel_sizes": [7, 7, 7, 7, 7, 5, 5, 5, 5, 3, 3, 3, 3],
}
IMAGE_SIZE = 28


def rebuild_encoder(encoder: nn.Module, resnet_cls: Any, *, channels: Sequence[int], hidden: int,
                    latent_dim: int) -> nn.Module:
    """Give the paper's ``ResNetEncoderV2`` object ``encoder`` stride-2 residual blocks of ``channels``,
    a full-map convolution to ``hidden`` features (BatchNorm, ELU) and a linear layer to
    ``2 * latent_dim``, then the paper's initialisation. Returns ``encoder``."""
    size = IMAGE_SIZE
    for _ in channels:
        size = (size + 1) // 2
    channels = [int(c) for c in channels]
    encoder.main = nn.Sequential(
        resnet_cls(1, channels, [2] * len(channels)),
        nn.Conv2d(channels[-1], hidden, size, 1, 0, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ELU(),
    )
    encoder.linear = nn.Linear(hidden, 2 * latent_dim)
    encoder.reset_parameters()
    return encoder


def rebuild_decoder(decoder: nn.Module, pixelcnn_cls: Any, *, channels: int, kernel_sizes: Sequence[int]) -> nn.Module:
    """Give the paper's ``PixelCNNDecoderV2`` object ``decoder`` a masked stack of ``len(kernel_sizes)``
    blocks of ``channels`` (its own ``latent_feature_map`` maps of z as extra inputs) and the
    paper's 1x1 head, then the paper's initialisation. Returns ``decoder``."""
    kernel_sizes = [int(k) for k in kernel_sizes]
    nc, maps = decoder.nc, decoder.fm_latent
    decoder.main = nn.Sequential(
        pixelcnn_cls(nc + maps, channels, len(kernel_sizes), kernel_sizes, nc),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ELU(),
        nn.Conv2d(channels, nc, 1, bias=False),
        nn.Sigmoid(),
    )
    decoder.reset_parameters()
    return decoder


def _parts(modules: Any) -> Dict[str, Any]:
    enc_mod = importlib.import_module(modules.__name__ + ".encoders.enc_resnet_v2")
    dec_mod = importlib.import_module(modules.__name__ + ".decoders.dec_pixelcnn_v2")
    return {"encoder": enc_mod.ResNetEncoderV2, "decoder": dec_mod.PixelCNNDecoderV2, "resnet": enc_mod.ResNet,
            "pixelcnn": dec_mod.PixelCNN}


def sized_classes(modules: Any, sizes: Dict[str, Any]) -> Dict[str, type]:
    """``{"ResNetEncoderV2": cls, "PixelCNNDecoderV2": cls}``: subclasses of the paper's classes in
    the imported package ``modules`` whose objects are rebuilt at ``sizes`` (keys of
    ``PAPER_SIZES``; the latent size and latent maps come from the script's ``args`` as usual)."""
    parts = _parts(modules)
    base_enc, base_dec = parts["encoder"], parts["decoder"]

    class SizedResNetEncoderV2(base_enc):  # type: ignore[misc, valid-type]
        def __init__(self, args: Any, *a: Any, **k: Any) -> None:
            super().__init__(args, *a, **k)
            rebuild_encoder(self, parts["resnet"], channels=sizes["encoder_channels"],
                            hidden=int(sizes["encoder_hidden"]), latent_dim=int(args.nz))

    class SizedPixelCNNDecoderV2(base_dec):  # type: ignore[misc, valid-type]
        def __init__(self, args: Any, *a: Any, **k: Any) -> None:
            super().__init__(args, *a, **k)
            rebuild_decoder(self, parts["pixelcnn"], channels=int(sizes["decoder_channels"]),
                            kernel_sizes=sizes["decoder_kernel_sizes"])

    return {"ResNetEncoderV2": SizedResNetEncoderV2, "PixelCNNDecoderV2": SizedPixelCNNDecoderV2}


def _shapes(module: nn.Module) -> list:
    return [(n, tuple(t.shape)) for n, t in list(module.named_parameters()) + list(module.named_buffers())]


def check_rebuild(modules: Any, latent_dim: int = 32, latent_maps: int = 4) -> None:
    """Raise ``RuntimeError`` unless rebuilding at the paper's sizes gives modules identical in
    layers (``repr``) and tensor names and shapes to the paper's own."""
    parts = _parts(modules)
    args = argparse.Namespace(nz=latent_dim, latent_feature_map=latent_maps, device=torch.device("cpu"))
    sized = sized_classes(modules, PAPER_SIZES)
    for key, name in (("encoder", "ResNetEncoderV2"), ("decoder", "PixelCNNDecoderV2")):
        own, rebuilt = parts[key](args), sized[name](args)
        layers = lambda m: [(n, repr(c)) for n, c in m.named_children()]  # noqa: E731 (not the class name)
        if layers(own) != layers(rebuilt) or _shapes(own) != _shapes(rebuilt):
            raise RuntimeError(f"rebuilding the paper's {name} at its own sizes does not give its own "
                               f"modules; the launcher does not fit this version of the paper's code")


def stub_torchvision() -> bool:
    """Put a stand-in ``torchvision.utils`` in place when torchvision is not installed; returns
    whether it did."""
    try:
        import torchvision.utils  # noqa: F401
        return False
    except ImportError:
        pass
    tv, utils = types.ModuleType("torchvision"), types.ModuleType("torchvision.utils")

    def save_image(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("torchvision is not installed; the paper's sampling mode needs its save_image")

    utils.save_image = save_image  # type: ignore[attr-defined]
    tv.utils = utils  # type: ignore[attr-defined]
    sys.modules["torchvision"], sys.modules["torchvision.utils"] = tv, utils
    return True


CPU_PREFIX = "[cpu "  # each printed line starts with "[cpu <process CPU seconds>] "


class CPUStamped:
    """A text stream that starts every line it passes on with the process's CPU seconds so far
    (``time.process_time``), so that phases of the script can be timed in CPU time, which other jobs
    on a shared machine do not inflate as they do wall time."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.at_line_start = True

    def write(self, text: str) -> int:
        out = []
        for piece in text.splitlines(keepends=True):
            if self.at_line_start:
                out.append(f"{CPU_PREFIX}{time.process_time():.3f}] ")
            out.append(piece)
            self.at_line_start = piece.endswith("\n")
        self.stream.write("".join(out))
        self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _dataset(argv: Sequence[str]) -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dataset", required=True)
    return parser.parse_known_args(list(argv))[0].dataset


def main(argv: Sequence[str], script: str = "image.py") -> None:
    """Patch (when the config asks for other sizes) and run ``script`` as ``__main__`` with ``argv``."""
    sys.stdout = CPUStamped(sys.stdout)  # type: ignore[assignment]
    stubbed = stub_torchvision()
    params = importlib.import_module("config.config_" + _dataset(argv)).params
    sizes = params.get("parity_sizes")
    if sizes is not None:
        modules = importlib.import_module("modules")
        check_rebuild(modules)
        for name, cls in sized_classes(modules, sizes).items():
            setattr(modules, name, cls)
        print(f"[launcher] modules rebuilt at {sizes}", flush=True)
    if stubbed:
        print("[launcher] torchvision not installed: a stand-in torchvision.utils.save_image is in place", flush=True)
    counts = count_optimizer_steps()
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")
    print(f"{STEPS_LINE} {' '.join(str(n) for n in counts.values())}", flush=True)


STEPS_LINE = "[launcher] optimizer steps in order of first step:"


def count_optimizer_steps() -> Dict[int, int]:
    """Count every optimiser's ``step()`` calls through torch's global step hook (the script's own
    calls, unchanged); returns ``{id(optimizer): steps}`` in the order of their first step. In the
    paper's script the encoder's optimiser steps first (an inner step, or the encoder's half of a
    joint step), so the first count is the encoder's and the second the decoder's."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    counts: Dict[int, int] = {}

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        counts[id(optimizer)] = counts.get(id(optimizer), 0) + 1

    register_optimizer_step_post_hook(hook)
    return counts


if __name__ == "__main__":  # pragma: no cover - run in the reference's copy
    main(sys.argv[1:])
