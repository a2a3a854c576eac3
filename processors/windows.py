"""Windows: function x route aggregates between two exports, bounded in size.

The rollup processor folds each finished request's call table in under the request's route; the
export pipeline swaps the window out every interval. Merges take a lock (they are Python loops);
the sensor never does, it writes only to call tables.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from funcsight.instrumentation.calls import CallTable, bucket_of, merge_stats, new_stats
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


class WindowAggregator:
    def __init__(self, max_series: int = 20_000, max_routes: int = 500):
        self.max_series = max_series
        self.max_routes = max_routes
        self._lock = threading.Lock()
        self._window = Window(start=time.time(), end=0.0)

    def add_request(self, route: str, table: CallTable, duration_ns: int, failed: bool) -> None:
        with self._lock:
            window = self._window
            if route not in window.routes and len(window.routes) >= self.max_routes:
                window.overflow_routes += 1
                route = OVERFLOW_ROUTE
            stats = window.routes.get(route)
            if stats is None:
                stats = window.routes[route] = [0, 0, 0, {}]
            stats[0] += 1
            stats[1] += 1 if failed else 0
            stats[2] += duration_ns
            bucket = bucket_of(duration_ns)
            stats[3][bucket] = stats[3].get(bucket, 0) + 1
            self._merge(window, route, table)

    def add_background(self, table: CallTable) -> None:
        if table.stats or table.errors:
            with self._lock:
                self._merge(self._window, BACKGROUND_ROUTE, table)

    def _merge(self, window: Window, route: str, table: CallTable) -> None:
        functions = window.functions
        for fid, stats in table.stats.items():
            key = (fid, route)
            into = functions.get(key)
            if into is None:
                if len(functions) >= self.max_series:
                    window.overflow_series += 1
                    key = (fid, OVERFLOW_ROUTE)
                    into = functions.get(key)
                if into is None:
                    into = functions[key] = new_stats()
            merge_stats(into, stats)
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
        """Hand the current window over and start a new one."""
        now = time.time()
        with self._lock:
            window, self._window = self._window, Window(start=now, end=0.0)
        window.end = now
        return window

    def reset(self) -> None:
        """After fork: the child starts from nothing; the parent's calls are the parent's."""
        self._lock = threading.Lock()
        self._window = Window(start=time.time(), end=0.0)
