"""The paper's synthetic data (He et al., ICLR 2019, section 4 and appendix): sequences whose
content is driven by a 2-d latent variable.

Follows the authors' generator as it was last present in their repository jxhe/vae-lagging-encoder,
``synthetic-data/lm_lstm.py`` and ``synthetic-data/generate.py`` at commit
``ce5d151068051b780444282c30c0182c65577018`` (``c3c8577^``; the files were deleted in ``c3c8577``).
Written anew from that description, not copied.

Generative story, per example:

1. pick one of four mixture components uniformly; draw ``z ~ N(mu_k, I)`` with
   ``mu_k`` in ``{(2, 2), (-2, -2), (2, -2), (-2, 2)}`` (``z: [2]``);
2. draw the first token uniformly from the vocabulary (1000 ids);
3. draw each next token from a *random, untrained* LSTM language model (embedding and hidden size
   100) whose initial state comes from z (``c_0 = W_t z`` without bias, ``h_0 = tanh(c_0)``), which
   reads the previous token's embedding concatenated with ``z``, and whose logits are
   ``W_1 h_t + W_2 z`` (both without bias). Every weight ~ U(-1, 1) except ``W_2``, the direct
   z-to-vocabulary projection, ~ U(-5, 5): the term that makes z shape every token;
4. stop after 10 tokens.

Everything is drawn from ``torch.Generator`` objects seeded from one integer, so the same seed gives
the same weights and the same splits on every run. Each split has its own generator, so shrinking
one split (the CPU option) does not change the others. (The authors' script draws one file of 20k
sentences from one global seed; our streams differ from theirs, the distribution is the same.)

Token ids here are the generator's own, ``0 .. vocab_size - 1``. A VAE from ``examples.text`` wants
``<s> ... </s>`` rows; :func:`to_model_tokens` adds them. :func:`write_text_splits` writes the splits
as text files (words ``w0 .. w999``) that ``python -m examples.text train --data DIR`` and the
paper's own ``MonoTextData`` reader both read.
"""
from __future__ import annotations

import math
import os
import pathlib
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import torch
from torch import nn

__all__ = [
    "MIXTURE_MEANS",
    "PAPER_SPLIT_SIZES",
    "CPU_SPLIT_SIZES",
    "SyntheticGenerator",
    "SyntheticSplit",
    "SyntheticData",
    "sample_mixture_latents",
    "make_synthetic_data",
    "to_model_tokens",
    "write_text_splits",
    "token_word",
    "WEIGHT_BOUND",
    "LATENT_OUTPUT_BOUND",
    "PAD_ID",
    "BOS_ID",
    "EOS_ID",
    "N_SPECIALS",
]

#: Means of the four mixture components of p(z) (each with identity covariance).
MIXTURE_MEANS = torch.tensor([[2.0, 2.0], [-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0]])

#: Every generator weight ~ U(-WEIGHT_BOUND, WEIGHT_BOUND) ...
WEIGHT_BOUND = 1.0
#: ... except the direct z-to-vocabulary projection W_2 ~ U(-LATENT_OUTPUT_BOUND, LATENT_OUTPUT_BOUND).
LATENT_OUTPUT_BOUND = 5.0

#: Split sizes of the paper's synthetic data: 20k train, 10k validation, 10k test, as its appendix
#: describes them (recalled, not re-checked against the paper's text here; its released
#: ``config_synthetic.py`` names only a train and a test file and validates on the test file).
PAPER_SPLIT_SIZES: Dict[str, int] = {"train": 20_000, "valid": 10_000, "test": 10_000}

#: A CPU-friendly cut of the same distribution (used by the study's defaults).
CPU_SPLIT_SIZES: Dict[str, int] = {"train": 5_000, "valid": 1_000, "test": 1_000}

#: Special ids used by :func:`to_model_tokens` (generator token ``k`` becomes ``k + N_SPECIALS``).
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
N_SPECIALS = 3

