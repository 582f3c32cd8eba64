"""``python -m examples.synthetic``: the posterior-mean-space study on the paper's synthetic data.

Trains the scalar-latent LSTM VAE with basic and with aggressive training, snapshots the model
posterior mean and the inference mean of held-out points during training, and writes to ``--out``:

* ``snapshots.json``: every snapshot of both runs (``load_snapshots`` reads it back), and the
  per-update trajectory of the first ``--trajectory-points`` points;
* ``history_<mode>.json``: the trainer's per-epoch records;
* ``summary.json``: the table printed at the end;
* ``posterior_mean_space.png`` (four stages, basic above, aggressive below) and
  ``trajectory.png`` (one point), unless ``--no-plots`` or matplotlib is missing.

``--write-data DIR`` instead only writes the data splits as text files
(``DIR/synthetic.{train,valid,test}.txt``) for ``python -m examples.text train --data DIR`` or the
paper's own text reader.

The defaults (5k training sentences, one epoch, SGD lr 1.0 as in the paper, one torch thread) took
43 minutes of wall time on a two-core machine shared with about eight other jobs (roughly a fifth of
a core for each run); ``--paper`` uses the paper's split sizes (20k / 10k / 10k) and 50 epochs (many
hours on a CPU). See ``examples/synthetic/README.md`` for what the figures show.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from .data import PAPER_SPLIT_SIZES, make_synthetic_data, write_text_splits
from .snapshots import Snapshot, save_snapshots
from .study import StudyConfig, run_study


def _steps(text: str) -> List[int]:
    try:
        steps = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--stages expects comma-separated integers, got {text!r}") from err
    if not steps or any(s < 0 for s in steps):
        raise argparse.ArgumentTypeError(f"--stages expects non-negative integers, got {text!r}")
    return steps


def build_parser() -> argparse.ArgumentParser:
    d = StudyConfig()
    p = argparse.ArgumentParser(prog="python -m examples.synthetic", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/synthetic", help="output directory")
    p.add_argument("--write-data", metavar="DIR", default=None,
                   help="only write the splits (--seed, --n-train/--n-valid/--n-test or --paper) as "
                        "DIR/synthetic.{train,valid,test}.txt, one sentence of words w0..w999 a line, "
                        "and exit (python -m examples.text train --data DIR reads them)")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds the data, the weights and the batch order")
    p.add_argument("--paper", action="store_true",
                   help="the paper's sizes: 20k/10k/10k sentences and 50 epochs (many hours on a CPU)")
    p.add_argument("--n-train", type=int, default=None, help=f"training sentences (default {d.n_train})")
    p.add_argument("--n-valid", type=int, default=None, help=f"validation sentences (default {d.n_valid})")
    p.add_argument("--n-test", type=int, default=None, help=f"test sentences (default {d.n_test})")
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs (default {d.epochs})")
    p.add_argument("--n-points", type=int, default=d.n_points, help="held-out points in the snapshots")
    p.add_argument("--snapshot-every", type=int, default=d.snapshot_every,
                   help="decoder updates between snapshots of all points")
    p.add_argument("--trajectory-points", type=int, default=d.trajectory_points,
                   help="points (the first ones) also recorded after every decoder update")
    p.add_argument("--zmin", type=float, default=d.zmin)
    p.add_argument("--zmax", type=float, default=d.zmax)
    p.add_argument("--dz", type=float, default=d.dz, help="grid step of the posterior-mean quadrature")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--embed-dim", type=int, default=d.embed_dim, help="LSTM VAE embedding size (paper: 50)")
    p.add_argument("--hidden-dim", type=int, default=d.hidden_dim, help="LSTM VAE hidden size (paper: 50)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=None,
                   help="sgd (lr 1.0, the paper's default) or adam (lr 1e-3)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: per optimizer)")
    p.add_argument("--window", type=int, default=d.window, help="inner-loop window (paper: 15)")
    p.add_argument("--max-inner-steps", type=int, default=d.max_inner_steps, help="inner-loop cap (paper: 100)")
    p.add_argument("--modes", default="basic,aggressive", help="runs to make, in figure-row order")
    p.add_argument("--stages", type=_steps, default=None,
                   help="decoder updates shown in the figure, e.g. 0,100,200,600 (default: four spread "
                        "over the snapshots)")
    p.add_argument("--trajectory-steps", type=int, default=d.trajectory_steps,
                   help="decoder updates recorded for (and shown in) the trajectory figure")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest for these small LSTMs, above all on a busy machine)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return p


def _sized_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """Split sizes, epochs and optimiser: the defaults, or ``--paper``'s, overridden by the flags."""
    d = StudyConfig()
    base: Dict[str, Any] = dict(n_train=d.n_train, n_valid=d.n_valid, n_test=d.n_test, epochs=d.epochs,
                                optimizer=d.optimizer)
    if args.paper:
        base = dict(n_train=PAPER_SPLIT_SIZES["train"], n_valid=PAPER_SPLIT_SIZES["valid"],
                    n_test=PAPER_SPLIT_SIZES["test"], epochs=50, optimizer="sgd")
    for name in ("n_train", "n_valid", "n_test", "epochs", "optimizer"):
        if getattr(args, name) is not None:
            base[name] = getattr(args, name)
    return base


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    return StudyConfig(
        seed=args.seed, n_points=args.n_points, snapshot_every=args.snapshot_every,
        trajectory_points=args.trajectory_points, trajectory_steps=args.trajectory_steps, zmin=args.zmin, zmax=args.zmax, dz=args.dz,
        batch_size=args.batch_size, embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, lr=args.lr,
        window=args.window, max_inner_steps=args.max_inner_steps, modes=[m.strip() for m in args.modes.split(",") if m.strip()],
        **_sized_settings(args),
    )


