"""The rollup span processor: links every sensed call to the request (or task) it ran in.

For each local root span of kind SERVER or CONSUMER (what the standard Flask, FastAPI/ASGI, WSGI,
Django and Celery instrumentations start for a request or task run) it opens a call table and makes
it current for the request's context; the sensor writes that request's calls into it. When the root
ends, its route is read (frameworks set ``http.route`` late) and the table is folded into the window
under that route. Other spans that end inside the request (DB and HTTP clients) are rolled up the
same way under their span name, so outbound calls appear beside functions. Calls of code that
encloses the root span on its thread (a framework's ``__call__``: URL matching before the span,
teardown after it) belong to the request too: the sensor holds them per thread and this processor
adopts them when the request starts, or has the sensor hold the ended request's table until the
enclosing calls return (``instrumentation/enclosure.py``).

For sampled traces, calls that raised or took at least ``FUNCSIGHT_SLOW_CALL_MS`` are kept (up to a
cap per trace) and handed on with the window, to be emitted (and stored) as function spans, children
of the request's root span, off the request path. Metrics never come from those spans: they come
from every call. funcsight's own function spans pass this processor like any span (they are SDK
spans of the tracer provider it is on) and are left alone: they are never request roots and their
scope frames no work.

:meth:`RollupSpanProcessor.drain` closes a window: it finishes what the sensor left parked, adds the
calls made outside any request, and returns one :class:`~funcsight.processors.windows.Window` with
the aggregates, the slow calls and funcsight's own counters. The exporters read nothing else.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from typing import Callable

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from funcsight.instrumentation.calls import CallTable, current_request, enter_request, request_changed
from funcsight.instrumentation.registry import FunctionRegistry
from funcsight.names import BACKGROUND_ROUTE, HTTP_ROUTE, SCOPE, UNMATCHED_ROUTE
from funcsight.processors.windows import Counters, Window, WindowAggregator

_ENTRY_KINDS = (SpanKind.SERVER, SpanKind.CONSUMER)
_ROLLED_UP_KINDS = (SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.INTERNAL)
# Spans that frame the request itself rather than work done in it.
# FastAPI's and Starlette's instrumentations start only the request's SERVER span and its ASGI
# send/receive INTERNAL spans, so any other span of theirs frames the request too.
_FRAMING_SCOPES = frozenset({
    SCOPE, "opentelemetry.instrumentation.asgi", "opentelemetry.instrumentation.wsgi",
    "opentelemetry.instrumentation.fastapi", "opentelemetry.instrumentation.starlette",
})
_MAX_OPEN_REQUESTS = 100_000
_MAX_PENDING_SPAN_BATCHES = 1_000


# Celery's instrumentation names a task run's CONSUMER span ``run/<task name>`` and sets the task
# name as an attribute when the run ends (before the span ends): that name is the task's route.
CELERY_TASK_NAME = "celery.task_name"
_CELERY_SCOPE = "opentelemetry.instrumentation.celery"
_CELERY_RUN_PREFIX = "run/"


def route_of(span: ReadableSpan, attributes=None) -> str:
    if attributes is None:
        attributes = span.attributes or {}
    route = attributes.get(HTTP_ROUTE)
    if route:
        return str(route)
    if span.kind is SpanKind.CONSUMER:  # a task run or a consumed message: the task is the entry point
        task = attributes.get(CELERY_TASK_NAME)
        if task:
            return str(task)
        scope = span.instrumentation_scope
        if scope is not None and scope.name == _CELERY_SCOPE and span.name.startswith(_CELERY_RUN_PREFIX):
            return span.name[len(_CELERY_RUN_PREFIX):] or span.name
        return span.name
    return UNMATCHED_ROUTE


def request_failed(attributes, status_is_error: bool) -> bool:
    """With an HTTP status the request failed when it is 5xx, as the HTTP semantic conventions
    define server errors (a 404 that an instrumentation marked ERROR did not fail); without one
    (a task, a consumer), when the span's status is ERROR."""
    status = attributes.get("http.response.status_code")
    if status is None:
        status = attributes.get("http.status_code")
    if isinstance(status, int):
        return status >= 500
    return status_is_error


