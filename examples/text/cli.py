"""``python -m examples.text compare|train|evaluate|generate``: the paper's text VAE from the command line.

    python -m examples.text compare --out runs/compare      # the same model trained both ways, side by side
    python -m examples.text train --data bundled --preset cpu --epochs 6 --out runs/text
    python -m examples.text train --data bundled --preset cpu --epochs 8 --out runs/text --resume
    python -m examples.text evaluate --checkpoint runs/text --iw-samples 500
    python -m examples.text generate --checkpoint runs/text --prior 5 --strategy beam

``train`` writes into ``--out``: ``history.json`` after every epoch; the trainer's checkpoints
(``aggressive_vi.Checkpoint``) in ``checkpoints/`` after every epoch (and every ``--save-every``
decoder updates; the last two are kept), with the vocabulary, preset and options of the run;
``--resume`` continues exactly from the latest. At the end ``model.pt`` (the best model by
validation ELBO with its vocabulary and preset: ``evaluate`` and ``generate`` load it) and
``metrics.json`` (test split). Stopped by Ctrl-C or SIGTERM, it checkpoints at the next decoder
update and exits with one line saying where the checkpoint is and how to resume (exit status 130
after SIGINT, 143 after SIGTERM).

``compare`` runs ``train`` twice on the same data, model and seed, aggressively and the basic way
(two processes, one thread each; see :mod:`examples.text.compare`), into ``OUT/aggressive`` and
``OUT/basic``, and prints the two side by side.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from aggressive_vi import (AggressiveTrainer, AnyOf, Checkpoint, ConstantKL, Engine, FixedEpochs, LinearKLAnnealing,
                           LRDecayOnPlateau, MIPlateau)
from aggressive_vi.metrics import ValidationMetrics

from ..devices import DEVICE_HELP, device_option, make_generator, module_device, pin_memory
from ..run_spec import RunSpec, check_resume, resume_point
from . import compare, generation
from .corpus import Vocab
from .experiment import (MODEL_FILE, Interrupted, build_vae, evaluate, format_table, json_safe, load_data,
                         load_model, save_model, sentences_to_batch)
from .presets import PRESETS, Preset, get_preset
from .tokens import tokenize


class HistoryFile:
    """Callback: write ``history.json`` after every epoch."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_epoch_end(self, trainer: AggressiveTrainer, record: Any) -> None:
        self.path.write_text(json.dumps(json_safe(trainer.history.to_dicts()), indent=1))


def _plain_args(args: argparse.Namespace) -> Dict[str, Any]:
    """The command-line options as plain values (no subcommand function), so that the files that
    hold them load with ``torch.load(..., weights_only=True)``."""
    return {k: (v if v is None or isinstance(v, (bool, int, float, str)) else str(v))
            for k, v in vars(args).items() if not callable(v)}


# preset fields a resumed run may change: the length of training and the final evaluation
RESUMABLE_PRESET_FIELDS = ("epochs", "iw_samples")


def run_spec(args: argparse.Namespace, preset: Preset, vocab: Vocab) -> RunSpec:
    """What must not change when a run is resumed: the vocabulary, the preset after the
    command-line overrides (but ``epochs`` and ``iw_samples``), the data and the options that
    shape training."""
    sizes = {k: v for k, v in preset.to_dict().items() if k not in RESUMABLE_PRESET_FIELDS
             and not (k == "max_length" and v is None)}  # as before max_length was a preset field
    options = {k: _plain_args(args)[k] for k in ("data", "labels", "max_length", "seed", "aggressive",
                                                   "precision", "bucket_widths")}
    return RunSpec({"example": "text", "preset_name": args.preset, "preset": sizes, "options": options,
                    "vocab": vocab.to_list()})


