"""The paper's side: its own modules (``modules.LSTMEncoder``, ``LSTMDecoder``, ``VAE``) and, for the
IW-NLL, its own ``text.calc_iwnll``, loaded at run time from the checkout the user names.

Nothing of that code is part of this project: :func:`load_reference` puts ``--reference-dir`` first on
``sys.path`` and imports its ``modules`` package and ``text.py`` from there (benchmarks only; no test
imports it). The training loop of ``text.py`` lives inside its ``main()``, so the steps below follow
what that loop does per step, as read from its source, calling the paper's model code:

* inner (encoder) step: zero both optimisers' gradients; ``vae.loss(x, kl_weight)``; read the summed
  loss to the host (``.item()``); back-propagate the mean through encoder *and* decoder; clip the
  joint gradient norm at 5; step the encoder's optimiser only;
* decoder update (aggressive) / joint step (basic): zero both; ``vae.loss``; back-propagate the mean;
  clip the joint norm at 5; step the decoder's optimiser (and the encoder's when basic); read the
  summed reconstruction and KL to the host;
* the catch-up loop: steps from ``sub_iter = 1`` while ``sub_iter < 100``, every further batch drawn
  uniformly at random from the training batches; every 15 steps the window's loss *per word* is
  compared with the previous window's, breaking when it went up.

Its per-iteration logging (validation MI and AU ten times an epoch while aggressive) is left out: the
comparison is of training arithmetic.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import sys
import time
from argparse import Namespace
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .sizes import Size

__all__ = ["Reference", "load_reference", "build_reference_vae", "PaperLoop", "CLIP", "WINDOW", "MAX_SUB_ITER"]

PathLike = Union[str, Path]
CLIP = 5.0
WINDOW = 15
MAX_SUB_ITER = 100  # `while sub_iter < 100` from 1: at most 99 inner steps
_NEEDED = ("text.py", "modules", "data", "logger.py")


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
    directory = Path(reference_dir).resolve()
    for name in _NEEDED:
        if not (directory / name).exists():
            raise FileNotFoundError(f"--reference-dir {directory}: expected the paper's code with {name} in it "
                                    f"(a checkout of vae-lagging-encoder), not found")
    for name in ("modules", "text", "data", "logger"):
        loaded = sys.modules.get(name)
        origin = getattr(loaded, "__file__", None) if loaded is not None else None
        if origin is not None and not Path(origin).resolve().is_relative_to(directory):
            raise ImportError(f"a module named {name!r} is already imported from {origin}; "
                              f"cannot import the paper's from {directory}")
    sys.path.insert(0, str(directory))
    sys.dont_write_bytecode = True  # leave the user's checkout as it was
    try:
        modules = importlib.import_module("modules")
        text = importlib.import_module("text")
    finally:
        sys.path.remove(str(directory))
    return Reference(directory, modules, text)


class _Vocab:
    """What the paper's decoder needs of a vocabulary at construction: its size."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


def paper_args(size: Size) -> Namespace:
    """The ``args`` namespace the paper's modules read (its ``config_*`` fields plus the device)."""
    return Namespace(ni=size.embed_dim, enc_nh=size.hidden_dim, dec_nh=size.hidden_dim, nz=size.latent_dim,
                     dec_dropout_in=0.5, dec_dropout_out=0.5, device=torch.device("cpu"), nsamples=1,
                     iw_nsamples=size.iw_samples)