# Every span the process starts and ends passes through on_start/on_end, and each public property
# of an SDK span is a Python call (``attributes`` also wraps the mapping, whose ``get`` is two more).
# The C twin of these methods (``_crollup.c``) reads the fields those properties return instead,
# once this checks that this SDK keeps them there. SpanContext is a tuple:
# (trace_id, span_id, is_remote, trace_flags, ...).
def _sdk_fields_readable() -> bool:
    try:
        from opentelemetry.attributes import BoundedAttributes
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, Status, TraceFlags

        context = SpanContext(11, 12, False, TraceFlags(TraceFlags.SAMPLED))
        parent = SpanContext(11, 13, True, TraceFlags(TraceFlags.DEFAULT))
        span = ReadableSpan(
            "probe", context=context, parent=parent, attributes=BoundedAttributes(attributes={"k": "v"}),
            kind=SpanKind.SERVER, status=Status(StatusCode.ERROR), start_time=5, end_time=9,
            instrumentation_scope=InstrumentationScope("probe.scope"),
        )
        return (
            span._context is span.get_span_context() and span._parent is span.parent
            and span._kind is span.kind and span._start_time == span.start_time == 5
            and span._end_time == span.end_time == 9
            and span._status._status_code is span.status.status_code is StatusCode.ERROR
            and span._instrumentation_scope._name == span.instrumentation_scope.name == "probe.scope"
            and span._attributes._dict == dict(span.attributes) == {"k": "v"}
            and tuple(context[:4]) == (context.trace_id, context.span_id, context.is_remote, context.trace_flags)
            and tuple(parent[:4]) == (parent.trace_id, parent.span_id, parent.is_remote, parent.trace_flags)
        )
    except Exception:
        return False


SDK_FIELDS_READABLE = _sdk_fields_readable()

try:
    from funcsight.processors import _crollup
except ImportError:  # the extension is optional (setup.py)
    _crollup = None