def _log(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------------------------- train
def train(args: argparse.Namespace) -> Dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    preset = get_preset(args.preset).override(
        epochs=args.epochs, kl_start=args.kl_start, warm_up=args.warm_up, iw_samples=args.iw_samples,
        batch_size=args.batch_size, max_vocab=args.max_vocab, max_aggressive_epochs=args.max_aggressive_epochs,
        embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, latent_dim=args.latent_dim, window=args.window,
        max_inner_steps=args.max_inner_steps, mi_estimator=args.mi_estimator,
        switch_k_stderr=args.switch_k_stderr, switch_min_epochs=args.switch_min_epochs,
        max_length=args.max_length)
    out = Path(args.out)
    checkpoints = out / "checkpoints"
    resume_from = resume_point(checkpoints, args.resume)
    data = load_data(args.data, max_vocab=preset.max_vocab, labels=args.labels, max_length=preset.max_length)
    spec = run_spec(args, preset, data.vocab)
    if resume_from is not None:
        check_resume(resume_from, spec)  # before anything is loaded: a clear error on other settings
    out.mkdir(parents=True, exist_ok=True)
    sizes = {s: len(d) for s, d in data.splits.items()}
    _log(f"data {args.data}: {sizes} sentences, vocabulary {len(data.vocab)}; preset {args.preset}: "
         f"{json.dumps(preset.to_dict())}")
    vae = build_vae(preset, len(data.vocab)).to(args.device)  # the trainer moves each batch there
    enc_opt = torch.optim.SGD(vae.encoder.parameters(), lr=preset.lr)
    dec_opt = torch.optim.SGD(vae.decoder.parameters(), lr=preset.lr)
    aggressive = args.aggressive == "on"
    stopping: Any = MIPlateau(k_stderr=preset.switch_k_stderr, min_epochs=preset.switch_min_epochs)
    if preset.max_aggressive_epochs is not None:
        stopping = AnyOf(stopping, FixedEpochs(preset.max_aggressive_epochs))
    kl_schedule = (ConstantKL(1.0) if preset.kl_start >= 1.0
                   else LinearKLAnnealing(start=preset.kl_start, warmup_epochs=preset.warm_up))
    lr_decay = LRDecayOnPlateau(patience=preset.decay_patience, factor=preset.decay_factor,
                                min_epoch=preset.decay_min_epoch, max_decays=preset.max_decays,
                                compare_to="previous")  # the paper's text rule
    trainer = AggressiveTrainer(
        vae, enc_opt, dec_opt, stopping=stopping, kl_schedule=kl_schedule, aggressive=aggressive,
        window=preset.window, max_inner_steps=preset.max_inner_steps, clip_grad_norm=preset.clip_grad_norm,
        validation=ValidationMetrics(vae, mi_estimator=preset.mi_estimator),
        engine=Engine(args.precision, cuda_graph=args.inner_step == "cuda_graph"),
        callbacks=[lr_decay, spec, HistoryFile(out / "history.json"),
                   Checkpoint(checkpoints, every_n_steps=args.save_every, keep_last=2)],  # last: saves all above
        verbose=True, progress=not args.no_progress)
    if resume_from is not None:
        _log(f"resuming from {resume_from}")
    pin = pin_memory(args.device)
    widths = _widths(args.bucket_widths)
    train_loader = data.loader("train", preset.batch_size, shuffle=True, seed=args.seed, pin_memory=pin,
                               bucket_widths=widths, drop_last=widths is not None)
    val_loader = data.loader("valid", preset.eval_batch_size, shuffle=False, pin_memory=pin)
    start = time.perf_counter()
    try:
        history = trainer.fit(train_loader, val_loader=val_loader, epochs=preset.epochs, resume_from=resume_from)
    except KeyboardInterrupt as err:  # the Checkpoint callback has saved where fit stopped
        saved = trainer.last_checkpoint
        raise Interrupted("SIGTERM" if "SIGTERM" in str(err) else "SIGINT",
                          None if saved is None else f"checkpoint {saved}") from err
    train_time = time.perf_counter() - start
    history.to_json(str(out / "history.json"))
    save_model(out / MODEL_FILE, vae, data.vocab, preset,
               {"args": _plain_args(args), "data": str(args.data), "best_epoch": lr_decay.best_epoch})
    _log(f"training took {train_time:.0f}s; best validation epoch {lr_decay.best_epoch} "
         f"(-ELBO {lr_decay.best_loss:.3f}); evaluating on test with {preset.iw_samples} importance samples")
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    test_loader = data.loader("test", preset.eval_batch_size, shuffle=False, pin_memory=pin)
    metrics = evaluate(vae, test_loader, iw_samples=preset.iw_samples, iw_chunk=preset.iw_chunk)
    metrics.update({"split": "test", "aggressive": aggressive, "epochs": len(history),
                    "aggressive_epochs": sum(r.aggressive for r in history), "train_seconds": train_time,
                    "eval_seconds": time.perf_counter() - start, "best_epoch": lr_decay.best_epoch,
                    "preset": args.preset, "data": str(args.data)})
    (out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=1))
    label = f"{'aggressive' if aggressive else 'basic'} (test)"
    _log("\n" + format_table({label: metrics}))
    _log(f"\nwrote {out}/history.json, {out}/metrics.json, {out}/{MODEL_FILE}, {checkpoints}/")
    return metrics