def build_reference_vae(ref: Reference, size: Size, seed: int) -> nn.Module:
    """The paper's ``VAE(LSTMEncoder, LSTMDecoder)`` with its initialisation (U(-0.01, 0.01), word
    embeddings U(-0.1, 0.1)), drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    args = paper_args(size)

    def model_init(t: torch.Tensor) -> None:
        nn.init.uniform_(t, -0.01, 0.01)

    def emb_init(t: torch.Tensor) -> None:
        nn.init.uniform_(t, -0.1, 0.1)

    with warnings_quiet():
        encoder = ref.modules.LSTMEncoder(args, size.vocab_size, model_init, emb_init)
        decoder = ref.modules.LSTMDecoder(args, _Vocab(size.vocab_size), model_init, emb_init)
    return ref.modules.VAE(encoder, decoder, args)


@contextlib.contextmanager
def warnings_quiet():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its CrossEntropyLoss(reduce=False) is deprecated
        yield


class PaperLoop:
    """The per-step work of the paper's ``text.py`` training loop on one ``VAE`` (see the module doc).

    Args:
        vae: the paper's VAE.
        batches: its training batches (the catch-up loop draws from them at random).
        seed: seeds numpy's generator for that draw (the paper's code uses ``np.random``).
    """

    def __init__(self, vae: nn.Module, batches: Sequence[torch.Tensor], seed: int = 0) -> None:
        self.vae = vae
        self.batches = list(batches)
        self.enc_opt = torch.optim.SGD(vae.encoder.parameters(), lr=1.0, momentum=0)
        self.dec_opt = torch.optim.SGD(vae.decoder.parameters(), lr=1.0, momentum=0)
        self.rng = np.random.RandomState(seed)

    def encoder_step(self, x: torch.Tensor, kl_weight: float = 1.0) -> float:
        """One inner step; returns the batch's summed loss (nats), read to the host as the paper does."""
        self.enc_opt.zero_grad()
        self.dec_opt.zero_grad()
        loss, _, _ = self.vae.loss(x, kl_weight, nsamples=1)
        total = loss.sum().item()
        loss.mean(dim=-1).backward()
        torch.nn.utils.clip_grad_norm_(self.vae.parameters(), CLIP)
        self.enc_opt.step()
        return total

    def update(self, x: torch.Tensor, aggressive: bool, kl_weight: float = 1.0) -> Tuple[float, float]:
        """The decoder update (``aggressive``) or joint step; returns (summed reconstruction, KL)."""
        self.enc_opt.zero_grad()
        self.dec_opt.zero_grad()
        loss, loss_rc, loss_kl = self.vae.loss(x, kl_weight, nsamples=1)
        loss.mean(dim=-1).backward()
        torch.nn.utils.clip_grad_norm_(self.vae.parameters(), CLIP)
        if not aggressive:
            self.enc_opt.step()
        self.dec_opt.step()
        return loss_rc.sum().item(), loss_kl.sum().item()

    def _draw(self) -> torch.Tensor:
        return self.batches[int(self.rng.randint(0, len(self.batches)))]

    def catch_up(self, x: torch.Tensor, fixed_steps: int = 0) -> int:
        """The catch-up loop before the update on ``x``; returns the steps taken. ``fixed_steps > 0``:
        exactly that many steps, without the window test."""
        sub_iter, steps = 1, 0
        batch = x
        words, previous, current = 0, 1e4, 0.0
        while sub_iter < (fixed_steps + 1 if fixed_steps else MAX_SUB_ITER):
            words += (batch.shape[1] - 1) * batch.shape[0]
            current += self.encoder_step(batch)
            steps += 1
            batch = self._draw()
            if not fixed_steps and sub_iter % WINDOW == 0:
                current /= words
                if previous - current < 0:
                    break
                previous, current, words = current, 0.0, 0
            sub_iter += 1
        return steps

    def epoch(self, aggressive: bool, fixed_steps: int = 0) -> Dict[str, Any]:
        """One epoch over the batches in a random order; returns ``{"inner_steps": total}``."""
        self.vae.train()
        inner = 0
        for i in self.rng.permutation(len(self.batches)):
            x = self.batches[i]
            if aggressive:
                inner += self.catch_up(x, fixed_steps)
            self.update(x, aggressive)
        return {"inner_steps": inner}


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


def timed(fn, *args: Any, **kwargs: Any) -> Tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out
