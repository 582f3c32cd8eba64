"""The synthetic posterior-mean-space study (He et al., ICLR 2019, figures 3 and 6).

Trains the paper's LSTM VAE with a scalar latent (nz = 1) on the synthetic data twice from the same
initialisation, once with basic VAE training and once with aggressive training, through
``aggressive_vi.AggressiveTrainer``; a :class:`~examples.synthetic.snapshots.PosteriorMeanSnapshots`
callback records, for held-out points, the model posterior mean and the inference mean every
``snapshot_every`` decoder updates.

Model and optimisation follow the paper's ``toy.py`` / ``config_synthetic.py``: embedding 50, LSTM
hidden 50 (encoder and decoder), decoder dropout 0.5 in and out, uniform init 0.01 (embeddings
0.1), batch 16, gradient norm clipped at 5, KL weight 1 (no annealing), aggressive phase left when
the validation MI stops rising (the text rule), both networks with the same optimiser.

Both networks use the paper's default optimiser, SGD with learning rate 1.0 (``toy.py``'s other
option, Adam with lr 1e-3, is ``optimizer="adam"``). On the paper's generator (``examples.synthetic.data``)
SGD is what reproduces the paper's picture at this scale: one epoch over 5k sentences ends with the
aggressive model's validation MI near 1 nat where Adam's stays at a few tenths (measured numbers and
commands in ``examples/synthetic/README.md``). ``--paper`` (the CLI) adds the paper's data sizes and
50 epochs.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch.utils.data import DataLoader, TensorDataset

from aggressive_vi import VAE, AggressiveTrainer, ConstantKL, MIPlateau
from examples.text.models import LSTMDecoder, LSTMEncoder, init_paper_

from .data import CPU_SPLIT_SIZES, N_SPECIALS, PAD_ID, SyntheticData, make_synthetic_data, to_model_tokens
from .posterior import z_grid
from .snapshots import PosteriorMeanSnapshots, Snapshot

__all__ = ["StudyConfig", "RunResult", "build_vae", "run_mode", "run_study"]


@dataclass
class StudyConfig:
    """Settings of the study. Defaults: the paper's model and optimiser (SGD, lr 1.0), trained for
    one epoch on a CPU-sized cut of the data (the paper: 20k / 10k / 10k examples, 50 epochs; see
    ``PAPER_SPLIT_SIZES``)."""

    seed: int = 783435
    n_train: int = CPU_SPLIT_SIZES["train"]
    n_valid: int = CPU_SPLIT_SIZES["valid"]
    n_test: int = CPU_SPLIT_SIZES["test"]
    n_points: int = 500  # held-out points tracked in posterior mean space (from the test split)
    epochs: int = 1
    batch_size: int = 16
    embed_dim: int = 50
    hidden_dim: int = 50
    latent_dim: int = 1
    dropout: float = 0.5
    optimizer: str = "sgd"  # "sgd" (lr 1.0, the paper's default) or "adam" (lr 1e-3); see module doc
    lr: Optional[float] = None  # None: 1e-3 for adam, 1.0 for sgd
    snapshot_every: int = 100
    trajectory_points: int = 1  # held-out points also recorded after every decoder update ...
    trajectory_steps: int = 80  # ... during the first this many updates
    zmin: float = -20.0
    zmax: float = 20.0
    dz: float = 0.1
    window: int = 15
    max_inner_steps: int = 100
    modes: List[str] = field(default_factory=lambda: ["basic", "aggressive"])

    def __post_init__(self) -> None:
        for name in ("n_train", "n_valid", "n_test", "n_points", "epochs", "batch_size", "embed_dim",
                     "hidden_dim", "latent_dim", "snapshot_every", "window", "max_inner_steps",
                     "trajectory_points", "trajectory_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("n_points", "trajectory_points"):
            if getattr(self, name) > self.n_test:
                raise ValueError(f"{name} ({getattr(self, name)}) must not exceed n_test ({self.n_test}): "
                                 "the tracked points come from the test split")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        bad = [m for m in self.modes if m not in ("basic", "aggressive")]
        if bad or not self.modes:
            raise ValueError(f"modes must be a non-empty list of 'basic'/'aggressive', got {self.modes!r}")


@dataclass
class RunResult:
    """One training run: its snapshots of all tracked points (every ``snapshot_every`` updates),
    the per-update trajectory of the first ``trajectory_points`` points over the first
    ``trajectory_steps`` updates, per-epoch history (dicts)
    and wall time in seconds (snapshots included)."""

    mode: str
    snapshots: List[Snapshot]
    trajectory: List[Snapshot]
    history: List[Dict[str, Any]]
    seconds: float
    left_aggressive_at: Optional[int] = None  # decoder update at which the phase ended


def build_vae(vocab_size: int, config: StudyConfig) -> VAE:
    """The paper's LSTM VAE for the synthetic data, initialised as in the paper (uses the global
    torch RNG: seed it first)."""
    encoder = LSTMEncoder(vocab_size, config.embed_dim, config.hidden_dim, config.latent_dim, pad_id=PAD_ID)
    decoder = LSTMDecoder(vocab_size, config.embed_dim, config.hidden_dim, config.latent_dim, pad_id=PAD_ID,
                          dropout_in=config.dropout, dropout_out=config.dropout)
    init_paper_(encoder, decoder)
    return VAE(encoder, decoder)


def make_optimizer(params: Any, config: StudyConfig) -> torch.optim.Optimizer:
    """SGD (lr 1.0) or Adam (lr 1e-3, betas 0.9/0.999): the two options of the paper's toy code."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr if config.lr is not None else 1.0)
    return torch.optim.Adam(params, lr=config.lr if config.lr is not None else 1e-3, betas=(0.9, 0.999))