# ---------------------------------------------------------------------------------------- compare
def compare_cmd(args: argparse.Namespace) -> Dict[str, Any]:
    forwarded: List[str] = []  # the options given (other than --out and --resume), for both runs
    for action in add_train_options(argparse.ArgumentParser(), both_modes=True):
        value = getattr(args, action.dest)
        if action.dest in ("out", "resume"):
            continue
        default = value == action.default or (isinstance(action.default, str) and str(value) == action.default)
        if default and action.dest not in ("preset", "seed"):  # those two always, for the reader
            continue
        if action.nargs == 0:  # a flag (store_true)
            forwarded.append(action.option_strings[0])
        else:
            forwarded += [action.option_strings[0], str(value)]
    return compare.run(forwarded, out=Path(args.out), jobs=args.jobs, resume=args.resume, preset=args.preset)


# ---------------------------------------------------------------------------------------- evaluate
def evaluate_cmd(args: argparse.Namespace) -> Dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    vae, vocab, preset, ckpt = load_model(args.checkpoint, map_location=args.device)
    data_arg = args.data or ckpt["data"]
    data = load_data(data_arg, vocab=vocab, labels=args.labels, max_length=preset.max_length)
    torch.manual_seed(args.seed)
    loader = data.loader(args.split, args.batch_size or preset.eval_batch_size, shuffle=False,
                         pin_memory=pin_memory(args.device))
    start = time.perf_counter()
    metrics = evaluate(vae, loader, iw_samples=args.iw_samples, iw_chunk=preset.iw_chunk)
    metrics.update({"split": args.split, "data": str(data_arg), "eval_seconds": time.perf_counter() - start})
    out = Path(args.checkpoint)
    out = out if out.is_dir() else out.parent
    path = out / f"eval_{args.split}_{args.iw_samples}.json"
    path.write_text(json.dumps(json_safe(metrics), indent=1))
    _log(format_table({f"{args.split} ({args.iw_samples} samples)": metrics}))
    _log(f"wrote {path}")
    return metrics


# ---------------------------------------------------------------------------------------- generate
def _read_sentences(args: argparse.Namespace, data_source: str, vocab: Vocab, lines: Sequence[str]) -> List[List[str]]:
    tokenized = args.tokenize if args.tokenize is not None else data_source == "bundled"
    return [tokenize(line) if tokenized else line.split() for line in lines if line.strip()]


