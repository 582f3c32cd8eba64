"""Command line for the reference image VAE: ``python -m examples.image {train,evaluate,sample}``.

Examples::

    python -m examples.image train --data bundled --preset cpu --aggressive on --epochs 10 --out runs/img
    python -m examples.image evaluate --checkpoint runs/img            # IW-NLL (500 samples), KL, MI, AU
    python -m examples.image sample --checkpoint runs/img              # samples.png, reconstructions.png

``train`` writes into ``--out``: ``config.json``; after every epoch ``history.json`` and the trainer's
checkpoint (``aggressive_vi.Checkpoint``, also every ``--save-every`` decoder updates) in
``checkpoints/``, with the preset and options of the run (the last two are kept; ``--resume``
continues exactly from the latest, and refuses other settings); at the end ``model.pt`` (the best
weights by validation loss, with the preset: ``evaluate`` and ``sample`` load it) and
``metrics.json`` (test-set numbers).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from aggressive_vi import Checkpoint, LRDecayOnPlateau

from ..devices import DEVICE_HELP, device_option, pin_memory
from ..run_spec import RunSpec, check_resume, resume_point
from .datasets import load_images
from .experiment import (MODEL_FILE, build_vae, evaluate, format_table, load_model, make_loaders, make_trainer,
                         reconstruction_grid, sample_grid, save_model, subset, write_grid)
from .presets import PRESETS, get_preset

__all__ = ["main", "build_parser"]


def _on_off(value: str) -> bool:
    if value.lower() in ("on", "true", "1", "yes"):
        return True
    if value.lower() in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return n


def _non_negative(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.image", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common_eval(p: argparse.ArgumentParser) -> None:
        p.add_argument("--iw-samples", type=_non_negative, default=500,
                       help="importance samples per image for IW-NLL (paper: 500; 0 skips it)")
        p.add_argument("--iw-chunk", type=_positive, default=100, help="samples per decoder call")
        p.add_argument("--max-eval", type=_positive, default=None, help="use only the first N valid/test images")
        p.add_argument("--threads", type=_positive, default=None, help="torch.set_num_threads")
        p.add_argument("--device", type=device_option, default="cpu", help=DEVICE_HELP)

    t = sub.add_parser("train", help="train a VAE (aggressive or basic) and evaluate it on the test split")
    t.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="autocast of the training forward passes (Engine(precision); docs/gpu.md)")
    t.add_argument("--data", default="bundled",
                   help="'bundled' (5k MNIST digits), the paper's omniglot.pt, or a [N, 28, 28] .npy/.pt")
    t.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    t.add_argument("--aggressive", type=_on_off, default=True, metavar="{on,off}",
                   help="aggressive inference-network training until MI plateaus (on) or basic VAE (off)")
    t.add_argument("--epochs", type=_positive, default=10)
    t.add_argument("--out", type=Path, required=True, help="run directory")
    t.add_argument("--batch-size", type=_positive, default=None, help="default: the preset's (50)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of both networks")
    t.add_argument("--kl-start", type=float, default=1.0, help="initial KL weight (1.0: no annealing)")
    t.add_argument("--warm-up", type=_positive, default=10, help="epochs of KL annealing up to 1")
    t.add_argument("--patience", type=_positive, default=5,
                   help="leave the aggressive phase after this many epochs in total without a new best MI")
    t.add_argument("--window", type=_positive, default=10, help="inner-loop window (paper, images: 10)")
    t.add_argument("--max-inner-steps", type=_positive, default=100)
    t.add_argument("--lr-patience", type=_positive, default=20,
                   help="halve the lr after this many epochs without a better validation loss")
    t.add_argument("--max-train", type=_positive, default=None, help="use only the first N training images")
    t.add_argument("--seed", type=int, default=783435)
    t.add_argument("--resume", action="store_true",
                   help="continue exactly from the latest checkpoint in OUT/checkpoints (same options; "
                        "--epochs and the evaluation options may change)")
    t.add_argument("--save-every", type=_positive, default=None, metavar="STEPS",
                   help="also checkpoint every STEPS decoder updates (default: at epoch ends only)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    common_eval(t)

    e = sub.add_parser("evaluate", help="IW-NLL, -ELBO, KL, MI and AU of a trained model")
    e.add_argument("--checkpoint", type=Path, required=True, help=f"the run directory or its {MODEL_FILE}")
    e.add_argument("--data", default=None, help="default: the data the model was trained on")
    e.add_argument("--split", choices=("test", "valid"), default="test")
    e.add_argument("--batch-size", type=_positive, default=50, help="batch size (the MI estimate depends on it)")
    e.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    e.add_argument("--seed", type=int, default=783435,
                   help="seed of the estimators' draws (train's final evaluation uses the run's --seed)")
    common_eval(e)

    s = sub.add_parser("sample", help="PNG grids: samples from the prior, reconstructions beside inputs")
    s.add_argument("--checkpoint", type=Path, required=True, help=f"the run directory or its {MODEL_FILE}")
    s.add_argument("--out", type=Path, default=None, help="output directory (default: the checkpoint's)")
    s.add_argument("--n", type=_positive, default=100, help="prior samples")
    s.add_argument("--reconstructions", type=_non_negative, default=50, help="test images to reconstruct")
    s.add_argument("--data", default=None, help="default: the data the model was trained on")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=_positive, default=None)
    s.add_argument("--device", type=device_option, default="cpu", help=DEVICE_HELP)
    return parser


# ------------------------------------------------------------------------------------ train
class HistoryFile:
    """Callback: write ``history.json`` after every epoch."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_epoch_end(self, trainer: Any, record: Any) -> None:
        trainer.history.to_json(self.path)


