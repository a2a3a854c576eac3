"""The OpenTelemetry instrumentor: builds the write side's parts, wires them together, stops them.

``_start`` makes, in order: the configuration (keyword > env var > default), the sensor (which
brings the sink it feeds), the SDK providers (added to, or built: :mod:`funcsight.agent.providers`),
the rollup span processor and its windows, the consumers of a closed window (store writer,
OpenTelemetry metrics, function spans) and the export thread; then it switches the sensor on and
hooks the process lifecycle (:mod:`funcsight.agent.lifecycle`). ``_stop`` undoes it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, fields
from typing import Any, Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.resources import Resource

from funcsight import __version__, names
from funcsight.agent import lifecycle, threads
from funcsight.agent.providers import FAILURES as DELIVERY_FAILURES
from funcsight.agent.providers import ensure_meter_provider, ensure_tracer_provider, store_enabled
from funcsight.agent.startup import announce_start
from funcsight.config import Config
from funcsight.deployment import SOURCE_RESOURCE, detect_version
from funcsight.exporters.metrics import MetricsBridge
from funcsight.exporters.pipeline import ExportPipeline
from funcsight.exporters.spans import FunctionSpanEmitter
from funcsight.instrumentation._pysensor import Sink
from funcsight.instrumentation.calls import frames_of, stack_sample
from funcsight.instrumentation.registry import FunctionRegistry
from funcsight.instrumentation.selection import CodeSelector
from funcsight.instrumentation.sensor import make_sensor
from funcsight.processors.rollup import RollupSpanProcessor
from funcsight.processors.windows import make_windows

_log = logging.getLogger("funcsight")
_CONFIG_KEYS = {field.name for field in fields(Config)} - {"db_path_explicit"}


@dataclass
class Running:
    """Everything one instrumented process holds; exposed for tests, benchmarks and status."""

    config: Config
    registry: FunctionRegistry
    selector: CodeSelector
    sink: Sink  # the sensor's own (sensor.sink)
    sensor: Any
    windows: Any  # processors.windows.WindowAggregator or its C twin
    processor: RollupSpanProcessor
    pipeline: ExportPipeline
    writer: Any  # exporters.store_writer.StoreWriter, or None when the store is off
    version: str
    version_source: str
    service: str
    tracer_provider: Any  # the providers funcsight built (and so shuts down), else None
    meter_provider: Any
    bridge: MetricsBridge | None = None  # when there is a meter provider
    spans: FunctionSpanEmitter | None = None  # when there is a tracer provider


class FuncsightInstrumentor(BaseInstrumentor):
    running: Running | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        try:
            FuncsightInstrumentor.running = _start(**kwargs)
        except Exception:  # the application must start even when funcsight cannot
            _log.exception("funcsight: could not start; the application runs unsensed")

    def _uninstrument(self, **kwargs: Any) -> None:
        running, FuncsightInstrumentor.running = FuncsightInstrumentor.running, None
        lifecycle.uninstall()
        if running is not None:
            _stop(running)


def _start(**kwargs: Any) -> Running:
    config = Config.from_env(**{key: value for key, value in kwargs.items() if key in _CONFIG_KEYS})
    registry = FunctionRegistry(config.max_functions)
    selector = CodeSelector(config)
    sensor = make_sensor(config, registry, selector, _error_sampler(config))

    env_resource = Resource.create().attributes
    version, version_source = detect_version(env_resource.get(names.SERVICE_VERSION), selector.app_dir, selector)
    instance_id = str(env_resource.get(names.SERVICE_INSTANCE_ID) or uuid.uuid4())
    extra = {names.SERVICE_VERSION: version, names.SERVICE_INSTANCE_ID: instance_id}
    tracer_provider, own_tracer = ensure_tracer_provider(extra)
    meter_provider, own_meter = ensure_meter_provider(extra)
    resource = tracer_provider.resource.attributes if tracer_provider is not None else env_resource
    service = str(resource.get(names.SERVICE_NAME) or "")
    if not service or service.startswith("unknown_service"):
        service = os.path.basename(selector.app_dir.rstrip(os.sep)) or "app"
    if version_source != SOURCE_RESOURCE and resource.get(names.SERVICE_VERSION) and not own_tracer:
        version, version_source = str(resource[names.SERVICE_VERSION]), SOURCE_RESOURCE

    windows = make_windows(config.max_series, config.max_routes, config.implementation, sensor.paths, config.max_paths)
    processor = RollupSpanProcessor(windows, registry, sensor, config.spans_per_trace, config.implementation)
    consumers = []
    writer = bridge = spans = None
    if store_enabled(config):
        # Only now: with the store off, neither the writer nor sqlite3 is imported.
        from funcsight.exporters.store_writer import ProcessIdentity, StoreWriter

        identity = ProcessIdentity(service, version, version_source, instance_id, os.getpid(), socket.gethostname(), time.time())
        writer = StoreWriter(config.db_path, registry, identity)
        consumers.append(writer.write_window)
    if meter_provider is not None:
        bridge = MetricsBridge(meter_provider.get_meter(names.SCOPE, __version__), registry, version, meter_provider)
        consumers.append(bridge.consume)
        if writer is not None:
            dropped = bridge.dropped
            writer.on_lost = lambda requests: dropped.add(requests, {"reason": "store_write_failed"})
        # Spans the exporters funcsight built could not deliver count as funcsight.dropped.
        DELIVERY_FAILURES.counter = bridge.dropped
        DELIVERY_FAILURES.report()
    if tracer_provider is not None:
        tracer_provider.add_span_processor(processor)
        spans = FunctionSpanEmitter(tracer_provider.get_tracer(names.SCOPE, __version__), registry)
        consumers.append(spans.consume)

    pipeline = ExportPipeline(config.export_interval_s, processor.drain, consumers,
                              has_traffic=lambda: windows.open_counts()["requests"] > 0)
    # funcsight's own counters kept outside the processor ride on each window too (store and metrics).
    processor.counter_sources["consumer_failures"] = lambda: pipeline.consumer_failures
    processor.counter_sources["span_export_failures"] = lambda: DELIVERY_FAILURES.spans
    if writer is not None:
        processor.counter_sources["dropped_windows"] = lambda: writer.dropped_windows
    running = Running(
        config, registry, selector, sensor.sink, sensor, windows, processor, pipeline, writer,
        version, version_source, service, tracer_provider if own_tracer else None, meter_provider if own_meter else None,
        bridge, spans,
    )
    pipeline.start()
    sensor.start()
    announce_start(running)  # the start-up line and the "nothing sensed" warning
    lifecycle.install(running)
    threads.install(sensor)  # a thread pool's tasks belong to the request (and call) that submitted them
    return running


def _error_sampler(config: Config):
    """What is kept of an exception, once per function x type per request: its stack (names,
    files, lines) and, only if the user opted in, its message through the redaction hook."""
    if not config.capture_messages:
        return stack_sample
    redact = None
    if config.redact:
        import importlib

        module, _, attribute = config.redact.partition(":")
        try:
            redact = importlib.import_module(module)
            for part in attribute.split("."):
                redact = getattr(redact, part)
        except Exception as err:
            _log.warning("funcsight: FUNCSIGHT_REDACT=%s cannot be loaded (%s); exception messages are not kept", config.redact, err)
            return stack_sample

    def sample_with_message(exc: BaseException) -> tuple:
        try:
            text = str(exc)[:1000]
            message = str(redact(text)) if redact is not None else text
        except Exception:
            message = "(the message or the redaction hook failed)"
        return frames_of(exc), message

    return sample_with_message


def _stop(running: Running) -> None:
    threads.uninstall()
    try:
        running.sensor.stop()
    except Exception:
        _log.exception("funcsight: stopping the sensor failed")
    running.processor.enabled = False
    running.pipeline.shutdown()
    lifecycle.finish_providers(running, shutdown=False)


__all__ = ["FuncsightInstrumentor", "Running"]
