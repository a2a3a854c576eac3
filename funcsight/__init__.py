"""funcsight: a function-level runtime sensor for Python, built on OpenTelemetry.

The package is split by role; data flows one way:

    instrumentation (sensor) -> processors (rollup) -> exporters (store / OTLP)
    store <- analysis <- cli

This top-level module holds only what every part shares: the version, configuration and names.
"""

__version__ = "0.1.0"
