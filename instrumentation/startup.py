"""What a user sees of funcsight starting: one line saying what is sensed and where the data goes
(once per service: forked or spawned workers inherit a marker and stay quiet), one warning when
requests ran but no sensed function was called (naming the fix), and the first window of each
process written about a second after its first request instead of one export interval later.

``announce_start(running)`` is the one call the instrumentor makes, after the pipeline started.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

_log = logging.getLogger("funcsight")

ANNOUNCED = "_FUNCSIGHT_ANNOUNCED"
"""Set in the environment once the start-up line was printed, so the workers of one service
(forked, or spawned with the same environment) do not repeat it."""

FIRST_WINDOW_DELAY_S = 1.0  # the first window goes out this long after a process's first request
_POLL_S = 0.2
_BACKGROUND = "(background)"


def announce_start(running: Any) -> None:
    try:
        if not os.environ.get(ANNOUNCED):
            os.environ[ANNOUNCED] = str(os.getpid())
            _say(start_line(running))
        watch_sensed_traffic(running)
        write_first_window_early(running)
    except Exception:  # never stops the application
        _log.debug("funcsight: start-up report failed", exc_info=True)


def _say(line: str) -> None:
    """At info level when the application configured logging for it, else on stderr: a user who
    configured nothing must still see it, and the last-resort handler shows warnings only."""
    configured = bool(_log.handlers or logging.getLogger().handlers)
    if configured and _log.isEnabledFor(logging.INFO):
        _log.info("%s", line)
    else:
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:
            pass


def start_line(running: Any) -> str:
    selector, config = running.selector, running.config
    sensor = getattr(running.sensor, "implementation", "?")
    return (f"funcsight: sensing {selector.describe()} ({sensor} sensor, service {running.service}, "
            f"version {running.version}); data: {destinations(running)}")


def destinations(running: Any, environ=os.environ) -> str:
    """Where the windows and function spans go, from what funcsight built and the OTel variables."""
    config = running.config
    parts = []
    if running.writer is not None:
        parts.append(f"store {os.path.abspath(config.db_path)} every {config.export_interval_s:g} s")
    endpoint = (environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "")
    for signal, present in (("metrics", running.bridge is not None), ("traces", running.tracer_provider is not None
                                                                        or getattr(running.pipeline, "tracer", None) is not None)):
        names = [n.strip() for n in (environ.get(f"OTEL_{signal.upper()}_EXPORTER") or "").split(",") if n.strip()]
        if not names and endpoint:
            names = ["otlp"]
        names = [n for n in names if n != "none"]
        if present and names:
            where = f" {endpoint}" if endpoint and any(n.startswith("otlp") for n in names) else ""
            parts.append(f"{signal} to {'+'.join(names)}{where}")
    if not parts:
        return "nowhere (store off, no OpenTelemetry exporter set: see FUNCSIGHT_STORE and OTEL_EXPORTER_OTLP_ENDPOINT)"
    return "; ".join(parts)


def watch_sensed_traffic(running: Any) -> None:
    """Warn once when a window had requests and no request has called a sensed function yet."""
    state = {"sensed": False, "warned": False}

    def check(window: Any) -> None:
        if state["sensed"] or state["warned"]:
            return
        requests = sum(stats[0] for route, stats in window.routes.items() if route != _BACKGROUND)
        if any(route != _BACKGROUND for _fid, route in window.functions):
            state["sensed"] = True
        elif requests:
            state["warned"] = True
            _log.warning("%s", no_sensed_function_warning(running.selector, requests))

    running.pipeline.consumers.append(check)


def no_sensed_function_warning(selector: Any, requests: int) -> str:
    if selector.uses_app_dir and not selector.package_patterns():
        fix = (f"nothing below {selector.app_dir.rstrip(os.sep)} was called; for an app installed in site-packages set "
               "FUNCSIGHT_INCLUDE=+yourpackage (added to the app directory), or FUNCSIGHT_APP_DIR to the app's source")
    else:
        fix = (f"no module matching {', '.join(selector.package_patterns())} was called; check FUNCSIGHT_INCLUDE (a plain "
               "name such as 'shop' matches the package and its submodules; '+shop' keeps the app directory too)")
    return f"funcsight: {requests} request(s) ran but no sensed function was called: {fix}"


def write_first_window_early(running: Any) -> None:
    """Write a process's first window about a second after its first request, so a user looking
    at a just-started app sees data without waiting a whole FUNCSIGHT_EXPORT_INTERVAL; later
    windows keep the interval. Restarted in each forked child."""
    pipeline, windows = running.pipeline, running.windows
    if getattr(pipeline, "interval_s", 0) <= 2 * FIRST_WINDOW_DELAY_S:
        return

    def wait_then_flush() -> None:
        try:
            while not getattr(pipeline, "_shut_down", False):
                current = getattr(windows, "_open", None)
                if current is None:
                    return  # the aggregator changed shape: the interval alone applies
                if getattr(current, "routes", None):
                    time.sleep(FIRST_WINDOW_DELAY_S)
                    if not getattr(pipeline, "_shut_down", False):
                        pipeline.flush()
                    return
                time.sleep(_POLL_S)
        except Exception:
            _log.debug("funcsight: the early first window failed", exc_info=True)

    def start() -> None:
        threading.Thread(target=wait_then_flush, name="funcsight-first-window", daemon=True).start()

    start()
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=start)
