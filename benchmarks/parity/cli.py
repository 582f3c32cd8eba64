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
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..core.side_by_side import kill_children
from .data import prepare_splits
from .runner import run_all
from .spec import MODES, OURS_CLIP, SIDES, RunSpec, reference_seeds
from .table import format_markdown, format_table, read_json, relabel, write_json

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.parity", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-dir", help="a checkout of the paper's code (vae-lagging-encoder); never modified")
    p.add_argument("--data", help="'bundled', a directory with one *train*/*valid*/*test* .txt[.gz] file each, "
                                  "or a prefix PREFIX.{train,valid,test}.txt")
    p.add_argument("--name", help="label of the data set in the table and the JSON file name")
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
    p.add_argument("--seeds", type=int, nargs="+", help="default: the reference's first three seeds")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each with one thread)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per run before it is killed")
    p.add_argument("--python", default=sys.executable, help="interpreter for both sides")
    p.add_argument("--reference-python", help="interpreter for the reference (default: --python)")
    p.add_argument("--work-dir", help="scratch directory (default: a new temporary one, kept)")
    p.add_argument("--out", default="benchmarks/results/parity", help="directory of the JSON file")
    p.add_argument("--from-json", nargs="+", help="print the table of these JSON files instead of running")
    p.add_argument("--data-label", help="with --from-json: show every run under this data label (to put "
                                        "runs made under different --name's on the same data in one table)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return p


def _terminate(signum: int, frame: Any) -> None:
    kill_children()
    raise SystemExit(128 + signum)


def _print(results: List[Dict[str, Any]], markdown: bool) -> None:
    print(format_markdown(results) if markdown else format_table(results))


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.from_json:
        results = [r for path in args.from_json for r in read_json(path)["results"]]
        if args.data_label:
            results = relabel(results, args.data_label)
        _print(results, args.markdown)
        return results
    if not args.data or not args.name:
        parser.error("--data and --name are required (or --from-json)")
    if "reference" in args.sides and not args.reference_dir:
        parser.error("--reference-dir is required for the reference side (or pass --sides ours)")
    seeds = args.seeds
    if seeds is None:
        if not args.reference_dir:
            parser.error("--seeds is required without --reference-dir")
        seeds = reference_seeds(Path(args.reference_dir) / "text.py")[:3]
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="parity-"))
    work.mkdir(parents=True, exist_ok=True)
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
    settings = {"argv": list(sys.argv[1:] if argv is None else argv), "data": args.data, "name": args.name,
                "cuts": {"train": args.max_train, "valid": args.max_valid, "test": args.max_test},
                "max_length": args.max_length, "max_vocab": args.max_vocab,
                "seeds": seeds, "modes": args.modes, "sides": args.sides, "jobs": args.jobs,
                "threads_per_run": 1, "work_dir": str(work),
                "reference_dir": str(Path(args.reference_dir).resolve()) if args.reference_dir else None}
    out = Path(args.out) / f"parity_{args.name}.json"
    done: List[Dict[str, Any]] = []
    lock = threading.Lock()

    def on_result(result: Dict[str, Any]) -> None:
        with lock:
            done.append(result)
            write_json(out, done, settings)
            status = f"error: {result['error'].splitlines()[0]}" if result.get("error") else (
                f"mi {result['metrics']['mi']:.3f} au {result['metrics']['au']} iw_nll "
                f"{result['metrics']['iw_nll']:.3f} train {result['train_seconds']:.0f}s")
            print(f"[{len(done)}] {result['data']} {result['mode']} {result['side']} seed {result['seed']}: "
                  f"{status}", flush=True)

    print(f"{len(specs) * len(args.sides)} runs, {args.jobs} at a time; scratch {work}; JSON {out}", flush=True)
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        results = run_all(specs, args.sides, work / "runs", jobs=args.jobs, reference_dir=args.reference_dir,
                          python=args.python, reference_python=args.reference_python, timeout=args.timeout,
                          on_result=on_result)
    except BaseException:  # Ctrl-C or SIGTERM: no run outlives the harness
        kill_children()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    _print(results, args.markdown)
    return results


if __name__ == "__main__":  # pragma: no cover
    main()
