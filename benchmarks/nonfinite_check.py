"""What the non-finite guard costs: training time with and without it, side by side.

    python -m benchmarks.nonfinite_check [--reps 7] [--epochs 1] [--device cpu]

The guard (``aggressive_vi.faults.clip_and_check``) adds, per optimiser step (inner steps included),
one scalar addition of the loss sum and the clipped gradient norm and one host sync (``.item()``);
under DDP also one scalar all-reduce. "off" replaces it by plain clipping (what the trainer did
before). Model: the quick start's (examples/quickstart.py): MLP encoder, autoregressive Bernoulli
decoder, 16 bits, latent 4, batch 50, aggressive with window 10. Variants alternate round by round;
medians of seconds per epoch are printed.
"""
from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch
from torch.utils.data import DataLoader

from aggressive_vi import VAE, AggressiveTrainer, Always
from aggressive_vi import trainer as trainer_module
from examples.quickstart import AutoregressiveDecoder, MLPEncoder, make_data


def _no_check(loss, params, max_norm):
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    return True


def run_epochs(check: bool, epochs: int, device: str) -> float:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = make_data(2000, 16, g).to(device)
    train = DataLoader(data, batch_size=50, shuffle=True)
    model = VAE(MLPEncoder(16, 64, 4), AutoregressiveDecoder(16, 64, 4)).to(device)
    trainer = AggressiveTrainer(model, torch.optim.Adam(model.encoder.parameters(), lr=1e-3),
                                torch.optim.Adam(model.decoder.parameters(), lr=1e-3),
                                stopping=Always(), window=10)
    patch = mock.patch.object(trainer_module, "clip_and_check", _no_check) if not check else None
    if patch:
        patch.start()
    try:
        start = time.perf_counter()
        trainer.fit(train, epochs=epochs)
        if device != "cpu":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    finally:
        if patch:
            patch.stop()
    steps = trainer.history[0].inner_steps_mean * trainer.history[0].aggressive_steps
    return elapsed / epochs, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    times = {"on": [], "off": []}
    inner = {}
    for _ in range(args.reps):
        for name in ("on", "off"):
            seconds, inner[name] = run_epochs(name == "on", args.epochs, args.device)
            times[name].append(seconds)
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    optimiser_steps = inner["on"] + 40  # inner steps + decoder steps of one epoch (40 batches)
    print(f"device {args.device}, threads {args.threads}, {args.reps} reps, ~{optimiser_steps:.0f} optimiser "
          f"steps per epoch")
    print(f"guard on : {on:.3f} s/epoch")
    print(f"guard off: {off:.3f} s/epoch")
    print(f"ratio on/off {on / off:.3f}; {(on - off) / optimiser_steps * 1e6:.1f} us per optimiser step")


if __name__ == "__main__":
    main()
