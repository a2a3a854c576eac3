"""Rendering for people (aligned tables) and machines (JSON); one place for both."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence


def print_json(data: Any, stream=None) -> None:
    json.dump(data, stream or sys.stdout, indent=2, default=str)
    (stream or sys.stdout).write("\n")


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.1f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], max_width: int = 60) -> str:
    cells = [[_clip(format_cell(value), max_width) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
    numeric = [all(_looks_numeric(row[i]) for row in cells) if cells else False for i in range(len(headers))]
    lines = ["  ".join(h.rjust(w) if numeric[i] else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths))).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _looks_numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "").replace("-", "").replace("%", "").isdigit() or text == "-"
