"""The SDK providers the agent adds to or builds, and whether the embedded store is on.

When a distro or configurator (``opentelemetry-distro``) already built SDK providers under
``opentelemetry-instrument``, funcsight adds to them. Otherwise it builds them itself: exporters come
from ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` (entry-point names: ``otlp``,
``otlp_proto_http``, ``console``, ``prometheus``...), defaulting to ``otlp`` when an OTLP endpoint
is set and to none otherwise; ``otlp`` follows ``OTEL_EXPORTER_OTLP_PROTOCOL`` like the SDK does.

The store is on when ``FUNCSIGHT_STORE=on`` or ``FUNCSIGHT_DB`` is set, off when
``FUNCSIGHT_STORE=off``, and otherwise on unless an OTLP endpoint or the Prometheus metrics exporter
is configured. Both may be on at once.

What funcsight builds it also shuts down, within a bounded time: the SDK's exporters retry an
export for up to ``OTEL_EXPORTER_OTLP_TIMEOUT`` (10 s) per signal, so an unreachable or stalled
backend would otherwise hold a stopping application for 15 s or more (longer than many process
managers wait before SIGKILL). Spans an exporter could not deliver are counted (``funcsight.dropped``
with ``reason=span_export_failed``); metrics are cumulative, so what a failed export carried arrives
with the next export that succeeds.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from opentelemetry import metrics, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from funcsight.config import Config

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider

_log = logging.getLogger("funcsight")
_OTLP_ENDPOINTS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


def otlp_configured(environ=os.environ) -> bool:
    return any(environ.get(name) for name in _OTLP_ENDPOINTS)


def store_enabled(config: Config, environ=os.environ) -> bool:
    if config.store != "auto":
        return config.store == "on"
    if config.db_path_explicit:
        return True
    metrics_exporters = _names(environ.get("OTEL_METRICS_EXPORTER"))
    return not otlp_configured(environ) and "prometheus" not in metrics_exporters


def _names(value: str | None) -> list[str]:
    return [part.strip().lower() for part in (value or "").split(",") if part.strip()]


_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


def _exporter_names(variable: str, signal: str, environ) -> list[str]:
    names = _names(environ.get(variable))
    if not names:
        names = ["otlp"] if otlp_configured(environ) else []
    return [_otlp_by_protocol(signal, environ) if name == "otlp" else name for name in names if name != "none"]


def _otlp_by_protocol(signal: str, environ) -> str:
    """``otlp`` means gRPC or HTTP by ``OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL`` /
    ``OTEL_EXPORTER_OTLP_PROTOCOL`` (default grpc), as the SDK's own configurator reads them."""
    protocol = (
        environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    ).strip().lower()
    name = _OTLP_BY_PROTOCOL.get(protocol)
    if name is None:
        _log.warning("funcsight: OTLP protocol %r is not supported (grpc or http/protobuf); using grpc", protocol)
        return _OTLP_BY_PROTOCOL["grpc"]
    return name


EXIT_BUDGET_S = 3.0  # the longest the exit waits for the last export to a backend


class DeliveryFailures:
    """What the exporters funcsight built could not deliver. ``counter`` (``funcsight.dropped``) is
    set once the metrics bridge exists; counts made before that are added then."""

    def __init__(self):
        self.spans = 0
        self.counter = None
        self._reported = 0
        self._lock = threading.Lock()

    def spans_lost(self, count: int) -> None:
        with self._lock:
            self.spans += count
        self.report()

    def report(self) -> None:
        counter = self.counter
        if counter is None:
            return
        with self._lock:
            delta, self._reported = self.spans - self._reported, self.spans
        if delta:
            counter.add(delta, {"reason": "span_export_failed"})


FAILURES = DeliveryFailures()
_BUILT_PROCESSORS: list = []  # batch span processors funcsight built: shut down within the budget


class CountingSpanExporter(SpanExporter):
    """Delegates to ``inner`` and counts the spans of every export that failed."""

    def __init__(self, inner: SpanExporter, failures: DeliveryFailures = FAILURES):
        self.inner = inner
        self.failures = failures

    def export(self, spans) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            _log.warning("funcsight: the span exporter %s raised; %d spans dropped", type(self.inner).__name__, len(spans))
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.failures.spans_lost(len(spans))
        return result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        try:
            self.inner.shutdown(timeout_millis=timeout_millis)
        except TypeError:
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _build_exporter(exporter_class, name: str):
    """An exporter instance, or None (one warning line) when its own configuration is unusable:
    a bad endpoint or protocol must not keep funcsight, let alone the application, from starting."""
    try:
        exporter = exporter_class()
    except Exception as err:
        _log.warning("funcsight: the %s exporter cannot be built (%s: %s); that signal is not exported", name, type(err).__name__, err)
        return None
    return exporter


