"""The command line of the study (``python -m benchmarks.reproduce --help``): flags to budgets, then
train (:func:`benchmarks.reproduce.study.run_study`) or read the JSON already written
(``--from-json``), and print tables, Markdown and figures. The flags are described in the package's
docstring, which is also the ``--help`` text."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from .datasets import DATASETS, DEFAULTS, OPTIMIZERS, PRESETS, SELECTIONS, Budget
from .figures import plot_curves
from .rows import ALL_ROWS, ROWS
from .study import run_study
from .tables import format_markdown, format_table

__all__ = ["ALL", "add_budget_flags", "build_parser", "budgets_from_args", "main"]

#: ``--max-train all`` / ``--max-eval all``: the whole split (``Budget.max_train = None``).
ALL = "all"


def _count_or_all(text: str) -> Any:
    """argparse type: a positive integer, or ``"all"`` (kept as the string; :func:`main` maps it to None)."""
    if text == ALL:
        return ALL
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The study's flags; the ``--help`` text is the package's docstring."""
    description = sys.modules[__package__].__doc__  # benchmarks.reproduce, imported before this module
    p = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="all", choices=[*DATASETS, "all"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ALL_ROWS),
                   help="rows to train (default: the paper's Table 1 rows; see benchmarks.reproduce.rows)")
    p.add_argument("--out", default="benchmarks/results")
    add_budget_flags(p)
    p.add_argument("--figures", default=None, help="also write DIR/curves_<data>.png (needs matplotlib)")
    p.add_argument("--curve-rows", nargs="+", default=["basic", "aggressive"], choices=[r for r in ALL_ROWS if r != "ar"],
                   help="rows drawn in the MI/KL curves (default: basic aggressive)")
    p.add_argument("--from-json", action="store_true",
                   help="do not train: read the JSON files already in --out (for --figures / --markdown)")
    p.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: 1 with --jobs > 1, else torch's default)")
    return p


def add_budget_flags(p: argparse.ArgumentParser) -> None:
    """The flags that change a data set's :class:`Budget` (each ``None`` unless given)."""
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: per data set)")
    p.add_argument("--warm-up", type=float, default=None, help="epochs of KL annealing (default: per data set)")
    p.add_argument("--max-train", type=_count_or_all, default=None,
                   help="training examples (first N, or 'all'; default: per data set)")
    p.add_argument("--max-eval", type=_count_or_all, default=None,
                   help="validation and test examples (first N, or 'all'; default: per data set)")
    p.add_argument("--max-aggressive-epochs", type=int, default=None,
                   help="cap on the aggressive phase, on top of the MI-plateau rule")
    p.add_argument("--fixed-aggressive-epochs", type=int, default=None,
                   help="aggressive rows leave the aggressive phase after exactly N epochs (no MI rule)")
    p.add_argument("--window", type=int, default=None,
                   help="inner-loop window (default: the data set's; the paper: 15 text, 10 images)")
    p.add_argument("--max-inner-steps", type=int, default=None, help="inner-loop cap (default: the data set's)")
    p.add_argument("--max-iw", type=int, default=None, help="IW-NLL on the first N test examples only")
    p.add_argument("--iw-samples", type=int, default=None, help="importance samples for IW-NLL (default 500)")
    p.add_argument("--select", default=None, choices=list(SELECTIONS),
                   help="evaluate the last epoch's model (default) or the best validation epoch's (the paper's)")
    p.add_argument("--preset", default=None, choices=list(PRESETS),
                   help="the examples' model sizes (text, image) and synthetic split sizes (default: per data set)")
    p.add_argument("--optimizer", default=None, choices=list(OPTIMIZERS),
                   help="synthetic data only: Adam lr 1e-3 or the paper's SGD lr 1.0 (default: per data set)")


def budgets_from_args(args: argparse.Namespace, datasets: Sequence[str],
                      defaults: Optional[Dict[str, Budget]] = None) -> Dict[str, Budget]:
    """Each data set's budget from ``defaults`` (default :data:`DEFAULTS`) with the flags that were
    given applied on top (``--max-train all`` / ``--max-eval all`` become ``None``: the whole split)."""
    changes = {"epochs": args.epochs, "warm_up": args.warm_up, "max_train": args.max_train,
               "max_eval": args.max_eval, "iw_samples": args.iw_samples,
               "max_aggressive_epochs": args.max_aggressive_epochs, "max_iw": args.max_iw, "select": args.select,
               "fixed_aggressive_epochs": args.fixed_aggressive_epochs, "window": args.window,
               "max_inner_steps": args.max_inner_steps, "preset": args.preset, "optimizer": args.optimizer}
    given = {k: (None if v == ALL else v) for k, v in changes.items() if v is not None}
    defaults = DEFAULTS if defaults is None else defaults
    return {d: Budget(**{**asdict(defaults[d]), **given}) for d in datasets}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, Any]]:
    args = build_parser().parse_args(argv)
    datasets = list(DATASETS) if args.data == "all" else [args.data]
    budgets = budgets_from_args(args, datasets)
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    threads = args.threads if args.threads is not None else (1 if args.jobs > 1 else None)
    command = "python -m benchmarks.reproduce " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.from_json:
        docs = {}
        for d in datasets:
            path = Path(args.out) / f"reproduce_{d}.json"
            if not path.is_file():
                raise SystemExit(f"--from-json: {path} does not exist (run the study first)")
            docs[d] = json.loads(path.read_text())
            print(format_table(docs[d]["summary"], title=f"== {d} ({docs[d]['runs_done']} of "
                               f"{docs[d]['runs_expected']} runs) =="), flush=True)
    else:
        docs = run_study(datasets, args.seeds, Path(args.out), budgets, rows=args.rows, jobs=args.jobs,
                         threads=threads, command=command, log=lambda s: print(s, flush=True))
    if args.markdown:
        for d, doc in docs.items():
            print(f"\n### {d}\n\n{format_markdown(doc)}", flush=True)
    if args.figures:
        for d, doc in docs.items():
            path = plot_curves(doc, Path(args.figures) / f"curves_{d}.png", rows=args.curve_rows)
            print(f"wrote {path}", flush=True)
    return docs
