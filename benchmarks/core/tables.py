"""Tables and JSON, written once: a plain-text or Markdown table from a header and rows of cells, and a
JSON document written atomically (non-finite numbers as ``null``) and read back with its format
checked."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

__all__ = ["plain_table", "markdown_table", "finite", "write_json", "read_json"]

PathLike = Union[str, Path]


def plain_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, right_from: Optional[int] = None,
                sep: str = "  ") -> str:
    """Columns as wide as their widest cell, joined by ``sep``; left-aligned, or right-aligned from
    column ``right_from`` on (numbers); trailing spaces dropped."""
    table = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]

    def cell(i: int, text: str) -> str:
        return text.rjust(widths[i]) if right_from is not None and i >= right_from else text.ljust(widths[i])

    return "\n".join(sep.join(cell(i, c) for i, c in enumerate(line)).rstrip() for line in table)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table: the header, ``|---|...|``, a line per row."""
    lines = ["| " + " | ".join(str(c) for c in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (in dicts, lists, tuples) replaced by ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_json(path: PathLike, payload: Any, *, nonfinite_as_null: bool = True) -> Path:
    """Write ``payload`` to ``path`` (its folder made) through a temporary file, so that a reader never
    sees half a file; non-finite numbers as ``null`` unless told otherwise. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(finite(payload) if nonfinite_as_null else payload, indent=1))
    tmp.replace(path)
    return path


def read_json(path: PathLike, fmt: Optional[str] = None) -> Dict[str, Any]:
    """Read a JSON document; with ``fmt``, check its ``"format"`` field.

    Raises:
        ValueError: its format is not ``fmt``.
    """
    payload = json.loads(Path(path).read_text())
    if fmt is not None and payload.get("format") != fmt:
        raise ValueError(f"{path}: format {payload.get('format')!r}, expected {fmt!r}")
    return payload
