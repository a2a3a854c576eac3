"""The OpenTelemetry instrumentor: wires sensor, rollup processor and exporters together."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import sys
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
from funcsight.instrumentation.calls import frames_of, stack_sample
from funcsight.instrumentation.registry import FunctionRegistry
from funcsight.instrumentation.selection import CodeSelector
from funcsight.instrumentation.startup import announce_start
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
    bridge: Any = None  # MetricsBridge, when there is a meter provider


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
        if signal.signal is _signal_keeping_the_flush:
            signal.signal = _ORIGINAL_SIGNAL
        if running is not None:
            _stop(running)


def _start(**kwargs: Any) -> Running:
    # Late imports: the OpenTelemetry SDK parts load only when funcsight is actually enabled.
    from funcsight.exporters.pipeline import ExportPipeline
    from funcsight.exporters.store_writer import ProcessIdentity, StoreSpanExporter, StoreWriter
    from funcsight.exporters.wiring import FAILURES as DELIVERY_FAILURES
    from funcsight.exporters.wiring import ensure_meter_provider, ensure_tracer_provider, store_enabled
    from funcsight.processors.metrics import MetricsBridge
    from funcsight.processors.rollup import RollupSpanProcessor
    from funcsight.processors.windows import WindowAggregator

    config = Config.from_env(**{key: value for key, value in kwargs.items() if key in _CONFIG_KEYS})
    registry = FunctionRegistry(config.max_functions)
    selector = CodeSelector(config)
    sink = Sink(slow_ns=int(config.slow_call_ms * 1_000_000), sample_error=_error_sampler(config))

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

    windows = WindowAggregator(config.max_series, config.max_routes)
    processor = RollupSpanProcessor(windows, registry, sink, config.spans_per_trace, config.implementation)
    consumers = []
    writer = bridge = None
    if store_enabled(config):
        identity = ProcessIdentity(service, version, version_source, instance_id, os.getpid(), socket.gethostname(), time.time())
        writer = StoreWriter(config.db_path, registry, identity)
        consumers.append(writer.write_window)
    if meter_provider is not None:
        bridge = MetricsBridge(meter_provider.get_meter(names.SCOPE, __version__), registry, version, meter_provider)
        consumers.append(bridge.consume)
        # Spans the exporters funcsight built could not deliver count as funcsight.dropped.
        DELIVERY_FAILURES.counter = bridge.dropped
        DELIVERY_FAILURES.report()
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
        bridge,
    )
    pipeline.start()
    sensor.start()
    announce_start(running)  # the start-up line, the "nothing sensed" warning, the early first window
    _install_exit_hooks(running)
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
    try:
        running.sensor.stop()
    except Exception:
        _log.exception("funcsight: stopping the sensor failed")
    running.processor.enabled = False
    running.pipeline.shutdown()
    _finish_providers(running, shutdown=False)


def _finish_providers(running: Running, shutdown: bool) -> None:
    """Flush (uninstrument) or shut down (exit) the providers funcsight built, bounded in time: a
    backend that is down or stalled must not hold the application."""
    try:
        from funcsight.exporters.wiring import flush_within, shutdown_within

        if shutdown:
            shutdown_within(running.tracer_provider, running.meter_provider)
        else:
            flush_within((running.tracer_provider, running.meter_provider))
    except Exception:
        pass


def _install_exit_hooks(running: Running) -> None:
    def flush_at_exit() -> None:
        if FuncsightInstrumentor.running is running:
            running.pipeline.shutdown()
        # Built with shutdown_on_exit=False: their last export happens here, after the last window
        # reached them, and never holds the exit longer than wiring.EXIT_BUDGET_S.
        _finish_providers(running, shutdown=True)

    atexit.register(flush_at_exit)
    # SIGTERM's default action ends the process without atexit: flush the last window first, then
    # end the process by that same default action (see _exit_on_sigterm). An application that
    # handles SIGTERM itself keeps its handler.
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                _ORIGINAL_SIGNAL(signal.SIGTERM, _exit_on_sigterm)
        except (ValueError, OSError):
            pass
    # Servers that put SIGTERM back to its default action in their workers (gunicorn's uvicorn
    # worker does, then re-raises SIGTERM to die by it) would skip the flush: setting SIGTERM to the
    # default installs the flushing equivalent instead, which still ends the process by the signal.
    signal.signal = _signal_keeping_the_flush
    if hasattr(os, "register_at_fork"):
        if running.writer is not None:
            os.register_at_fork(before=running.writer.before_fork, after_in_parent=running.writer.after_fork_in_parent)
        os.register_at_fork(after_in_child=lambda: _after_fork(running))


SIGTERM_FLUSH_BUDGET_S = 10.0  # the longest SIGTERM waits for the last window (store and exporters)
_ORIGINAL_SIGNAL = signal.signal


def _signal_keeping_the_flush(signalnum, handler):
    if signalnum == signal.SIGTERM and handler == signal.SIG_DFL and FuncsightInstrumentor.running is not None:
        handler = _exit_on_sigterm
    return _ORIGINAL_SIGNAL(signalnum, handler)


def _exit_on_sigterm(signum, frame) -> None:
    """Flush this process's last window, then die by SIGTERM's default action, exactly as without
    funcsight (status -15; the application's own handlers never see an exception it did not ask
    for). Raising SystemExit instead can be swallowed (by an ``except BaseException``, or inside an
    at-fork hook such as the OpenTelemetry SDK's): the process would then ignore SIGTERM, and a
    ``multiprocessing`` pool terminating its workers would wait for them forever."""
    running = FuncsightInstrumentor.running
    try:
        if running is not None and not getattr(running.pipeline, "_shut_down", False):
            _bounded(lambda: _flush_for_exit(running), SIGTERM_FLUSH_BUDGET_S)
        elif running is not None:  # already exiting: let that finish; a second SIGTERM ends it
            _ORIGINAL_SIGNAL(signum, signal.SIG_DFL)
            return
    except Exception:
        pass
    _ORIGINAL_SIGNAL(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _flush_for_exit(running: Running) -> None:
    running.pipeline.shutdown()
    _finish_providers(running, shutdown=True)


def _bounded(work, timeout_s: float) -> None:
    """Run ``work`` on its own thread and wait at most ``timeout_s``: a signal handler interrupts
    the main thread wherever it is, possibly holding a lock the work needs."""
    try:
        worker = threading.Thread(target=work, name="funcsight-sigterm", daemon=True)
        worker.start()
    except RuntimeError:  # the interpreter is finalizing
        return
    worker.join(timeout_s)


def _flush_forked_child_at_exit(running: Running) -> None:
    """In a ``multiprocessing`` child (after its own after-fork bookkeeping): flush when the child
    ends. Such a child ends with ``os._exit()``, which skips atexit, after running
    ``multiprocessing``'s finalizers; without this its calls would be lost."""
    import multiprocessing.util

    def flush() -> None:
        if FuncsightInstrumentor.running is running:
            _flush_for_exit(running)

    multiprocessing.util.Finalize(None, flush, exitpriority=0)


def _flush_celery_child_at_exit(running: Running) -> None:
    """Celery's prefork children (billiard) end with ``os._exit()`` after sending
    ``worker_process_shutdown``: flush there, or a child's last window is lost."""
    try:
        from celery.signals import worker_process_shutdown
    except Exception:
        return

    def flush(**_kwargs) -> None:
        if FuncsightInstrumentor.running is running:
            _flush_for_exit(running)

    worker_process_shutdown.connect(flush, weak=False)


def _child_instance_id() -> str:
    """The service.instance.id the OTel SDK gives this forked child: its providers re-run the
    process-dependent resource detectors after a fork, and that detector keeps one id per pid, so
    the store and the exported telemetry name the child alike."""
    try:
        from opentelemetry.sdk.resources import ServiceInstanceIdResourceDetector

        return str(ServiceInstanceIdResourceDetector().detect().attributes[names.SERVICE_INSTANCE_ID])
    except Exception:  # an SDK without that detector keeps the parent's id in its resource
        return str(uuid.uuid4())


def _after_fork(running: Running) -> None:
    """A forked child starts from empty aggregates, under its own process identity."""
    try:
        from dataclasses import replace

        running.windows.reset()
        running.sink.background = running.sink.new_table()
        running.processor.reset_after_fork()
        if running.writer is not None:
            identity = replace(running.writer.process, pid=os.getpid(), instance_id=_child_instance_id(), started_at=time.time())
            running.writer.reset_after_fork(identity)
        if running.bridge is not None and not running.bridge.forget_parent_totals():
            _log.warning("funcsight: this OpenTelemetry SDK's metric storage is not the expected one: a forked "
                         "child's funcsight counters start from its parent's totals")
        running.pipeline.restart_after_fork()
        # A thread of the parent may have been registering a function at the fork: its lock was
        # copied held, and the child's first new function would wait for it forever.
        running.registry._lock = threading.Lock()
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:  # runs in the child's Process._bootstrap, after its finalizers reset
            mp_util.register_after_fork(running, _flush_forked_child_at_exit)
        if "celery" in sys.modules:
            _flush_celery_child_at_exit(running)
    except Exception:
        _log.exception("funcsight: resetting after fork failed")


__all__ = ["FuncsightInstrumentor", "Running"]
