"""funcsight's exporters: consumers of a closed :class:`~funcsight.processors.windows.Window`.

* :mod:`~funcsight.exporters.pipeline`: the export thread; every interval it drains a window (the
  rollup processor's ``drain``) and hands it to each consumer.
* :mod:`~funcsight.exporters.store_writer`: writes windows and their slow calls (function-span rows)
  into the embedded SQLite store (imported only when the store is on).
* :mod:`~funcsight.exporters.metrics`: OpenTelemetry counters from a window
  (``funcsight.function.*``, ``funcsight.route.*``, ``funcsight.dropped``).
* :mod:`~funcsight.exporters.spans`: OpenTelemetry function spans from a window's slow calls.

May import: the processors' ``Window`` (and its helpers in ``funcsight.processors.windows``), the
store, and OpenTelemetry. Never the sensor's hot path, the rollup processor, analysis or the CLI;
nothing here reaches back upstream.
"""
