"""The quick-start VAE as a LightningModule trained aggressively by ``Trainer.fit``.

    python -m examples.lightning [--epochs 4] [--devices 1] [--precision 32-true] [--out runs/lightning]

Everything aggressive is in four places, marked ``# aggressive-vi``: the callback built in
``__init__``, ``configure_callbacks``, ``training_step`` and manual optimisation. The rest is an
ordinary LightningModule; Lightning's loggers, ``ModelCheckpoint`` and strategies work as usual.
``--devices 2`` runs ``strategy="ddp"`` on CPU (gloo).
"""
from __future__ import annotations

import argparse
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from aggressive_vi import VAE, LinearKLAnnealing, MIPlateau, estimators
from aggressive_vi.lightning import AggressiveVI
from examples.quickstart import AutoregressiveDecoder, MLPEncoder, make_data


class LitQuickstartVAE(pl.LightningModule):
    """The quick-start encoder/decoder pair with two Adam optimisers (one per network)."""

    def __init__(self, dim: int = 16, hidden: int = 64, latent: int = 4, lr: float = 1e-3) -> None:
        super().__init__()
        self.vae = VAE(MLPEncoder(dim, hidden, latent), AutoregressiveDecoder(dim, hidden, latent))
        self.lr = lr
        self.automatic_optimization = False  # aggressive-vi: the callback steps the two optimisers
        self.aggressive = AggressiveVI(  # aggressive-vi
            self.vae, stopping=MIPlateau(), kl_schedule=LinearKLAnnealing(start=0.1, warmup_epochs=2), window=10)

    def configure_callbacks(self) -> list:
        return [self.aggressive]  # aggressive-vi: Lightning calls its hooks and checkpoints its state

    def configure_optimizers(self) -> list:
        return [torch.optim.Adam(self.vae.encoder.parameters(), lr=self.lr),
                torch.optim.Adam(self.vae.decoder.parameters(), lr=self.lr)]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.aggressive.training_step(self, batch)  # aggressive-vi

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        # the callback logs val_mi, val_au, val_kl, val_elbo itself; log your own metrics here
        pass


def loaders(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dim = 16
    train = DataLoader(make_data(2000, dim, g), batch_size=50, shuffle=True)
    val = DataLoader(make_data(500, dim, g), batch_size=50)
    test = DataLoader(make_data(500, dim, g), batch_size=50)
    return train, val, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/lightning",
                        help="where the CSV log and checkpoints go, and nothing else is written "
                             "(default runs/lightning, which git ignores)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pl.seed_everything(args.seed, verbose=False)
    train, val, test = loaders(args.seed)
    model = LitQuickstartVAE()
    trainer = pl.Trainer(
        accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        precision=args.precision, max_epochs=args.epochs, default_root_dir=args.out,
        logger=pl.loggers.CSVLogger(args.out), enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(monitor="val_mi", mode="max", save_last=True)])
    trainer.fit(model, train, val)
    vae = model.vae  # the estimators are collective under DDP: every rank runs them
    nll, mi = estimators.iw_nll(vae, test, n_samples=100).nll, estimators.mutual_information(vae, test)
    au, kl = estimators.active_units(vae, test).count, estimators.kl(vae, test)
    if trainer.is_global_zero:
        for epoch, metrics in enumerate(_epoch_metrics(trainer)):
            print(f"epoch {epoch}: " + " | ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        cb = model.aggressive
        print(f"aggressive phase: {'still on' if cb.is_aggressive else f'left after {cb.left_aggressive_at} decoder updates'}"
              f"; global_step {trainer.global_step} (decoder updates)")
        print(f"test: IW-NLL {nll:.3f} nats | MI {mi:.3f} nats | AU {au}/4 | KL {kl:.3f} nats")


def _epoch_metrics(trainer: pl.Trainer) -> list:
    """The per-epoch validation metrics the CSV logger wrote."""
    import csv
    import os

    path = os.path.join(trainer.logger.log_dir, "metrics.csv")
    trainer.logger.save()
    rows = [r for r in csv.DictReader(open(path)) if r.get("val_mi")]
    return [{k: float(r[k]) for k in ("val_mi", "val_au", "val_kl", "val_elbo")} for r in rows]


if __name__ == "__main__":
    main()