def _loader(x: torch.Tensor, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=shuffle, generator=g)


def run_mode(mode: str, data: SyntheticData, config: StudyConfig, *, log: Any = None) -> RunResult:
    """Train one VAE (``mode`` = ``"basic"`` or ``"aggressive"``) and return its snapshots.

    Both modes start from the same weights and see the same minibatch order (seeded from
    ``config.seed``)."""
    if mode not in ("basic", "aggressive"):
        raise ValueError(f"mode must be 'basic' or 'aggressive', got {mode!r}")
    vocab = data.vocab_size + N_SPECIALS
    train_x, valid_x = to_model_tokens(data.train.tokens), to_model_tokens(data.valid.tokens)
    points = to_model_tokens(data.test.tokens[: config.n_points])
    torch.manual_seed(config.seed)
    vae = build_vae(vocab, config)
    enc_opt, dec_opt = (make_optimizer(part.parameters(), config) for part in (vae.encoder, vae.decoder))
    grid = z_grid(config.zmin, config.zmax, config.dz)
    snaps = PosteriorMeanSnapshots(vae, points, every=config.snapshot_every, grid=grid)
    track = PosteriorMeanSnapshots(vae, points[: config.trajectory_points], every=1, grid=grid,
                                   until=config.trajectory_steps)
    callbacks: List[Any] = [snaps, track]
    if log is not None:
        callbacks.append(log)
    trainer = AggressiveTrainer(
        vae, enc_opt, dec_opt,
        stopping=MIPlateau(patience=1, cumulative=False),
        kl_schedule=ConstantKL(1.0),
        aggressive=(mode == "aggressive"),
        window=config.window, max_inner_steps=config.max_inner_steps, clip_grad_norm=5.0,
        callbacks=callbacks,
    )
    train_loader = _loader(train_x, config.batch_size, True, config.seed + 1)
    inner_loader = _loader(train_x, config.batch_size, True, config.seed + 2)
    valid_loader = _loader(valid_x, 100, False, 0)
    start = time.perf_counter()
    history = trainer.fit(train_loader, val_loader=valid_loader, epochs=config.epochs,
                          inner_loader=inner_loader)
    seconds = time.perf_counter() - start
    return RunResult(mode=mode, snapshots=snaps.snapshots, trajectory=track.snapshots,
                     history=history.to_dicts(), seconds=seconds,
                     left_aggressive_at=history.left_aggressive_at)


def run_study(config: StudyConfig, *, log: Any = None) -> Dict[str, Any]:
    """Generate the data and run every mode in ``config.modes``.

    Returns ``{"config": dict, "runs": {mode: RunResult}, "data_seconds": float}``."""
    start = time.perf_counter()
    data = make_synthetic_data(config.seed, n_train=config.n_train, n_valid=config.n_valid,
                               n_test=config.n_test)
    data_seconds = time.perf_counter() - start
    runs = {mode: run_mode(mode, data, config, log=log) for mode in config.modes}
    return {"config": asdict(config), "runs": runs, "data_seconds": data_seconds}
