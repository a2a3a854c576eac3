"""Choosing where the analysis reads from: the embedded store (default) or a Prometheus server.

``--source prometheus+http://HOST:PORT`` (or ``prometheus+https://…``) reads funcsight's metrics
from a Prometheus-compatible server with PromQL, over a whole fleet; without it, ``--db`` (or
``FUNCSIGHT_DB``, default ``./funcsight.db``) names the store. Both give sources with the same
methods, so every analysis runs unchanged on either.
"""

from __future__ import annotations

from funcsight.analysis.breakdown import AnalysisError
from funcsight.analysis.source import StoreSource

PROMETHEUS_SCHEMES = ("prometheus+http://", "prometheus+https://")


def open_source(db_path: str, source: str | None = None):
    if not source:
        return StoreSource(db_path)
    if source.startswith(PROMETHEUS_SCHEMES):
        from funcsight.analysis.prometheus import PrometheusSource

        return PrometheusSource(source.split("+", 1)[1])
    raise AnalysisError(
        f"unknown source {source!r}: use prometheus+http://HOST:PORT, or --db PATH for the embedded store"
    )
