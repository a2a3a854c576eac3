"""Windows: function x route aggregates between two exports, bounded in size.

A window is open while requests are folded in (:meth:`WindowAggregator.add_request`, from the rollup
processor, once a request's route is known) and calls made outside any request are added
(:meth:`~WindowAggregator.add_background`); :meth:`~WindowAggregator.drain` closes it and returns a
:class:`Window`. While a window is open its function counters live in one call table per route, of
the sensor's own table type, so folding a request in is the table's ``absorb`` (a C loop for the C
sensor: no Python object per function); draining turns them into the ``(function id, route) ->
stats`` map once, off the request path. Folding takes the aggregator's lock; the sensor never does,
it writes only to call tables.

Two twins with the same methods and tests: :class:`WindowAggregator` here and
``_crollup.WindowAggregator`` (C), which the C rollup processor folds into with a C call.
:func:`make_windows` picks one, once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from funcsight.histogram import bucket_of
from funcsight.instrumentation.calls import CallTable, line_of, merge_stats
from funcsight.names import BACKGROUND_ROUTE, OVERFLOW_ROUTE


@dataclass
class Counters:
    """funcsight's own telemetry for one window: what it had to drop or could not do (deltas).
    Field names are the store's ``windows`` columns; ``names.DROPPED_REASONS`` and
    ``names.INTERNAL_ERROR_COMPONENTS`` say how each is exported."""

    overflow_series: int = 0  # function x route entries sent to the overflow route (series cap)
    overflow_routes: int = 0  # requests counted under the overflow route (route cap)
    processor_failures: int = 0  # spans the rollup processor left alone after an internal failure
    dropped_span_batches: int = 0  # requests whose function spans were dropped (queue full)
    sensor_errors: int = 0  # failures inside the sensor (never raised into the application)
    registry_dropped: int = 0  # code objects past FUNCSIGHT_MAX_FUNCTIONS: counted under (overflow)
    overflow_paths: int = 0  # path nodes folded into "(other paths)": FUNCSIGHT_MAX_PATHS reached
    paths_dropped: int = 0  # call edges folded into "(other paths)": the per-process node cap
    dropped_windows: int = 0  # windows the store writer dropped (its queue full while the store failed)
    span_export_failures: int = 0  # spans an exporter funcsight built could not deliver
    consumer_failures: int = 0  # windows an exporter (store, metrics, spans) raised on

    def any(self) -> bool:
        return any(vars(self).values())

    def add(self, other: Counters) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class Window:
    """One closed window: everything the exporters need, in one object (they read nothing else).

    ``slow_calls``: per request, ``(root span context, [(fid, start ns, end ns, exception type or
    None, span id), ...])``, calls that were slow or raised in a sampled trace, to be emitted (and
    stored) as function spans, children of the request's root span. Their times are the sensor's
    clock; ``clock_offset_ns`` added makes them epoch nanoseconds. ``span id`` is given here, once,
    so the store and the tracing backend name a function span alike.
    """

    start: float  # epoch seconds
    end: float
    functions: dict = field(default_factory=dict)  # (fid, route) -> [calls, errors, total, self, hist]
    errors: dict = field(default_factory=dict)  # (fid, route, exception type name) -> count
    routes: dict = field(default_factory=dict)  # route -> [requests, errors, total_ns, hist]
    samples: dict = field(default_factory=dict)  # (fid, route, exception type name) -> ErrorSample
    # (route, path) -> [calls, errors, total, self]: ``path`` is the function ids from the route's
    # entry down to the node (paths.OTHER for an "(other paths)" node); (route, path, exception
    # type name) -> count.
    paths: dict = field(default_factory=dict)
    path_errors: dict = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    slow_calls: list = field(default_factory=list)
    clock_offset_ns: int = 0

    @property
    def overflow_series(self) -> int:
        return self.counters.overflow_series

    @property
    def overflow_routes(self) -> int:
        return self.counters.overflow_routes

    def is_empty(self) -> bool:
        """Nothing to write: no calls, no requests, and none of funcsight's own counters moved
        (a window that only records drops or failures is still written: it says the data is short)."""
        return not (self.functions or self.routes or self.errors or self.slow_calls or self.counters.any())


@dataclass
class ErrorSample:
    """One occurrence of an exception leaving a function: where it went (no values, no locals)."""

    stack: list  # [[function name, file, line], ...] from the function down to the raise point
    message: str | None  # only with FUNCSIGHT_CAPTURE_MESSAGES, after the redaction hook
    trace_id: str | None
    span_id: str | None  # the request's root span
    seen_at: float


def stack_of(frames: tuple) -> list:
    """``[[qualified name, file, line], ...]`` from a sensor's stack sample (code, offset) pairs."""
    return [[code.co_qualname, code.co_filename, line_of(code, offset)] for code, offset in frames]


