"""Quick start: your own encoder and decoder through AggressiveTrainer, on synthetic binary data.

    python -m examples.quickstart [--epochs 4] [--aggressive off]

The data: 16-bit binary vectors from 8 prototypes with 5% of the bits flipped. The decoder is
autoregressive over the bits (a masked linear layer sees the earlier bits and z), so it can model the
data without z: the setting where basic VAE training tends to collapse. Prints one line per epoch with
the validation MI, active units and KL, then IW-NLL, MI and AU on held-out data.
"""
from __future__ import annotations

import argparse
import time
from typing import Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from aggressive_vi import VAE, AggressiveTrainer, LinearKLAnnealing, MIPlateau, estimators


class MLPEncoder(nn.Module):
    """x: [batch, dim] -> (mean, logvar), each [batch, latent_dim]."""

    def __init__(self, dim: int, hidden: int, latent_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent_dim))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.net(x).chunk(2, dim=-1)
        return mean, logvar


class AutoregressiveDecoder(nn.Module):
    """log p(x|z) = sum_i log Bernoulli(x_i | logits_i(x_<i, z)): [batch, n_samples] nats."""

    def __init__(self, dim: int, hidden: int, latent_dim: int) -> None:
        super().__init__()
        self.from_x = nn.Linear(dim, dim)
        self.register_buffer("mask", torch.ones(dim, dim).tril(-1))  # bit i sees bits < i
        self.from_z = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        ar = nn.functional.linear(x, self.from_x.weight * self.mask, self.from_x.bias)  # [batch, dim]
        logits = ar.unsqueeze(1) + self.from_z(z)  # [batch, n_samples, dim]
        target = x.unsqueeze(1).expand_as(logits)
        return -nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)


def make_data(n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    protos = (torch.rand(8, dim, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    idx = torch.randint(0, 8, (n,), generator=generator)
    flips = (torch.rand(n, dim, generator=generator) < 0.05).float()
    return (protos[idx] - flips).abs()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--aggressive", choices=["on", "off"], default="on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a model this small only loses from intra-op threads on a shared CPU
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    dim, latent = 16, 4
    train = DataLoader(make_data(2000, dim, g), batch_size=50, shuffle=True)
    val = DataLoader(make_data(500, dim, g), batch_size=50)
    test = DataLoader(make_data(500, dim, g), batch_size=50)

    model = VAE(MLPEncoder(dim, 64, latent), AutoregressiveDecoder(dim, 64, latent))
    enc_opt = torch.optim.Adam(model.encoder.parameters(), lr=1e-3)
    dec_opt = torch.optim.Adam(model.decoder.parameters(), lr=1e-3)
    trainer = AggressiveTrainer(model, enc_opt, dec_opt, stopping=MIPlateau(),
                                kl_schedule=LinearKLAnnealing(start=0.1, warmup_epochs=2),
                                aggressive=args.aggressive == "on", window=10, verbose=True)
    start = time.perf_counter()
    trainer.fit(train, val_loader=val, epochs=args.epochs)
    nll = estimators.iw_nll(model, test, n_samples=100)
    mi = estimators.mutual_information(model, test)
    au = estimators.active_units(model, test)
    print(f"\ntest: IW-NLL {nll.nll:.3f} nats | MI {mi:.3f} nats | AU {au.count}/{latent} | "
          f"KL {estimators.kl(model, test):.3f} nats | {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