class EpochCPUTime:
    """Callback: CPU seconds of this process per epoch (``time.process_time``; on a shared machine
    wall time also counts other people's work)."""

    def __init__(self) -> None:
        self.seconds: List[float] = []
        self._start = 0.0

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self._start = time.process_time()

    def on_epoch_end(self, trainer: Any, record: Any) -> None:
        self.seconds.append(round(time.process_time() - self._start, 2))


def _jsonable(args: argparse.Namespace) -> Dict[str, Any]:
    return {k: (str(v) if isinstance(v, (Path, torch.device)) else v) for k, v in vars(args).items()}


# options a resumed run may change: the length of training, the final evaluation, the machinery
RESUMABLE_OPTIONS = ("epochs", "iw_samples", "iw_chunk", "threads", "no_progress", "resume", "out",
                     "save_every", "command", "device")


def run_spec(config: Dict[str, Any]) -> RunSpec:
    """What must not change when a run is resumed: the preset and its sizes, the data and every
    option that shapes training (``config`` as written to ``config.json``)."""
    return RunSpec({"example": "image", **{k: v for k, v in config.items() if k not in RESUMABLE_OPTIONS}})


def train(args: argparse.Namespace) -> Dict[str, Any]:
    torch.manual_seed(args.seed)
    preset = get_preset(args.preset)
    batch_size = args.batch_size or preset.batch_size
    checkpoints = args.out / "checkpoints"
    resume_from = resume_point(checkpoints, args.resume)
    splits = subset(load_images(args.data), args.max_train, args.max_eval)
    train_dl, valid_dl, test_dl = make_loaders(splits, batch_size, seed=args.seed,
                                               pin_memory=pin_memory(args.device))
    config = _jsonable(args)
    config.update(batch_size=batch_size, preset_sizes=preset.to_dict(), data_sizes=splits.sizes(),
                  data_source=splits.source)
    spec = run_spec(config)
    if resume_from is not None:
        check_resume(resume_from, spec)  # before anything is loaded: a clear error on other settings
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(config, indent=1))
    print(f"data {splits.source}: {splits.sizes()}; preset {preset.name}; "
          f"{'aggressive' if args.aggressive else 'basic'} training for {args.epochs} epochs", flush=True)

    vae = build_vae(preset).to(args.device)  # the trainer moves each batch to the model's device
    cpu_time = EpochCPUTime()
    trainer = make_trainer(vae, aggressive=args.aggressive, lr=args.lr, kl_start=args.kl_start,
                           warm_up=args.warm_up, patience=args.patience, window=args.window,
                           max_inner_steps=args.max_inner_steps, lr_patience=args.lr_patience,
                           precision=args.precision,
                           callbacks=[spec, HistoryFile(args.out / "history.json"),
                                      Checkpoint(checkpoints, every_n_steps=args.save_every, keep_last=2),
                                      cpu_time],
                           progress=not args.no_progress)
    if resume_from is not None:
        print(f"resuming from {resume_from}", flush=True)
    history = trainer.fit(train_dl, val_loader=valid_dl, epochs=args.epochs, resume_from=resume_from)
    save_model(args.out / MODEL_FILE, vae, preset, data=str(args.data), config=config)

    torch.manual_seed(args.seed)  # `evaluate --seed` with the same seed gives the same numbers
    start = time.perf_counter()
    metrics = evaluate(vae, test_dl, iw_samples=args.iw_samples, iw_chunk=args.iw_chunk)
    aggressive_epochs = [r.epoch for r in history if r.aggressive]
    metrics.update(
        split="test", preset=preset.name, aggressive=args.aggressive, epochs=len(history),
        aggressive_epochs=len(aggressive_epochs),
        epoch_seconds=[round(r.wall_time, 2) for r in history],
        epoch_cpu_seconds=cpu_time.seconds,  # this process's CPU time (epochs of this invocation)
        threads=torch.get_num_threads(),
        inner_steps_mean=[round(r.inner_steps_mean, 2) for r in history],
        best_epoch=next(c.best_epoch for c in trainer.callbacks if isinstance(c, LRDecayOnPlateau)),
        eval_seconds=round(time.perf_counter() - start, 2),
    )
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(format_table(metrics, f"test split, best epoch {metrics['best_epoch']} ({args.out}/metrics.json)"))
    return metrics