def exception_name(exc_type: type) -> str:
    module = getattr(exc_type, "__module__", "builtins")
    qualname = getattr(exc_type, "__qualname__", getattr(exc_type, "__name__", "?"))
    return qualname if module == "builtins" else f"{module}.{qualname}"


def close_window(start: float, end: float, tables: dict, errors: dict, routes: dict, samples: dict,
                 overflow_series: int, overflow_routes: int, overflow_paths: int = 0, registry=None) -> Window:
    """The drained :class:`Window` of an open window's parts (both twins call this, outside their
    lock): the per-route call tables become the ``(fid, route) -> stats`` map, and their path
    nodes the ``(route, path) -> counts`` map (paths spelled out with ``registry``)."""
    functions: dict = {}
    paths: dict = {}
    path_errors: dict = {}
    for by_route in tables.values():
        for route, table in by_route.items():
            for fid, stats in table.stats.items():
                into = functions.get((fid, route))
                if into is None:
                    functions[(fid, route)] = stats
                else:  # the same route under two table types (background before the C sensor took over)
                    merge_stats(into, stats)
            if registry is None:
                continue
            for node, counts in table.paths.items():
                key = (route, registry.path_of(node))
                into = paths.get(key)
                if into is None:
                    paths[key] = counts[:4]
                else:
                    for i in range(4):
                        into[i] += counts[i]
            for (node, exc_type), count in table.path_errors.items():
                key = (route, registry.path_of(node), exception_name(exc_type))
                path_errors[key] = path_errors.get(key, 0) + count
    counters = Counters(overflow_series, overflow_routes, overflow_paths=overflow_paths)
    return Window(start, end, functions, errors, routes, samples, paths, path_errors, counters)


def merge_errors(errors: dict, samples: dict, route: str, table: CallTable) -> None:
    """Fold a table's exception counts and first stacks into an open window's (both twins, under
    their lock, for a table with errors)."""
    for (fid, exc_type), count in table.errors.items():
        key = (fid, route, exception_name(exc_type))
        errors[key] = errors.get(key, 0) + count
    root = None
    for (fid, exc_type), sample in table.samples.items():
        key = (fid, route, exception_name(exc_type))
        if key not in samples:
            if root is None:
                root = table.root
            frames, message = sample
            samples[key] = ErrorSample(
                stack=stack_of(frames),
                message=message,
                trace_id=format(root.trace_id, "032x") if root is not None else None,
                span_id=format(root.span_id, "016x") if root is not None else None,
                seen_at=time.time(),
            )


class _Open:
    """The open window's parts (the C twin keeps the same ones in its struct)."""

    __slots__ = ("start", "tables", "series", "errors", "routes", "samples", "overflow_series", "overflow_routes",
                 "overflow_paths")

    def __init__(self, start: float):
        self.start = start
        self.tables: dict = {}  # table type -> {route -> call table of that route}
        self.series = 0  # function x route entries in all tables
        self.errors: dict = {}
        self.routes: dict = {}
        self.samples: dict = {}
        self.overflow_series = 0
        self.overflow_routes = 0
        self.overflow_paths = 0