def shutdown_within(tracer_provider, meter_provider, budget_s: float = EXIT_BUDGET_S) -> bool:
    """Shut down the providers funcsight built, metrics first (the last window is there), waiting
    at most ``budget_s`` in all: past it the exporters are stopped, which ends their retries. Runs
    on the exiting thread (no new thread can start at exit on 3.12+). True when all finished."""
    deadline = time.monotonic() + budget_s

    def left_ms() -> float:
        return max(0.0, deadline - time.monotonic()) * 1000

    if meter_provider is not None:
        try:
            meter_provider.shutdown(timeout_millis=max(left_ms(), 1.0))
        except Exception:
            pass
    if tracer_provider is not None:
        for processor in list(_BUILT_PROCESSORS):
            batch = getattr(processor, "_batch_processor", None)  # the SDK's shutdown takes no timeout
            try:
                if batch is not None:
                    batch.shutdown(timeout_millis=left_ms())
            except Exception:
                pass
        try:
            tracer_provider.shutdown()
        except Exception:
            pass
    if time.monotonic() <= deadline:
        return True
    _log.warning("funcsight: the telemetry backend did not take the last export within %.0f s; exiting without it", budget_s)
    return False


def flush_within(providers, budget_s: float = EXIT_BUDGET_S) -> bool:
    """Flush the providers funcsight built (on uninstrument), waiting at most ``budget_s``."""
    providers = [provider for provider in providers if provider is not None]
    if not providers:
        return True

    def run() -> None:
        for provider in providers:
            try:
                provider.force_flush(int(budget_s * 1000))
            except Exception:
                pass

    try:
        worker = threading.Thread(target=run, name="funcsight-otel-flush", daemon=True)
        worker.start()
    except RuntimeError:  # at interpreter exit
        return False
    worker.join(budget_s)
    return not worker.is_alive()


def _load(group: str, name: str):
    for entry_point in entry_points(group=group, name=name):
        return entry_point.load()
    _log.warning("funcsight: no %s exporter named %r is installed (pip install opentelemetry-exporter-%s)", group, name, name.split("_")[0])
    return None


def ensure_tracer_provider(resource_attributes: dict, environ=os.environ) -> tuple[TracerProvider | None, bool]:
    """The SDK tracer provider to add to, building and registering one if needed; and whether
    funcsight built it (then funcsight shuts it down)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current, False
    # funcsight shuts it down itself, within EXIT_BUDGET_S (see shutdown_within).
    provider = TracerProvider(resource=Resource.create(resource_attributes), shutdown_on_exit=False)
    for name in _exporter_names("OTEL_TRACES_EXPORTER", "TRACES", environ):
        exporter_class = _load("opentelemetry_traces_exporter", name)
        exporter = _build_exporter(exporter_class, name) if exporter_class is not None else None
        if exporter is not None:
            processor = BatchSpanProcessor(CountingSpanExporter(exporter))
            _BUILT_PROCESSORS.append(processor)
            provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:  # someone else's non-SDK provider won
        _log.warning("funcsight: a non-SDK tracer provider is installed; requests cannot be linked to routes")
        return None, False
    return provider, True


def ensure_meter_provider(resource_attributes: dict, environ=os.environ) -> tuple[MeterProvider | None, bool]:
    """The SDK meter provider to add to, building one only when a metrics exporter is configured:
    a provider with no reader would only make every other instrumentation's metrics cost CPU.
    The SDK's metrics package (~30 ms to import) is imported only when there is a provider."""
    names = None
    if "opentelemetry.sdk.metrics" not in sys.modules:  # then no SDK meter provider exists yet
        names = _exporter_names("OTEL_METRICS_EXPORTER", "METRICS", environ)
        if not names:
            return None, False
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

    current = metrics.get_meter_provider()
    if isinstance(current, MeterProvider):
        return current, False
    readers = []
    for name in names if names is not None else _exporter_names("OTEL_METRICS_EXPORTER", "METRICS", environ):
        exporter_class = _load("opentelemetry_metrics_exporter", name)
        exporter = _build_exporter(exporter_class, name) if exporter_class is not None else None
        if exporter is None:
            continue
        readers.append(exporter if isinstance(exporter, MetricReader) else PeriodicExportingMetricReader(exporter))
    if not readers:
        return None, False
    provider = MeterProvider(resource=Resource.create(resource_attributes), metric_readers=readers, shutdown_on_exit=False)
    metrics.set_meter_provider(provider)
    if metrics.get_meter_provider() is not provider:
        return None, False
    return provider, True
