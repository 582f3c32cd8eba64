"""The paper's code (He et al., 2019), loaded or run at run time from the directory the user names.

Nothing of that code is part of this project: :func:`check_reference_dir` checks that the directory
holds what a benchmark needs, :func:`copy_reference` copies its Python sources to a scratch directory
(when the benchmark runs its scripts or wants the checkout untouched), :func:`import_reference`
imports its top-level packages from a directory without writing there, and :func:`paper_vae` builds
its ``VAE(LSTMEncoder, LSTMDecoder)`` with its own initialisation.

Running its scripts (``text.py``, ``image.py``; :mod:`benchmarks.core.side_by_side` starts them):
:func:`write_config` gives a copy a config module, :func:`reference_seeds` and :func:`task_id` map a
seed to the ``--taskid`` that selects it, :func:`reference_env` is the environment they run in, and
:func:`as_lines`, :func:`final_evaluation` and the patterns :data:`FLOAT`, :data:`ACTIVE_UNITS`,
:data:`TRAIN_LOG` read what both scripts print alike (:class:`ReferenceOutputError` when a line is
missing).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
import shutil
import sys
import warnings
from argparse import Namespace
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = ["PAPER_NAMES", "TEXT_NEEDED", "check_reference_dir", "copy_reference", "import_reference",
           "SizedVocab", "paper_args", "paper_vae", "warnings_quiet", "CONFIG_NAME", "write_config",
           "reference_seeds", "task_id", "reference_env", "ReferenceOutputError", "Line", "as_lines",
           "final_evaluation", "FLOAT", "ACTIVE_UNITS", "TRAIN_LOG"]

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


# ---------------------------------------------------------------- running its scripts
#: the ``--dataset`` the harnesses pass to the paper's scripts: they import ``config/config_parity.py``
CONFIG_NAME = "parity"
#: a line the script printed: (seconds since its process started, or None; the text)
Line = Tuple[Optional[float], str]
#: a number as the scripts print it
FLOAT = r"(-?[0-9.]+(?:e[-+]?\d+)?|nan|inf|-inf)"
ACTIVE_UNITS = re.compile(r"^(\d+) active units")
TRAIN_LOG = re.compile(r"^epoch: (\d+), iter: (\d+), .*time elapsed ([0-9.]+)s")
_SEED_SET = re.compile(r"^\s*seed_set\s*=\s*\[([0-9,\s]+)\]", re.MULTILINE)


class ReferenceOutputError(RuntimeError):
    """The reference's output lacks a line the harness needs (it crashed, or its format changed)."""


def write_config(copy_dir: PathLike, params: Dict[str, Any], written_by: str) -> Path:
    """Write ``copy_dir/config/config_parity.py`` holding ``params = {...}`` (the scripts read their
    settings from ``config.config_<--dataset>``) and return its path; its first line names the
    harness, ``written_by``."""
    path = Path(copy_dir) / "config" / f"config_{CONFIG_NAME}.py"
    path.write_text(f"# written by {written_by} for one side-by-side run\nparams = " + repr(params) + "\n")
    return path


def reference_seeds(script: PathLike) -> List[int]:
    """The seeds the paper's script can run with, in ``--taskid`` order, read from its source
    (it ignores ``--seed`` and uses ``seed_set[taskid]``).

    Raises:
        ValueError: the script has no ``seed_set = [...]`` line.
    """
    source = Path(script).read_text()
    match = _SEED_SET.search(source)
    if match is None:
        raise ValueError(f"{script}: no 'seed_set = [...]' line; cannot map seeds to --taskid")
    return [int(s) for s in match.group(1).replace(",", " ").split()]


def task_id(script: PathLike, seed: int) -> int:
    """The ``--taskid`` that makes the paper's ``script`` run with ``seed``.

    Raises:
        ValueError: ``seed`` is not one of its seeds (:func:`reference_seeds`).
    """
    seeds = reference_seeds(script)
    if seed not in seeds:
        raise ValueError(f"seed {seed} is not one the reference can run with; its seeds (by --taskid) "
                         f"are {seeds}")
    return seeds.index(seed)


def reference_env(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """One thread, no GPU, unbuffered output, and none of this project on the path."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONPATH", None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return env


def as_lines(output: Union[str, Sequence[Line]]) -> List[Line]:
    """What a script printed as :data:`Line` pairs: a string's lines without time stamps, or the pairs."""
    if isinstance(output, str):
        return [(None, text) for text in output.splitlines()]
    return [(t, text) for t, text in output]


def final_evaluation(texts: Sequence[str], test: "re.Pattern[str]", iw: "re.Pattern[str]",
                     iw_shape: str) -> Tuple[int, int, int]:
    """Where the final evaluation is in the lines ``texts``: the last line matching ``test`` (its
    ``TEST --- ...`` line), the ``N active units`` line after it and the first line matching ``iw``
    after that.

    Raises:
        ReferenceOutputError: one is missing (``iw_shape`` shows the IW-NLL line in the message).
    """
    tests = [i for i, t in enumerate(texts) if test.match(t)]
    if not tests:
        raise ReferenceOutputError("the reference's output has no 'TEST --- ...' line")
    final = tests[-1]
    au = next((i for i in range(final + 1, len(texts)) if ACTIVE_UNITS.match(texts[i])), None)
    if au is None:
        raise ReferenceOutputError("the reference's output has no 'N active units' line after its last TEST line")
    iw_idx = next((i for i in range(au + 1, len(texts)) if iw.match(texts[i])), None)
    if iw_idx is None:
        raise ReferenceOutputError(f"the reference's output has no '{iw_shape}' line after its final test")
    return final, au, iw_idx