class WindowAggregator:
    """The Python twin of ``_crollup.WindowAggregator``: the open window and the fold into it."""

    def __init__(self, max_series: int = 20_000, max_routes: int = 500, paths=None, max_paths: int = 1000):
        self.max_series = max_series
        self.max_routes = max_routes
        self.paths = paths  # the sensor's PathRegistry (None: no call tree kept)
        self.max_paths = max_paths
        self._lock = threading.Lock()
        self._open = _Open(time.time())

    @property
    def open_series(self) -> int:
        """Function x route entries the open window holds (for the memory benchmark and tests)."""
        return self._open.series

    def open_counts(self) -> dict:
        """What the open window holds so far, for tests and benchmarks: routes, series, requests
        and the overflow counts."""
        with self._lock:
            window = self._open
            return {
                "routes": len(window.routes), "series": window.series,
                "requests": sum(stats[0] for stats in window.routes.values()),
                "overflow_routes": window.overflow_routes, "overflow_series": window.overflow_series,
                "overflow_paths": window.overflow_paths,
            }

    def add_request(self, route: str, table: CallTable, duration_ns: int, failed: bool) -> None:
        with self._lock:
            window = self._open
            routes = window.routes
            stats = routes.get(route)
            if stats is None:
                if len(routes) >= self.max_routes:
                    window.overflow_routes += 1
                    route = OVERFLOW_ROUTE
                    stats = routes.get(route)
                if stats is None:
                    stats = routes[route] = [0, 0, 0, {}]
            stats[0] += 1
            if failed:
                stats[1] += 1
            stats[2] += duration_ns
            histogram = stats[3]
            bucket = bucket_of(duration_ns)
            histogram[bucket] = histogram.get(bucket, 0) + 1
            if table is not None:  # None: its calls come later, through add_calls
                self._merge(window, route, table)

    def add_calls(self, route: str, table: CallTable) -> None:
        """Calls of ``route`` without a request: those its enclosing calls made after it ended
        (counted with add_request already), or the background's."""
        if table.series or table.has_errors:
            with self._lock:
                window = self._open
                if route not in window.routes and route != BACKGROUND_ROUTE and len(window.routes) >= self.max_routes:
                    route = OVERFLOW_ROUTE
                self._merge(window, route, table)

    def add_background(self, table: CallTable) -> None:
        self.add_calls(BACKGROUND_ROUTE, table)

    def _merge(self, window: _Open, route: str, table: CallTable) -> None:
        table_type = type(table)
        tables = window.tables.get(table_type)
        if tables is None:
            tables = window.tables[table_type] = {OVERFLOW_ROUTE: table_type()}
        into = tables.get(route)
        if into is None:
            into = tables[route] = table_type()
        overflow = tables[OVERFLOW_ROUTE]
        created, overflowed = into.absorb(table, self.max_series - window.series, overflow)
        window.series += created
        window.overflow_series += overflowed
        if self.paths is not None:
            _, folded = into.absorb_paths(table, self.paths, max(0, self.max_paths - into.path_count))
            window.overflow_paths += folded
        if table.has_errors:
            merge_errors(window.errors, window.samples, route, table)

    def drain(self) -> Window:
        """Close the open window and start a new one; the drained :class:`Window` is made outside
        the lock."""
        now = time.time()
        with self._lock:
            window, self._open = self._open, _Open(now)
        return close_window(window.start, now, window.tables, window.errors, window.routes, window.samples,
                            window.overflow_series, window.overflow_routes, window.overflow_paths, self.paths)

    def reset(self) -> None:
        """After fork: the child starts from nothing; the parent's calls are the parent's."""
        self._lock = threading.Lock()
        self._open = _Open(time.time())


try:
    from funcsight.processors import _crollup
except ImportError:  # the extension is optional (setup.py)
    _crollup = None


def c_windows_available() -> bool:
    return _crollup is not None and hasattr(_crollup, "WindowAggregator")


def make_windows(max_series: int = 20_000, max_routes: int = 500, implementation: str = "c", paths=None,
                 max_paths: int = 1000):
    """The C window aggregator unless ``implementation`` is ``python`` or the extension is not
    built; the rollup processor with the same choice folds into it with a C call. ``paths`` is the
    sensor's path registry (the call tree is kept per route, ``max_paths`` nodes at most)."""
    if implementation != "python" and c_windows_available():
        return _crollup.WindowAggregator(max_series, max_routes, close_window, merge_errors, OVERFLOW_ROUTE,
                                         BACKGROUND_ROUTE, paths, max_paths)
    return WindowAggregator(max_series, max_routes, paths, max_paths)
