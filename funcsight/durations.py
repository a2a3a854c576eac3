"""The one duration grammar of every face and source: ``--since``, the MCP ``since`` argument, and
the Prometheus address' ``range`` / ``step`` / ``timeout`` (and the durations a Prometheus server
reports, such as its retention and scrape intervals).

A duration is plain seconds (``90``, ``1.5``) or one or more number-unit pairs, largest first or
not, without spaces: ``500ms``, ``90s``, ``15m``, ``2h``, ``7d``, ``2w``, ``1y``, ``1h30m``,
``1d12h``. Units: ``ms``, ``s``, ``m``, ``h``, ``d``, ``w`` (7 d), ``y`` (365 d), as Prometheus
spells them (upper case is accepted too). The result must be finite and above zero.

Standard library only.
"""

from __future__ import annotations

import math
import re

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0, "y": 365 * 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|[smhdwy])")
EXAMPLES = "90s, 15m, 2h, 7d or 1h30m"


class DurationError(ValueError):
    """Text that is not a positive duration; the message quotes it and shows the grammar."""


def parse_duration(text: str) -> float:
    """``text`` (see the module docstring) in seconds; raises :class:`DurationError`."""
    cleaned = text.strip().lower()
    try:
        value = float(cleaned)
    except ValueError:
        parts = _PART.findall(cleaned)
        if not parts or "".join(number + unit for number, unit in parts) != cleaned:
            raise DurationError(f"{text!r} is not a duration like {EXAMPLES}") from None
        value = sum(float(number) * UNITS[unit] for number, unit in parts)
    if not 0 < value < math.inf:  # also refuses nan
        raise DurationError(f"{text!r} must be a positive duration, like {EXAMPLES}")
    return value


__all__ = ["DurationError", "parse_duration", "UNITS"]
