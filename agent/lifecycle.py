"""The process lifecycle of a running agent: exit, SIGTERM, fork, and children that skip atexit.

* Normal exit (atexit) and SIGINT: the last window is flushed, then the providers funcsight built
  are shut down within :data:`funcsight.agent.providers.EXIT_BUDGET_S`.
* SIGTERM: if the application set no handler, funcsight flushes (at most
  :data:`SIGTERM_FLUSH_BUDGET_S`) and then dies of SIGTERM by its default action, as the process
  would have; an application's own handler is kept. Servers that put SIGTERM back to its default
  in their workers get the flushing equivalent instead (``signal.signal`` is wrapped while running).
* Fork: a child starts from empty windows and zeroed counters, under its own process identity.
  ``multiprocessing`` and Celery prefork children end with ``os._exit()`` (no atexit): their last
  window is flushed from their own shutdown hooks.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

from funcsight import names

_log = logging.getLogger("funcsight")

SIGTERM_FLUSH_BUDGET_S = 10.0  # the longest SIGTERM waits for the last window (store and exporters)
_ORIGINAL_SIGNAL = signal.signal
_running: Any = None  # the agent's Running while it runs (FuncsightInstrumentor.running)


def install(running) -> None:
    """Make ``running`` the process's agent and hook its flush into exit, SIGTERM and fork."""
    global _running
    _running = running

    def flush_at_exit() -> None:
        if _running is running:
            running.pipeline.shutdown()
            _finish_store(running)
        # Built with shutdown_on_exit=False: their last export happens here, after the last window
        # reached them, and never holds the exit longer than providers.EXIT_BUDGET_S.
        finish_providers(running, shutdown=True)

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


def uninstall() -> None:
    """The agent stopped: hooks registered for it do nothing more (atexit and at-fork hooks cannot
    be removed; they check that their agent is still the running one)."""
    global _running
    _running = None
    if signal.signal is _signal_keeping_the_flush:
        signal.signal = _ORIGINAL_SIGNAL


def finish_providers(running, shutdown: bool) -> None:
    """Flush (uninstrument) or shut down (exit) the providers funcsight built, bounded in time: a
    backend that is down or stalled must not hold the application."""
    try:
        from funcsight.agent.providers import flush_within, shutdown_within

        if shutdown:
            shutdown_within(running.tracer_provider, running.meter_provider)
        else:
            flush_within((running.tracer_provider, running.meter_provider))
    except Exception:
        pass


def _signal_keeping_the_flush(signalnum, handler):
    if signalnum == signal.SIGTERM and handler == signal.SIG_DFL and _running is not None:
        handler = _exit_on_sigterm
    return _ORIGINAL_SIGNAL(signalnum, handler)


def _exit_on_sigterm(signum, frame) -> None:
    """Flush this process's last window, then die by SIGTERM's default action, exactly as without
    funcsight (status -15; the application's own handlers never see an exception it did not ask
    for). Raising SystemExit instead can be swallowed (by an ``except BaseException``, or inside an
    at-fork hook such as the OpenTelemetry SDK's): the process would then ignore SIGTERM, and a
    ``multiprocessing`` pool terminating its workers would wait for them forever."""
    running = _running
    try:
        if running is not None and not running.pipeline.shut_down:
            _bounded(lambda: _flush_for_exit(running), SIGTERM_FLUSH_BUDGET_S)
        elif running is not None:  # already exiting: let that finish; a second SIGTERM ends it
            _ORIGINAL_SIGNAL(signum, signal.SIG_DFL)
            return
    except Exception:
        pass
    _ORIGINAL_SIGNAL(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _flush_for_exit(running) -> None:
    running.pipeline.shutdown()
    _finish_store(running)
    finish_providers(running, shutdown=True)


def _finish_store(running) -> None:
    """After the last window: what the store could not take goes to a side store, or is counted
    and said lost (before the providers' last export, which carries that count)."""
    if running.writer is not None:
        try:
            running.writer.finish()
        except Exception:
            _log.exception("funcsight: saving the store's waiting windows at exit failed")


def _bounded(work, timeout_s: float) -> None:
    """Run ``work`` on its own thread and wait at most ``timeout_s``: a signal handler interrupts
    the main thread wherever it is, possibly holding a lock the work needs."""
    try:
        worker = threading.Thread(target=work, name="funcsight-sigterm", daemon=True)
        worker.start()
    except RuntimeError:  # the interpreter is finalizing
        return
    worker.join(timeout_s)


def _flush_forked_child_at_exit(running) -> None:
    """In a ``multiprocessing`` child (after its own after-fork bookkeeping): flush when the child
    ends. Such a child ends with ``os._exit()``, which skips atexit, after running
    ``multiprocessing``'s finalizers; without this its calls would be lost."""
    import multiprocessing.util

    def flush() -> None:
        if _running is running:
            _flush_for_exit(running)

    multiprocessing.util.Finalize(None, flush, exitpriority=0)


def _flush_celery_child_at_exit(running) -> None:
    """Celery's prefork children (billiard) end with ``os._exit()`` after sending
    ``worker_process_shutdown``: flush there, or a child's last window is lost."""
    try:
        from celery.signals import worker_process_shutdown
    except Exception:
        return

    def flush(**_kwargs) -> None:
        if _running is running:
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


def _after_fork(running) -> None:
    """A forked child starts from empty aggregates, under its own process identity."""
    try:
        # A thread of the parent may have been registering a function at the fork: its lock was
        # copied held, and the child's first new function would wait for it forever.
        running.registry.reset_after_fork()
        running.processor.reset_after_fork()  # windows, background calls, open requests, counters
        if running.writer is not None:
            identity = replace(running.writer.process, pid=os.getpid(), instance_id=_child_instance_id(), started_at=time.time())
            running.writer.reset_after_fork(identity)
        if running.bridge is not None and not running.bridge.forget_parent_totals():
            _log.warning("funcsight: this OpenTelemetry SDK's metric storage is not the expected one: a forked "
                         "child's funcsight counters start from its parent's totals")
        running.pipeline.restart_after_fork()
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:  # runs in the child's Process._bootstrap, after its finalizers reset
            mp_util.register_after_fork(running, _flush_forked_child_at_exit)
        if "celery" in sys.modules:
            _flush_celery_child_at_exit(running)
    except Exception:
        _log.exception("funcsight: resetting after fork failed")


__all__ = ["SIGTERM_FLUSH_BUDGET_S", "finish_providers", "install", "uninstall"]
