"""The export pipeline: one daemon thread that, every interval, closes a window and hands it on.

Per interval it calls ``drain`` (the rollup processor's: it returns one closed
:class:`~funcsight.processors.windows.Window`) and gives that window to each consumer in turn (the
store writer, OpenTelemetry metrics, function spans). Nothing flows back: the consumers read the
window and nothing else. A consumer that fails is logged and skipped; the others still run. On
shutdown (normal exit, SIGTERM, SIGINT) the last window is flushed once. A process's first
window goes out ``first_window_s`` after its first request rather than a whole interval after the
start, so a user looking at a just-started app sees data within seconds (for intervals up to a
minute: a longer one was asked for, and gets windows at that interval only). The thread runs with
instrumentation suppressed, so the exporters' own I/O is never observed.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from funcsight.processors.windows import Window

try:
    from opentelemetry.instrumentation.utils import suppress_instrumentation
except ImportError:  # pragma: no cover - the instrumentation package is a dependency
    from contextlib import nullcontext as suppress_instrumentation

_log = logging.getLogger("funcsight")
FIRST_WINDOW_S = 1.0  # a process's first window goes out this long after its first request
EARLY_FIRST_WINDOW_MAX_INTERVAL_S = 60.0  # longer intervals were asked for: windows only at them
_TRAFFIC_POLL_S = 0.2


class ExportPipeline:
    def __init__(self, interval_s: float, drain: Callable[[], Window], consumers: list[Callable[[Window], object]],
                 has_traffic: Callable[[], bool] | None = None, first_window_s: float = FIRST_WINDOW_S):
        self.interval_s = interval_s
        self.has_traffic = has_traffic  # whether the open window holds a request yet
        self.first_window_s = first_window_s
        self.drain = drain
        self.consumers = consumers
        self.windows_exported = 0
        self.consumer_failures = 0
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._shut_down = False

    @property
    def shut_down(self) -> bool:
        """True once :meth:`shutdown` ran (the last window is flushed or being flushed)."""
        return self._shut_down

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="funcsight-export", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self.has_traffic is not None and 2 * self.first_window_s < self.interval_s <= EARLY_FIRST_WINDOW_MAX_INTERVAL_S:
            self._first_window()
        while not self._stop.wait(self.interval_s):
            self.flush()

    def _first_window(self) -> None:
        waited = 0.0
        while waited < self.interval_s:
            try:
                busy = self.has_traffic()
            except Exception:
                return  # the interval alone applies
            if busy:
                if not self._stop.wait(self.first_window_s):
                    self.flush()
                return
            if self._stop.wait(_TRAFFIC_POLL_S):
                return
            waited += _TRAFFIC_POLL_S
        self.flush()  # a quiet first interval: its window (background calls only) as usual

    def flush(self) -> None:
        with self._flush_lock, suppress_instrumentation():
            try:
                window = self.drain()
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

    def shutdown(self) -> None:
        """Stop the thread and flush the last window; safe to call more than once."""
        if self._shut_down:
            return
        self._shut_down = True
        self._stop.set()
        thread = self._thread
        # is_alive(): a signal can arrive between a thread's creation and its start (a pool worker
        # terminated just after the fork restarted this thread), and join() refuses such a thread.
        if thread is not None and thread is not threading.current_thread() and thread.is_alive():
            thread.join(timeout=max(1.0, self.interval_s))
        self.flush()

    def restart_after_fork(self) -> None:
        self._flush_lock = threading.Lock()
        self._shut_down = False
        self.start()
