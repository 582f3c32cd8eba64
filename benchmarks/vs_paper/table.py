"""One row per (size, measure): the paper's median, ours, their ratio and the issue's target; a printed
table and a JSON file beside it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ..core import tables
from ..core.tables import markdown_table, plain_table
from ..core.timing import median, per_unit, ratio

__all__ = ["MEASURES", "target_for", "make_row", "format_table", "format_markdown", "write_json", "read_json",
           "FORMAT"]

FORMAT = "benchmarks.vs_paper/1"
PathLike = Union[str, Path]

#: measure -> (unit of the medians, what it is)
MEASURES: Dict[str, tuple] = {
    "encoder_step": ("ms / step", "one inner (encoder-only) step"),
    "encoder_step_paired": ("ms / step", "one inner step, the sides alternating step by step"),
    "joint_step_paired": ("ms / step", "one joint (basic) step, the sides alternating step by step"),
    "basic_epoch": ("s / epoch", "a basic epoch (joint steps)"),
    "joint_step": ("ms / step", "a basic epoch per joint step"),
    "aggressive_epoch": ("s / epoch", "an aggressive epoch (window 15, cap 99)"),
    "aggressive_epoch_per_step": ("ms / step", "that epoch per encoder step"),
    "aggressive_update": ("s / update", "an update with a fixed number of inner steps"),
    "aggressive_update_per_step": ("ms / step", "that update per encoder step"),
    "iw_nll": ("ms / sentence", "IW-NLL per sentence"),
}
_SCALE = {"ms / step": 1e3, "s / epoch": 1.0, "s / update": 1.0, "ms / sentence": 1e3}
#: (measure, sizes it applies to, minimum ratio): the issue's targets
TARGETS = (("basic_epoch", None, 1.0), ("joint_step_paired", None, 1.0), ("iw_nll", None, 1.5),
           ("aggressive_epoch", ("cpu", "paper"), 1.3), ("encoder_step_paired", ("cpu", "paper"), 1.3),
           ("aggressive_update", ("cpu", "paper"), 1.3))


def target_for(measure: str, size: str) -> Optional[float]:
    """The issue's minimum ratio (paper / ours) for this measure at this size, or ``None``."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {sorted(MEASURES)}, got {measure!r}")
    for name, sizes, minimum in TARGETS:
        if name == measure and (sizes is None or size in sizes):
            return minimum
    return None


def make_row(size: str, measure: str, reference_seconds: Sequence[float], our_seconds: Sequence[float],
             reference_units: Optional[Sequence[float]] = None, our_units: Optional[Sequence[float]] = None,
             *, reference_wall: Optional[Sequence[float]] = None, our_wall: Optional[Sequence[float]] = None,
             **extra: Any) -> Dict[str, Any]:
    """A table row from the two sides' seconds per round (divided by units per round when given, e.g.
    encoder steps): medians in the measure's unit, the ratio of medians, the target and whether it is
    met. ``reference_wall``/``our_wall``: the rounds' wall seconds, for the wall-time ratio beside it.
    ``extra`` is kept in the row (e.g. inner-step counts, estimates)."""
    unit = MEASURES.get(measure, (None,))[0]
    if unit is None:
        raise ValueError(f"measure must be one of {sorted(MEASURES)}, got {measure!r}")
    ref = per_unit(reference_seconds, reference_units) if reference_units is not None else list(reference_seconds)
    ours = per_unit(our_seconds, our_units) if our_units is not None else list(our_seconds)
    scale = _SCALE[unit]
    r = ratio(median(ref), median(ours))
    target = target_for(measure, size)
    row = {"size": size, "measure": measure, "unit": unit, "paper": median(ref) * scale, "ours": median(ours) * scale,
           "ratio": r, "target": target, "met": None if target is None else bool(r >= target),
           "paper_rounds": [v * scale for v in ref], "ours_rounds": [v * scale for v in ours]}
    if reference_wall is not None and our_wall is not None:
        ref_wall = per_unit(reference_wall, reference_units) if reference_units is not None else list(reference_wall)
        our_wall_ = per_unit(our_wall, our_units) if our_units is not None else list(our_wall)
        row["wall_ratio"] = ratio(median(ref_wall), median(our_wall_))
    row.update(extra)
    return row


def _cells(row: Mapping[str, Any]) -> List[str]:
    target = row.get("target")
    met = row.get("met")
    notes = row.get("notes", "")
    wall = row.get("wall_ratio")
    return [row["size"], row["measure"], row["unit"], f"{row['paper']:.4g}", f"{row['ours']:.4g}",
            f"{row['ratio']:.2f}x", "-" if wall is None else f"{wall:.2f}x", "-" if target is None else f">= {target:.1f}x",
            "-" if met is None else ("yes" if met else "NO"), notes]


_HEADER = ["size", "measure", "unit", "paper", "ours", "paper/ours", "wall", "target", "met", "notes"]


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text table; ``paper/ours`` (CPU time) above 1 means ours is faster; ``wall``: the same
    ratio in wall time."""
    return plain_table(_HEADER, [_cells(r) for r in rows])


def format_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    return markdown_table(_HEADER, [_cells(r) for r in rows])


def write_json(path: PathLike, rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> None:
    """``{"format", "settings", "rows"}``, written atomically (non-finite numbers as ``null``)."""
    tables.write_json(path, {"format": FORMAT, "settings": dict(settings), "rows": list(rows)})


def read_json(path: PathLike) -> Dict[str, Any]:
    """Read a file :func:`write_json` wrote.

    Raises:
        ValueError: it is not of this format.
    """
    return tables.read_json(path, FORMAT)
