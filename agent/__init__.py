"""funcsight's agent: the OpenTelemetry instrumentor that senses every function of the application's
own code and wires the whole write side (sensor -> rollup processor -> windows -> export thread ->
store / OpenTelemetry) into the process.

Usage
-----
Zero code changes: install funcsight next to the app and run it under the standard launcher::

    opentelemetry-instrument python app.py            # or: ... gunicorn app:app, uvicorn app:app

The instrumentor is registered under the ``opentelemetry_instrumentor`` entry point ``funcsight``
(``funcsight.agent:FuncsightInstrumentor``), so ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=funcsight``
turns it off (then nothing is rewritten or monitored and it costs nothing). It can also be started
in code::

    from funcsight.agent import FuncsightInstrumentor
    FuncsightInstrumentor().instrument(db_path="funcsight.db")

``FuncsightInstrumentor.running`` (a :class:`Running`) holds the parts of the running agent, for
tests, benchmarks and status: ``running.sensor.implementation`` says which sensor runs.

Configuration
-------------
Keyword arguments to ``instrument()`` win over environment variables, which win over defaults; see
:mod:`funcsight.config` for every ``FUNCSIGHT_*`` variable. Keywords: ``include``, ``exclude``,
``app_dir``, ``db_path``, ``store``, ``export_interval_s``, ``slow_call_ms``, ``spans_per_trace``,
``max_series``, ``max_functions``, ``max_routes``, ``implementation``.

Where the data goes: the embedded store unless an OTLP endpoint or the Prometheus metrics exporter
is configured (``FUNCSIGHT_STORE=on|off`` decides explicitly), OpenTelemetry metrics and function
spans whenever there are SDK providers (see :mod:`funcsight.agent.providers`).

Parts
-----
* :mod:`funcsight.agent.instrumentor` - the instrumentor; builds and stops the parts.
* :mod:`funcsight.agent.providers` - the SDK tracer/meter providers funcsight builds when the
  application or a distro did not, and their bounded flush and shutdown.
* :mod:`funcsight.agent.lifecycle` - exit, SIGTERM, fork, and pre-fork children's last flush.

The agent is the only part that imports all of the write side: ``funcsight.instrumentation`` (the
sensor), ``funcsight.processors`` (the rollup span processor and its windows) and
``funcsight.exporters`` (store writer, OpenTelemetry metrics and function spans, export thread).
Nothing else imports the agent.
"""

from funcsight.agent.instrumentor import FuncsightInstrumentor, Running

__all__ = ["FuncsightInstrumentor", "Running"]
