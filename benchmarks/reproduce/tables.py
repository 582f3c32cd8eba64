"""The study's numbers as tables: mean and standard deviation over seeds per row (:func:`aggregate`),
printed as text (:func:`format_table`) or Markdown (:func:`format_markdown`). Nats throughout."""
from __future__ import annotations

import statistics
from typing import Any, Dict, Sequence

from .rows import ALL_ROWS, ROW_LABELS

__all__ = ["METRICS", "aggregate", "format_table", "format_markdown"]

METRICS = ("iw_nll", "neg_elbo", "kl", "mi", "au", "relative_time")


def _mean_std(values: Sequence[float]) -> Dict[str, Any]:
    values = [float(v) for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def aggregate(runs: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Mean and standard deviation over seeds per row: ``{row: {metric: {mean, std, n}}}``.

    ``relative_time``: each run's training seconds over those of the basic VAE with the same seed
    (absent when that basic run is missing)."""
    basic = {r["seed"]: r["train_seconds"] for r in runs if r["row"] == "basic"}
    out: Dict[str, Dict[str, Any]] = {}
    for row in ALL_ROWS:
        mine = sorted((r for r in runs if r["row"] == row), key=lambda r: r["seed"])
        if not mine:
            continue
        cell = {m: _mean_std([r["metrics"][m] for r in mine]) for m in ("iw_nll", "neg_elbo", "kl", "mi", "au")}
        cell["relative_time"] = _mean_std([r["train_seconds"] / basic[r["seed"]] for r in mine if r["seed"] in basic])
        cell["train_seconds"] = _mean_std([r["train_seconds"] for r in mine])
        cell["seeds"] = [r["seed"] for r in mine]
        cell["iw_samples"] = mine[0]["metrics"]["iw_samples"]
        out[row] = cell
    return out


def format_table(summary: Dict[str, Dict[str, Any]], title: str = "") -> str:
    """One line per row: IW-NLL, KL, MI, AU (mean ± std over seeds), time relative to basic."""
    cols = [("IW-NLL", "iw_nll", 2), ("-ELBO", "neg_elbo", 2), ("KL", "kl", 2), ("MI", "mi", 2),
            ("AU", "au", 1), ("time/basic", "relative_time", 2)]
    width = max(len(v) for v in ROW_LABELS.values()) + 2
    lines = [title] if title else []
    lines.append("row".ljust(width) + "".join(f"{name:>16}" for name, _, _ in cols) + "  seeds")
    for row in ALL_ROWS:
        if row not in summary:
            continue
        cells = []
        for _, key, digits in cols:
            s = summary[row][key]
            text = "-" if s["mean"] is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
            cells.append(f"{text:>16}")
        lines.append(ROW_LABELS[row].ljust(width) + "".join(cells) + f"  {len(summary[row]['seeds'])}")
    return "\n".join(lines)


def format_markdown(doc: Dict[str, Any]) -> str:
    """The summary of one data set's JSON document as a Markdown table (mean ± std over seeds)."""
    summary = doc["summary"]
    head = ["row", "IW-NLL", "-ELBO", "KL", "MI", "AU", "time / basic", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ALL_ROWS:
        if row not in summary:
            continue
        cell = summary[row]
        cells = [ROW_LABELS[row]]
        for key, digits in (("iw_nll", 2), ("neg_elbo", 2), ("kl", 2), ("mi", 2), ("au", 1), ("relative_time", 1)):
            s = cell[key]
            cells.append("-" if s["mean"] is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}")
        cells.append(str(len(cell["seeds"])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
