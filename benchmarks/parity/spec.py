"""What one side-by-side run is: the data files and the settings both implementations get.

A :class:`RunSpec` is all either side needs. The reference (the paper's ``text.py``) reads the sizes,
batch size, epochs and file paths from a config module the harness writes for it; the seed from its
own list (``--taskid`` picks one of them); the number of importance samples from ``--iw_nsamples``.
Ours (:mod:`benchmarks.parity.ours`) builds the same model from the same numbers.

Fixed on both sides, as in the paper's text code: SGD with lr 1.0 and no momentum for both networks,
gradient norm clipped at 5, KL weight 1 throughout (the code's default ``--kl_start 1.0``) unless the
spec anneals it (``kl_start < 1``: the paper's text recipe, the weight rising linearly to 1 over
``warm_up`` epochs, passed to the reference as ``--kl_start``/``--warm_up``), one z
sample per example in training, the aggressive phase left at the first epoch whose validation MI is
below the previous epoch's (starting from 0 nats), halving of both learning rates after 2 epochs
without improvement of the validation loss from epoch 15 on (at most 5 times, reloading the best
model), and testing the model of the best validation epoch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Union

from ..core.reference import reference_seeds
from ..core.side_by_side import IW_CHUNK, MODES, SIDES, SpecBase, check_choice, check_positive

__all__ = ["RunSpec", "MODES", "SIDES", "OURS_CLIP", "reference_seeds", "IW_CHUNK"]

#: our side's clipping in aggressive steps (benchmarks.parity.clipping.CLIP_MODES)
OURS_CLIP = ("joint", "network", "inner-joint")
#: what ``ours_clip`` meant in specs written while the library clipped per network by default
LEGACY_CLIP = {None: "network", "library": "network"}
PathLike = Union[str, Path]


@dataclass(frozen=True)
class RunSpec(SpecBase):
    """One run of one implementation.

    Attributes:
        data: a label for the data set (``synthetic-nz1``, ``text``...), used in tables.
        train, valid, test: plain-text files, one sentence per line, whitespace-separated tokens.
        embed_dim: word embedding size (the reference's ``ni``).
        hidden_dim: LSTM hidden size of encoder and decoder (``enc_nh`` = ``dec_nh``).
        latent_dim: size of z (``nz``).
        batch_size: sentences per batch (the reference batches sentences of equal length only, so
            some batches are smaller).
        epochs: epoch budget.
        iw_samples: importance samples per test sentence for IW-NLL (a multiple of 100).
        mode: ``"basic"`` or ``"aggressive"``.
        seed: one of the reference's seeds (:func:`reference_seeds`).
        dropout: decoder input and output dropout (paper: 0.5 both).
        ours_clip: how our side clips gradients in aggressive steps (the reference ignores it):
            ``"joint"`` (the library's default ``clip_scope``, the paper's joint norm), ``"network"``
            (``clip_scope="network"``: the updated network's norm) or ``"inner-joint"`` (the
            paper's norm in inner steps only; see :mod:`benchmarks.parity.clipping`). Specs saved
            before the default changed say ``"library"`` (or nothing): read as ``"network"``.
        kl_start: the KL weight at the first update (1.0: no annealing, the code's default; the
            paper's text runs: 0.1).
        warm_up: epochs over which the weight rises linearly to 1 (the paper's text runs: 10). The
            reference spreads the rise over ``len(train) / batch_size`` updates per epoch, ours over
            its number of batches (the reference's equal-length batching makes a few more, smaller
            ones): the two schedules differ by that ratio.
    """

    data: str
    train: str
    valid: str
    test: str
    embed_dim: int
    hidden_dim: int
    latent_dim: int
    batch_size: int
    epochs: int
    iw_samples: int
    mode: str
    seed: int
    dropout: float = 0.5
    ours_clip: str = "joint"
    kl_start: float = 1.0
    warm_up: int = 10

    def __post_init__(self) -> None:
        self.check_common(("embed_dim", "hidden_dim", "latent_dim", "batch_size", "epochs", "iw_samples"))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.kl_start <= 1.0:
            raise ValueError(f"kl_start must be in [0, 1], got {self.kl_start!r}")
        check_positive("warm_up", self.warm_up)
        check_choice("ours_clip", self.ours_clip, OURS_CLIP)

    @property
    def annealed(self) -> bool:
        return self.kl_start < 1.0

    def files(self) -> Dict[str, str]:
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def check_files(self) -> None:
        """Raise ``FileNotFoundError`` naming the split whose file is missing."""
        for split, path in self.files().items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"the {split} file {path} does not exist")

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "RunSpec":
        clip = values.get("ours_clip")
        return cls(**dict(values, ours_clip=LEGACY_CLIP.get(clip, clip)))
