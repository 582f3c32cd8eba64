"""The image side-by-side table: the text harness's table (``benchmarks.parity.table``: a row per
(data, mode, side, seed), mean +- sd over seeds, the check of ours against the reference on MI, AU
and IW-NLL) with image columns, and the time ratios of our side to the paper's code."""
from __future__ import annotations

import statistics
from typing import Any, Dict, Iterable, List, Optional, Sequence

from benchmarks.parity import table as text_table

__all__ = ["FORMAT", "COLUMNS", "add_derived", "time_ratios", "paired_differences", "format_table", "format_markdown", "write_json",
           "read_json"]

FORMAT = "benchmarks.image_parity/1"
#: (header, key in ``metrics`` or at the top of a result, format)
COLUMNS = (
    ("IW-NLL", "iw_nll", "{:.2f}"), ("-ELBO", "neg_elbo", "{:.2f}"), ("KL", "kl", "{:.2f}"), ("MI", "mi", "{:.3f}"),
    ("AU", "au", "{:.1f}"), ("aggr. ep", "aggressive_epochs", "{:.1f}"), ("inner/upd", "inner_steps_per_update", "{:.1f}"),
    ("train s", "train_seconds", "{:.0f}"), ("train CPU s", "train_cpu_seconds", "{:.0f}"),
    ("aggr. epoch CPU s", "aggressive_epoch_cpu_seconds", "{:.1f}"),
    ("basic epoch CPU s", "basic_epoch_cpu_seconds", "{:.2f}"),
    ("IW s", "iw_seconds", "{:.1f}"), ("IW CPU s", "iw_cpu_seconds", "{:.1f}"),
)
#: (label, key): the times whose ratio ours / reference :func:`time_ratios` gives
RATIOS = (("aggressive epoch, CPU", "aggressive_epoch_cpu_seconds"), ("aggressive epoch, wall", "aggressive_epoch_seconds"),
          ("aggressive epoch per (1 + inner steps), CPU", "aggressive_step_cpu_seconds"),
          ("basic epoch, CPU", "basic_epoch_cpu_seconds"), ("IW-NLL, CPU", "iw_cpu_seconds"), ("IW-NLL, wall", "iw_seconds"))


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [float(v) for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def add_derived(result: Dict[str, Any]) -> Dict[str, Any]:
    """Add the per-epoch means the table shows: ``aggressive_epoch_seconds`` /
    ``aggressive_epoch_cpu_seconds`` over the epochs trained aggressively (the first
    ``aggressive_epochs``), ``basic_epoch_seconds`` / ``basic_epoch_cpu_seconds`` over the others, and
    ``aggressive_step_cpu_seconds``: an aggressive epoch's CPU time per (1 + inner steps) per batch,
    i.e. per network update. Returns ``result`` (changed in place)."""
    if result.get("error"):
        return result
    n_aggr = int(result.get("aggressive_epochs") or 0)
    for clock in ("", "_cpu"):
        epochs = result.get(f"epoch{clock}_seconds") or []
        result[f"aggressive_epoch{clock}_seconds"] = _mean(epochs[:n_aggr])
        result[f"basic_epoch{clock}_seconds"] = _mean(epochs[n_aggr:])
    inner, batches = result.get("inner_steps_per_update"), result.get("train_batches")
    aggr = result.get("aggressive_epoch_cpu_seconds")
    result["aggressive_step_cpu_seconds"] = (aggr / (batches * (1.0 + inner))
                                             if aggr is not None and inner is not None and batches else None)
    return result


def time_ratios(results: Iterable[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per ``data/mode`` and our clipping: the mean over seeds of each :data:`RATIOS` time on our side
    divided by the reference's (below 1: ours is faster)."""
    keys = tuple((key, key, "{}") for _, key in RATIOS)
    agg = text_table.aggregate([add_derived(dict(r)) for r in results], keys)
    out: Dict[str, Dict[str, Any]] = {}
    for name, stats in agg.items():
        data, mode, side = name.split("/", 2)
        ref = agg.get(f"{data}/{mode}/reference")
        if side == "reference" or ref is None:
            continue
        label = f"{data}/{mode}" + ("" if side == "ours" else f" [{side}]")
        out[label] = {key: (stats[key]["mean"] / ref[key]["mean"]
                            if stats[key]["mean"] is not None and ref[key]["mean"] else None)
                      for _, key in RATIOS}
    return out


PAIRED = (("IW-NLL", "iw_nll"), ("MI", "mi"), ("KL", "kl"), ("AU", "au"))


def paired_differences(results: Iterable[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per ``data/mode`` and variant of our side: over the seeds both sides ran, the mean of ours
    minus the reference's and its standard error, for each of :data:`PAIRED`."""
    runs: Dict[tuple, Dict[int, Dict[str, Any]]] = {}
    for r in results:
        if not r.get("error"):
            runs.setdefault((r["data"], r["mode"], text_table.side_label(r)), {})[r["seed"]] = r
    out: Dict[str, Dict[str, Any]] = {}
    for (data, mode, side), by_seed in sorted(runs.items()):
        ref = runs.get((data, mode, "reference"))
        if side == "reference" or not ref:
            continue
        seeds = sorted(set(by_seed) & set(ref))
        if not seeds:
            continue
        label = f"{data}/{mode}" + ("" if side == "ours" else f" [{side}]")
        entry: Dict[str, Any] = {"seeds": seeds}
        for _, key in PAIRED:
            d = [float(by_seed[s]["metrics"][key]) - float(ref[s]["metrics"][key]) for s in seeds]
            se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else None
            entry[key] = {"mean": statistics.fmean(d), "se": se, "ours_better": sum(
                1 for v in d if (v < 0 if key == "iw_nll" else v > 0))}
        out[label] = entry
    return out


def _paired_lines(results: Sequence[Dict[str, Any]]) -> List[str]:
    lines = []
    for label, entry in paired_differences(results).items():
        n = len(entry["seeds"])
        parts = []
        for name, key in PAIRED:
            e = entry[key]
            se = "" if e["se"] is None else f" ± {e['se']:.2f}"
            parts.append(f"{name} {e['mean']:+.2f}{se} (ours better in {e['ours_better']})")
        lines.append(f"paired by seed, ours - paper's code, {label}, {n} seeds: " + "; ".join(parts))
    return lines


def _ratio_lines(results: Sequence[Dict[str, Any]]) -> List[str]:
    lines = []
    for label, ratios in time_ratios(results).items():
        parts = [f"{name} {ratios[key]:.2f}" for name, key in RATIOS if ratios.get(key) is not None]
        if parts:
            lines.append(f"time ours / paper's code, {label}: " + "; ".join(parts))
    return lines


def _prepared(results: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [add_derived(dict(r)) for r in results]


def format_table(results: Sequence[Dict[str, Any]]) -> str:
    """Plain-text table, the verdicts, the time ratios and any failed runs."""
    rows = _prepared(results)
    return text_table.format_table(rows, COLUMNS) + "\n" + "\n".join(_paired_lines(rows) + _ratio_lines(rows))


def format_markdown(results: Sequence[Dict[str, Any]]) -> str:
    rows = _prepared(results)
    extra = _paired_lines(rows) + _ratio_lines(rows)
    return text_table.format_markdown(rows, COLUMNS) + ("\n" + "\n".join(f"- {line}" for line in extra) if extra else "")


def write_json(path: Any, results: Sequence[Dict[str, Any]], settings: Dict[str, Any]) -> None:
    rows = _prepared(results)
    text_table.write_json(path, rows, settings, columns=COLUMNS, fmt=FORMAT,
                          extra={"time_ratios": time_ratios(rows), "paired": paired_differences(rows)})


def read_json(path: Any) -> Dict[str, Any]:
    return text_table.read_json(path, FORMAT)
