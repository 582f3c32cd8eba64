"""The paper's code (He et al., 2019), loaded at run time from the directory the user names.

Nothing of that code is part of this project: :func:`check_reference_dir` checks that the directory
holds what a benchmark needs, :func:`copy_reference` copies its Python sources to a scratch directory
(when the benchmark runs its scripts or wants the checkout untouched), :func:`import_reference`
imports its top-level packages from a directory without writing there, and :func:`paper_vae` builds
its ``VAE(LSTMEncoder, LSTMDecoder)`` with its own initialisation.
"""
from __future__ import annotations

import contextlib
import importlib
import shutil
import sys
import warnings
from argparse import Namespace
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, Sequence, Union

import torch
from torch import nn

__all__ = ["PAPER_NAMES", "TEXT_NEEDED", "check_reference_dir", "copy_reference", "import_reference",
           "SizedVocab", "paper_args", "paper_vae", "warnings_quiet"]

PathLike = Union[str, Path]
#: the paper's top-level module names (its text.py imports them as top-level modules)
PAPER_NAMES = ("modules", "text", "data", "logger")
#: what its ``text.py`` needs to be imported
TEXT_NEEDED = ("text.py", "modules", "data", "logger.py")


def check_reference_dir(reference_dir: PathLike, needed: Sequence[str] = TEXT_NEEDED) -> Path:
    """``reference_dir`` as a path, once every name of ``needed`` is found in it.

    Raises:
        FileNotFoundError: one is missing (named in the message).
    """
    src = Path(reference_dir)
    for name in needed:
        if not (src / name).exists():
            raise FileNotFoundError(f"--reference-dir {src}: expected the paper's code with {name} in it "
                                    f"(a checkout of vae-lagging-encoder), not found")
    return src


def copy_reference(reference_dir: PathLike, work_dir: PathLike, needed: Sequence[str] = TEXT_NEEDED) -> Path:
    """Copy the files and packages of ``needed`` from ``reference_dir`` into ``work_dir/reference``
    (replaced if present) and return that copy. Only Python sources travel (no caches).

    Raises:
        FileNotFoundError: ``reference_dir`` lacks one of them.
    """
    src = check_reference_dir(reference_dir, needed)
    dst = Path(work_dir) / "reference"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in needed:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src / name, dst / name)
    return dst


def import_reference(directory: PathLike, names: Sequence[str]) -> Dict[str, ModuleType]:
    """Import the top-level modules ``names`` from ``directory`` (put first on ``sys.path`` for the
    imports only; no byte code is written there).

    Raises:
        ImportError: a module of the paper's names is already imported from elsewhere.
    """
    directory = Path(directory).resolve()
    for name in dict.fromkeys((*PAPER_NAMES, *names)):
        loaded = sys.modules.get(name)
        origin = getattr(loaded, "__file__", None) if loaded is not None else None
        if origin is not None and not Path(origin).resolve().is_relative_to(directory):
            raise ImportError(f"a module named {name!r} is already imported from {origin}; "
                              f"cannot import the paper's from {directory}")
    sys.path.insert(0, str(directory))
    sys.dont_write_bytecode = True  # leave the directory as it was
    try:
        return {name: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(str(directory))


class SizedVocab:
    """What the paper's decoder needs of a vocabulary at construction: its size."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its CrossEntropyLoss(reduce=False) is deprecated
        yield


def paper_args(*, embed_dim: int, hidden_dim: int, latent_dim: int, dropout: float = 0.5,
               device: Union[str, torch.device] = "cpu", **extra: Any) -> Namespace:
    """The ``args`` namespace the paper's modules read (its ``config_*`` fields, ``device``, ``extra``).

    ``device`` is where its ``VAE`` makes its prior (``args.device``; the prior is no module buffer,
    so ``.to(device)`` does not move it): the model's device for its ``nll_iw`` to run there."""
    return Namespace(ni=embed_dim, enc_nh=hidden_dim, dec_nh=hidden_dim, nz=latent_dim, dec_dropout_in=dropout,
                     dec_dropout_out=dropout, device=torch.device(device), **extra)


def paper_vae(modules: ModuleType, vocab: Any, *, embed_dim: int, hidden_dim: int, latent_dim: int,
              dropout: float = 0.5, **extra: Any) -> nn.Module:
    """The paper's ``VAE(LSTMEncoder, LSTMDecoder)`` from its ``modules`` package, with its
    initialisation (U(-0.01, 0.01), word embeddings U(-0.1, 0.1)) drawn from torch's global generator.

    Args:
        vocab: its vocabulary, or a :class:`SizedVocab` (the decoder reads only ``len(vocab)``).
        extra: further ``args`` fields (e.g. ``nsamples``, ``iw_nsamples``, ``device``: see
            :func:`paper_args`; the modules are built on the CPU either way).
    """
    args = paper_args(embed_dim=embed_dim, hidden_dim=hidden_dim, latent_dim=latent_dim, dropout=dropout, **extra)

    def model_init(t: torch.Tensor) -> None:
        nn.init.uniform_(t, -0.01, 0.01)

    def emb_init(t: torch.Tensor) -> None:
        nn.init.uniform_(t, -0.1, 0.1)

    with warnings_quiet():
        encoder = modules.LSTMEncoder(args, len(vocab), model_init, emb_init)
        decoder = modules.LSTMDecoder(args, vocab, model_init, emb_init)
    return modules.VAE(encoder, decoder, args)
