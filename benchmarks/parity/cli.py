"""``python -m benchmarks.parity``: prepare the data, run both sides for every mode and seed, print
one table and write ``OUT/parity_<name>.json`` (rewritten after every finished run).

Examples (see docs/results.md, "Side by side with the paper's code", for the ones that ran)::

    # the paper's synthetic configuration (LSTM 50, batch 16), nz 1, from text files in DIR
    python -m benchmarks.parity --reference-dir ../vae-lagging-encoder --data DIR --name synthetic-nz1 \
        --embed-dim 50 --hidden-dim 50 --latent-dim 1 --batch-size 16 --epochs 5
    # the bundled corpus, cut to 2000/300/300 sentences
    python -m benchmarks.parity --reference-dir ../vae-lagging-encoder --data bundled --name text \
        --max-train 2000 --max-valid 300 --max-test 300 --embed-dim 64 --hidden-dim 128 --latent-dim 16 \
        --batch-size 32 --epochs 4
    # redraw tables from JSON files
    python -m benchmarks.parity --from-json benchmarks/results/parity/parity_*.json --markdown
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..core.side_by_side import add_run_arguments, new_parser, run_settings, run_specs, show_json, start
from . import table
from .data import prepare_splits
from .runner import run_all
from .spec import OURS_CLIP, RunSpec

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("python -m benchmarks.parity", __doc__,
                   "'bundled', a directory with one *train*/*valid*/*test* .txt[.gz] file each, "
                   "or a prefix PREFIX.{train,valid,test}.txt")
    p.add_argument("--max-train", type=int, help="keep the first N training sentences")
    p.add_argument("--max-valid", type=int, help="keep the first N validation sentences")
    p.add_argument("--max-test", type=int, help="keep the first N test sentences")
    p.add_argument("--max-length", type=int, help="keep only sentences of at most N tokens (before the cuts)")
    p.add_argument("--max-vocab", type=int, help="write words outside the training split's N most frequent "
                   "(specials included, as examples.text --max-vocab) as <unk> in every split")
    p.add_argument("--embed-dim", type=int, default=50, help="word embedding size (paper's synthetic: 50)")
    p.add_argument("--hidden-dim", type=int, default=50, help="LSTM hidden size (paper's synthetic: 50)")
    p.add_argument("--latent-dim", type=int, default=2, help="size of z (paper's synthetic config: 2)")
    p.add_argument("--batch-size", type=int, default=16, help="paper's synthetic: 16, text: 32")
    p.add_argument("--epochs", type=int, default=5, help="epoch budget (the paper's: 50 synthetic, 100 text)")
    p.add_argument("--iw-samples", type=int, default=500, help="importance samples per test sentence (x100)")
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--ours-clip", choices=OURS_CLIP, default="joint",
                   help="our side's clipping in aggressive steps: the library's default, the paper's joint "
                        "norm (joint), the updated network's norm (network), or the paper's in inner steps "
                        "only (inner-joint)")
    p.add_argument("--kl-start", type=float, default=1.0,
                   help="KL weight at the first update, rising linearly to 1 over --warm-up epochs on both "
                        "sides (default 1.0: no annealing, the code's default; the paper's text runs: 0.1)")
    p.add_argument("--warm-up", type=int, default=10, help="annealing epochs (the paper's text runs: 10)")
    return add_run_arguments(p, jobs=2, out="benchmarks/results/parity",
                             data_label_help="with --from-json: show every run under this data label (to put "
                                             "runs made under different --name's on the same data in one table)")


def _describe(result: Dict[str, Any]) -> str:
    m = result["metrics"]
    return f"mi {m['mi']:.3f} au {m['au']} iw_nll {m['iw_nll']:.3f} train {result['train_seconds']:.0f}s"


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.from_json:
        return show_json(args, table)
    seeds, work = start(parser, args, script="text.py", scratch_prefix="parity-",
                        needs_reference="reference" in args.sides,
                        reference_error="--reference-dir is required for the reference side (or pass --sides ours)")
    try:
        files = prepare_splits(args.data, work / "data", {"train": args.max_train, "valid": args.max_valid,
                                                          "test": args.max_test},
                               max_length=args.max_length, max_vocab=args.max_vocab)
        specs = [RunSpec(data=args.name, train=str(files["train"]), valid=str(files["valid"]),
                         test=str(files["test"]), embed_dim=args.embed_dim, hidden_dim=args.hidden_dim,
                         latent_dim=args.latent_dim, batch_size=args.batch_size, epochs=args.epochs,
                         iw_samples=args.iw_samples, mode=mode, seed=seed, dropout=args.dropout,
                         ours_clip=args.ours_clip, kl_start=args.kl_start, warm_up=args.warm_up)
                 for mode in args.modes for seed in seeds]
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    settings = run_settings(args, argv, seeds, work,
                            cuts={"train": args.max_train, "valid": args.max_valid, "test": args.max_test},
                            max_length=args.max_length, max_vocab=args.max_vocab)
    return run_specs(args, specs, settings, work, Path(args.out) / f"parity_{args.name}.json", runner=run_all,
                     tables=table, describe=_describe)


if __name__ == "__main__":  # pragma: no cover
    main()
