"""The study loop: every (data set, row, seed) in order or in a process pool, and the JSON document
``OUT/<stem>_<data>.json`` (stem ``reproduce`` unless told) rewritten after every finished run (a
killed study leaves what finished)."""
from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from examples.text.experiment import json_safe  # NaN/inf -> null for strict JSON

from .datasets import Budget
from .rows import ALL_ROWS, ROW_LABELS, ROWS, is_aggressive
from .runner import run_one
from .tables import aggregate, format_table

__all__ = ["FORMAT", "run_study"]

FORMAT = "benchmarks.reproduce/1"


def _write(path: Path, data: str, budget: Budget, seeds: Sequence[int], rows: Sequence[str],
           runs: List[Dict[str, Any]], expected: int, command: str) -> Dict[str, Any]:
    """Write (atomically) and return the JSON document of one data set: budget, settings, the summary
    over seeds (:func:`aggregate`) and every finished run, ``complete`` once all ``expected`` are in."""
    runs = sorted(runs, key=lambda r: (ALL_ROWS.index(r["row"]), r["seed"]))
    summary = aggregate(runs)
    doc = {"format": FORMAT, "data": data, "budget": asdict(budget), "seeds": list(seeds), "rows": list(rows),
           "row_labels": {r: ROW_LABELS[r] for r in rows}, "complete": len(runs) == expected,
           "runs_done": len(runs), "runs_expected": expected, "command": command,
           "settings": runs[0]["settings"] if runs else None,
           "torch": torch.__version__, "summary": summary,
           "runs": [{k: v for k, v in r.items() if k != "settings"} for r in runs]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(json_safe(doc), indent=1))
    tmp.replace(path)
    return doc


def _job(args: tuple) -> Dict[str, Any]:
    data, row, seed, budget, threads = args
    return run_one(data, row, seed, budget, threads=threads)


def _cost(data: str, row: str) -> int:
    """Rough relative cost, to start the longest runs first."""
    return {"image": 3, "text": 2, "synthetic": 1}[data] * (3 if is_aggressive(row) else 1)


def run_study(datasets: Sequence[str], seeds: Sequence[int], out: Path, budgets: Dict[str, Budget], *,
              rows: Sequence[str] = ROWS, jobs: int = 1, threads: Optional[int] = None, command: str = "",
              log: Callable[[str], None] = print, stem: str = "reproduce") -> Dict[str, Dict[str, Any]]:
    """Run every (data set, row, seed); ``jobs`` processes at once (each ``threads`` torch threads).
    Returns ``{data: json document}``; writes ``out/<stem>_<data>.json`` after every finished run."""
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(d, r, s, budgets[d], threads) for d in datasets for r in rows for s in seeds]
    # one data set after another (a study cut short leaves whole data sets), longest runs first
    tasks.sort(key=lambda t: (list(datasets).index(t[0]), -_cost(t[0], t[1])))
    done: Dict[str, List[Dict[str, Any]]] = {d: [] for d in datasets}
    docs: Dict[str, Dict[str, Any]] = {}
    expected = len(rows) * len(seeds)
    start = time.perf_counter()

    def finish(result: Dict[str, Any]) -> None:
        d = result["data"]
        done[d].append(result)
        docs[d] = _write(out / f"{stem}_{d}.json", d, budgets[d], seeds, rows, done[d], expected, command)
        m = result["metrics"]
        log(f"[{time.perf_counter() - start:7.0f}s] {d:9s} {result['row']:18s} seed {result['seed']}: "
            f"IW-NLL {m['iw_nll']:.2f} KL {m['kl']:.2f} MI {m['mi']:.2f} AU {m['au']} "
            f"train {result['train_seconds']:.0f}s eval {result['eval_seconds']:.0f}s")

    if jobs <= 1:
        for task in tasks:
            finish(_job(task))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork")) as pool:
            futures = [pool.submit(_job, t) for t in tasks]
            for fut in as_completed(futures):
                finish(fut.result())
    for d in datasets:
        log("\n" + format_table(docs[d]["summary"], title=f"== {d} (test split; IW-NLL with "
                                f"{budgets[d].iw_samples} importance samples; nats) =="))
    return docs
