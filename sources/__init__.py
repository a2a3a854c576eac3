"""Sources: where the analysis reads recorded data from. One part, two backends:

* the embedded store (:mod:`funcsight.sources.store`, default): the SQLite file the exporters
  write, read-only; also the home of every SQL statement that reads it (the MCP ``query`` tool's
  views and locked-down connection included);
* a Prometheus-compatible server (:mod:`funcsight.sources.prometheus`), read with PromQL over a
  whole fleet: ``prometheus+http://HOST:PORT`` (or ``prometheus+https://…``).

Both answer the :class:`~funcsight.sources.base.Source` protocol with the records of
:mod:`funcsight.sources.base`, so every analysis runs unchanged on either; every failure is a
one-line :class:`~funcsight.sources.base.SourceError`.

May import: the standard library, funcsight core (``funcsight.names``, ``funcsight.histogram``,
``funcsight.durations``, ``funcsight.config``) and ``funcsight.store`` (schema, read-only
connection). Never OpenTelemetry, the sensor, processors, exporters, analysis or the faces.
"""

from __future__ import annotations

from funcsight.sources.base import Aggregate, ErrorRecord, RouteAggregate, Source, SourceError, VersionInfo

PROMETHEUS_SCHEMES = ("prometheus+http://", "prometheus+https://")


def open_source(spec: str | None = None, db_path: str | None = None) -> Source:
    """The source ``spec`` names: ``prometheus+http(s)://HOST:PORT[/prefix][?range=7d&step=15s&timeout=30]``
    for a Prometheus server; none (or empty) for the store at ``db_path`` (default:
    :func:`~funcsight.sources.store.default_db_path`). Anything else raises :class:`SourceError`."""
    if not spec:
        from funcsight.sources.store import StoreSource, default_db_path

        return StoreSource(db_path or default_db_path())
    if spec.startswith(PROMETHEUS_SCHEMES):
        from funcsight.sources.prometheus import PrometheusSource

        return PrometheusSource(spec.split("+", 1)[1])
    raise SourceError(f"unknown source {spec!r}: use prometheus+http://HOST:PORT, or --db PATH for the embedded store")


__all__ = ["Aggregate", "ErrorRecord", "PROMETHEUS_SCHEMES", "RouteAggregate", "Source", "SourceError", "VersionInfo", "open_source"]
