"""OpenTelemetry function spans from closed windows: a consumer of
:class:`~funcsight.processors.windows.Window`.

Each slow or failing call of a sampled trace that the window carries becomes one span of kind
INTERNAL, a child of its request's root span, named after the function, with ``code.function.name``,
``code.file.path``, ``code.lineno`` and, when it raised, ``exception.type``, an ``exception`` event
and an ERROR status. The window gives each call its span id; this tracer uses it (its id generator
is wrapped), so the store (which writes the same calls from the window) and the tracing backend
name a function span alike.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode

from funcsight import names
from funcsight.processors.windows import Window, exception_name

if TYPE_CHECKING:
    from funcsight.instrumentation.registry import FunctionRegistry

_log = logging.getLogger("funcsight")


class _GivenSpanIds(IdGenerator):
    """The span id the window gave the call being emitted; anything else from ``inner``."""

    def __init__(self, inner: IdGenerator):
        self.inner = inner
        self.next_span_id = 0

    def generate_span_id(self) -> int:
        span_id, self.next_span_id = self.next_span_id, 0
        return span_id or self.inner.generate_span_id()

    def generate_trace_id(self) -> int:
        return self.inner.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return self.inner.is_trace_id_random()


class FunctionSpanEmitter:
    def __init__(self, tracer: trace.Tracer, registry: FunctionRegistry):
        self.tracer = tracer
        self.registry = registry
        self.emitted = 0
        inner = getattr(tracer, "id_generator", None)  # an SDK tracer's; other tracers keep theirs
        self._ids = _GivenSpanIds(inner) if isinstance(inner, IdGenerator) else None
        if self._ids is not None:
            tracer.id_generator = self._ids

    def consume(self, window: Window) -> None:
        functions = self.registry.functions
        offset = window.clock_offset_ns
        ids = self._ids
        for root, calls in window.slow_calls:
            parent = trace.set_span_in_context(NonRecordingSpan(root))
            for fid, start, end, exc_type, span_id in calls:
                try:
                    info = functions[fid]
                    attributes = {
                        names.CODE_FUNCTION_NAME: info.name,
                        names.CODE_FILE_PATH: info.file,
                        names.CODE_LINE_NUMBER: info.line,
                    }
                    if ids is not None:
                        ids.next_span_id = span_id
                    span = self.tracer.start_span(
                        info.name, context=parent, kind=SpanKind.INTERNAL, start_time=start + offset, attributes=attributes
                    )
                    if exc_type is not None:
                        type_name = exception_name(exc_type)
                        span.set_attribute(names.EXCEPTION_TYPE, type_name)
                        span.add_event("exception", {names.EXCEPTION_TYPE: type_name}, timestamp=end + offset)
                        span.set_status(Status(StatusCode.ERROR))
                    span.end(end_time=end + offset)
                    self.emitted += 1
                except Exception:
                    _log.exception("funcsight: emitting a function span failed")
