"""How noisy is each MI estimator? The spread that the switch out of the aggressive phase reacts to.

    python -m benchmarks.mi_noise [--checkpoint RUN_DIR] [--repeats 20] [--threads 1] [--out benchmarks/results]

On the bundled text corpus's validation split (1,000 sentences, batches of 32 as the ``cpu`` preset
validates), computes I_q(x; z) ``--repeats`` times with each estimator:

* ``minibatch``: the paper's (each minibatch's mixture as q(z), one z per sentence), with fresh draws
  from the global generator each time;
* ``dataset``: the whole split's mixture, 10 draws per sentence, with ``seed`` = 0, 1, ... (each
  repeat its own draws; the trainer uses one fixed seed, so from one epoch to the next only the
  posteriors move).

for the ``cpu`` preset's VAE at its initialisation (the state in which the paper's rule meets epoch
0's noise) and, with ``--checkpoint``, for a trained model (a text run directory's ``model.pt``).
Prints, per model and estimator, the mean over repeats, the spread (standard deviation) over repeats
and the mean of the estimator's own standard error, and writes ``mi_noise.json``.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from aggressive_vi import estimators
from examples.text.experiment import build_vae, load_data, load_model
from examples.text.presets import get_preset

from .core.tables import write_json


def measure(vae: Any, loader: Any, repeats: int) -> Dict[str, Dict[str, float]]:
    """Both estimators ``repeats`` times: mean, spread over repeats, mean reported standard error."""
    out: Dict[str, Dict[str, float]] = {}
    for estimator in estimators.MI_ESTIMATORS:
        values: List[float] = []
        stderrs: List[float] = []
        start = time.perf_counter()
        for r in range(repeats):
            torch.manual_seed(r)
            options = {"seed": r} if estimator == "dataset" else {}
            result = estimators.mutual_information_estimate(vae, loader, estimator=estimator, **options)
            values.append(result.value)
            stderrs.append(result.stderr)
        out[estimator] = {"mean": statistics.fmean(values), "spread": statistics.stdev(values),
                          "reported_stderr": statistics.fmean(stderrs),
                          "seconds_per_estimate": (time.perf_counter() - start) / repeats}
    return out


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="a text run directory (its model.pt) to measure too")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error(f"--repeats must be at least 2; got {args.repeats}")
    torch.set_num_threads(args.threads)
    preset = get_preset("cpu")
    data = load_data("bundled", max_vocab=preset.max_vocab)
    loader = data.loader("valid", preset.eval_batch_size, shuffle=False)
    torch.manual_seed(783435)
    models = {"initialisation (cpu preset)": build_vae(preset, len(data.vocab))}
    if args.checkpoint is not None:
        vae, vocab, _, _ = load_model(args.checkpoint)
        models[f"trained ({args.checkpoint})"] = vae
        loader = load_data("bundled", vocab=vocab).loader("valid", preset.eval_batch_size, shuffle=False)
    results = {name: measure(vae, loader, args.repeats) for name, vae in models.items()}
    print(f"MI estimator noise on the validation split ({len(data.splits['valid'])} sentences, "
          f"batch {preset.eval_batch_size}), {args.repeats} repeats, nats")
    print(f"{'model':45s} {'estimator':10s} {'mean':>8s} {'spread':>8s} {'stderr':>8s} {'s/est':>7s}")
    for name, by_estimator in results.items():
        for estimator, r in by_estimator.items():
            print(f"{name:45s} {estimator:10s} {r['mean']:8.4f} {r['spread']:8.4f} "
                  f"{r['reported_stderr']:8.4f} {r['seconds_per_estimate']:7.2f}")
    doc = {"command": "python -m benchmarks.mi_noise " + " ".join(argv or []),
           "machine": platform.platform(), "threads": args.threads, "repeats": args.repeats,
           "results": results}
    write_json(Path(args.out) / "mi_noise.json", doc, nonfinite_as_null=False)
    return doc


if __name__ == "__main__":
    main()
