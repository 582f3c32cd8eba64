"""``python -m benchmarks.vs_paper``: time the paper's code and ours side by side in one process, at
three sizes, print one table and write JSON.

    python -m benchmarks.vs_paper --reference-dir DIR --out benchmarks/results/vs_paper.json
    python -m benchmarks.vs_paper --reference-dir DIR --sizes cpu --measures iw_nll --reps 3
    python -m benchmarks.vs_paper --from-json A.json B.json --out benchmarks/results/vs_paper.json  # merge runs
    python -m benchmarks.vs_paper --from-json benchmarks/results/vs_paper.json --markdown

``DIR`` is a checkout of the paper's code (vae-lagging-encoder); its modules are imported from there
at run time, nothing is written to it. One intra-op thread. Ratios are paper / ours of medians
over interleaved rounds (above 1: ours is faster).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from .measures import MEASURE_GROUPS, MODULES, measure_size
from .reference import load_reference
from .sizes import SIZES
from .table import format_markdown, format_table, read_json, write_json

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vs_paper", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-dir", help="a checkout of the paper's code (vae-lagging-encoder); never modified")
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    p.add_argument("--measures", nargs="+", choices=MEASURE_GROUPS, default=list(MEASURE_GROUPS))
    p.add_argument("--reps", type=int, help="timed interleaved rounds per measure (default: per size)")
    p.add_argument("--work", type=float, default=1.0,
                   help="scale the batches, steps and sentences of every measure (e.g. 0.25 for a quick look)")
    p.add_argument("--max-rows", type=int, help="our IW-NLL's max_rows (rows per decoder call)")
    p.add_argument("--modules", choices=MODULES, default="example",
                   help="our side's model: the example's text model (default) or the paper's own modules "
                        "behind our protocols, as a user's own model would be (rows labelled <size>/paper-modules)")
    p.add_argument("--iw-batch", type=int, help="sentences per batch of our IW-NLL (default: the size's batch)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, as measured)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file to write (rewritten after every size)")
    p.add_argument("--from-json", nargs="+", help="print the table of these JSON files instead of running "
                                                 "(with --out: write their rows to one file)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return p


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.from_json:
        return
    if not args.reference_dir:
        parser.error("--reference-dir is required (a checkout of the paper's code), or --from-json")
    if not os.path.isdir(args.reference_dir):
        parser.error(f"--reference-dir {args.reference_dir}: not a directory")
    for name in ("reps", "threads", "max_rows", "iw_batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not args.work > 0:
        parser.error(f"--work must be > 0, got {args.work}")


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    if args.from_json:
        payloads = [read_json(path) for path in args.from_json]
        rows = [row for payload in payloads for row in payload["rows"]]
        if args.out:
            write_json(args.out, rows, {"merged_from": [{"file": str(path), **payload["settings"]}
                                                        for path, payload in zip(args.from_json, payloads)]})
        print(format_markdown(rows) if args.markdown else format_table(rows))
        return rows
    torch.set_num_threads(args.threads)
    try:
        ref = load_reference(args.reference_dir)
    except (FileNotFoundError, ImportError) as err:
        parser.error(str(err))
    settings: Dict[str, Any] = {
        "argv": list(sys.argv[1:] if argv is None else argv), "reference_dir": str(ref.directory),
        "threads": args.threads, "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "processor": _cpu_name(), "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "max_rows": args.max_rows, "iw_batch": args.iw_batch, "work": args.work, "modules": args.modules,
        "sizes": {},
    }
    rows: List[Dict[str, Any]] = []
    for name in args.sizes:
        size = SIZES[name].scaled(args.work)
        if args.reps:
            size = type(size)(**{**size.to_dict(), "reps": args.reps})
        settings["sizes"][name] = size.to_dict()
        print(f"## {name}: {size.to_dict()}  (load {os.getloadavg()[0]:.2f})", flush=True)
        start = time.perf_counter()
        rows += measure_size(ref, size, groups=args.measures, seed=args.seed, max_rows=args.max_rows,
                             iw_batch=args.iw_batch, modules=args.modules, log=lambda line: print(line, flush=True))
        settings["sizes"][name]["seconds"] = time.perf_counter() - start
        settings["loadavg_end"] = os.getloadavg()
        if args.out:
            write_json(args.out, rows, settings)
    print()
    print(format_markdown(rows) if args.markdown else format_table(rows))
    print(f"\nload average at start {settings['loadavg_start'][0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    if args.out:
        print(f"wrote {args.out}")
    return rows


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":  # pragma: no cover
    main()
