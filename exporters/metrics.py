"""OpenTelemetry metrics from closed windows: a consumer of :class:`~funcsight.processors.windows.Window`.

Once per window, off the request path, each function x route series adds its window's deltas to
OpenTelemetry counters; the SDK keeps them cumulative and any reader or exporter (OTLP, Prometheus)
takes them from there. Nothing here runs per call.

Call paths travel as edges: per route, caller and callee, the calls, total and self time of the
callee under that caller (``funcsight.edge.*`` with ``funcsight.caller``; the route's entry points
have the caller ``(route)``). Full paths stay in the store; a tree rebuilt from edges is exact
unless one function is reached by two paths through callers of the same name.

The duration distribution travels as a counter per bucket with an ``le`` attribute (cumulative over
``le``, Prometheus' histogram layout), because the metrics API has no way to record pre-aggregated
histograms: ``histogram_quantile`` works on it as on any Prometheus histogram. Bucket bounds are
powers of two nanoseconds (1.024 us ... 17.2 s), which the sensor's half-octave buckets nest into
exactly.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from opentelemetry.metrics import Meter

from funcsight import names
from funcsight.histogram import LE_LABELS, cumulative_le_counts
from funcsight.processors.windows import Window

if TYPE_CHECKING:
    from funcsight.instrumentation.registry import FunctionRegistry

# funcsight.dropped{reason=...}: the window's counters that count what was dropped (names.py says
# what each counts). Undelivered spans are left out: the span exporters funcsight built add them
# to the counter themselves, as they happen (agent/providers.py), the window only records them.
DROPPED_REASONS = tuple((field, reason) for field, reason in names.DROPPED_REASONS if reason != "span_export_failed")


class MetricsBridge:
    def __init__(self, meter: Meter, registry: FunctionRegistry, version: str, meter_provider=None):
        self.registry = registry
        self.meter_provider = meter_provider
        # The version rides on every series: Prometheus sees resource attributes only on target_info.
        self.version = version
        self.calls = meter.create_counter(names.FUNCTION_CALLS, unit="{call}", description="Calls of a function, by route")
        self.errors = meter.create_counter(names.FUNCTION_ERRORS, unit="{call}", description="Calls that exited by exception, by type")
        self.duration = meter.create_counter(names.FUNCTION_DURATION, unit="s", description="Wall time from entry to final exit, summed")
        self.self_time = meter.create_counter(names.FUNCTION_SELF_TIME, unit="s", description="Duration minus sensed direct callees, summed")
        self.buckets = meter.create_counter(names.FUNCTION_DURATION_BUCKETS, unit="{call}", description="Calls with duration at or below le seconds")
        self.requests = meter.create_counter(names.ROUTE_REQUESTS, unit="{request}", description="Requests (or task runs) per route")
        self.route_errors = meter.create_counter(names.ROUTE_ERRORS, unit="{request}", description="Failed requests per route")
        self.route_duration = meter.create_counter(names.ROUTE_DURATION, unit="s", description="Request duration per route, summed")
        self.route_buckets = meter.create_counter(names.ROUTE_DURATION_BUCKETS, unit="{request}", description="Requests with duration at or below le seconds")
        self.edge_calls = meter.create_counter(names.EDGE_CALLS, unit="{call}", description="Calls of a function by a caller, by route")
        self.edge_duration = meter.create_counter(names.EDGE_DURATION, unit="s", description="Duration of a function's calls by a caller, summed")
        self.edge_self_time = meter.create_counter(names.EDGE_SELF_TIME, unit="s", description="Self time of a function's calls by a caller, summed")
        self.dropped = meter.create_counter(names.DROPPED, unit="{item}", description="What funcsight had to drop, by reason")
        self.internal_errors = meter.create_counter(names.INTERNAL_ERRORS, unit="{error}",
                                                    description="Failures inside funcsight (never raised to the app), by component")

    def consume(self, window: Window) -> None:
        functions = self.registry.functions
        for (fid, route), (calls, errors, total_ns, self_ns, hist) in window.functions.items():
            info = functions[fid]
            attrs = {names.CODE_FUNCTION_NAME: info.name, names.HTTP_ROUTE: route, names.FUNCTION_KIND: info.kind, names.SERVICE_VERSION: self.version}
            if info.file:
                attrs[names.CODE_FILE_PATH] = info.file
            self.calls.add(calls, attrs)
            self.duration.add(total_ns / 1e9, attrs)
            self.self_time.add(self_ns / 1e9, attrs)
            _add_buckets(self.buckets, hist, attrs)
        for (fid, route, exc_name), count in window.errors.items():
            info = functions[fid]
            attrs = {names.CODE_FUNCTION_NAME: info.name, names.HTTP_ROUTE: route, names.FUNCTION_KIND: info.kind, names.EXCEPTION_TYPE: exc_name, names.SERVICE_VERSION: self.version}
            self.errors.add(count, attrs)
        for route, (requests, failed, total_ns, hist) in window.routes.items():
            attrs = {names.HTTP_ROUTE: route, names.SERVICE_VERSION: self.version}
            self.requests.add(requests, attrs)
            self.route_errors.add(failed, attrs)
            self.route_duration.add(total_ns / 1e9, attrs)
            _add_buckets(self.route_buckets, hist, attrs)
        for (route, caller, callee), (calls, total_ns, self_ns) in call_edges(window.paths).items():
            attrs = {names.HTTP_ROUTE: route, names.CALLER: self._name(caller), names.CODE_FUNCTION_NAME: self._name(callee),
                     names.SERVICE_VERSION: self.version}
            self.edge_calls.add(calls, attrs)
            self.edge_duration.add(total_ns / 1e9, attrs)
            self.edge_self_time.add(self_ns / 1e9, attrs)
        counters = window.counters
        for name, reason in DROPPED_REASONS:
            count = getattr(counters, name)
            if count > 0:
                self.dropped.add(count, {"reason": reason})
        for name, component in names.INTERNAL_ERROR_COMPONENTS:
            count = getattr(counters, name)
            if count > 0:
                self.internal_errors.add(count, {"component": component})

    def _name(self, fid: int | None) -> str:
        if fid is None:
            return names.ROUTE_ENTRY
        return names.OTHER_PATHS if fid < 0 else self.registry.functions[fid].name

    def forget_parent_totals(self) -> bool:
        """In a forked child: drop the cumulative totals copied from the parent for funcsight's
        own instruments, so the child (which the SDK gives a new service.instance.id) starts from
        zero like its windows, and a sum over instances counts the parent's calls once.

        The SDK keeps no public way to do this; its storage layout is read defensively and False
        (with the reason logged once by the caller) is returned if it is not the expected one.
        """
        consumer = getattr(self.meter_provider, "_measurement_consumer", None)
        storages = getattr(consumer, "_reader_storages", None)
        if storages is None:
            return False
        ours = {counter.name for counter in self._instruments()}
        for storage in storages.values():
            for instrument, matches in storage._instrument_view_instrument_matches.items():
                scope = getattr(instrument, "instrumentation_scope", None)
                if instrument.name in ours and getattr(scope, "name", None) == names.SCOPE:
                    for match in matches:
                        match._lock = threading.Lock()  # may have been copied held
                        match._attributes_aggregation = {}
        return True

    def _instruments(self) -> tuple:
        return (self.calls, self.errors, self.duration, self.self_time, self.buckets, self.requests,
                self.route_errors, self.route_duration, self.route_buckets, self.edge_calls, self.edge_duration,
                self.edge_self_time, self.dropped, self.internal_errors)


def call_edges(paths: dict) -> dict[tuple, list]:
    """``(route, caller fid or None at the entry, callee fid) -> [calls, total_ns, self_ns]`` summed
    over the window's path nodes."""
    edges: dict[tuple, list] = {}
    for (route, path), (calls, _errors, total_ns, self_ns) in paths.items():
        if not path:
            continue
        key = (route, path[-2] if len(path) > 1 else None, path[-1])
        into = edges.get(key)
        if into is None:
            edges[key] = [calls, total_ns, self_ns]
        else:
            into[0] += calls
            into[1] += total_ns
            into[2] += self_ns
    return edges


def _add_buckets(counter, hist: dict[int, int], attrs: dict) -> None:
    for label, count in zip(LE_LABELS, cumulative_le_counts(hist)):
        counter.add(count, {**attrs, names.BUCKET_LE: label})