def describe(snap: Snapshot) -> Dict[str, float]:
    """Numbers that say how far the inference network is from the model posterior at ``snap``.

    ``gap``: mean |model mean - inference mean|; ``model_spread`` / ``inference_spread``: standard
    deviations over the points; ``corr``: their Pearson correlation (NaN if either is constant)."""
    m = torch.tensor(snap.model_mean, dtype=torch.float64)
    q = torch.tensor(snap.inference_mean, dtype=torch.float64)
    sm, sq = m.std(unbiased=False), q.std(unbiased=False)
    corr = float(((m - m.mean()) * (q - q.mean())).mean() / (sm * sq)) if sm > 0 and sq > 0 else math.nan
    return {"step": snap.step, "gap": float((m - q).abs().mean()), "model_spread": float(sm),
            "inference_spread": float(sq), "corr": corr}


def summarise(result: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"config": result["config"], "data_seconds": result["data_seconds"], "runs": {}}
    for mode, run in result["runs"].items():
        last = run.history[-1] if run.history else {}
        out["runs"][mode] = {
            "seconds": run.seconds,
            "left_aggressive_at": run.left_aggressive_at,
            "final": {k: last.get(k) for k in ("epoch", "loss", "reconstruction", "kl", "val_mi", "val_au",
                                               "val_kl", "val_elbo")},
            "snapshots": [describe(s) for s in run.snapshots],
        }
    return out


def print_summary(summary: Dict[str, Any], stream=None) -> None:
    stream = stream or sys.stdout
    for mode, run in summary["runs"].items():
        final = run["final"]
        left = run["left_aggressive_at"]
        phase = f", left aggressive phase at update {left}" if left is not None else ""
        print(f"\n{mode}: {run['seconds']:.0f}s{phase}; final val MI {final['val_mi']:.3f} nats, "
              f"val KL {final['val_kl']:.3f}, AU {final['val_au']}, val -ELBO {-final['val_elbo']:.2f}",
              file=stream)
        print(f"  {'step':>6} {'gap':>8} {'model sd':>9} {'infer sd':>9} {'corr':>7}", file=stream)
        for s in run["snapshots"]:
            print(f"  {s['step']:6d} {s['gap']:8.3f} {s['model_spread']:9.3f} {s['inference_spread']:9.3f} "
                  f"{s['corr']:7.3f}", file=stream)


class _EpochLog:
    """Prints one line per epoch, naming the run."""

    def __init__(self) -> None:
        self.mode = "?"

    def on_fit_start(self, trainer: Any) -> None:
        self.mode = "aggressive" if trainer.is_aggressive else "basic"

    def on_epoch_end(self, trainer: Any, record: Any) -> None:
        phase = f"aggressive (inner {record.inner_steps_mean:.1f})" if record.aggressive else "basic"
        print(f"[{self.mode}] epoch {record.epoch}: loss {record.loss:.3f} kl {record.kl:.3f} "
              f"val_mi {record.val_mi:.3f} au {record.val_au} {phase} {record.wall_time:.0f}s", flush=True)


def write_data(args: argparse.Namespace) -> Dict[str, Any]:
    """``--write-data DIR``: generate the splits (``--seed``, sizes) and write them as text files."""
    sizes = _sized_settings(args)
    data = make_synthetic_data(args.seed, n_train=sizes["n_train"], n_valid=sizes["n_valid"],
                               n_test=sizes["n_test"])
    paths = write_text_splits(data, args.write_data)
    if not args.quiet:
        counts = ", ".join(f"{name} {len(getattr(data, name))}" for name in paths)
        print(f"wrote {counts} sentences (seed {args.seed}) to {args.write_data}/synthetic.*.txt")
    return {"data": {name: str(path) for name, path in paths.items()}, "seed": args.seed}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.threads < 1:
        build_parser().error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    try:
        if args.write_data is not None:
            return write_data(args)
        config = config_from_args(args)
    except ValueError as err:
        build_parser().error(str(err))
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()

    result = run_study(config, log=None if args.quiet else _EpochLog())
    runs = result["runs"]
    save_snapshots(os.path.join(args.out, "snapshots.json"), {m: r.snapshots for m, r in runs.items()},
                   meta={"config": result["config"], "kind": "all points, every snapshot_every updates"})
    save_snapshots(os.path.join(args.out, "trajectory.json"), {m: r.trajectory for m, r in runs.items()},
                   meta={"config": result["config"],
                         "kind": "first trajectory_points points, every update up to trajectory_steps"})
    for mode, run in runs.items():
        with open(os.path.join(args.out, f"history_{mode}.json"), "w") as fh:
            json.dump(run.history, fh, indent=1)
    summary = summarise(result)
    figures: Dict[str, Any] = {}
    if not args.no_plots:
        try:
            from .plots import plot_posterior_mean_space, plot_trajectory

            stages = {m: args.stages for m in runs} if args.stages else None
            figures["stages"] = plot_posterior_mean_space(
                {m: r.snapshots for m, r in runs.items()}, os.path.join(args.out, "posterior_mean_space.png"),
                stages=stages)
            plot_trajectory({m: r.trajectory for m, r in runs.items()}, os.path.join(args.out, "trajectory.png"),
                            max_steps=None)
        except ImportError as err:
            print(f"figures skipped: {err}", file=sys.stderr)
    summary["figures"] = figures
    summary["total_seconds"] = time.perf_counter() - start
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    if not args.quiet:
        print_summary(summary)
        print(f"\nwrote {args.out}/ in {summary['total_seconds']:.0f}s")
    return summary


if __name__ == "__main__":
    main()
