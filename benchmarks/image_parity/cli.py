"""``python -m benchmarks.image_parity``: write the data file, run both sides for every mode and seed,
print one table and write ``OUT/image_parity_<name>.json`` (rewritten after every finished run).

Examples (docs/results.md, "Side by side with the paper's image code", has the one that ran)::

    # the bundled digits cut to 500/250/250, a reduced ResNet/PixelCNN on both sides, 8 epochs
    python -m benchmarks.image_parity --reference-dir ../vae-lagging-encoder --data bundled --name digits \\
        --max-train 500 --max-valid 250 --max-test 300 --encoder-channels 16 16 16 --encoder-hidden 128 \\
        --decoder-channels 16 --decoder-kernels 5 5 3 3 --latent-dim 32 --epochs 8 --iw-samples 100
    # redraw the table from JSON files
    python -m benchmarks.image_parity --from-json benchmarks/results/image_parity/*.json --markdown
"""
from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.core.reference import reference_seeds
from benchmarks.core.side_by_side import kill_children
from benchmarks.parity.cli import _terminate
from benchmarks.parity.table import relabel

from .data import prepare_data
from .runner import run_all
from .spec import MODES, OURS_CLIP, OURS_INIT, PAPER_SIZES, SIDES, ImageRunSpec
from .table import format_markdown, format_table, read_json, write_json

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.image_parity", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-dir", help="a checkout of the paper's code (vae-lagging-encoder); never modified")
    p.add_argument("--data", help="'bundled' (the 5,000 MNIST digits) or any file examples.image reads "
                                  "(the paper's omniglot.pt...)")
    p.add_argument("--name", help="label of the data set in the table and the JSON file name")
    p.add_argument("--max-train", type=int, help="keep the first N training images")
    p.add_argument("--max-valid", type=int, help="keep the first N validation images")
    p.add_argument("--max-test", type=int, help="keep the first N test images (the reference needs at least "
                                                 "6 batches: it prints its IW-NLL progress every round(batches/10))")
    p.add_argument("--latent-dim", type=int, default=32, help="size of z (paper: 32)")
    p.add_argument("--latent-maps", type=int, default=PAPER_SIZES["latent_maps"], help="maps of z (paper: 4)")
    p.add_argument("--encoder-channels", type=int, nargs="+", default=list(PAPER_SIZES["encoder_channels"]),
                   help="channels of each stride-2 residual block (paper: 64 64 64)")
    p.add_argument("--encoder-hidden", type=int, default=PAPER_SIZES["encoder_hidden"], help="paper: 512")
    p.add_argument("--decoder-channels", type=int, default=PAPER_SIZES["decoder_channels"], help="paper: 64")
    p.add_argument("--decoder-kernels", type=int, nargs="+", default=list(PAPER_SIZES["decoder_kernel_sizes"]),
                   help="one kernel per PixelCNN block (paper: 7 7 7 7 7 5 5 5 5 3 3 3 3)")
    p.add_argument("--batch-size", type=int, default=50, help="paper: 50")
    p.add_argument("--epochs", type=int, default=8, help="epoch budget (the paper's: 1000, with lr decay)")
    p.add_argument("--iw-samples", type=int, default=500, help="importance samples per test image (x100)")
    p.add_argument("--ours-clip", choices=OURS_CLIP, default="joint",
                   help="our side's clip_scope: the library's default and the paper's rule (joint) or the "
                        "updated network's norm alone (network)")
    p.add_argument("--ours-init", choices=OURS_INIT, default="own",
                   help="our side's initial weights: its own (default) or the paper's under the same seed "
                        "(then both sides start from the same weights; needs --reference-dir)")
    p.add_argument("--seeds", type=int, nargs="+", help="default: the reference's first three seeds")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (each with one thread)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per run before it is killed")
    p.add_argument("--python", default=sys.executable, help="interpreter for both sides")
    p.add_argument("--reference-python", help="interpreter for the reference (default: --python)")
    p.add_argument("--work-dir", help="scratch directory (default: a new temporary one, kept)")
    p.add_argument("--out", default="benchmarks/results/image_parity", help="directory of the JSON file")
    p.add_argument("--from-json", nargs="+", help="print the table of these JSON files instead of running")
    p.add_argument("--data-label", help="with --from-json: show every run under this data label")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return p


