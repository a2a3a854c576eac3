"""The OpenTelemetry instrumentor: wires sensor, rollup processor and exporters together."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, fields
from typing import Any, Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.resources import Resource

from funcsight import __version__, names
from funcsight.config import Config
from funcsight.deployment import SOURCE_RESOURCE, detect_version
from funcsight.instrumentation._pysensor import Sink
from funcsight.instrumentation.registry import FunctionRegistry
from funcsight.instrumentation.selection import CodeSelector
from funcsight.instrumentation.sensor import make_sensor

_log = logging.getLogger("funcsight")
_CONFIG_KEYS = {field.name for field in fields(Config)} - {"db_path_explicit"}


@dataclass
class Running:
    """Everything one instrumented process holds; exposed for tests, benchmarks and status."""

    config: Config
    registry: FunctionRegistry
    selector: CodeSelector
    sink: Sink
    sensor: Any
    windows: Any
    processor: Any
    pipeline: Any
    writer: Any  # StoreWriter or None
    version: str
    version_source: str
    service: str
    tracer_provider: Any
    meter_provider: Any


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
        if running is not None:
            _stop(running)


def _start(**kwargs: Any) -> Running:
    # Late imports: the OpenTelemetry SDK parts load only when funcsight is actually enabled.
    from funcsight.exporters.pipeline import ExportPipeline
    from funcsight.exporters.store_writer import ProcessIdentity, StoreSpanExporter, StoreWriter
    from funcsight.exporters.wiring import ensure_meter_provider, ensure_tracer_provider, store_enabled
    from funcsight.processors.metrics import MetricsBridge
    from funcsight.processors.rollup import RollupSpanProcessor
    from funcsight.processors.windows import WindowAggregator

    config = Config.from_env(**{key: value for key, value in kwargs.items() if key in _CONFIG_KEYS})
    registry = FunctionRegistry(config.max_functions)
    selector = CodeSelector(config)
    sink = Sink(slow_ns=int(config.slow_call_ms * 1_000_000))

    env_resource = Resource.create().attributes
    version, version_source = detect_version(env_resource.get(names.SERVICE_VERSION), selector.app_dir)
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

    windows = WindowAggregator(config.max_series, config.max_routes, _message_capture(config))
    processor = RollupSpanProcessor(windows, registry, sink, config.spans_per_trace)
    consumers = []
    writer = None
    if store_enabled(config):
        identity = ProcessIdentity(service, version, version_source, instance_id, os.getpid(), socket.gethostname(), time.time())
        writer = StoreWriter(config.db_path, registry, identity)
        consumers.append(writer.write_window)
    if meter_provider is not None:
        consumers.append(MetricsBridge(meter_provider.get_meter(names.SCOPE, __version__), registry, version).consume)
    tracer = None
    if tracer_provider is not None:
        tracer_provider.add_span_processor(processor)
        tracer = tracer_provider.get_tracer(names.SCOPE, __version__)
    # Function spans reach the store straight from the export thread; a span processor for them
    # would see (and cost) every span of the process.
    span_sink = StoreSpanExporter(writer).export if writer is not None else None

    sensor = make_sensor(config, registry, selector, sink)
    pipeline = ExportPipeline(config.export_interval_s, windows, sink, sensor, processor, registry, consumers, tracer, span_sink)
    running = Running(
        config, registry, selector, sink, sensor, windows, processor, pipeline, writer,
        version, version_source, service, tracer_provider if own_tracer else None, meter_provider if own_meter else None,
    )
    pipeline.start()
    sensor.start()
    _log.info("funcsight: sensing %s with the %s sensor (version %s)", selector.app_dir, sensor.implementation, version)
    _install_exit_hooks(running)
    return running


def _message_capture(config: Config):
    """What to keep of an exception's message: nothing unless the user opted in."""
    if not config.capture_messages:
        return None
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
            return None

    def message_of(exc: BaseException) -> str:
        text = str(exc)[:1000]
        return str(redact(text)) if redact is not None else text

    return message_of


def _stop(running: Running) -> None:
    try:
        running.sensor.stop()
    except Exception:
        _log.exception("funcsight: stopping the sensor failed")
    running.processor.enabled = False
    running.pipeline.shutdown()
    for provider in (running.tracer_provider, running.meter_provider):
        if provider is not None:
            try:
                provider.force_flush()
            except Exception:
                pass


def _install_exit_hooks(running: Running) -> None:
    def flush_at_exit() -> None:
        if FuncsightInstrumentor.running is running:
            running.pipeline.shutdown()

    atexit.register(flush_at_exit)
    # SIGTERM's default action ends the process without atexit; turn it into a normal exit (the
    # status a killed process would report) so the last window is flushed. An application that
    # handles SIGTERM itself keeps its handler.
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, _exit_on_sigterm)
        except (ValueError, OSError):
            pass
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=lambda: _after_fork(running))


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _after_fork(running: Running) -> None:
    """A forked child starts from empty aggregates, under its own process identity."""
    try:
        from dataclasses import replace

        running.windows.reset()
        running.sink.background = running.sink.new_table()
        running.processor.reset_after_fork()
        if running.writer is not None:
            identity = replace(running.writer.process, pid=os.getpid(), instance_id=str(uuid.uuid4()), started_at=time.time())
            running.writer.reset_after_fork(identity)
        running.pipeline.restart_after_fork()
    except Exception:
        _log.exception("funcsight: resetting after fork failed")


__all__ = ["FuncsightInstrumentor", "Running"]
