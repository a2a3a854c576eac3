"""Where the data goes: OpenTelemetry providers and exporters, and the embedded store default.

When a distro or configurator (``opentelemetry-distro``) already built SDK providers under
``opentelemetry-instrument``, funcsight adds to them. Otherwise it builds them itself: exporters come
from ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` (entry-point names: ``otlp``,
``otlp_proto_http``, ``console``, ``prometheus``...), defaulting to ``otlp`` when an OTLP endpoint
is set and to none otherwise; ``otlp`` follows ``OTEL_EXPORTER_OTLP_PROTOCOL`` like the SDK does.

The store is on when ``FUNCSIGHT_STORE=on`` or ``FUNCSIGHT_DB`` is set, off when
``FUNCSIGHT_STORE=off``, and otherwise on unless an OTLP endpoint or the Prometheus metrics exporter
is configured. Both may be on at once.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from funcsight.config import Config

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
    provider = TracerProvider(resource=Resource.create(resource_attributes))
    for name in _exporter_names("OTEL_TRACES_EXPORTER", "TRACES", environ):
        exporter_class = _load("opentelemetry_traces_exporter", name)
        if exporter_class is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter_class()))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:  # someone else's non-SDK provider won
        _log.warning("funcsight: a non-SDK tracer provider is installed; requests cannot be linked to routes")
        return None, False
    return provider, True


def ensure_meter_provider(resource_attributes: dict, environ=os.environ) -> tuple[MeterProvider | None, bool]:
    """The SDK meter provider to add to, building one only when a metrics exporter is configured:
    a provider with no reader would only make every other instrumentation's metrics cost CPU."""
    current = metrics.get_meter_provider()
    if isinstance(current, MeterProvider):
        return current, False
    readers = []
    for name in _exporter_names("OTEL_METRICS_EXPORTER", "METRICS", environ):
        exporter_class = _load("opentelemetry_metrics_exporter", name)
        if exporter_class is None:
            continue
        if isinstance(exporter_class, type) and issubclass(exporter_class, MetricReader):
            readers.append(exporter_class())
        else:
            readers.append(PeriodicExportingMetricReader(exporter_class()))
    if not readers:
        return None, False
    provider = MeterProvider(resource=Resource.create(resource_attributes), metric_readers=readers)
    metrics.set_meter_provider(provider)
    if metrics.get_meter_provider() is not provider:
        return None, False
    return provider, True