class RollupSpanProcessor(SpanProcessor):
    """``windows``: a :class:`WindowAggregator` or its C twin (``windows.make_windows``);
    ``sensor``: the sensor whose sink this processor opens request tables from (its public API:
    ``sink``, ``sweep_parked``, ``internal_errors``, and the enclosures of
    ``instrumentation/enclosure.py``: ``take_enclosed``, ``hold``, ``take_all_held``)."""

    def __init__(
        self,
        windows: WindowAggregator,
        registry: FunctionRegistry,
        sensor,
        spans_per_trace: int = 20,
        implementation: str = "c",
    ):
        self.windows = windows
        self.sensor = sensor
        self.sink = sensor.sink
        self._paths = getattr(sensor, "paths", None)
        self._table_type = self.sink.table_type  # chosen once, when the sensor was made
        self.registry = registry
        self.spans_per_trace = spans_per_trace
        self.enabled = True
        self.dropped_span_batches = 0
        self._open: dict[int, CallTable] = {}  # root span id -> table
        # Tables of ended requests the sensor holds for their enclosing calls (see on_end) -> route.
        self._after: dict = {}
        self._take_enclosed = sensor.take_enclosed
        self._hold = sensor.hold
        self._take_all_held = sensor.take_all_held
        self._by_trace: dict[int, CallTable] = {}  # trace id -> table of its open local root
        # (root span context, [(fid, start, end, exc_type)]) waiting for the export thread.
        self.pending_spans: deque = deque()
        self._lock = threading.Lock()
        self.implementation = "python"
        self._failures = 0  # spans left alone after an internal failure (the C twin counts its own)
        self._core = None
        # Process totals of funcsight's own counters kept elsewhere (the store writer's dropped
        # windows, the pipeline's failures...): Counters field name -> a function reading it.
        self.counter_sources: dict[str, Callable[[], int]] = {}
        # Counters already handed on with a window: a window carries what was added since.
        self._reported: dict[str, int] = {}
        # The sensor's clock (perf_counter_ns, or the C sensor's TSC mapped onto it) + offset = epoch ns.
        self._clock_offset_ns = time.time_ns() - time.perf_counter_ns()
        if implementation != "python" and _crollup is not None and SDK_FIELDS_READABLE:
            core = _crollup.RollupCore(
                self, self._open, self._by_trace, current_request, windows, self._table_type, self._roll_up_child,
                self._queue_spans, route_of, _FRAMING_SCOPES, SpanKind.SERVER, SpanKind.CONSUMER,
                StatusCode.ERROR, _MAX_OPEN_REQUESTS, request_changed,
            )
            # Instance attributes: the SDK calls the C methods, without a Python frame per span.
            self.on_start, self.on_end, self._on_ending = core.on_start, core.on_end, core.on_ending
            self.implementation = "c"
            self._core = core

    @property
    def failures(self) -> int:
        """Spans left alone because reading or rolling them up failed (never raised to the app)."""
        # The C twin counts its per-span failures; the Python side still counts the window's own
        # (a failing sweep or counter source) when the C core runs the spans.
        return (self._core.failures if self._core is not None else 0) + self._failures

    # ------------------------------------------------------------------- SpanProcessor interface
    def on_start(self, span, parent_context=None) -> None:
        try:
            # Runs for every span the process starts: the fewest reads that decide.
            if span.kind not in _ENTRY_KINDS or not self.enabled:
                return
            parent = span.parent  # the SDK keeps a valid parent or None
            if parent is not None and not parent.is_remote:
                return  # not a local root: its calls belong to the enclosing request
            if len(self._open) >= _MAX_OPEN_REQUESTS:
                return
            context = span.get_span_context()
            budget = self.spans_per_trace if context.trace_flags.sampled else 0
            enclosed = self._take_enclosed()
            table = None if enclosed is None else self._adopt_enclosed(enclosed, budget, context.trace_id, context)
            if table is None:
                table = self._table_type(budget, context.trace_id, context)
            self._open[context.span_id] = table
            self._by_trace[context.trace_id] = table
            enter_request(table)
        except Exception:  # a span processor must never raise into the application
            self._failures += 1

    def on_end(self, span: ReadableSpan) -> None:
        try:
            context = span.get_span_context()
            table = self._open.pop(context.span_id, None)
            if table is None:
                if self._by_trace:  # else no request is open: nothing to roll up into
                    scope = span.instrumentation_scope
                    if scope is None or scope.name not in _FRAMING_SCOPES:
                        self._roll_up_child(span, context.trace_id)
                return
            # The table stays current in the request's context until the next request replaces
            # it: closed, the sensor writes nothing more into it (later calls go to background).
            table.open = False
            trace_id = table.trace_id
            if self._by_trace.get(trace_id) is table:
                del self._by_trace[trace_id]
            attributes = span.attributes or {}
            failed = request_failed(attributes, span.status.status_code is StatusCode.ERROR)
            duration = max(0, (span.end_time or 0) - (span.start_time or 0))
            route = route_of(span, attributes)
            # Sensed calls still running on this thread enclose the request (a framework's
            # __call__): the sensor holds the table for what they do until they return, and it is
            # folded later (see _adopt_enclosed, drain). The route goes in first: drain may take
            # the table as soon as it is held.
            self._after[table] = route
            held = self._hold(table)
            if not held:
                del self._after[table]
            self.windows.add_request(route, None if held else table, duration, failed)
            if table.spans:
                self._queue_spans(table)
        except Exception:
            self._failures += 1

    def _adopt_enclosed(self, enclosed: tuple, budget: int, trace_id: int, root):
        """A request starts on a thread whose enclosing sensed calls already ran calls outside any
        request (``sensor.take_enclosed()``: the thread's held table, the tables released since):
        the held table becomes the request's (what they did so far was for it), unless it is the
        table of a request that ended in the same enclosing calls (a consumer's loop), which is
        folded under that request's route. Released tables are folded under theirs (background
        when no request claimed them). Returns the table to use, or None for a new one."""
        held, released = enclosed
        for table in released or ():
            self._fold_held(table)
        if held is None:
            return None
        if held in self._after:
            self._fold_held(held)
            return None
        held.span_budget, held.trace_id, held.root, held.open = budget, trace_id, root, True
        return held

    def _fold_held(self, table) -> None:
        table.open = False
        self.windows.add_calls(self._after.pop(table, BACKGROUND_ROUTE), table)

    def _queue_spans(self, table) -> None:
        if len(self.pending_spans) < _MAX_PENDING_SPAN_BATCHES:
            self.pending_spans.append((table.root, table.spans))
        else:
            self.dropped_span_batches += 1

    def _roll_up_child(self, span: ReadableSpan, trace_id: int) -> None:
        # Called for spans outside the request's framing scopes (rejected first: most are those).
        if span.kind not in _ROLLED_UP_KINDS:
            return
        table = self._by_trace.get(trace_id)
        if table is None or not table.open:
            return
        attributes = span.attributes
        if attributes and "asgi.event.type" in attributes:
            return  # ASGI send/receive spans of another ASGI framework's instrumentation
        fid = self.registry.register_span(span.name)
        if fid < 0:
            return
        duration = max(0, (span.end_time or 0) - (span.start_time or 0))
        failed = span.status.status_code is StatusCode.ERROR
        # In the call tree under the sensed function that made the call (it is still running on
        # this thread while its client span ends), else at the request's top.
        node = self._paths.child(self.sensor.current_node(), fid) if self._paths is not None else -1
        table.add_call(fid, duration, duration, _span_error_type(span) if failed else None, node)

    def shutdown(self) -> None:
        self.enabled = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # ------------------------------------------------------------------------ closing a window
    def drain(self) -> Window:
        """Close the open window (the export thread, once per interval) and return it with the
        slow calls queued since the last one and funcsight's own counters since then."""
        try:
            self.sensor.sweep_parked()  # generators dropped while suspended: their calls end now
        except Exception:
            self._failures += 1
        try:
            for table in self._take_all_held():
                self._fold_held(table)
        except Exception:
            self._failures += 1
        self.windows.add_background(self.sink.take_background())
        window = self.windows.drain()
        window.slow_calls = self._take_slow_calls()
        window.clock_offset_ns = self._clock_offset_ns
        self._count(window.counters)
        return window

    def _take_slow_calls(self) -> list:
        pending, taken = self.pending_spans, []
        new_id = random.getrandbits
        while pending:
            try:
                root, calls = pending.popleft()
            except IndexError:
                break
            taken.append((root, [(fid, start, end, exc_type, new_id(64) or 1) for fid, start, end, exc_type in calls]))
        return taken

    def _totals(self) -> dict[str, int]:
        totals = {
            "processor_failures": self.failures,
            "dropped_span_batches": self.dropped_span_batches,
            "sensor_errors": getattr(self.sensor, "internal_errors", 0),
            "registry_dropped": self.registry.dropped,
            "paths_dropped": self._paths.dropped if self._paths is not None else 0,
        }
        for name, read in self.counter_sources.items():
            try:
                totals[name] = int(read())
            except Exception:  # a source that cannot be read is a failure of ours, not the app's
                self._failures += 1
        return totals

    def _count(self, counters: Counters) -> None:
        totals, reported = self._totals(), self._reported
        for name, total in totals.items():
            setattr(counters, name, total - reported.get(name, 0))
        self._reported = totals

    def reset_after_fork(self) -> None:
        """In a forked child: empty windows, no background calls, no open request, and counters
        that count from here (the parent reports what it had)."""
        self.windows.reset()
        self.sink.take_background()
        self._take_all_held()
        self._after.clear()
        for table in self._open.values():
            table.open = False
        self._open.clear()  # in place: the C twin holds these two dicts
        self._by_trace.clear()
        self.pending_spans = deque()
        self._reported = self._totals()


def _span_error_type(span: ReadableSpan):
    for event in span.events or ():
        if event.name == "exception" and event.attributes:
            name = event.attributes.get("exception.type")
            if name:
                return _named_error(str(name))
    return _named_error("SpanError")


_NAMED_ERRORS: dict[str, type] = {}


def _named_error(name: str) -> type:
    """A stand-in type carrying an exception type name seen on another instrumentation's span."""
    cls = _NAMED_ERRORS.get(name)
    if cls is None and len(_NAMED_ERRORS) < 1000:
        module, _, qualname = name.rpartition(".")
        cls = type(qualname or name, (Exception,), {"__module__": module or "builtins"})
        _NAMED_ERRORS[name] = cls
    return cls or Exception
