"""Per function x route x version figures, and per route summaries: what ``funcsight functions``
and ``funcsight routes`` print, as plain data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from funcsight.histogram import quantile_ns
from funcsight.sources.base import Source


class AnalysisError(ValueError):
    """A question the data cannot answer (unknown route, version or function; two equal versions);
    the message says why. Problems reading the data are :class:`funcsight.sources.SourceError`."""


@dataclass
class FunctionRow:
    function: str
    kind: str
    route: str
    version: str
    calls: int
    errors: int
    errors_by_type: dict[str, int]
    requests: int | None
    calls_per_request: float | None
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    total_ms: float
    self_ms: float
    self_ms_per_request: float | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RouteRow:
    route: str
    version: str
    requests: int
    errors: int
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    top_functions: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


SHORT_REVISION_CHARS = 7  # git's default abbreviation (`git rev-parse --short`, `git log --oneline`)
_CANDIDATES_SHOWN = 10


def resolve_version(source: Source, version: str | None) -> str | None:
    """``version`` as the store has it: itself when recorded; else the one recorded version it is a
    git revision prefix of (7+ hex digits, e.g. from ``git log --oneline``, for the 12 recorded),
    or that is a prefix of it (a full 40-digit revision). Anything else is returned as given, for
    :func:`check_filters` to call unknown. A prefix of several versions raises, listing them."""
    if version is None:
        return None
    known = [v.version for v in source.versions()]
    given = version.strip().lower()
    if version in known or len(given) < SHORT_REVISION_CHARS or not _is_hex(given):
        return version
    matches = [k for k in known if k.lower().startswith(given)
               or (given.startswith(k.lower()) and len(k) >= SHORT_REVISION_CHARS and _is_hex(k))]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        shown = quoted_list(matches[:_CANDIDATES_SHOWN]) + (f" and {len(matches) - _CANDIDATES_SHOWN} more" if len(matches) > _CANDIDATES_SHOWN else "")
        raise AnalysisError(f"version {version!r} is ambiguous: it matches {len(matches)} recorded versions ({shown}); "
                            "give more characters")
    return version


def quoted_list(names) -> str:
    """Names from the application (routes, versions, functions) for a message, each quoted like the
    one the message is about (``repr``: raw newlines, separators and bidi controls come out escaped),
    so none can pass for part of the message."""
    return ", ".join(repr(name) for name in names)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text.lower())


def check_filters(source: Source, route: str | None, version: str | None) -> None:
    if version is not None:
        known = [v.version for v in source.versions()]
        if version not in known:
            raise AnalysisError(f"unknown version {version!r}; known versions: {quoted_list(known) or 'none yet'}")
    if route is not None:
        known = sorted(source.routes())
        if route not in known:
            shown = quoted_list(known[:20]) + (" ..." if len(known) > 20 else "")
            raise AnalysisError(f"unknown route {route!r}; known routes: {shown or 'none yet'}")


def function_rows(source: Source, route: str | None = None, version: str | None = None) -> list[FunctionRow]:
    check_filters(source, route, version)
    requests = {key: agg.requests for key, agg in source.route_aggregates(route, version).items()}
    rows = []
    for (name, kind, route_name, version_name), agg in source.function_aggregates(route, version).items():
        count = requests.get((route_name, version_name)) or None
        rows.append(
            FunctionRow(
                function=name,
                kind=kind,
                route=route_name,
                version=version_name,
                calls=agg.calls,
                errors=agg.errors,
                errors_by_type=dict(sorted(agg.errors_by_type.items())),
                requests=count,
                calls_per_request=round(agg.calls / count, 4) if count else None,
                p50_ms=_ms(quantile_ns(agg.hist, 0.50)),
                p95_ms=_ms(quantile_ns(agg.hist, 0.95)),
                p99_ms=_ms(quantile_ns(agg.hist, 0.99)),
                mean_ms=_ms(agg.total_ns / agg.calls) if agg.calls else 0.0,
                total_ms=_ms(agg.total_ns),
                self_ms=_ms(agg.self_ns),
                self_ms_per_request=_ms(agg.self_ns / count) if count else None,
            )
        )
    rows.sort(key=lambda row: (row.version, row.route, -row.self_ms, row.function))
    return rows


def route_rows(source: Source, route: str | None = None, version: str | None = None, top: int = 3) -> list[RouteRow]:
    check_filters(source, route, version)
    functions = function_rows(source, route, version)
    rows = []
    for (route_name, version_name), agg in source.route_aggregates(route, version).items():
        mine = sorted(
            (f for f in functions if f.route == route_name and f.version == version_name),
            key=lambda f: -f.self_ms,
        )
        rows.append(
            RouteRow(
                route=route_name,
                version=version_name,
                requests=agg.requests,
                errors=agg.errors,
                error_rate=round(agg.errors / agg.requests, 4) if agg.requests else 0.0,
                p50_ms=_ms(quantile_ns(agg.hist, 0.50)),
                p95_ms=_ms(quantile_ns(agg.hist, 0.95)),
                p99_ms=_ms(quantile_ns(agg.hist, 0.99)),
                mean_ms=_ms(agg.total_ns / agg.requests) if agg.requests else 0.0,
                top_functions=[
                    {"function": f.function, "self_ms_per_request": f.self_ms_per_request, "calls_per_request": f.calls_per_request}
                    for f in mine[:top]
                ],
            )
        )
    rows.sort(key=lambda row: (row.version, -row.requests, row.route))
    return rows


def _ms(ns: float) -> float:
    return round(ns / 1e6, 4)
