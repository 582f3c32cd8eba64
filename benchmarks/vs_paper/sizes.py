"""The three model sizes of the comparison and the synthetic batches both sides train on.

* ``synthetic``: the paper's synthetic-data configuration (its ``config_synthetic``): LSTM 50,
  embedding 50, nz 2, batch 16, vocabulary about 1000, sentences of 10 tokens.
* ``cpu``: this project's ``cpu`` text preset (``examples/text/presets.py``): embedding 64, LSTM 128,
  nz 16, batch 32, vocabulary 3000.
* ``paper``: the paper's text preset (Yahoo/Yelp): embedding 512, LSTM 1024, nz 32, batch 32,
  vocabulary 20k; few batches and repetitions, to stay CPU-feasible.

Batches are as the paper's code makes them: sentences of equal length (``<s>``, ``length`` random word
ids, ``</s>``), so no padding on either side. Timing does not depend on which words they are.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List

import torch

__all__ = ["Size", "SIZES", "token_batches", "BOS", "EOS", "FIRST_WORD"]

BOS, EOS = 1, 2  # the ids examples.text uses for <s> and </s> (0 is padding, 3 unknown)
FIRST_WORD = 4


@dataclass(frozen=True)
class Size:
    """One model size and how much work each measure gets at it.

    Attributes:
        name: ``synthetic``, ``cpu`` or ``paper``.
        embed_dim, hidden_dim, latent_dim, vocab_size, batch_size: the model and its batches.
        length: words per sentence (``<s>`` and ``</s>`` added).
        epoch_batches: batches of the basic epoch.
        aggressive_batches: batches of the natural aggressive epoch (window 15, cap 99; up to 99
            inner steps per batch); 0 leaves that measure out.
        fixed_inner_steps: inner steps per decoder update in the fixed-step measure.
        fixed_updates: decoder updates in the fixed-step measure.
        encoder_steps: encoder steps in the per-step measure.
        iw_sentences, iw_samples: sentences and importance samples per sentence of the IW-NLL.
        reps: timed interleaved rounds of every measure.
        warmup: untimed rounds first.
    """

    name: str
    embed_dim: int
    hidden_dim: int
    latent_dim: int
    vocab_size: int
    batch_size: int
    length: int
    epoch_batches: int
    aggressive_batches: int
    fixed_inner_steps: int
    fixed_updates: int
    encoder_steps: int
    iw_sentences: int
    iw_samples: int
    reps: int
    warmup: int = 1

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if key == "name":
                continue
            low = 0 if key in ("aggressive_batches", "warmup") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"Size.{key} must be an integer >= {low}, got {value!r}")
        if self.vocab_size <= FIRST_WORD:
            raise ValueError(f"Size.vocab_size must exceed {FIRST_WORD} (the special ids), got {self.vocab_size}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def scaled(self, work: float) -> "Size":
        """A copy with every amount of work (batches, steps, sentences) multiplied by ``work``
        (at least 1 each; the IW-NLL keeps at least 6 sentences, which the paper's loop needs)."""
        if not work > 0:
            raise ValueError(f"work must be > 0, got {work!r}")

        def n(v: int, low: int = 1) -> int:
            return max(low, int(round(v * work)))

        values = self.to_dict()
        values.update(epoch_batches=n(self.epoch_batches), fixed_updates=n(self.fixed_updates),
                      aggressive_batches=n(self.aggressive_batches) if self.aggressive_batches else 0,
                      encoder_steps=n(self.encoder_steps), iw_sentences=n(self.iw_sentences, 6))
        return Size(**values)


SIZES: Dict[str, Size] = {
    "synthetic": Size("synthetic", embed_dim=50, hidden_dim=50, latent_dim=2, vocab_size=1000, batch_size=16,
                      length=10, epoch_batches=100, aggressive_batches=8, fixed_inner_steps=10,
                      fixed_updates=10, encoder_steps=100, iw_sentences=48, iw_samples=500, reps=5),
    "cpu": Size("cpu", embed_dim=64, hidden_dim=128, latent_dim=16, vocab_size=3000, batch_size=32,
                length=10, epoch_batches=40, aggressive_batches=3, fixed_inner_steps=10,
                fixed_updates=5, encoder_steps=40, iw_sentences=12, iw_samples=500, reps=3),
    "paper": Size("paper", embed_dim=512, hidden_dim=1024, latent_dim=32, vocab_size=20000, batch_size=32,
                  length=10, epoch_batches=12, aggressive_batches=0, fixed_inner_steps=3,
                  fixed_updates=2, encoder_steps=4, iw_sentences=6, iw_samples=100, reps=3, warmup=0),
}


def token_batches(n_batches: int, batch_size: int, length: int, vocab_size: int, seed: int) -> List[torch.Tensor]:
    """``n_batches`` LongTensors ``[batch_size, length + 2]``: ``<s>``, ``length`` ids drawn uniformly from
    ``[FIRST_WORD, vocab_size)``, ``</s>`` (equal lengths: no padding)."""
    if n_batches < 1 or batch_size < 1 or length < 1:
        raise ValueError(f"n_batches, batch_size and length must be >= 1, got {n_batches}, {batch_size}, {length}")
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        x = torch.empty(batch_size, length + 2, dtype=torch.long)
        x[:, 0] = BOS
        x[:, -1] = EOS
        x[:, 1:-1] = torch.randint(FIRST_WORD, vocab_size, (batch_size, length), generator=g)
        out.append(x)
    return out
