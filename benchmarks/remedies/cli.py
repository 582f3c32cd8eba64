"""The command line (``python -m benchmarks.remedies --help``): a scale's budgets with any budget flags
applied, the study of :mod:`benchmarks.reproduce` over the remedies' rows, then the combined table and
``remedies.json`` / ``remedies.md`` in ``--out``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from benchmarks.reproduce import DATASETS, add_budget_flags, budgets_from_args, run_study
from examples.text.experiment import json_safe  # NaN/inf -> null for strict JSON

from .scales import ROWS, SCALES
from .table import format_markdown, format_table, summary_document

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The flags; the ``--help`` text is the package's docstring."""
    description = sys.modules[__package__].__doc__  # benchmarks.remedies, imported before this module
    p = argparse.ArgumentParser(prog="python -m benchmarks.remedies", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="cpu", choices=list(SCALES),
                   help="budgets: cpu (this machine, about an hour at --jobs 1) or paper (the paper's sizes)")
    p.add_argument("--data", default="all", choices=[*DATASETS, "all"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--out", default="benchmarks/results/remedies")
    add_budget_flags(p)
    p.add_argument("--from-json", action="store_true",
                   help="do not train: rebuild the table from the JSON already in --out")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    return p


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Train (or read, with ``--from-json``) and write the table; returns the ``remedies.json`` document."""
    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    datasets = list(DATASETS) if args.data == "all" else [args.data]
    out = Path(args.out)
    command = "python -m benchmarks.remedies " + " ".join(sys.argv[1:] if argv is None else argv)
    wall: Optional[float] = None
    if args.from_json:
        docs = {}
        for d in datasets:
            path = out / f"remedies_{d}.json"
            if not path.is_file():
                raise SystemExit(f"--from-json: {path} does not exist (run the comparison first)")
            docs[d] = json.loads(path.read_text())
        previous = out / "remedies.json"
        if previous.is_file():  # keep the training command and its wall time
            old = json.loads(previous.read_text())
            command, wall = old.get("command", command), old.get("wall_seconds")
    else:
        budgets = budgets_from_args(args, datasets, defaults=SCALES[args.scale])
        start = time.perf_counter()
        docs = run_study(datasets, args.seeds, out, budgets, rows=args.rows, jobs=args.jobs, threads=args.threads,
                         command=command, log=lambda s: print(s, flush=True), stem="remedies")
        wall = time.perf_counter() - start
    first = next(iter(docs.values()))
    summary = summary_document(docs, scale=args.scale, command=command, seeds=first["seeds"], rows=first["rows"],
                               jobs=args.jobs, threads=args.threads, wall_seconds=wall)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "remedies.json", json.dumps(json_safe(summary), indent=1))
    when = f"; {wall / 60:.1f} minutes" if wall is not None else ""
    _write(out / "remedies.md", f"`{command}`{when}\n\n{format_markdown(docs)}\n")
    print(f"\n== remedies for posterior collapse (test split, nats; mean ± std over seeds{when}) ==\n"
          f"{format_table(docs)}", flush=True)
    return summary
