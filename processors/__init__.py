"""funcsight's processors: the rollup span processor and its windows.

* :mod:`~funcsight.processors.rollup`: the OpenTelemetry ``SpanProcessor`` that opens a call table
  for each request's local root span and, when the request ends, folds the table into the window
  under the request's route (C twin of its per-span path: ``_crollup.c``). Its ``drain()`` closes a
  window and returns one :class:`~funcsight.processors.windows.Window` with the aggregates, the slow
  calls to emit as function spans and funcsight's own counters.
* :mod:`~funcsight.processors.windows`: the open window (``WindowAggregator``, with a C twin in
  ``_crollup.c``) and the closed :class:`~funcsight.processors.windows.Window`.

May import: the sensor's public API (``funcsight.instrumentation``: call tables, the sink, the
registry, ``sweep_parked``) and the OpenTelemetry API and SDK. Never the exporters, the store,
SQLite, analysis, the CLI or the agent: data leaves this layer only as a drained ``Window``.
"""