# ------------------------------------------------------------------------------------ evaluate / sample
def _data_for(ckpt: Dict[str, Any], data: Optional[str], max_eval: Optional[int] = None):
    source = data or ckpt.get("data") or "bundled"
    return subset(load_images(source), None, max_eval)


def evaluate_cmd(args: argparse.Namespace) -> Dict[str, Any]:
    vae, preset, ckpt = load_model(args.checkpoint, map_location=args.device)
    splits = _data_for(ckpt, args.data, args.max_eval)
    _, valid_dl, test_dl = make_loaders(splits, args.batch_size, pin_memory=pin_memory(args.device))
    loader = test_dl if args.split == "test" else valid_dl
    torch.manual_seed(args.seed)  # after building the model, whose initialisation draws too
    metrics = evaluate(vae, loader, iw_samples=args.iw_samples, iw_chunk=args.iw_chunk)
    metrics.update(split=args.split, preset=preset.name, checkpoint=str(args.checkpoint))
    print(format_table(metrics, f"{args.split} split, {args.checkpoint}"))
    if args.json is not None:
        args.json.write_text(json.dumps(metrics, indent=1))
    return metrics


def sample_cmd(args: argparse.Namespace) -> List[Path]:
    torch.manual_seed(args.seed)
    vae, preset, ckpt = load_model(args.checkpoint, map_location=args.device)
    ckpt_dir = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
    out = args.out or ckpt_dir
    binary, probs = sample_grid(vae, args.n, seed=args.seed)
    written = [write_grid(out / "samples.png", binary), write_grid(out / "sample_probs.png", probs)]
    if args.reconstructions:
        splits = _data_for(ckpt, args.data, args.reconstructions)
        _, _, test_dl = make_loaders(splits, args.reconstructions)
        x = next(iter(test_dl))
        written.append(write_grid(out / "reconstructions.png", reconstruction_grid(vae, x, seed=args.seed)))
    for path in written:
        print(f"wrote {path}")
    return written


def main(argv: Optional[List[str]] = None) -> Any:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        if args.command == "train":
            return train(args)
        if args.command == "evaluate":
            return evaluate_cmd(args)
        return sample_cmd(args)
    except (ValueError, TypeError, OSError) as err:  # bad input: one line, not a traceback
        if argv is not None:  # called from Python (tests): let the exception through
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
