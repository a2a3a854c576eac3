"""The export pipeline: one daemon thread that, every interval, closes a window and hands it on.

Per interval: background calls are folded in, the window is swapped out, each consumer (the store
writer, the OpenTelemetry metrics bridge) gets it, and function spans queued by the rollup
processor are emitted. A consumer that fails is logged and skipped; the others still run. On
shutdown (normal exit, SIGTERM, SIGINT) the last window is flushed once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode

from funcsight import names
from funcsight.instrumentation.registry import FunctionRegistry
from funcsight.processors.rollup import RollupSpanProcessor
from funcsight.processors.windows import Window, WindowAggregator, exception_name

try:
    from opentelemetry.instrumentation.utils import suppress_instrumentation
except ImportError:  # pragma: no cover - the instrumentation package is a dependency
    from contextlib import nullcontext as suppress_instrumentation

_log = logging.getLogger("funcsight")


class ExportPipeline:
    def __init__(
        self,
        interval_s: float,
        windows: WindowAggregator,
        sink,
        sensor,
        processor: RollupSpanProcessor,
        registry: FunctionRegistry,
        consumers: list[Callable[[Window], object]],
        tracer: trace.Tracer | None,
        span_sink: Callable[[list], object] | None = None,
    ):
        self.interval_s = interval_s
        self.windows = windows
        self.sink = sink
        self.sensor = sensor
        self.processor = processor
        self.registry = registry
        self.consumers = consumers
        self.tracer = tracer
        self.span_sink = span_sink  # also receives the function spans (the store)
        self.windows_exported = 0
        self.consumer_failures = 0
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._shut_down = False
        # perf_counter_ns() + offset = epoch ns, for spans built from the sensor's timestamps.
        self._epoch_offset = time.time_ns() - time.perf_counter_ns()

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="funcsight-export", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> None:
        with self._flush_lock, suppress_instrumentation():
            try:
                sweep = getattr(self.sensor, "sweep_parked", None)
                if sweep is not None:
                    sweep()
                fresh = self.sink.new_table()
                background, self.sink.background = self.sink.background, fresh
                self.windows.add_background(background)
                window = self.windows.drain()
            except Exception:
                _log.exception("funcsight: closing a window failed")
                return
            for consume in self.consumers:
                try:
                    consume(window)
                except Exception:
                    self.consumer_failures += 1
                    _log.exception("funcsight: exporting a window failed")
            self.windows_exported += 1
            self._emit_function_spans()

    def _emit_function_spans(self) -> None:
        pending = self.processor.pending_spans
        if self.tracer is None:
            pending.clear()
            return
        functions = self.registry.functions
        offset = self._epoch_offset
        emitted = []
        while pending:
            try:
                root, calls = pending.popleft()
            except IndexError:
                break
            parent = trace.set_span_in_context(NonRecordingSpan(root))
            for fid, start, end, exc_type in calls:
                try:
                    info = functions[fid]
                    attributes = {
                        names.CODE_FUNCTION_NAME: info.name,
                        names.CODE_FILE_PATH: info.file,
                        names.CODE_LINE_NUMBER: info.line,
                    }
                    span = self.tracer.start_span(
                        info.name, context=parent, kind=SpanKind.INTERNAL, start_time=start + offset, attributes=attributes
                    )
                    if exc_type is not None:
                        type_name = exception_name(exc_type)
                        span.set_attribute(names.EXCEPTION_TYPE, type_name)
                        span.add_event("exception", {names.EXCEPTION_TYPE: type_name}, timestamp=end + offset)
                        span.set_status(Status(StatusCode.ERROR))
                    span.end(end_time=end + offset)
                    emitted.append(span)
                except Exception:
                    _log.exception("funcsight: emitting a function span failed")
        if emitted and self.span_sink is not None:
            try:
                self.span_sink(emitted)
            except Exception:
                _log.exception("funcsight: storing function spans failed")

    def shutdown(self) -> None:
        """Stop the thread and flush the last window; safe to call more than once."""
        if self._shut_down:
            return
        self._shut_down = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(1.0, self.interval_s))
        self.flush()

    def restart_after_fork(self) -> None:
        self._flush_lock = threading.Lock()
        self._shut_down = False
        self.start()
