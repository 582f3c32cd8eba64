"""The quick-start VAE with Lightning Fabric driving ``AggressiveTrainer``.

    python -m examples.lightning.fabric [--epochs 4] [--precision bf16-mixed] [--devices 1]

``fabric_trainer`` gives the trainer Fabric's optimisers and ``fabric.backward``; ``fabric_autocast(fabric)``
around ``fit`` puts the precision's autocast on every forward pass, the inner loop's included. With
``--devices 2`` (``strategy="ddp"``) each process trains on its own shard (a ``DistributedSampler``),
and the trainer synchronises encoder and decoder with its own DDP wrappers.
"""
from __future__ import annotations

import argparse

import torch
from lightning.fabric import Fabric
from torch.utils.data import DataLoader, DistributedSampler

from aggressive_vi import VAE, LinearKLAnnealing, MIPlateau, estimators
from aggressive_vi.lightning import fabric_autocast, fabric_trainer
from examples.quickstart import AutoregressiveDecoder, MLPEncoder, make_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    fabric = Fabric(accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
                    precision=args.precision)
    fabric.launch()
    fabric.seed_everything(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    dim, latent = 16, 4
    data = make_data(2000, dim, g)
    sampler = DistributedSampler(data, num_replicas=fabric.world_size, rank=fabric.global_rank, seed=args.seed)
    train = DataLoader(data, batch_size=50, sampler=sampler)
    val = DataLoader(make_data(500, dim, g), batch_size=50)
    test = DataLoader(make_data(500, dim, g), batch_size=50)

    vae = VAE(MLPEncoder(dim, 64, latent), AutoregressiveDecoder(dim, 64, latent))
    trainer = fabric_trainer(fabric, vae, torch.optim.Adam(vae.encoder.parameters(), lr=1e-3),
                             torch.optim.Adam(vae.decoder.parameters(), lr=1e-3), stopping=MIPlateau(),
                             kl_schedule=LinearKLAnnealing(start=0.1, warmup_epochs=2), window=10,
                             verbose=fabric.is_global_zero)
    with fabric_autocast(fabric):
        trainer.fit(train, val_loader=val, epochs=args.epochs)
    nll, mi = estimators.iw_nll(vae, test, n_samples=100).nll, estimators.mutual_information(vae, test)
    au, kl = estimators.active_units(vae, test).count, estimators.kl(vae, test)  # collective under DDP
    if fabric.is_global_zero:
        print(f"\ntest: IW-NLL {nll:.3f} nats | MI {mi:.3f} nats | AU {au}/{latent} | KL {kl:.3f} nats")


if __name__ == "__main__":
    main()