def check_reference_sizes(sizes: Dict[str, int], batch_size: int) -> None:
    """Raise ``ValueError`` for split sizes the paper's script divides by zero on: it logs every
    ``train batches // 5`` batches and prints its IW-NLL progress every ``round(test batches / 10)``."""
    batches = {k: -(-n // batch_size) for k, n in sizes.items()}
    if batches["train"] < 5:
        raise ValueError(f"the reference needs at least 5 training batches (it logs every batches // 5); "
                         f"{sizes['train']} images make {batches['train']} of {batch_size}")
    if batches["test"] < 6:
        raise ValueError(f"the reference needs at least 6 test batches (round(batches / 10) must not be 0); "
                         f"{sizes['test']} images make {batches['test']} of {batch_size}")


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
    if ("reference" in args.sides or args.ours_init == "reference") and not args.reference_dir:
        parser.error("--reference-dir is required for the reference side and for --ours-init reference")
    seeds = args.seeds
    if seeds is None:
        if not args.reference_dir:
            parser.error("--seeds is required without --reference-dir")
        seeds = reference_seeds(Path(args.reference_dir) / "image.py")[:3]
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="image-parity-"))
    work.mkdir(parents=True, exist_ok=True)
    data_file = work / "data" / f"{args.name}.pt"
    try:
        sizes = prepare_data(args.data, data_file, max_train=args.max_train, max_valid=args.max_valid,
                             max_test=args.max_test)
        specs = [ImageRunSpec(data=args.name, data_file=str(data_file), latent_dim=args.latent_dim,
                              encoder_channels=tuple(args.encoder_channels), encoder_hidden=args.encoder_hidden,
                              decoder_channels=args.decoder_channels,
                              decoder_kernel_sizes=tuple(args.decoder_kernels), latent_maps=args.latent_maps,
                              batch_size=args.batch_size, epochs=args.epochs, iw_samples=args.iw_samples,
                              mode=mode, seed=seed, ours_clip=args.ours_clip, ours_init=args.ours_init)
                 for seed in seeds for mode in args.modes]
        if "reference" in args.sides:
            check_reference_sizes(sizes, args.batch_size)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    settings = {"argv": list(sys.argv[1:] if argv is None else argv), "data": args.data, "name": args.name,
                "data_sizes": sizes, "seeds": seeds, "modes": args.modes, "sides": args.sides, "jobs": args.jobs,
                "threads_per_run": 1, "work_dir": str(work),
                "reference_dir": str(Path(args.reference_dir).resolve()) if args.reference_dir else None}
    out = Path(args.out) / f"image_parity_{args.name}.json"
    done: List[Dict[str, Any]] = []
    lock = threading.Lock()

    def on_result(result: Dict[str, Any]) -> None:
        with lock:
            done.append(result)
            write_json(out, done, settings)
            status = f"error: {result['error'].splitlines()[0]}" if result.get("error") else (
                f"iw_nll {result['metrics']['iw_nll']:.2f} kl {result['metrics']['kl']:.2f} "
                f"mi {result['metrics']['mi']:.3f} au {result['metrics']['au']} "
                f"train {result['train_seconds']:.0f}s")
            print(f"[{len(done)}] {result['data']} {result['mode']} {result['side']} seed {result['seed']}: "
                  f"{status}", flush=True)

    print(f"{len(specs) * len(args.sides)} runs, {args.jobs} at a time; data {sizes}; scratch {work}; JSON {out}",
          flush=True)
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
