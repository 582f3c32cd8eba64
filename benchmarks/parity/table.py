"""One table for both sides: a row per (data, mode, side, seed), mean +- sd over seeds, and the check
the issue asks for (ours at least the reference on aggressive MI and AU, IW-NLL no worse, each within
the spread over seeds)."""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..core import tables
from .spec import LEGACY_CLIP, MODES, SIDES

__all__ = ["side_label", "aggregate", "verdicts", "format_table", "format_markdown", "write_json",
           "read_json", "FORMAT", "COLUMNS"]

FORMAT = "benchmarks.parity/1"
#: (header, metric key or top-level key, format)
COLUMNS: Tuple[Tuple[str, str, str], ...] = (
    ("KL", "kl", "{:.3f}"), ("MI", "mi", "{:.3f}"), ("AU", "au", "{:.1f}"), ("IW-NLL", "iw_nll", "{:.3f}"),
    ("-ELBO", "neg_elbo", "{:.3f}"), ("train s", "train_seconds", "{:.1f}"), ("IW s", "iw_seconds", "{:.1f}"),
    ("aggr. ep", "aggressive_epochs", "{:.1f}"), ("epochs", "epochs_run", "{:.1f}"),
)
_INTS = {"au", "aggressive_epochs", "epochs_run"}
PathLike = Union[str, Path]
Columns = Sequence[Tuple[str, str, str]]


def side_label(result: Dict[str, Any]) -> str:
    """The side as the table shows it: ``"reference"``, ``"ours"`` (the library's default clipping,
    ``"joint"``), or ``"ours/<clip>"`` when our side ran with another ``ours_clip``
    (:mod:`benchmarks.parity.clipping`; results saved as ``"library"`` or without one show as
    ``"network"``, the library's default then),
    ``".../reference-init"`` when it started from the reference's weights (the image harness)."""
    side = result["side"]
    spec = result.get("spec") or {}
    if side != "ours":
        return side
    clip = spec.get("ours_clip")
    clip = LEGACY_CLIP.get(clip, clip)
    parts = [clip] if clip != "joint" else []
    if spec.get("ours_init", "own") != "own":  # the image harness: our side from the paper's weights
        parts.append(f"{spec['ours_init']}-init")
    return "/".join(["ours"] + parts)


def _value(result: Dict[str, Any], key: str) -> Optional[float]:
    """The run's ``metrics[key]``, else its top-level ``key`` (times, epoch counts)."""
    metrics = result.get("metrics") or {}
    value = metrics[key] if key in metrics else result.get(key)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return float(value)