def generate_cmd(args: argparse.Namespace) -> List[str]:
    vae, vocab, preset, ckpt = load_model(args.checkpoint, map_location=args.device)
    device = module_device(vae)
    gen = make_generator(args.seed, device)  # draws z and tokens on the model's device
    torch.manual_seed(args.seed)
    banned = generation.NEVER if args.allow_unk else (*generation.NEVER, vocab.unk_id)
    opts = dict(beam_size=args.beam_size, temperature=args.temperature, max_len=args.max_len, banned=banned)
    out: List[str] = []

    def emit(header: str, rows: List[str]) -> None:
        out.append(header)
        out.extend(rows)
        _log(header)
        for row in rows:
            _log("  " + row)

    if args.prior:
        ids = generation.from_prior(vae.decoder, args.prior, args.strategy, generator=gen, **opts)
        emit(f"# from the prior ({args.strategy})", [generation.to_text(vocab, s) for s in ids])
    if args.reconstruct:
        lines = Path(args.reconstruct).read_text(encoding="utf-8").splitlines()[: args.max_sentences]
        sents = _read_sentences(args, ckpt["data"], vocab, lines)
        if not sents:
            raise ValueError(f"--reconstruct {args.reconstruct}: no non-empty line")
        x = sentences_to_batch(sents, vocab).to(device)
        ids = generation.reconstruct(vae.encoder, vae.decoder, x, args.strategy, use_mean=not args.posterior_sample,
                                     generator=gen, **opts)
        rows = []
        for tokens, rec in zip(sents, ids):
            rows.append(f"> {generation.to_text(vocab, vocab.encode(tokens))}")
            rows.append(f"< {generation.to_text(vocab, rec)}")
        code = "a posterior sample" if args.posterior_sample else "posterior mean"
        emit(f"# reconstructions ({args.strategy}, z = {code})", rows)
    if args.interpolate:
        a, b = _read_sentences(args, ckpt["data"], vocab, args.interpolate)
        xa, xb = sentences_to_batch([a], vocab).to(device), sentences_to_batch([b], vocab).to(device)
        ids = generation.interpolate(vae.encoder, vae.decoder, xa, xb, steps=args.steps, strategy=args.strategy, **opts)
        emit(f"# interpolation ({args.strategy}, {args.steps} points)", [generation.to_text(vocab, s) for s in ids])
    if not out:
        raise SystemExit("generate: nothing to do; pass --prior N, --reconstruct FILE and/or --interpolate A B")
    if args.output:
        Path(args.output).write_text("\n".join(out) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------- parser
def add_train_options(parser: argparse.ArgumentParser, *, both_modes: bool = False) -> List[argparse.Action]:
    """Add the options of ``train`` to ``parser``; returns them. ``compare`` (``both_modes``) takes
    them all but ``--aggressive``, ``--threads`` and ``--no-progress``, and passes them on to both of
    its runs."""
    added: List[argparse.Action] = []
    option = lambda *names, **kwargs: added.append(parser.add_argument(*names, **kwargs))  # noqa: E731
    option("--data", default="bundled", help="bundled | DIR | PREFIX (PREFIX.train.txt ...); the synthetic data: "
           "python -m examples.synthetic --write-data DIR, then --data DIR")
    option("--labels", action="store_true", help="lines are label<TAB>text (Yelp)")
    option("--max-length", type=int, default=None,
           help="drop sentences (every split) of more tokens than this (preset quick: 12; others: none)")
    option("--preset", default="quick" if both_modes else "cpu", choices=sorted(PRESETS),
           help="hyper-parameters (examples/text/presets.py); paper: the paper's sizes")
    if not both_modes:
        option("--aggressive", default="on", choices=["on", "off"])
    option("--kl-start", type=float, default=None, help="initial KL weight (preset: 1.0 = no annealing)")
    option("--warm-up", type=float, default=None, help="epochs of KL annealing up to 1")
    option("--epochs", type=int, default=None)
    option("--batch-size", type=int, default=None)
    option("--max-vocab", type=int, default=None)
    option("--embed-dim", type=int, default=None)
    option("--hidden-dim", type=int, default=None)
    option("--latent-dim", type=int, default=None)
    option("--window", type=int, default=None, help="inner steps per window of the catch-up test")
    option("--max-inner-steps", type=int, default=None)
    option("--max-aggressive-epochs", type=int, default=None)
    option("--mi-estimator", default=None, choices=["minibatch", "dataset"],
           help="validation MI the switch reads (paper: minibatch; cpu preset: dataset)")
    option("--switch-k-stderr", type=float, default=None,
           help="a rise of validation MI counts only above this many standard errors (paper: 0)")
    option("--switch-min-epochs", type=int, default=None,
           help="aggressive for at least this many epochs (paper: 0)")
    option("--iw-samples", type=int, default=None, help="importance samples in the final evaluation")
    option("--out", required=True, help="where to write: OUT/aggressive/, OUT/basic/ and OUT/compare.json"
           if both_modes else "where to write (history.json, checkpoints/, model.pt, metrics.json)")
    option("--seed", type=int, default=783435)
    if not both_modes:  # compare: one thread per run with --jobs 2, torch's default with --jobs 1
        option("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    option("--resume", action="store_true",
           help="continue exactly from the latest checkpoint in OUT/checkpoints (same options; "
                "--epochs and --iw-samples may change)")
    option("--save-every", type=_positive, default=None, metavar="STEPS",
           help="also checkpoint every STEPS decoder updates (default: at epoch ends only)")
    if not both_modes:  # compare: the runs print their epoch lines, no bar
        option("--no-progress", action="store_true")
    option("--device", type=device_option, default="cpu", help=DEVICE_HELP)
    option("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
           help="autocast of the training forward passes (Engine(precision))")
    option("--inner-step", default="eager", choices=["eager", "cuda_graph"],
           help="cuda_graph: replay the inner step as a CUDA graph (one GPU; pair with --bucket-widths)")
    option("--bucket-widths", default=None, metavar="W1,W2,...",
           help="pad training batches to the smallest of these widths (tokens incl. <s> and </s>) "
                "and drop a short last batch: a few static shapes for --inner-step cuda_graph")
    return added


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.text", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a text VAE, then evaluate it on the test split")
    add_train_options(t)
    t.set_defaults(func=train)

    c = sub.add_parser("compare", help="train the same model aggressively and the basic way, side by side",
                       description=compare.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_options(c, both_modes=True)
    c.add_argument("--jobs", type=int, default=2, choices=[1, 2],
                   help="2: both runs at once, one thread each (default); 1: one after the other")
    c.set_defaults(func=compare_cmd)

    e = sub.add_parser("evaluate", help="IW-NLL, PPL, KL, MI, AU of a checkpoint")
    e.add_argument("--checkpoint", required=True, help=f"run directory or its {MODEL_FILE}")
    e.add_argument("--data", default=None, help="default: the data the checkpoint was trained on")
    e.add_argument("--labels", action="store_true")
    e.add_argument("--split", default="test", choices=["train", "valid", "test"])
    e.add_argument("--iw-samples", type=int, default=500)
    e.add_argument("--batch-size", type=int, default=None)
    e.add_argument("--seed", type=int, default=783435)
    e.add_argument("--threads", type=int, default=0)
    e.add_argument("--device", type=device_option, default="cpu", help=DEVICE_HELP)
    e.set_defaults(func=evaluate_cmd)

    g = sub.add_parser("generate", help="sentences from the prior, reconstructions, interpolations")
    g.add_argument("--checkpoint", required=True, help=f"run directory or its {MODEL_FILE}")
    g.add_argument("--strategy", default="greedy", choices=list(generation.STRATEGIES))
    g.add_argument("--beam-size", type=int, default=5)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--max-len", type=int, default=60)
    g.add_argument("--prior", type=int, default=0, metavar="N", help="decode N codes drawn from the prior")
    g.add_argument("--reconstruct", metavar="FILE", help="reconstruct the sentences in FILE (one per line)")
    g.add_argument("--max-sentences", type=int, default=20)
    g.add_argument("--posterior-sample", action="store_true", help="decode z ~ q(z|x) instead of its mean")
    g.add_argument("--interpolate", nargs=2, metavar=("A", "B"), help="interpolate between two sentences")
    g.add_argument("--steps", type=int, default=5)
    g.add_argument("--tokenize", dest="tokenize", action="store_true", default=None,
                   help="tokenise input text like the bundled corpus (default for bundled checkpoints)")
    g.add_argument("--no-tokenize", dest="tokenize", action="store_false", help="split input on whitespace")
    g.add_argument("--allow-unk", action="store_true", help="let decoders emit <unk> (banned by default)")
    g.add_argument("--output", help="also write the text to this file")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", type=device_option, default="cpu", help=DEVICE_HELP)
    g.set_defaults(func=generate_cmd)
    return parser


def _widths(value: Optional[str]) -> Optional[List[int]]:
    """``"16,32,64"`` -> ``[16, 32, 64]`` (``None`` stays ``None``)."""
    if value is None:
        return None
    try:
        widths = sorted(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise SystemExit(f"--bucket-widths must be comma-separated positive integers; got {value!r}")
    if not widths or widths[0] < 3:
        raise SystemExit(f"--bucket-widths must be comma-separated integers >= 3; got {value!r}")
    return widths


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return n


def main(argv: Optional[Sequence[str]] = None) -> Any:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as err:  # bad input: one line, not a traceback
        if argv is not None:  # called from Python (tests): let the exception through
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: one line, not a traceback
        if argv is not None:
            raise
        stop = err if isinstance(err, Interrupted) else Interrupted("SIGINT", None)
        print(stop.line(sys.argv[1:]), file=sys.stderr, flush=True)
        raise SystemExit(stop.exit_code) from None

