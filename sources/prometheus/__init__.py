"""funcsight's metrics read back from a Prometheus-compatible server, with PromQL over its HTTP API.

``PrometheusSource("http://HOST:PORT")`` answers the same questions as
:class:`funcsight.sources.store.StoreSource`, so every analysis (``functions``, ``routes``,
``versions``, ``diff``, ``explain``, ``anomalies``, ``errors``) and the MCP server run unchanged over
a whole fleet: ``--source prometheus+http://HOST:PORT``. Only the standard library is used
(``urllib``), with a timeout on every request; any HTTP, connection or JSON problem becomes a one-line
:class:`~funcsight.sources.base.SourceError`.

What the apps export (``OTEL_METRICS_EXPORTER=prometheus``, see the README's "Metrics"): cumulative
counters per process, ``service_version`` on every series, durations as ``le``-labelled bucket
counters at powers of two nanoseconds. How they are read back:

* **Totals** (calls, errors, durations, requests, bucket counts) are taken per series as the last
  cumulative value, ``max_over_time(M[RANGE])``, then summed over processes (``job``/``instance``)
  per function x kind x route x version. ``RANGE`` reaches back to the first funcsight sample the
  server holds (found from the sample timestamps), so nothing kept by the server is left out.
* **Restarts**: a series whose counter went down within the range (``resets() > 0``: a process
  restarted on the same scrape target, same labels) is summed exactly from its raw samples instead
  (every drop starts a new count). A restart is invisible when the new process' first scraped
  value is already above the old process' last one; its earlier counts are then missed, as they are
  for Prometheus' own ``increase()``.
* **Percentiles**: the cumulative ``le`` counts become per-bucket counts, spread evenly over each
  bucket's interval into the sensor's half-octave buckets (the assumption ``histogram_quantile``
  makes, so the CLI shows the percentiles the dashboard shows); calls above the largest bound
  (17.2 s) land in the half-octave bucket just above it. The exported buckets are 2x wide, so these
  percentiles are coarser than the store's half-octaves. Counts, calls per request, self and total
  time, and the version diff's call, error and rank (Mann-Whitney) tests are unaffected.
* **What Prometheus never saw**: funcsight adds a window's counts to the counters at each export
  interval (``FUNCSIGHT_EXPORT_INTERVAL``), and Prometheus keeps what it scraped. The store gets
  everything; Prometheus gets everything up to the last scrape before a process ended. A short
  export interval and one scrape interval of waiting before stopping an app keep them equal.
* **Not in metrics**: code hashes (``diff`` reports ``code_changed`` as null), exception stacks,
  messages and trace ids (``errors`` gives counts, first and last seen only), and the version's
  detection source (reported as ``prometheus``).
* **Time series** (``anomalies``): ``query_range`` with a step of the scrape interval of the
  targets exporting funcsight metrics (from ``/api/v1/targets``; at least 1/10,000 of the span),
  each series' increase per step, restarts counted as above.

Options ride on the URL's query string: ``range`` (how far back, e.g. ``7d``; default: from the
first funcsight sample, within the server's retention), ``step`` (the time-series step, e.g.
``15s``) and ``timeout`` (seconds per HTTP request, default 30). ``user:password@`` in the URL is
sent as basic auth, and a path prefix is kept (Mimir, VictoriaMetrics' ``/prometheus``). Over a very
large fleet and range the server may refuse a query (``--query.max-samples``): pass a shorter
``range``.

Modules: ``client`` (the address, HTTP API calls, PromQL names and helpers), ``extent`` (the time
range, restart-aware totals, per-step increments), ``source`` (:class:`PrometheusSource`: the
analysis' questions over those). Standard library and funcsight core only.
"""

from funcsight.sources.prometheus.extent import reset_aware_total
from funcsight.sources.prometheus.source import PrometheusSource

__all__ = ["PrometheusSource", "reset_aware_total"]
