"""Rendering for people (aligned tables) and machines (JSON); one place for both."""

from __future__ import annotations

import json
import math
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


def percentile_cell(value_ms: float | None) -> str:
    """A percentile to 2 significant digits (at least the integer part): the duration buckets it
    was read from are half-octaves or wider, so a third digit would be noise (see
    :func:`percentile_note`)."""
    if value_ms is None:
        return "-"
    if value_ms <= 0:
        return "0"
    decimals = max(0, 1 - math.floor(math.log10(value_ms)))
    if decimals and round(value_ms, decimals) >= 10 ** (2 - decimals):  # 9.96 -> 10, not 10.0
        decimals -= 1
    return f"{round(value_ms, decimals):,.{decimals}f}"


def percentile_note(exported: bool) -> str:
    """One line under a table of percentiles: what they are and how far off they can be. A percentile
    and the true value lie in the same bucket: half-octave ``[L, 1.5 L)`` or ``[1.5 L, 2 L)`` in the
    store (off by -1/3 .. +1/2 at worst), octave ``(L, 2 L]`` from an exported histogram (-1/2 .. +1)."""
    if exported:
        return ("percentiles: interpolated within the exported octave buckets (x2 wide); "
                "the true value is within -50 %/+100 % of the one shown")
    return ("percentiles: interpolated within half-octave duration buckets, to 2 significant digits; "
            "the true value is within -33 %/+50 % of the one shown")


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
