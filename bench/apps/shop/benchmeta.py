"""What is really running in a bench app's process, for its ``/_bench/meta`` route: the benchmark
prints it next to the figures (the interpreter, whether OpenTelemetry and the framework's
instrumentation are in, the tracer provider, which funcsight sensor runs)."""

from __future__ import annotations

import platform
import sys


def describe(framework_instrumented: bool, functions_per_request: int | None, route: str) -> dict:
    instrumentation = sys.modules.get("funcsight.agent")
    running = getattr(getattr(instrumentation, "FuncsightInstrumentor", None), "running", None)
    trace = sys.modules.get("opentelemetry.trace")
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "otel": "opentelemetry.instrumentation.auto_instrumentation" in sys.modules,
        "framework_instrumented": framework_instrumented,
        "tracer_provider": type(trace.get_tracer_provider()).__name__ if trace is not None else None,
        "funcsight": running.sensor.implementation if running is not None else None,
        "functions_per_request": functions_per_request,
        "route": route,
    }
