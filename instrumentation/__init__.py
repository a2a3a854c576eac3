"""funcsight's OpenTelemetry instrumentor: senses every function of the application's own code.

Usage
-----
Zero code changes: install funcsight next to the app and run it under the standard launcher::

    opentelemetry-instrument python app.py            # or: ... gunicorn app:app, uvicorn app:app

The instrumentor is registered under the ``opentelemetry_instrumentor`` entry point ``funcsight``,
so ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=funcsight`` turns it off (then nothing is rewritten or
monitored and it costs nothing). It can also be started in code::

    from funcsight.instrumentation import FuncsightInstrumentor
    FuncsightInstrumentor().instrument(db_path="funcsight.db")

Configuration
-------------
Keyword arguments to ``instrument()`` win over environment variables, which win over defaults; see
:mod:`funcsight.config` for every ``FUNCSIGHT_*`` variable. Keywords: ``include``, ``exclude``,
``app_dir``, ``db_path``, ``store``, ``export_interval_s``, ``slow_call_ms``, ``spans_per_trace``,
``max_series``, ``max_functions``, ``max_routes``, ``implementation``.

What it wires
-------------
sensor (this package) -> :class:`~funcsight.processors.rollup.RollupSpanProcessor` on the SDK
tracer provider -> windows -> export thread -> the embedded store and/or OpenTelemetry metrics
(OTLP, Prometheus...) and function spans. See :mod:`funcsight.exporters.wiring` for the defaults.
"""

# The instrumentor pulls in the OpenTelemetry SDK; the sensor modules of this package must not, so
# it loads on first use (``from funcsight.instrumentation import FuncsightInstrumentor`` works).


def __getattr__(name: str):
    if name in ("FuncsightInstrumentor", "Running"):
        from funcsight.instrumentation import instrumentor

        return getattr(instrumentor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FuncsightInstrumentor", "Running"]
