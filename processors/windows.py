"""Windows: function x route aggregates between two exports, bounded in size.

The rollup processor folds each finished request's call table in under the request's route; the
export pipeline swaps the window out every interval. While a window is open its function counters
live in one call table per route, of the sensor's own table type, so folding a request in is the
table's ``absorb`` (a C loop for the C sensor: no Python object per function); the export thread
turns them into the exported ``(function id, route) -> stats`` map once, off the request path.
Folding takes a lock; the sensor never does, it writes only to call tables.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from funcsight.histogram import bucket_of
from funcsight.instrumentation.calls import CallTable, merge_stats
from funcsight.names import BACKGROUND_ROUTE, OVERFLOW_ROUTE


@dataclass
class Window:
    start: float  # epoch seconds
    end: float
    functions: dict = field(default_factory=dict)  # (fid, route) -> [calls, errors, total, self, hist]
    errors: dict = field(default_factory=dict)  # (fid, route, exception type name) -> count
    routes: dict = field(default_factory=dict)  # route -> [requests, errors, total_ns, hist]
    samples: dict = field(default_factory=dict)  # (fid, route, exception type name) -> ErrorSample
    overflow_series: int = 0
    overflow_routes: int = 0

    def is_empty(self) -> bool:
        return not (self.functions or self.routes or self.errors)


@dataclass
class ErrorSample:
    """One occurrence of an exception leaving a function: where it went (no values, no locals)."""

    stack: list  # [[function name, file, line], ...] from the function down to the raise point
    message: str | None  # only with FUNCSIGHT_CAPTURE_MESSAGES, after the redaction hook
    trace_id: str | None
    span_id: str | None  # the request's root span
    seen_at: float


def stack_of(frames: tuple) -> list:
    """``[[qualified name, file, line], ...]`` from a sensor's stack sample."""
    return [[code.co_qualname, code.co_filename, line] for code, line in frames]


def exception_name(exc_type: type) -> str:
    module = getattr(exc_type, "__module__", "builtins")
    qualname = getattr(exc_type, "__qualname__", getattr(exc_type, "__name__", "?"))
    return qualname if module == "builtins" else f"{module}.{qualname}"


@dataclass
class _OpenWindow:
    start: float
    tables: dict = field(default_factory=dict)  # table type -> {route -> call table of that route}
    series: int = 0  # function x route entries in all tables
    errors: dict = field(default_factory=dict)
    routes: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)
    overflow_series: int = 0
    overflow_routes: int = 0

    def close(self, end: float) -> Window:
        functions: dict = {}
        for by_route in self.tables.values():
            for route, table in by_route.items():
                for fid, stats in table.stats.items():
                    into = functions.get((fid, route))
                    if into is None:
                        functions[(fid, route)] = stats
                    else:  # the same route under two table types (background before the C sensor took over)
                        merge_stats(into, stats)
        return Window(self.start, end, functions, self.errors, self.routes, self.samples,
                      self.overflow_series, self.overflow_routes)


class WindowAggregator:
    def __init__(self, max_series: int = 20_000, max_routes: int = 500):
        self.max_series = max_series
        self.max_routes = max_routes
        self._lock = threading.Lock()
        self._open = _OpenWindow(start=time.time())

    @property
    def open_series(self) -> int:
        """Function x route entries the open window holds (for the memory benchmark and tests)."""
        return self._open.series

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
            self._merge(window, route, table)

    def add_background(self, table: CallTable) -> None:
        if table.series or table.has_errors:
            with self._lock:
                self._merge(self._open, BACKGROUND_ROUTE, table)

    def _merge(self, window: _OpenWindow, route: str, table: CallTable) -> None:
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
        if table.has_errors:
            self._merge_errors(window, route, table)

    def _merge_errors(self, window: _OpenWindow, route: str, table: CallTable) -> None:
        errors = window.errors
        for (fid, exc_type), count in table.errors.items():
            key = (fid, route, exception_name(exc_type))
            errors[key] = errors.get(key, 0) + count
        samples = window.samples
        for (fid, exc_type), sample in table.samples.items():
            key = (fid, route, exception_name(exc_type))
            if key not in samples:
                samples[key] = self._sample(sample, table)

    def _sample(self, sample: tuple, table: CallTable) -> ErrorSample:
        frames, message = sample
        root = table.root
        return ErrorSample(
            stack=stack_of(frames),
            message=message,
            trace_id=format(root.trace_id, "032x") if root is not None else None,
            span_id=format(root.span_id, "016x") if root is not None else None,
            seen_at=time.time(),
        )

    def drain(self) -> Window:
        """Hand the current window over and start a new one (the export thread: the open
        window's tables become the exported map here, outside the lock)."""
        now = time.time()
        with self._lock:
            window, self._open = self._open, _OpenWindow(start=now)
        return window.close(now)

    def reset(self) -> None:
        """After fork: the child starts from nothing; the parent's calls are the parent's."""
        self._lock = threading.Lock()
        self._open = _OpenWindow(start=time.time())
