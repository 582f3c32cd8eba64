"""The comparison as one table over all data sets (text and Markdown) and the summary document
``remedies.json`` beside it. Metrics are nats on the test split, mean ± standard deviation over seeds
(:func:`benchmarks.reproduce.aggregate`)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch

from benchmarks.reproduce import ALL_ROWS, ROW_LABELS

__all__ = ["FORMAT", "COLUMNS", "format_table", "format_markdown", "summary_document"]

FORMAT = "benchmarks.remedies/1"

#: (header, summary key, decimals)
COLUMNS = (("IW-NLL", "iw_nll", 2), ("KL", "kl", 2), ("MI", "mi", 2), ("AU", "au", 1),
           ("train s", "train_seconds", 0), ("time / basic", "relative_time", 1))


def _cell(stat: Optional[Dict[str, Any]], digits: int) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _lines(docs: Dict[str, Dict[str, Any]]) -> List[List[str]]:
    out = []
    for data, doc in docs.items():
        summary = doc["summary"]
        for row in ALL_ROWS:
            if row in summary:
                cell = summary[row]
                out.append([data, ROW_LABELS[row], *(_cell(cell[key], d) for _, key, d in COLUMNS),
                            str(len(cell["seeds"]))])
    return out


def format_table(docs: Dict[str, Dict[str, Any]]) -> str:
    """One line per (data set, row), aligned for a terminal."""
    head = ["data", "row", *(h for h, _, _ in COLUMNS), "seeds"]
    body = _lines(docs)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in [head, *body])


def format_markdown(docs: Dict[str, Dict[str, Any]]) -> str:
    """The same as a Markdown table."""
    head = ["data", "row", *(h for h, _, _ in COLUMNS), "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in _lines(docs)]
    return "\n".join(lines)


def summary_document(docs: Dict[str, Dict[str, Any]], *, scale: str, command: str, seeds: Sequence[int],
                     rows: Sequence[str], jobs: int, threads: Optional[int],
                     wall_seconds: Optional[float]) -> Dict[str, Any]:
    """``remedies.json``: per data set its budget, settings, the rows' KL schedule and threshold, the
    summary over seeds (``{row: {metric: {mean, std, n}}}``) and its runs' file; the command, its wall
    time, and the table as Markdown."""
    data = {}
    for name, doc in docs.items():
        objectives = {}
        for run in doc["runs"]:
            objectives.setdefault(run["row"], {"kl_schedule": run.get("kl_schedule"),
                                               "kl_threshold": run.get("kl_threshold"),
                                               "aggressive_epochs": []})
            objectives[run["row"]]["aggressive_epochs"].append(run["aggressive_epochs"])
        data[name] = {"file": f"remedies_{name}.json", "complete": doc["complete"], "runs_done": doc["runs_done"],
                      "runs_expected": doc["runs_expected"], "budget": doc["budget"], "settings": doc["settings"],
                      "rows": objectives, "summary": doc["summary"]}
    return {"format": FORMAT, "scale": scale, "command": command, "seeds": list(seeds), "rows": list(rows),
            "jobs": jobs, "threads": threads, "wall_seconds": wall_seconds, "torch": torch.__version__,
            "columns": {key: header for header, key, _ in COLUMNS}, "data": data,
            "markdown": format_markdown(docs)}
