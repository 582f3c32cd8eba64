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
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..core.side_by_side import add_run_arguments, new_parser, run_settings, run_specs, show_json, start
from . import table
from .data import prepare_data
from .runner import run_all
from .spec import OURS_CLIP, OURS_INIT, PAPER_SIZES, ImageRunSpec

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("python -m benchmarks.image_parity", __doc__,
                   "'bundled' (the 5,000 MNIST digits) or any file examples.image reads (the paper's omniglot.pt...)")
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
    return add_run_arguments(p, jobs=1, out="benchmarks/results/image_parity")


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


def _describe(result: Dict[str, Any]) -> str:
    m = result["metrics"]
    return (f"iw_nll {m['iw_nll']:.2f} kl {m['kl']:.2f} mi {m['mi']:.3f} au {m['au']} "
            f"train {result['train_seconds']:.0f}s")


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.from_json:
        return show_json(args, table)
    seeds, work = start(parser, args, script="image.py", scratch_prefix="image-parity-",
                        needs_reference="reference" in args.sides or args.ours_init == "reference",
                        reference_error="--reference-dir is required for the reference side and for --ours-init reference")
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
    settings = run_settings(args, argv, seeds, work, data_sizes=sizes)
    return run_specs(args, specs, settings, work, Path(args.out) / f"image_parity_{args.name}.json",
                     runner=run_all, tables=table, describe=_describe, note=f"data {sizes}; ")


if __name__ == "__main__":  # pragma: no cover
    main()
