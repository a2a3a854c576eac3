""":class:`PrometheusSource`: the analysis' questions (:class:`~funcsight.sources.base.Source`)
answered from funcsight's metrics on a Prometheus-compatible server (see the package docstring for
how counters, restarts and buckets are read back)."""

from __future__ import annotations

import time

from funcsight.durations import parse_duration
from funcsight.histogram import buckets_to_hist, le_ns
from funcsight import names
from funcsight.sources.base import Aggregate, ErrorRecord, PathAggregate, RouteAggregate, VersionInfo
from funcsight.sources.prometheus.client import (
    CALLER, EDGE_CALLS, EDGE_DURATION, EDGE_SELF_TIME, EXCEPTION, FUNCTION, FUNCTION_BUCKETS, FUNCTION_CALLS, FUNCTION_DURATION, FUNCTION_ERRORS, FUNCTION_SELF_TIME, KIND, LE,
    ROUTE, ROUTE_BUCKETS, ROUTE_DURATION, ROUTE_ERRORS, ROUTE_REQUESTS, VERSION, PrometheusClient,
)
from funcsight.sources.prometheus.extent import Extent


class PrometheusSource:
    """The analysis' questions, answered with PromQL from a Prometheus-compatible server."""

    def __init__(self, base_url: str, timeout_s: float | None = None, now: float | None = None):
        self.client = PrometheusClient(base_url, time.time() if now is None else now, timeout_s)
        self.extent = Extent(self.client)
        self.base_url, self.now, self.timeout_s = self.client.base_url, self.client.now, self.client.timeout_s
        self.range_s, self.step_s = self.extent.range_s, self.extent.step_s

    def close(self) -> None:
        pass

    def ping(self) -> None:
        """Raise :class:`~funcsight.sources.base.SourceError` unless the server answers a trivial query."""
        self.client.instant("vector(1)")

    def versions(self) -> list[VersionInfo]:
        presence = self.extent.presence()
        if not presence:
            return []
        requests = self.extent.grouped(ROUTE_REQUESTS, (VERSION,))
        calls = self.extent.grouped(FUNCTION_CALLS, (VERSION,))
        window = self.extent.range_selector()
        processes: dict[tuple, int] = {}
        for metric in (ROUTE_REQUESTS, FUNCTION_CALLS):
            query = f"max by ({VERSION}, job, instance) (resets({metric}[{window}]))"
            for series in self.client.instant(query):
                labels = series["metric"]
                target = (labels.get(VERSION, ""), labels.get("job", ""), labels.get("instance", ""))
                processes[target] = max(processes.get(target, 0), 1 + int(float(series["value"][1])))
        result = []
        for version, (first, last) in presence.items():
            count = sum(n for (v, _, _), n in processes.items() if v == version)
            result.append(VersionInfo(version, "prometheus", first, last, count or 1,
                                      int(round(requests.get((version,), 0))), int(round(calls.get((version,), 0)))))
        result.sort(key=lambda v: (v.first_seen, v.version))
        return result

    def routes(self) -> set[str]:
        window = self.extent.range_selector()
        if window is None:
            return set()
        data = self.client.api(f"label/{ROUTE}/values", {
            "match[]": [ROUTE_REQUESTS, FUNCTION_CALLS], "start": f"{self.now - parse_duration(window):.3f}", "end": f"{self.now:.3f}",
        })
        return {str(route) for route in (data or [])}

    def function_aggregates(self, route: str | None = None, version: str | None = None) -> dict[tuple, Aggregate]:
        """``(function, kind, route, version) -> Aggregate``, summed over every process."""
        group = (FUNCTION, KIND, ROUTE, VERSION)
        filters = {ROUTE: route, VERSION: version}
        grouped = self.extent.grouped
        result: dict[tuple, Aggregate] = {}
        for key, value in grouped(FUNCTION_CALLS, group, **filters).items():
            result[key] = Aggregate(calls=int(round(value)))
        for key, value in grouped(FUNCTION_DURATION, group, **filters).items():
            if key in result:
                result[key].total_ns = int(round(value * 1e9))
        for key, value in grouped(FUNCTION_SELF_TIME, group, **filters).items():
            if key in result:
                result[key].self_ns = int(round(value * 1e9))
        for (*key, exc_type), value in grouped(FUNCTION_ERRORS, group + (EXCEPTION,), **filters).items():
            agg = result.get(tuple(key))
            count = int(round(value))
            if agg is not None and count:
                agg.errors_by_type[exc_type] = agg.errors_by_type.get(exc_type, 0) + count
                agg.errors += count
        for key, hist in self._hists(FUNCTION_BUCKETS, group, **filters).items():
            if key in result:
                result[key].hist = hist
        return result

    def route_aggregates(self, route: str | None = None, version: str | None = None) -> dict[tuple, RouteAggregate]:
        """``(route, version) -> RouteAggregate``, summed over every process."""
        group = (ROUTE, VERSION)
        filters = {ROUTE: route, VERSION: version}
        grouped = self.extent.grouped
        result = {key: RouteAggregate(requests=int(round(value))) for key, value in grouped(ROUTE_REQUESTS, group, **filters).items()}
        for key, value in grouped(ROUTE_ERRORS, group, **filters).items():
            if key in result:
                result[key].errors = int(round(value))
        for key, value in grouped(ROUTE_DURATION, group, **filters).items():
            if key in result:
                result[key].total_ns = int(round(value * 1e9))
        for key, hist in self._hists(ROUTE_BUCKETS, group, **filters).items():
            if key in result:
                result[key].hist = hist
        return result

    def _hists(self, metric: str, group: tuple[str, ...], **labels: str | None) -> dict[tuple, dict[int, int]]:
        cumulative: dict[tuple, dict[str, float]] = {}
        for (*key, le), value in self.extent.grouped(metric, group + (LE,), **labels).items():
            try:
                le_ns(le)
            except ValueError:
                continue  # not one of funcsight's bucket bounds
            cumulative.setdefault(tuple(key), {})[le] = value
        return {key: buckets_to_hist(les) for key, les in cumulative.items()}

    def code_hashes(self, version: str) -> dict[str, str]:
        """Not in the metrics: the version diff then reports ``code_changed`` as unknown (null)."""
        return {}

    def code_locations(self, version: str | None = None) -> dict[str, tuple[str, int, str]]:
        """Not in the metrics (the file rides on the function series, the line and hash do not)."""
        return {}

    def path_aggregates(self, route: str | None = None, version: str | None = None) -> dict[tuple, PathAggregate]:
        """The call tree rebuilt from the caller -> callee edges (``funcsight_edge_*``): from the
        route's entry (caller ``(route)``) down, each function's callees are the edges it is the
        caller of. A function already on the path ends it (recursion), as in the sensor. Exact
        unless one function is reached through two callers of the same name on different paths;
        then those paths share their figures below it."""
        group = (ROUTE, VERSION, CALLER, FUNCTION)
        filters = {ROUTE: route, VERSION: version}
        edges: dict[tuple, list[float]] = {}
        for column, metric in ((0, EDGE_CALLS), (1, EDGE_DURATION), (2, EDGE_SELF_TIME)):
            for key, value in self.extent.grouped(metric, group, **filters).items():
                edges.setdefault(key, [0.0, 0.0, 0.0])[column] = value
        callees: dict[tuple, list] = {}
        for (route_name, version_name, caller, callee), figures in edges.items():
            callees.setdefault((route_name, version_name, caller), []).append((callee, figures))
        result: dict[tuple, PathAggregate] = {}

        def grow(route_name: str, version_name: str, path: tuple[str, ...]) -> None:
            caller = path[-1] if path else names.ROUTE_ENTRY
            for callee, (calls, total_s, self_s) in callees.get((route_name, version_name, caller), ()):
                if callee in path or round(calls) <= 0:
                    continue
                child = path + (callee,)
                result[(route_name, version_name, child)] = PathAggregate(
                    child, calls=int(round(calls)), total_ns=int(round(total_s * 1e9)), self_ns=int(round(self_s * 1e9)))
                if callee != names.OTHER_PATHS:
                    grow(route_name, version_name, child)

        for route_name, version_name in {(r, v) for r, v, _caller in callees}:
            grow(route_name, version_name, ())
        return result

    def series(self, version: str | None = None, since: float | None = None) -> list[tuple]:
        """Per step: ``(start, end, function, kind, route, version, calls, errors, total_ns)``."""
        cells: dict[tuple, list] = {}
        for column, metric in ((0, FUNCTION_CALLS), (1, FUNCTION_ERRORS), (2, FUNCTION_DURATION)):
            for start, end, labels, increase in self.extent.increments(metric, version, since):
                key = (start, end, labels.get(FUNCTION, ""), labels.get(KIND, ""), labels.get(ROUTE, ""), labels.get(VERSION, ""))
                cell = cells.setdefault(key, [0, 0, 0])
                cell[column] += increase * 1e9 if column == 2 else increase
        rows = [(*key, int(round(c)), int(round(e)), int(round(ns))) for key, (c, e, ns) in cells.items() if round(c) > 0]
        rows.sort(key=lambda row: row[0])
        return rows

    def route_series(self, version: str | None = None, since: float | None = None) -> list[tuple]:
        """Per step: ``(start, end, route, version, requests)``."""
        cells: dict[tuple, float] = {}
        for start, end, labels, increase in self.extent.increments(ROUTE_REQUESTS, version, since):
            key = (start, end, labels.get(ROUTE, ""), labels.get(VERSION, ""))
            cells[key] = cells.get(key, 0.0) + increase
        return sorted((*key, int(round(n))) for key, n in cells.items() if round(n) > 0)

    def route_window_series(self, route: str | None = None, version: str | None = None) -> list[tuple]:
        """Per step: ``(start, end, route, version, requests, errors, total_ns)``."""
        cells: dict[tuple, list] = {}
        for column, metric in ((0, ROUTE_REQUESTS), (1, ROUTE_ERRORS), (2, ROUTE_DURATION)):
            for start, end, labels, increase in self.extent.increments(metric, version, None):
                if route is not None and labels.get(ROUTE, "") != route:
                    continue
                cell = cells.setdefault((start, end, labels.get(ROUTE, ""), labels.get(VERSION, "")), [0.0, 0.0, 0.0])
                cell[column] += increase * 1e9 if column == 2 else increase
        rows = [(*key, int(round(n)), int(round(e)), int(round(ns))) for key, (n, e, ns) in cells.items() if round(n) > 0]
        rows.sort(key=lambda row: row[0])
        return rows

    def error_series(self, version: str | None = None, since: float | None = None) -> list[tuple]:
        """Per step: ``(start, function, route, version, exception_type, count)``."""
        cells: dict[tuple, float] = {}
        for start, _end, labels, increase in self.extent.increments(FUNCTION_ERRORS, version, since):
            key = (start, labels.get(FUNCTION, ""), labels.get(ROUTE, ""), labels.get(VERSION, ""), labels.get(EXCEPTION, ""))
            cells[key] = cells.get(key, 0.0) + increase
        return sorted((*key, int(round(n))) for key, n in cells.items() if round(n) > 0)

    def error_records(self, function: str | None = None, route: str | None = None, version: str | None = None) -> list[ErrorRecord]:
        """Per function x route x version x exception type: the count and first/last seen (to the
        step). Metrics carry no stacks, messages or trace ids: those fields are empty."""
        counts = self.extent.grouped(FUNCTION_ERRORS, (FUNCTION, ROUTE, VERSION, EXCEPTION),
                                     **{FUNCTION: function, ROUTE: route, VERSION: version})
        seen: dict[tuple, list[float]] = {}
        if any(round(value) for value in counts.values()):
            for start, end, labels, _increase in self.extent.increments(FUNCTION_ERRORS, version, None):
                key = (labels.get(FUNCTION, ""), labels.get(ROUTE, ""), labels.get(VERSION, ""), labels.get(EXCEPTION, ""))
                span = seen.setdefault(key, [start, end])
                span[0], span[1] = min(span[0], start), max(span[1], end)
        presence = self.extent.presence()
        records: list[ErrorRecord] = []
        for key, value in counts.items():
            count = int(round(value))
            if not count:
                continue
            first, last = seen.get(key) or presence.get(key[2], (self.now, self.now))
            records.append({
                "function": key[0], "route": key[1], "version": key[2], "exception_type": key[3], "count": count,
                "first_seen": first, "last_seen": last, "stack": [], "message": None, "trace_id": None, "span_id": None,
            })
        records.sort(key=lambda r: (-r["count"], r["function"], r["route"], r["version"], r["exception_type"]))
        return records
