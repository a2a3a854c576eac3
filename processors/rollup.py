"""The rollup span processor: links every sensed call to the request (or task) it ran in.

For each local root span of kind SERVER or CONSUMER (what the standard Flask, FastAPI/ASGI, WSGI,
Django and Celery instrumentations start for a request or task run) it opens a call table and makes
it current for the request's context; the sensor writes that request's calls into it. When the root
ends, its route is read (frameworks set ``http.route`` late) and the table is folded into the window
under that route. Other spans that end inside the request (DB and HTTP clients) are rolled up the
same way under their span name, so outbound calls appear beside functions.

For sampled traces, calls that raised or took at least ``FUNCSIGHT_SLOW_CALL_MS`` are kept (up to a
cap per trace) and emitted later as real function spans, children of the request's root span, off
the request path. Metrics never come from those spans: they come from every call.
"""

from __future__ import annotations

import threading
from collections import deque

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from funcsight.instrumentation.calls import CallTable, current_request
from funcsight.instrumentation.registry import FunctionRegistry
from funcsight.names import HTTP_ROUTE, SCOPE, UNMATCHED_ROUTE
from funcsight.processors.windows import WindowAggregator

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


def _server_error(attributes) -> bool:
    status = attributes.get("http.response.status_code")
    if status is None:
        status = attributes.get("http.status_code")
    return isinstance(status, int) and status >= 500


# Every span the process starts and ends passes through on_start/on_end, and each public property
# of an SDK span is a Python call (``attributes`` also wraps the mapping, whose ``get`` is two more):
# they were most of the processor's cost per request. So the processor reads the fields those
# properties return, after checking once, here, that this SDK keeps them there; else it uses the
# properties. SpanContext is a tuple: (trace_id, span_id, is_remote, trace_flags, ...).
_NO_ATTRIBUTES: dict = {}


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


def _attributes_of(span):
    """The span's attribute dict (fast path): the SDK keeps a BoundedAttributes over a dict."""
    attributes = span._attributes
    if attributes is None:
        return _NO_ATTRIBUTES
    return getattr(attributes, "_dict", attributes)


SDK_FIELDS_READABLE = _sdk_fields_readable()


class RollupSpanProcessor(SpanProcessor):
    def __init__(
        self,
        windows: WindowAggregator,
        registry: FunctionRegistry,
        sink,
        spans_per_trace: int = 20,
    ):
        self.windows = windows
        self.sink = sink
        self.registry = registry
        self.spans_per_trace = spans_per_trace
        self.enabled = True
        self.dropped_span_batches = 0
        self._open: dict[int, CallTable] = {}  # root span id -> table
        self._by_trace: dict[int, CallTable] = {}  # trace id -> table of its open local root
        # (root span context, [(fid, start, end, exc_type)]) waiting for the export thread.
        self.pending_spans: deque = deque()
        self._lock = threading.Lock()
        if not SDK_FIELDS_READABLE:  # instance attributes: the SDK calls these instead
            self.on_start, self.on_end = self._on_start_public, self._on_end_public

    # ------------------------------------------------------------------- SpanProcessor interface
    def on_start(self, span, parent_context=None) -> None:
        try:
            # Runs for every span the process starts: the fewest reads that decide.
            if span._kind not in _ENTRY_KINDS or not self.enabled:
                return
            parent = span._parent  # the SDK keeps a valid parent or None
            if parent is not None and not parent[2]:
                return  # not a local root: its calls belong to the enclosing request
            context = span._context
            self._open_request(context, context[0], context[1], context[3] & 1)
        except Exception:  # a span processor must never raise into the application
            pass

    def on_end(self, span: ReadableSpan) -> None:
        try:
            context = span._context
            table = self._open.pop(context[1], None)
            if table is None:
                if self._by_trace:  # else no request is open: nothing to roll up into
                    scope = span._instrumentation_scope
                    if scope is None or scope._name not in _FRAMING_SCOPES:
                        self._roll_up_child(span, context[0])
                return
            attributes = _attributes_of(span)
            route = attributes.get(HTTP_ROUTE)
            if not route or type(route) is not str:
                route = route_of(span, attributes)
            failed = span._status._status_code is StatusCode.ERROR or _server_error(attributes)
            self._close_request(table, route, span._end_time, span._start_time, failed)
        except Exception:
            pass

    # The same, through the SDK's public properties (an SDK that keeps its fields elsewhere).
    def _on_start_public(self, span, parent_context=None) -> None:
        try:
            if span.kind not in _ENTRY_KINDS or not self.enabled:
                return
            parent = span.parent
            if parent is not None and not parent.is_remote:
                return
            context = span.get_span_context()
            self._open_request(context, context.trace_id, context.span_id, context.trace_flags.sampled)
        except Exception:
            pass

    def _on_end_public(self, span: ReadableSpan) -> None:
        try:
            context = span.get_span_context()
            table = self._open.pop(context.span_id, None)
            if table is None:
                if self._by_trace:
                    scope = span.instrumentation_scope
                    if scope is None or scope.name not in _FRAMING_SCOPES:
                        self._roll_up_child(span, context.trace_id)
                return
            attributes = span.attributes or {}
            failed = span.status.status_code is StatusCode.ERROR or _server_error(attributes)
            self._close_request(table, route_of(span, attributes), span.end_time, span.start_time, failed)
        except Exception:
            pass

    # --------------------------------------------------------------------------------- requests
    def _open_request(self, context, trace_id: int, span_id: int, sampled) -> None:
        if len(self._open) >= _MAX_OPEN_REQUESTS:
            return
        table = self.sink.table_type(self.spans_per_trace if sampled else 0, trace_id, context)
        self._open[span_id] = table
        self._by_trace[trace_id] = table
        current_request.set(table)

    def _close_request(self, table, route: str, end_time, start_time, failed: bool) -> None:
        # The table stays current in the request's context until the next request replaces it:
        # closed, the sensor writes nothing more into it (calls after the end go to background).
        table.open = False
        trace_id = table.trace_id
        if self._by_trace.get(trace_id) is table:
            del self._by_trace[trace_id]
        duration = max(0, (end_time or 0) - (start_time or 0))
        self.windows.add_request(route, table, duration, failed)
        if table.spans:
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
        table.add_call(fid, duration, duration, _span_error_type(span) if failed else None)

    def shutdown(self) -> None:
        self.enabled = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def reset_after_fork(self) -> None:
        for table in self._open.values():
            table.open = False
        self._open = {}
        self._by_trace = {}
        self.pending_spans = deque()


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
