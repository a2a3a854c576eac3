"""funcsight's sensor: every call of the application's own functions counted and timed, with zero
code changes, into call tables (one per request, found through a context variable, plus one for
calls outside any request).

* :mod:`~funcsight.instrumentation.sensor` chooses the sensor once: ``sys.monitoring`` callbacks on
  3.12+, import-time rewriting (:mod:`~funcsight.instrumentation.rewrite`) on 3.11; the C core
  (``_csensor.c``, contract in ``_csensor.pyi``, wrapped by :mod:`~funcsight.instrumentation.csensor`)
  when built, else its pure-Python twin (:mod:`~funcsight.instrumentation._pysensor`). Each sensor
  makes the :class:`~funcsight.instrumentation._pysensor.Sink` it feeds, with its own table type.
* :mod:`~funcsight.instrumentation.selection` decides which code is sensed,
  :mod:`~funcsight.instrumentation.registry` gives each function its id,
  :mod:`~funcsight.instrumentation.calls` holds the call table.

May import: the standard library and the funcsight core (``funcsight.config``, ``.names``,
``.histogram``). Never OpenTelemetry, logging handlers' I/O, SQLite, or the processors, exporters
and agent that use it. The instrumentor that switches it on is :mod:`funcsight.agent`.
"""
