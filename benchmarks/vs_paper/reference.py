"""The paper's side: its own modules (``modules.LSTMEncoder``, ``LSTMDecoder``, ``VAE``) and, for the
IW-NLL, its own ``text.calc_iwnll``, loaded at run time from the checkout the user names.

Nothing of that code is part of this project: :func:`load_reference` puts ``--reference-dir`` first on
``sys.path`` and imports its ``modules`` package and ``text.py`` from there (benchmarks only; no test
imports it), through :mod:`benchmarks.core.reference`. The training loop of ``text.py`` lives inside its
``main()``, so :class:`PaperLoop` (:mod:`benchmarks.core.paper_update`, the paper's update written once
for every benchmark) follows what that loop does per step, as read from its source, calling the
paper's model code (the steps are listed there).
"""
from __future__ import annotations

import contextlib
import io
from argparse import Namespace
from pathlib import Path
from types import ModuleType
from typing import List, Union

import torch
from torch import nn

from ..core.paper_update import CLIP, MAX_SUB_ITER, WINDOW, PaperLoop
from ..core.reference import TEXT_NEEDED, SizedVocab, check_reference_dir, import_reference, paper_vae
from .sizes import Size

__all__ = ["Reference", "load_reference", "build_reference_vae", "PaperLoop", "CLIP", "WINDOW", "MAX_SUB_ITER"]

PathLike = Union[str, Path]


class Reference:
    """The paper's ``modules`` package and ``text`` module, imported from a checkout."""

    def __init__(self, directory: Path, modules: ModuleType, text: ModuleType) -> None:
        self.directory, self.modules, self.text = directory, modules, text


def load_reference(reference_dir: PathLike) -> Reference:
    """Import the paper's ``modules`` and ``text`` from ``reference_dir`` (nothing is written there).

    Raises:
        FileNotFoundError: the directory lacks ``text.py``, ``modules``, ``data`` or ``logger.py``.
        ImportError: another ``modules``/``text`` package is already imported from elsewhere.
    """
    directory = check_reference_dir(Path(reference_dir).resolve(), TEXT_NEEDED)
    loaded = import_reference(directory, ("modules", "text"))
    return Reference(directory, loaded["modules"], loaded["text"])


def build_reference_vae(ref: Reference, size: Size, seed: int) -> nn.Module:
    """The paper's ``VAE(LSTMEncoder, LSTMDecoder)`` with its initialisation (U(-0.01, 0.01), word
    embeddings U(-0.1, 0.1)), drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return paper_vae(ref.modules, SizedVocab(size.vocab_size), embed_dim=size.embed_dim,
                     hidden_dim=size.hidden_dim, latent_dim=size.latent_dim, dropout=0.5, nsamples=1,
                     iw_nsamples=size.iw_samples)


def reference_iw_nll(ref: Reference, vae: nn.Module, sentences: torch.Tensor, n_samples: int) -> float:
    """The paper's ``text.calc_iwnll`` (one sentence per call of ``vae.nll_iw``, samples 100 at a time)
    on ``sentences: [n, len]``, in eval mode without gradient as ``text.py`` calls it; nats per sentence.
    Its progress lines are swallowed."""
    if sentences.shape[0] < 6:
        raise ValueError(f"the paper's calc_iwnll needs at least 6 sentences (it prints progress every "
                         f"round(n / 10) of them), got {sentences.shape[0]}")
    ns = min(100, n_samples)
    if n_samples % ns:
        raise ValueError(f"iw_samples must be a multiple of 100 (the paper's chunk), got {n_samples}")
    singles: List[torch.Tensor] = [sentences[i:i + 1] for i in range(sentences.shape[0])]
    args = Namespace(iw_nsamples=n_samples)
    vae.eval()
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            nll, _ = ref.text.calc_iwnll(vae, singles, args, ns=ns)
    finally:
        vae.train()
    return float(nll)

