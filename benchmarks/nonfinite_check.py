"""What the non-finite guard and its gating cost: training time per epoch, side by side.

    python -m benchmarks.nonfinite_check [--reps 7] [--epochs 1] [--device cpu] [--model quickstart|text]
        [--out benchmarks/results/nonfinite_check.json]

Variants (alternating round by round; medians of seconds per epoch, ratios to "off"):

* ``off``: plain clipping, no check (what the trainer did before it had a guard): an engine of this
  benchmark's own over the public :class:`~aggressive_vi.engines.Engine` seam;
* ``default``: the library's :class:`~aggressive_vi.engines.Engine`, whose inner steps are gated on the
  device (one host read per window) or, on the CPU where a read is free, read per step.

Models: ``quickstart`` (examples/quickstart.py: MLP encoder, autoregressive Bernoulli decoder, 16 bits,
latent 4, batch 50, window 10, Adam) or ``text`` (the ``cpu`` text preset's LSTM sizes, vocabulary
3000, synthetic token batches of 32 x 20, window 15, cap 30, Adam).
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader

from aggressive_vi import VAE, AggressiveTrainer, Always, Engine

from .core.tables import plain_table, write_json
from .core.timing import interleave, median, ratios_to, synced_clock

VARIANTS = ("off", "default")


class Unchecked(Engine):
    """Backward, clip, step: no finiteness check and no gate (fp32 only)."""

    def apply(self, loss: torch.Tensor, *, params: Sequence[torch.Tensor],
              optimizers: Sequence[torch.optim.Optimizer], unscale: Sequence[torch.optim.Optimizer] = (),
              max_norm: Optional[float], phase: str, allowed: Optional[torch.Tensor] = None) -> Tuple[bool, bool]:
        if phase == "inner":
            self.backward(loss.mean(), inputs=list(params))
        else:
            self.backward(loss.mean())
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        for opt in optimizers:
            opt.step()
        return True, False


def _setup(model_name: str, device: str) -> Tuple[VAE, DataLoader, int]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    if model_name == "quickstart":
        from examples.quickstart import AutoregressiveDecoder, MLPEncoder, make_data

        data = make_data(2000, 16, g).to(device)
        model = VAE(MLPEncoder(16, 64, 4), AutoregressiveDecoder(16, 64, 4))
        return model.to(device), DataLoader(data, batch_size=50, shuffle=True, generator=g), 10
    from examples.text.models import LSTMDecoder, LSTMEncoder

    tokens = torch.randint(3, 3000, (320, 20), generator=g)
    tokens[:, 0] = 1
    model = VAE(LSTMEncoder(3000, 64, 128, 16), LSTMDecoder(3000, 64, 128, 16))
    return model.to(device), DataLoader(tokens, batch_size=32, shuffle=True, generator=g), 15


def build_trainer(variant: str, model_name: str, device: str) -> Tuple[AggressiveTrainer, DataLoader]:
    """A fresh model and trainer for ``variant`` (``off``: :class:`Unchecked`), and its loader."""
    model, train, window = _setup(model_name, device)
    trainer = AggressiveTrainer(model, torch.optim.Adam(model.encoder.parameters(), lr=1e-3),
                                torch.optim.Adam(model.decoder.parameters(), lr=1e-3),
                                stopping=Always(), window=window, max_inner_steps=2 * window,
                                engine=Unchecked() if variant == "off" else Engine())
    return trainer, train


def time_variants(model_name: str, epochs: int, device: str, reps: int) -> Tuple[Dict[str, List[float]], Dict[str, float]]:
    """Seconds per epoch of every variant per round (rounds alternating the variants, each from a fresh
    model built outside the timing), and each variant's optimiser steps per epoch."""
    built: Dict[str, Tuple[AggressiveTrainer, DataLoader]] = {}

    def setup(name: str) -> Callable[[], None]:
        return lambda: built.__setitem__(name, build_trainer(name, model_name, device))

    def fit(name: str) -> Callable[[], float]:
        def run() -> float:
            trainer, train = built[name]
            trainer.fit(train, epochs=epochs)
            record = trainer.history[0]
            return record.inner_steps_mean * record.aggressive_steps + record.steps
        return run

    clock = synced_clock(torch.device(device))
    t = interleave({v: fit(v) for v in VARIANTS}, reps, warmup=0, setup={v: setup(v) for v in VARIANTS},
                   clock=clock, wall_clock=clock)
    return ({v: [s / epochs for s in t[v]["seconds"]] for v in VARIANTS},
            {v: t[v]["info"][-1] for v in VARIANTS})


def main() -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="quickstart", choices=["quickstart", "text"])
    parser.add_argument("--out", default=None, help="write the table's numbers here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    times, steps = time_variants(args.model, args.epochs, args.device, args.reps)
    medians = {k: median(v) for k, v in times.items()}
    off = medians["off"]
    print(f"model {args.model}, device {args.device}, threads {args.threads}, {args.reps} reps, "
          f"~{steps['off']:.0f} optimiser steps per epoch")
    print(plain_table(["variant", "s/epoch", "ratio to off", "us/step vs off"],
                      [[name, f"{medians[name]:.3f}", f"{medians[name] / off:.3f}",
                        f"{(medians[name] - off) / steps['off'] * 1e6:.1f}"] for name in VARIANTS],
                      right_from=1, sep=" "))
    result = {"command": "python -m benchmarks.nonfinite_check " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
              "median_s_per_epoch": medians, "seconds": times, "optimiser_steps_per_epoch": steps,
              "ratio_to_off": ratios_to(medians, "off")}
    if args.out:
        write_json(args.out, result, nonfinite_as_null=False)
    return result


if __name__ == "__main__":
    main()
