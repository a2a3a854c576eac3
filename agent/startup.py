"""What a user sees of funcsight starting: one line saying what is sensed and where the data goes
(once per service: forked or spawned workers inherit a marker and stay quiet) and one warning when
requests ran but no sensed function was called (naming the fix). The first window of each process
goes out about a second after its first request (the export pipeline's ``first_window_s``).

``announce_start(running)`` is the one call the instrumentor makes, after the pipeline started.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

_log = logging.getLogger("funcsight")

ANNOUNCED = "_FUNCSIGHT_ANNOUNCED"
"""Set in the environment once the start-up line was printed, so the workers of one service
(forked, or spawned with the same environment) do not repeat it."""

_BACKGROUND = "(background)"


def announce_start(running: Any) -> None:
    try:
        if not os.environ.get(ANNOUNCED):
            os.environ[ANNOUNCED] = str(os.getpid())
            _say(start_line(running))
        watch_sensed_traffic(running)
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
    selector = running.selector
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
