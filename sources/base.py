"""What a source is: the :class:`Source` protocol the analysis calls, the records it returns, and
:class:`SourceError`.

Every analysis (``functions``, ``routes``, ``versions``, ``diff``, ``explain``, ``anomalies``,
``errors``) is computed from these answers, so a backend only has to answer the same few questions
to run every analysis, face and report unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, TypedDict

from funcsight import names


class SourceError(Exception):
    """A source that cannot be read: a missing, damaged or foreign store file, or a Prometheus server
    that cannot be asked or gave no usable answer. ``str()`` is one line naming the problem and what
    to do."""


@dataclass
class Aggregate:
    """One function (or outbound span) on one route in one version, summed over every window."""

    calls: int = 0
    errors: int = 0
    total_ns: int = 0
    self_ns: int = 0
    hist: dict = field(default_factory=dict)  # half-octave bucket -> calls (funcsight.histogram)
    errors_by_type: dict = field(default_factory=dict)  # exception type -> calls that raised it


@dataclass
class RouteAggregate:
    """One route in one version, summed over every window."""

    requests: int = 0
    errors: int = 0
    total_ns: int = 0
    hist: dict = field(default_factory=dict)


@dataclass
class VersionInfo:
    """One deployment version: where its name came from, when it ran, by how many processes."""

    version: str
    source: str
    first_seen: float
    last_seen: float
    processes: int
    requests: int
    calls: int


class Frame(TypedDict):
    function: str
    file: str
    line: int


class ErrorRecord(TypedDict):
    """Per function x route x version x exception type: the count, first/last seen (epoch seconds)
    and the latest sample (empty when the source keeps none: Prometheus)."""

    function: str
    route: str
    version: str
    exception_type: str
    count: int
    first_seen: float
    last_seen: float
    stack: list[Frame]  # outermost first
    message: str | None
    trace_id: str | None
    span_id: str | None


# Time series rows, per export window (store) or per step (Prometheus), oldest first.
@dataclass
class PathAggregate:
    """One call-tree node's figures: the functions from the route's entry down to it (``"(other
    paths)"`` for a node the caps folded), its calls, errors, total and self time."""

    path: tuple[str, ...]
    calls: int = 0
    errors: int = 0
    total_ns: int = 0
    self_ns: int = 0
    file: str | None = None
    line: int | None = None
    errors_by_type: dict = field(default_factory=dict)


OTHER_PATHS = names.OTHER_PATHS

SeriesRow = tuple  # (start, end, function, kind, route, version, calls, errors, total_ns)
RouteSeriesRow = tuple  # (start, end, route, version, requests)
ErrorSeriesRow = tuple  # (start, function, route, version, exception_type, count)


class Source(Protocol):
    """The questions the analysis asks. ``route`` / ``version`` / ``function`` arguments filter
    (None = all); ``since`` is epoch seconds (None = everything recorded)."""

    def versions(self) -> list[VersionInfo]:
        """Every version, oldest first (by first seen)."""

    def routes(self) -> set[str]:
        """Every route (or task name) recorded."""

    def function_aggregates(self, route: str | None = None, version: str | None = None) -> dict[tuple, Aggregate]:
        """``(function, kind, route, version) -> Aggregate``."""

    def route_aggregates(self, route: str | None = None, version: str | None = None) -> dict[tuple, RouteAggregate]:
        """``(route, version) -> RouteAggregate``."""

    def code_hashes(self, version: str) -> dict[str, str]:
        """``function -> code hash`` in ``version`` (empty when the source does not know)."""

    def path_aggregates(self, route: str | None = None, version: str | None = None) -> dict[tuple, PathAggregate]:
        """``(route, version, path) -> PathAggregate``: the call tree's nodes (empty when the
        source has none, e.g. a store written before execution paths)."""

    def code_locations(self, version: str | None = None) -> dict[str, tuple[str, int, str]]:
        """``function -> (file, first line, code hash)`` in ``version`` (any version when None)."""

    def series(self, version: str | None = None, since: float | None = None) -> list[SeriesRow]: ...

    def route_series(self, version: str | None = None, since: float | None = None) -> list[RouteSeriesRow]: ...

    # Optional questions (``getattr`` them; a source without them gives diff fewer windows to test):
    # ``route_window_series(route, version) -> [(start, end, route, version, requests, errors, total_ns)]``
    # and ``path_series(route, version) -> [(start, end, route, version, path, calls, errors, total_ns, self_ns)]``,
    # one row per export window (store) or step (Prometheus).

    def error_series(self, version: str | None = None, since: float | None = None) -> list[ErrorSeriesRow]: ...

    def error_records(self, function: str | None = None, route: str | None = None,
                      version: str | None = None) -> list[ErrorRecord]: ...

    def close(self) -> None: ...


__all__ = ["OTHER_PATHS", "Aggregate", "ErrorRecord", "ErrorSeriesRow", "Frame", "PathAggregate", "RouteAggregate",
           "RouteSeriesRow", "SeriesRow", "Source", "SourceError", "VersionInfo"]
