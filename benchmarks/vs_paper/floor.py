"""``python -m benchmarks.vs_paper.floor``: where the floor is. Both sides' steps under PyTorch's
profiler, the paper's modules on both (``--modules paper`` of :mod:`benchmarks.vs_paper`), and each
side's operator time split into the operators both run the same number of times (the model's own
arithmetic, which no training loop can skip) and the rest.

    python -m benchmarks.vs_paper.floor --reference-dir DIR --sizes synthetic cpu paper \\
        --out benchmarks/results/vs_paper_floor.json

For each measure and size it prints, per step (ms of operator self time, profiled, one thread):
``paper`` and ``ours`` in all; ``shared``: the paper's time in the operators ours runs as often (the
arithmetic both need); ``ceiling``: paper / shared, the most any loop could gain over the paper's
on this model if it ran those operators as fast as the paper's does and nothing else (Python time
between operators is not counted on either side). Measures: ``inner_joint`` (an encoder-only step
with the paper's joint clipping, the library's default), ``inner_network`` (``clip_scope="network"``),
``joint`` (a basic step), ``iw_nll`` (one sentence's importance-weighted NLL; ours with the
library's default rows).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.profiler import ProfilerActivity, profile

from ..core.tables import plain_table, write_json
from .measures import ModelPair
from .ours import make_trainer, our_iw_nll
from .reference import PaperLoop, load_reference, reference_iw_nll
from .sizes import SIZES, Size, token_batches

__all__ = ["MEASURES", "op_times", "split_shared", "floor_rows", "main"]

MEASURES = ("inner_joint", "inner_network", "joint", "iw_nll")

OpTimes = Dict[str, Tuple[float, int]]  # operator -> (self CPU microseconds, calls)


def op_times(fn: Callable[[], Any], rounds: int) -> OpTimes:
    """Self CPU time and calls per operator over ``rounds`` calls of ``fn`` (after one untimed)."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            fn()
    return {e.key: (float(e.self_cpu_time_total), int(e.count)) for e in prof.key_averages()
            if e.key.startswith("aten::")}


def split_shared(paper: OpTimes, ours: OpTimes) -> Dict[str, float]:
    """Microseconds in all, per side, and the paper's time in the operators ours calls at least as
    often (``shared``); ``paper_only``: the paper's operators ours calls less often, top first."""
    shared = sum(t for op, (t, n) in paper.items() if ours.get(op, (0.0, 0))[1] >= n)
    paper_only = sorted(((t, op) for op, (t, n) in paper.items() if ours.get(op, (0.0, 0))[1] < n), reverse=True)
    ours_only = sorted(((t, op) for op, (t, n) in ours.items() if paper.get(op, (0.0, 0))[1] < n), reverse=True)
    return {"paper": sum(t for t, _ in paper.values()), "ours": sum(t for t, _ in ours.values()),
            "shared": shared, "paper_only": [op for _, op in paper_only[:4]],
            "ours_only": [op for _, op in ours_only[:4]]}


def _steps(size: Size, ref: Any, measure: str, rounds: int) -> Tuple[Callable[[], Any], Callable[[], Any], int]:
    pair = ModelPair(ref, size, 0, "paper")
    batches = token_batches(8, size.batch_size, size.length, size.vocab_size, seed=1)
    if measure == "iw_nll":
        sentence = torch.cat(token_batches(1, 6, size.length, size.vocab_size, seed=2))
        return (lambda: reference_iw_nll(ref, pair.reference, sentence, 100),
                lambda: our_iw_nll(pair.ours, sentence, 100, size.batch_size), sentence.shape[0])
    loop = PaperLoop(pair.reference, batches, 0)
    trainer = make_trainer(pair.ours, aggressive=True)
    step = trainer.algorithm
    if measure == "inner_network":
        step.clip_scope = "network"
    pair.reference.train()
    pair.ours.train()
    it = {"paper": 0, "ours": 0}

    def nxt(side: str) -> torch.Tensor:
        it[side] += 1
        return batches[it[side] % len(batches)]
    if measure == "joint":
        return (lambda: loop.update(nxt("paper"), aggressive=False), lambda: step.joint_update(nxt("ours"), 1.0), 1)
    return (lambda: loop.encoder_step(nxt("paper")), lambda: step.encoder_update(nxt("ours"), 1.0), 1)


def floor_rows(ref: Any, sizes: Sequence[str], measures: Sequence[str], rounds: int,
               log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """One row per (size, measure): per-step milliseconds and the ceiling (see the module doc)."""
    rows = []
    for name in sizes:
        size = SIZES[name]
        for measure in measures:
            paper_fn, ours_fn, per_call = _steps(size, ref, measure, rounds)
            n = rounds if name != "paper" or measure == "iw_nll" else max(2, rounds // 5)
            paper_first = op_times(paper_fn, n)
            ours_t = op_times(ours_fn, n)
            paper_t = op_times(paper_fn, n)  # before and after ours: the load changes
            paper_avg = {op: ((paper_first.get(op, (0.0, 0))[0] + t) / 2, c) for op, (t, c) in paper_t.items()}
            split = split_shared(paper_avg, ours_t)
            unit = n * per_call * 1e3
            row = {"size": name, "measure": measure, "steps": n * per_call,
                   "paper_ms": split["paper"] / unit, "ours_ms": split["ours"] / unit,
                   "shared_ms": split["shared"] / unit, "ratio": split["paper"] / split["ours"],
                   "ceiling": split["paper"] / split["shared"] if split["shared"] else float("nan"),
                   "paper_only": split["paper_only"], "ours_only": split["ours_only"]}
            rows.append(row)
            log(f"  {name:9s} {measure:14s} paper {row['paper_ms']:9.3f} ours {row['ours_ms']:9.3f} "
                f"shared {row['shared_ms']:9.3f} ms  ratio {row['ratio']:.2f}x ceiling {row['ceiling']:.2f}x")
    return rows


def format_rows(rows: Sequence[Dict[str, Any]]) -> str:
    return plain_table(["size", "measure", "paper ms", "ours ms", "shared ms", "paper/ours", "ceiling",
                        "paper's ops ours runs less"],
                       [[r["size"], r["measure"], f"{r['paper_ms']:.3f}", f"{r['ours_ms']:.3f}",
                         f"{r['shared_ms']:.3f}", f"{r['ratio']:.2f}x", f"{r['ceiling']:.2f}x",
                         ", ".join(op.replace("aten::", "") for op in r["paper_only"]) or "-"] for r in rows],
                       right_from=2)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vs_paper.floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--reference-dir", required=True, help="a checkout of the paper's code; never modified")
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["synthetic", "cpu"])
    p.add_argument("--measures", nargs="+", choices=MEASURES, default=list(MEASURES))
    p.add_argument("--rounds", type=int, default=20, help="profiled steps per side (a fifth at the paper size)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="JSON file to write")
    args = p.parse_args(argv)
    if args.rounds < 2 or args.threads < 1:
        p.error(f"--rounds must be >= 2 and --threads >= 1, got {args.rounds}, {args.threads}")
    if not os.path.isdir(args.reference_dir):
        p.error(f"--reference-dir {args.reference_dir}: not a directory")
    torch.set_num_threads(args.threads)
    ref = load_reference(args.reference_dir)
    rows = floor_rows(ref, args.sizes, args.measures, args.rounds)
    print()
    print(format_rows(rows))
    if args.out:
        write_json(args.out, {"argv": list(sys.argv[1:] if argv is None else argv), "torch": torch.__version__,
                              "machine": platform.machine(), "threads": args.threads, "rows": rows})
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":  # pragma: no cover
    main()