_SPLITS = ("train", "valid", "test")


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def sample_mixture_latents(n: int, generator: torch.Generator,
                           means: torch.Tensor = MIXTURE_MEANS,
                           std: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` latents from the equal-weight Gaussian mixture.

    Returns:
        ``z: [n, 2]`` (float64) and ``component: [n]`` (int64 index into ``means``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    means = means.to(torch.float64)
    component = torch.randint(0, means.shape[0], (n,), generator=generator)
    noise = torch.randn((n, means.shape[1]), generator=generator, dtype=torch.float64)
    return means[component] + std * noise, component


class SyntheticGenerator(nn.Module):
    """The random LSTM language model that turns ``z`` into token sequences.

    For ``z: [n, latent_dim]`` and the previous token ``x_{t-1}``:

    * initial state ``c_0 = W_t z`` (no bias), ``h_0 = tanh(c_0)``  (``[n, hidden_dim]``);
    * ``h_t, c_t = LSTM([embed(x_{t-1}); z], (h_{t-1}, c_{t-1}))``;
    * ``logits_t = W_1 h_t + W_2 z`` (both without bias; ``[n, vocab_size]``).

    Every weight (embedding, LSTM weights and biases, ``W_t``, ``W_1``) ~ U(-1, 1) except ``W_2``,
    the direct z-to-vocabulary projection, ~ U(-5, 5) (:data:`LATENT_OUTPUT_BOUND`): that term is what
    makes every next-token distribution depend strongly on ``z``.

    Args:
        seed: seeds the weights.
        vocab_size: number of token ids (paper: 1000).
        embed_dim, hidden_dim: embedding and LSTM sizes (paper: 100 each).
        latent_dim: size of z (paper: 2).

    Computes in float64 so that sampling does not depend on the platform's float32 rounding.
    """

    def __init__(self, seed: int, *, vocab_size: int = 1000, embed_dim: int = 100,
                 hidden_dim: int = 100, latent_dim: int = 2) -> None:
        super().__init__()
        self.vocab_size = _positive_int("vocab_size", vocab_size)
        self.embed_dim = _positive_int("embed_dim", embed_dim)
        self.hidden_dim = _positive_int("hidden_dim", hidden_dim)
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.cell = nn.LSTMCell(embed_dim + latent_dim, hidden_dim)
        self.init_state = nn.Linear(latent_dim, hidden_dim, bias=False)  # W_t
        self.out_hidden = nn.Linear(hidden_dim, vocab_size, bias=False)  # W_1
        self.out_latent = nn.Linear(latent_dim, vocab_size, bias=False)  # W_2
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for name, param in self.named_parameters():
                bound = LATENT_OUTPUT_BOUND if name.startswith("out_latent.") else WEIGHT_BOUND
                nn.init.uniform_(param, -bound, bound, generator=g)
        self.double()
        self.requires_grad_(False)

    def _check_z(self, z: torch.Tensor, batch: Optional[int] = None) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.latent_dim:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must be a tensor [batch, {self.latent_dim}], got {got}")
        if batch is not None and z.shape[0] != batch:
            raise ValueError(f"z must have batch size {batch} (the tokens'), got {z.shape[0]}")
        return z.to(torch.float64)

    def initial_state(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``z: [n, latent_dim]`` -> ``(h_0, c_0)``, each ``[n, hidden_dim]``: ``c_0 = W_t z``,
        ``h_0 = tanh(c_0)``."""
        c0 = self.init_state(self._check_z(z))
        return torch.tanh(c0), c0

    def next_logits(self, prev: torch.Tensor, z: torch.Tensor,
                    state: Tuple[torch.Tensor, torch.Tensor]):
        """One step: previous tokens ``prev: [n]``, ``z: [n, latent_dim]``, ``state`` ``(h, c)`` ->
        ``(logits [n, vocab_size], (h, c))``; ``logits = W_1 h_t + W_2 z``."""
        h, c = self.cell(torch.cat([self.embed(prev), z], dim=-1), state)
        return self.out_hidden(h) + self.out_latent(z), (h, c)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        """Sample sequences: ``z: [n, latent_dim]`` -> tokens ``[n, seq_len]`` (int64, in
        ``[0, vocab_size)``), the first token uniform, the others from the LSTM."""
        z = self._check_z(z)
        _positive_int("seq_len", seq_len)
        n = z.shape[0]
        tokens = torch.empty((n, seq_len), dtype=torch.long)
        tokens[:, 0] = torch.randint(0, self.vocab_size, (n,), generator=generator)
        state = self.initial_state(z)
        for t in range(1, seq_len):
            logits, state = self.next_logits(tokens[:, t - 1], z, state)
            # inverse-CDF sampling (same law as torch.multinomial, several times faster here)
            cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
            u = torch.rand((n, 1), generator=generator, dtype=torch.float64) * cdf[:, -1:]
            tokens[:, t] = torch.searchsorted(cdf, u).squeeze(1).clamp_(max=self.vocab_size - 1)
        return tokens

    @torch.no_grad()
    def log_prob(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) of the generator in nats, the uniform first token included:
        ``tokens: [n, seq_len]``, ``z: [n, latent_dim]`` -> ``[n]`` (float64)."""
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            raise ValueError("tokens must be an integer tensor [n, seq_len]")
        z = self._check_z(z, tokens.shape[0])
        total = torch.full((tokens.shape[0],), -math.log(self.vocab_size), dtype=torch.float64)
        state = self.initial_state(z)
        for t in range(1, tokens.shape[1]):
            logits, state = self.next_logits(tokens[:, t - 1], z, state)
            total += torch.log_softmax(logits, dim=-1).gather(1, tokens[:, t:t + 1]).squeeze(1)
        return total


@dataclass(frozen=True)
class SyntheticSplit:
    """One split: ``tokens: [n, seq_len]`` (generator ids), the latents ``z: [n, 2]`` that made
    them, and each latent's mixture ``component: [n]``."""

    tokens: torch.Tensor
    z: torch.Tensor
    component: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]


@dataclass(frozen=True)
class SyntheticData:
    """The three splits plus the generator that produced them."""

    train: SyntheticSplit
    valid: SyntheticSplit
    test: SyntheticSplit
    generator: SyntheticGenerator
    seed: int

    @property
    def vocab_size(self) -> int:
        return self.generator.vocab_size


def _split_seeds(seed: int) -> Dict[str, int]:
    """Independent seeds for the weights and each split, all derived from ``seed``."""
    master = torch.Generator().manual_seed(int(seed))
    draws = torch.randint(0, 2**62, (1 + len(_SPLITS),), generator=master).tolist()
    return dict(zip(("weights",) + _SPLITS, draws))


def make_synthetic_data(seed: int = 783435, *, n_train: int = PAPER_SPLIT_SIZES["train"],
                        n_valid: int = PAPER_SPLIT_SIZES["valid"],
                        n_test: int = PAPER_SPLIT_SIZES["test"], seq_len: int = 10,
                        vocab_size: int = 1000, embed_dim: int = 100, hidden_dim: int = 100,
                        batch_size: int = 4096) -> SyntheticData:
    """Generate the synthetic train / valid / test splits, deterministically from ``seed``.

    Defaults are the paper's sizes (20k / 10k / 10k); pass ``**CPU_SPLIT_SIZES``-style values
    (``n_train=5000`` ...) for a smaller cut. ``batch_size`` only bounds memory while sampling.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    for name, value in sizes.items():
        _positive_int(f"n_{name}", value)
    _positive_int("seq_len", seq_len)
    _positive_int("batch_size", batch_size)
    seeds = _split_seeds(seed)
    gen = SyntheticGenerator(seeds["weights"], vocab_size=vocab_size, embed_dim=embed_dim,
                             hidden_dim=hidden_dim, latent_dim=MIXTURE_MEANS.shape[1])
    splits = {}
    for name in _SPLITS:
        g = torch.Generator().manual_seed(seeds[name])
        z, component = sample_mixture_latents(sizes[name], g)
        tokens = torch.cat([gen.sample(chunk, seq_len, g) for chunk in z.split(batch_size)])
        splits[name] = SyntheticSplit(tokens=tokens, z=z, component=component)
    return SyntheticData(generator=gen, seed=seed, **splits)


def to_model_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Wrap generator tokens for an ``examples.text`` model: ``[n, seq_len]`` ->
    ``[n, seq_len + 2]`` = ``<s>`` (``BOS_ID``), ``tokens + N_SPECIALS``, ``</s>`` (``EOS_ID``).
    The model's vocabulary size is then ``vocab_size + N_SPECIALS``; rows need no padding."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
        got = f"{tokens.dtype} {tuple(tokens.shape)}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be an integer tensor [n, seq_len], got {got}")
    n = tokens.shape[0]
    bos = torch.full((n, 1), BOS_ID, dtype=torch.long)
    eos = torch.full((n, 1), EOS_ID, dtype=torch.long)
    return torch.cat([bos, tokens.long() + N_SPECIALS, eos], dim=1)


def token_word(token: int) -> str:
    """The word written for generator id ``token`` in the text files: ``17`` -> ``"w17"``."""
    return f"w{int(token)}"


def write_text_splits(data: SyntheticData,
                      directory: Union[str, "os.PathLike[str]"]) -> Dict[str, pathlib.Path]:
    """Write the three splits as text files, one sentence per line, tokens as space-separated words
    (``w0 .. w{vocab_size - 1}``, see :func:`token_word`), no label column, no ``<s>``/``</s>``.

    Files: ``directory/synthetic.{train,valid,test}.txt`` (the directory is created if missing).
    ``python -m examples.text train --data DIRECTORY`` (one file per split name in a directory) and
    ``--data DIRECTORY/synthetic`` (a prefix) both read them, and so does the paper's
    ``MonoTextData(path)`` (it splits each line on whitespace and adds ``<s>``/``</s>`` itself).
    Existing files of those names are replaced.

    Returns:
        ``{"train": path, "valid": path, "test": path}``.
    """
    if not isinstance(data, SyntheticData):
        raise TypeError(f"data must be a SyntheticData (from make_synthetic_data), got {type(data).__name__}")
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path, got {type(directory).__name__}")
    root = pathlib.Path(directory)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"directory {str(root)!r} exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    paths: Dict[str, pathlib.Path] = {}
    for name in _SPLITS:
        path = root / f"synthetic.{name}.txt"
        rows = getattr(data, name).tokens.tolist()
        text = "".join(" ".join(token_word(t) for t in row) + "\n" for row in rows)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        paths[name] = path
    return paths