def _mean_sd(values: Sequence[Optional[float]]) -> Dict[str, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def _groups(results: Iterable[Dict[str, Any]]) -> Dict[Tuple[str, str, str], List[Dict[str, Any]]]:
    groups: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = {}
    for r in results:
        if r.get("error"):
            continue
        groups.setdefault((r["data"], r["mode"], side_label(r)), []).append(r)
    return groups


def aggregate(results: Iterable[Dict[str, Any]], columns: Columns = COLUMNS) -> Dict[str, Dict[str, Any]]:
    """``{"data/mode/side": {key: {mean, sd, n}}}`` over the seeds of each (data, mode, side), for
    every key of ``columns``."""
    out: Dict[str, Dict[str, Any]] = {}
    for (data, mode, side), rows in sorted(_groups(results).items()):
        out[f"{data}/{mode}/{side}"] = {key: _mean_sd([_value(r, key) for r in rows]) for _, key, _ in columns}
    return out


def verdicts(results: Iterable[Dict[str, Any]], columns: Columns = COLUMNS) -> Dict[str, Dict[str, Any]]:
    """Per data set, aggressive mode: ours vs reference on MI and AU (higher is better) and IW-NLL
    (lower is better). ``spread`` is the larger of the two sides' standard deviations over seeds;
    a check passes when ``ours >= reference - spread`` (MI, AU) or ``ours <= reference + spread``.
    Keyed by the data label for our library's side, by ``"<data> [ours/<clip>]"`` for a variant."""
    agg = aggregate(results, columns)
    out: Dict[str, Dict[str, Any]] = {}
    datas = sorted({key.split("/")[0] for key in agg})
    for data in datas:
        ref = agg.get(f"{data}/aggressive/reference")
        sides = sorted({key[len(data) + len("/aggressive/"):] for key in agg
                        if key.startswith(f"{data}/aggressive/ours")})
        for side in sides:
            ours = agg[f"{data}/aggressive/{side}"]
            if ref is None:
                continue
            checks: Dict[str, Any] = {}
            for key, higher_better in (("mi", True), ("au", True), ("iw_nll", False)):
                o, r = ours[key], ref[key]
                if o["mean"] is None or r["mean"] is None:
                    continue
                spread = max(o["sd"], r["sd"])
                ok = o["mean"] >= r["mean"] - spread if higher_better else o["mean"] <= r["mean"] + spread
                checks[key] = {"ours": o["mean"], "reference": r["mean"], "spread": spread, "pass": bool(ok)}
            out[data if side == "ours" else f"{data} [{side}]"] = checks
    return out


def _rows(results: Sequence[Dict[str, Any]], columns: Columns = COLUMNS) -> List[List[str]]:
    rows: List[List[str]] = []
    mode_rank = {m: i for i, m in enumerate(MODES)}
    side_rank = {s: i for i, s in enumerate(SIDES)}  # variants of ours ("ours/joint") after ours
    groups = _groups(results)
    agg = aggregate(results, columns)
    for key in sorted(groups, key=lambda k: (k[0], mode_rank.get(k[1], 9), side_rank.get(k[2], 9), k[2])):
        data, mode, side = key
        for r in sorted(groups[key], key=lambda r: r["seed"]):
            cells = []
            for _, col, fmt in columns:
                v = _value(r, col)
                cells.append("-" if v is None else str(int(v)) if col in _INTS else fmt.format(v))
            rows.append([data, mode, side, str(r["seed"])] + cells)
        stats = agg[f"{data}/{mode}/{side}"]
        cells = []
        for _, col, fmt in columns:
            s = stats[col]
            cells.append("-" if s["mean"] is None else f"{fmt.format(s['mean'])} ± {fmt.format(s['sd'])}")
        rows.append([data, mode, side, f"mean ± sd ({stats['kl']['n']})"] + cells)
    return rows


def _header(columns: Columns = COLUMNS) -> List[str]:
    return ["data", "mode", "side", "seed"] + [c[0] for c in columns]


def _verdict_lines(results: Sequence[Dict[str, Any]], columns: Columns = COLUMNS) -> List[str]:
    lines = []
    for data, checks in verdicts(results, columns).items():
        parts = []
        for key, c in checks.items():
            sign = ">=" if key != "iw_nll" else "<="
            parts.append(f"{key} ours {c['ours']:.3f} {sign} ref {c['reference']:.3f} "
                         f"{'-' if key != 'iw_nll' else '+'} {c['spread']:.3f}: {'yes' if c['pass'] else 'NO'}")
        lines.append(f"{data} (aggressive): " + "; ".join(parts))
    return lines


def _failed(results: Sequence[Dict[str, Any]]) -> List[str]:
    return [f"FAILED {r['data']}/{r['mode']}/{r['side']}/seed {r['seed']}: {str(r['error']).splitlines()[0]}"
            for r in results if r.get("error")]


def format_table(results: Sequence[Dict[str, Any]], columns: Columns = COLUMNS) -> str:
    """Plain-text table (numbers right-aligned), then the verdict per data set and any failed runs."""
    table = tables.plain_table(_header(columns), _rows(results, columns), right_from=4)
    return "\n".join([table, ""] + _verdict_lines(results, columns) + _failed(results))


def format_markdown(results: Sequence[Dict[str, Any]], columns: Columns = COLUMNS) -> str:
    """The same as a Markdown table."""
    table = tables.markdown_table(_header(columns), _rows(results, columns))
    extra = _verdict_lines(results, columns) + _failed(results)
    return "\n".join([table] + ([""] + [f"- {line}" for line in extra] if extra else []))


def write_json(path: PathLike, results: Sequence[Dict[str, Any]], settings: Dict[str, Any], *,
               columns: Columns = COLUMNS, fmt: str = FORMAT, extra: Optional[Dict[str, Any]] = None) -> None:
    """``{"format", "settings", "results", "summary", "verdicts"}`` (and ``extra``'s keys), written
    atomically (non-finite numbers as they are: ``NaN``, ``Infinity``)."""
    payload = {"format": fmt, "settings": settings, "results": list(results),
               "summary": aggregate(results, columns), "verdicts": verdicts(results, columns), **(extra or {})}
    tables.write_json(path, payload, nonfinite_as_null=False)


def read_json(path: PathLike, fmt: str = FORMAT) -> Dict[str, Any]:
    """The document written by :func:`write_json`.

    Raises:
        ValueError: its format is not ``fmt``.
    """
    return tables.read_json(path, fmt)
