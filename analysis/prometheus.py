"""funcsight's metrics read back from a Prometheus-compatible server, with PromQL over its HTTP API.

``PrometheusSource("http://HOST:PORT")`` answers the same questions as
:class:`funcsight.analysis.source.StoreSource`, so every analysis (``functions``, ``routes``,
``versions``, ``diff``, ``explain``, ``anomalies``, ``errors``) and the MCP server run unchanged over
a whole fleet: ``--source prometheus+http://HOST:PORT``. Only the standard library is used
(``urllib``), with a timeout on every request; any HTTP, connection or JSON problem becomes a one-line
:class:`SourceError`.

What the apps export (``OTEL_METRICS_EXPORTER=prometheus``, see the README's "Metrics"): cumulative
counters per process, ``service_version`` on every series, durations as ``le``-labelled bucket
counters at powers of four nanoseconds. How they are read back:

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
  (17.2 s) land in the half-octave bucket just above it. The exported buckets are 4x wide, so these
  percentiles are coarser than the store's (within 25 %). Counts, calls per request, self and total
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
"""

from __future__ import annotations

import base64
import json
import math
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

from funcsight import names
from funcsight.analysis.breakdown import AnalysisError
from funcsight.analysis.source import Aggregate, RouteAggregate, VersionInfo
from funcsight.histogram import buckets_to_hist, le_ns

# Prometheus names of funcsight's metrics (the OpenTelemetry exporter's rendering of names.*).
FUNCTION_CALLS = "funcsight_function_calls_total"
FUNCTION_ERRORS = "funcsight_function_errors_total"
FUNCTION_DURATION = "funcsight_function_duration_seconds_total"
FUNCTION_SELF_TIME = "funcsight_function_self_time_seconds_total"
FUNCTION_BUCKETS = "funcsight_function_duration_buckets_total"
ROUTE_REQUESTS = "funcsight_route_requests_total"
ROUTE_ERRORS = "funcsight_route_errors_total"
ROUTE_DURATION = "funcsight_route_duration_seconds_total"
ROUTE_BUCKETS = "funcsight_route_duration_buckets_total"


def label_name(attribute: str) -> str:
    """An OpenTelemetry attribute as the Prometheus exporter names its label."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", attribute)


FUNCTION = label_name(names.CODE_FUNCTION_NAME)  # code_function_name
KIND = label_name(names.FUNCTION_KIND)  # funcsight_function_kind
ROUTE = label_name(names.HTTP_ROUTE)  # http_route
VERSION = label_name(names.SERVICE_VERSION)  # service_version
EXCEPTION = label_name(names.EXCEPTION_TYPE)  # exception_type
LE = names.BUCKET_LE
TARGET = ("job", "instance")  # what tells processes (scrape targets) apart

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETENTION_S = 15 * 86400.0  # Prometheus' default, when the server does not say
DEFAULT_SCRAPE_S = 15.0
MAX_POINTS = 10_000  # per series per query_range (Prometheus refuses more than 11,000)
PRESENCE = f'{{__name__=~"{ROUTE_REQUESTS}|{FUNCTION_CALLS}"}}'
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|y|w|d|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_OPTIONS = ("range", "step", "timeout")


class SourceError(AnalysisError):
    """The Prometheus server could not be asked or gave no usable answer (one line, says why)."""


def parse_duration(text: str) -> float:
    """Prometheus durations (``90s``, ``15d``, ``1h30m``, ``500ms``) or plain seconds, to seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise SourceError(f"{text!r} is not a duration like 90s, 15m, 2h or 7d")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(metric: str, **labels: str | None) -> str:
    matchers = [f"{label_name(k)}={quote(v)}" for k, v in labels.items() if v is not None]
    return metric + ("{" + ",".join(matchers) + "}" if matchers else "")


def reset_aware_total(values: list[float]) -> float:
    """The sum a cumulative counter counted over its samples, a drop meaning a new process
    (started at zero) took over the series."""
    total, previous = 0.0, 0.0
    for value in values:
        total += value - previous if value >= previous else value
        previous = value
    return total


class PrometheusSource:
    """The analysis' questions, answered with PromQL from a Prometheus-compatible server."""

    def __init__(self, base_url: str, timeout_s: float | None = None, now: float | None = None):
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise SourceError(f"{base_url!r} is not a Prometheus address: use prometheus+http://HOST:PORT")
        options = dict(urllib.parse.parse_qsl(parsed.query))
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise SourceError(f"unknown option(s) {', '.join(unknown)} in the Prometheus address; known: {', '.join(_OPTIONS)}")
        try:
            port = parsed.port
        except ValueError:
            raise SourceError(f"{base_url!r} has no valid port: use prometheus+http://HOST:PORT") from None
        netloc = parsed.hostname if ":" not in parsed.hostname else f"[{parsed.hostname}]"
        if port:
            netloc += f":{port}"
        self.base_url = urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path.rstrip("/"), "", ""))
        self._auth = None
        if parsed.username is not None:
            credentials = f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password or '')}"
            self._auth = "Basic " + base64.b64encode(credentials.encode()).decode()
        self.timeout_s = timeout_s or (parse_duration(options["timeout"]) if "timeout" in options else DEFAULT_TIMEOUT_S)
        self.range_s = parse_duration(options["range"]) if "range" in options else None
        self.step_s = parse_duration(options["step"]) if "step" in options else None
        for name, value in (("timeout", self.timeout_s), ("range", self.range_s), ("step", self.step_s)):
            if value is not None and not 0 < value < math.inf:
                raise SourceError(f"{name} in the Prometheus address must be a positive duration, like 30s or 7d")
        self.now = time.time() if now is None else now
        self._cache: dict = {}

    def close(self) -> None:
        pass

    def ping(self) -> None:
        """Raise :class:`SourceError` unless the server answers a trivial query."""
        self._instant("vector(1)")

    # ------------------------------------------------------------------------------------ HTTP
    def _api(self, path: str, params: dict) -> object:
        """One API call: POST (form) for queries, which can be long; GET for everything else."""
        url = f"{self.base_url}/api/v1/{path}"
        encoded = urllib.parse.urlencode(params, doseq=True)
        headers = {"Accept": "application/json", "User-Agent": "funcsight"}
        if path in ("query", "query_range"):
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            request = urllib.request.Request(url, data=encoded.encode(), method="POST", headers=headers)
        else:
            request = urllib.request.Request(url + ("?" + encoded if encoded else ""), method="GET", headers=headers)
        if self._auth:
            request.add_header("Authorization", self._auth)
        where = f"prometheus at {self.base_url}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            detail = _error_text(err.read())
            if detail is None:  # not the API's JSON error: probably not a Prometheus API at all
                raise SourceError(f"{where} answered HTTP {err.code} ({err.reason}) to /api/v1/{path}; "
                                  "is this a Prometheus-compatible server (and the path prefix right)?") from None
            raise SourceError(f"{where} answered {err.code} to {path}: {detail}") from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise SourceError(f"{where} did not answer within {self.timeout_s:g} s (add ?timeout=SECONDS to the address to wait longer)") from None
            raise SourceError(f"{where} cannot be reached ({reason}); is it running, and is the address right?") from None
        except (socket.timeout, TimeoutError):
            raise SourceError(f"{where} did not answer within {self.timeout_s:g} s (add ?timeout=SECONDS to the address to wait longer)") from None
        except OSError as err:
            raise SourceError(f"{where} cannot be reached ({err}); is it running, and is the address right?") from None
        try:
            document = json.loads(raw)
        except ValueError:
            raise SourceError(f"{where} did not answer {path} with JSON; is this a Prometheus server?") from None
        if not isinstance(document, dict) or document.get("status") != "success":
            detail = document.get("error") if isinstance(document, dict) else None
            raise SourceError(f"{where} refused {path}: {detail or 'no success status'}")
        return document.get("data")

    def _instant(self, query: str) -> list[dict]:
        data = self._api("query", {"query": query, "time": f"{self.now:.3f}"})
        if not isinstance(data, dict) or data.get("resultType") not in ("vector", "matrix"):
            raise SourceError(f"prometheus at {self.base_url} gave an unexpected answer to {query!r}")
        return data.get("result") or []

    def _range(self, query: str, start: float, end: float, step: float) -> list[dict]:
        """``query_range`` at steps ending exactly at ``end`` (the grid is laid back from it, so
        the newest samples are never after the last step)."""
        start = end - math.ceil(round((end - start) / step, 6)) * step
        data = self._api("query_range", {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise SourceError(f"prometheus at {self.base_url} gave an unexpected answer to {query!r}")
        return data.get("result") or []

    # --------------------------------------------------------------------------- time extent
    def _retention_s(self) -> float:
        if self.range_s is not None:
            return self.range_s
        try:
            info = self._api("status/runtimeinfo", {})
            text = str((info or {}).get("storageRetention", "")).split(" or ")[0].strip()
            return parse_duration(text) if text else DEFAULT_RETENTION_S
        except SourceError:
            return DEFAULT_RETENTION_S  # not every compatible server has this endpoint

    def _presence(self) -> dict[str, tuple[float, float]]:
        """``version -> (first, last)`` sample timestamps of funcsight's series: one coarse
        ``query_range`` over the whole retention counting raw samples per step (a range function,
        so even a process that lived for a few seconds between two steps is seen), then a fine one
        over the first and the last step that had samples."""
        if "presence" in self._cache:
            return self._cache["presence"]
        start = self.now - self._retention_s()
        coarse = max(1, math.ceil((self.now - start) / MAX_POINTS))
        query = f"count by ({VERSION}) (count_over_time({PRESENCE}[{coarse}s]))"
        presence: dict[str, tuple[float, float]] = {}
        for series in self._range(query, start, self.now, coarse):
            steps = [float(t) for t, _ in series.get("values", [])]
            if not steps:
                continue
            version = series["metric"].get(VERSION, "")
            # Samples seen at step t lie in (t - coarse, t].
            first_step, last_step = min(steps), max(steps)
            first = self._refine(version, "min", first_step - coarse, first_step, first_step)
            last = self._refine(version, "max", last_step - coarse, last_step, last_step)
            presence[version] = (first, max(first, last))
        self._cache["presence"] = presence
        return presence

    def _refine(self, version: str, how: str, start: float, end: float, fallback: float) -> float:
        """The earliest (``min``) or latest (``max``) sample timestamp of ``version`` in
        ``[start, end]``, read at steps finer than any scrape interval."""
        step = max(0.05, (end - start) / 1000)
        inner = f'{how} by ({VERSION}) (timestamp({{__name__=~"{ROUTE_REQUESTS}|{FUNCTION_CALLS}",{VERSION}={quote(version)}}}))'
        values = [float(v) for series in self._range(inner, start, end, step) for _, v in series.get("values", [])]
        values = [v for v in values if start - 1e-3 <= v <= end + 1e-3]
        if not values:
            return fallback
        return min(values) if how == "min" else max(values)

    def _range_selector(self) -> str | None:
        """The ``[RANGE]`` reaching back to the first funcsight sample; None when there is none."""
        presence = self._presence()
        if not presence:
            return None
        first = min(first for first, _ in presence.values())
        return f"{max(60, math.ceil(self.now - first) + 60)}s"

    # -------------------------------------------------------------------------------- totals
    def _totals(self, metric: str, **labels: str | None) -> list[tuple[dict, float]]:
        """``(labels, total)`` per series of ``metric``: its last cumulative value, or the
        reset-aware sum of its samples when its counter went down (a restart on the same target)."""
        key = ("totals", metric, tuple(sorted(labels.items())))
        if key in self._cache:
            return self._cache[key]
        window = self._range_selector()
        if window is None:
            return []
        chosen = selector(metric, **labels)
        totals = {_key(s["metric"]): (s["metric"], float(s["value"][1])) for s in self._instant(f"max_over_time({chosen}[{window}])")}
        restarted = {tuple(s["metric"].get(label, "") for label in TARGET) for s in self._instant(f"resets({chosen}[{window}]) > 0")}
        for job, instance in sorted(restarted):
            raw = self._instant(selector(metric, **labels, job=job, instance=instance) + f"[{window}]")
            for series in raw:
                labels_of = {k: v for k, v in series["metric"].items() if k != "__name__"}
                totals[_key(labels_of)] = (labels_of, reset_aware_total([float(v) for _, v in series.get("values", [])]))
        result = list(totals.values())
        self._cache[key] = result
        return result

    def _grouped(self, metric: str, group: tuple[str, ...], **labels: str | None) -> dict[tuple, float]:
        sums: dict[tuple, float] = {}
        for series_labels, value in self._totals(metric, **labels):
            key = tuple(series_labels.get(label, "") for label in group)
            sums[key] = sums.get(key, 0.0) + value
        return sums

    # ---------------------------------------------------------------------- StoreSource API
    def versions(self) -> list[VersionInfo]:
        presence = self._presence()
        if not presence:
            return []
        requests = self._grouped(ROUTE_REQUESTS, (VERSION,))
        calls = self._grouped(FUNCTION_CALLS, (VERSION,))
        window = self._range_selector()
        processes: dict[str, int] = {}
        for metric in (ROUTE_REQUESTS, FUNCTION_CALLS):
            query = f"max by ({VERSION}, job, instance) (resets({metric}[{window}]))"
            for series in self._instant(query):
                labels = series["metric"]
                target = (labels.get(VERSION, ""), labels.get("job", ""), labels.get("instance", ""))
                processes[target] = max(processes.get(target, 0), 1 + int(float(series["value"][1])))
        result = []
        for version, (first, last) in presence.items():
            count = sum(n for (v, _, _), n in processes.items() if v == version)
            result.append(VersionInfo(version, "prometheus", first, last, count or 1,
                                      int(round(requests.get((version,), 0))), int(round(calls.get((version,), 0)))))
        result.sort(key=lambda v: (v.first_seen, v.version))
        return result

    def routes(self) -> set[str]:
        window = self._range_selector()
        if window is None:
            return set()
        data = self._api(f"label/{ROUTE}/values", {
            "match[]": [ROUTE_REQUESTS, FUNCTION_CALLS], "start": f"{self.now - parse_duration(window):.3f}", "end": f"{self.now:.3f}",
        })
        return {str(route) for route in (data or [])}

    def function_aggregates(self, route: str | None = None, version: str | None = None) -> dict[tuple, Aggregate]:
        """``(function, kind, route, version) -> Aggregate``, summed over every process."""
        group = (FUNCTION, KIND, ROUTE, VERSION)
        filters = {ROUTE: route, VERSION: version}
        result: dict[tuple, Aggregate] = {}
        for key, value in self._grouped(FUNCTION_CALLS, group, **filters).items():
            result[key] = Aggregate(calls=int(round(value)))
        for key, value in self._grouped(FUNCTION_DURATION, group, **filters).items():
            if key in result:
                result[key].total_ns = int(round(value * 1e9))
        for key, value in self._grouped(FUNCTION_SELF_TIME, group, **filters).items():
            if key in result:
                result[key].self_ns = int(round(value * 1e9))
        for (*key, exc_type), value in self._grouped(FUNCTION_ERRORS, group + (EXCEPTION,), **filters).items():
            agg = result.get(tuple(key))
            count = int(round(value))
            if agg is not None and count:
                agg.errors_by_type[exc_type] = agg.errors_by_type.get(exc_type, 0) + count
                agg.errors += count
        for key, hist in self._hists(FUNCTION_BUCKETS, group, **filters).items():
            if key in result:
                result[key].hist = hist
        return result

    def route_aggregates(self, route: str | None = None, version: str | None = None) -> dict[tuple, RouteAggregate]:
        """``(route, version) -> RouteAggregate``, summed over every process."""
        group = (ROUTE, VERSION)
        filters = {ROUTE: route, VERSION: version}
        result = {key: RouteAggregate(requests=int(round(value))) for key, value in self._grouped(ROUTE_REQUESTS, group, **filters).items()}
        for key, value in self._grouped(ROUTE_ERRORS, group, **filters).items():
            if key in result:
                result[key].errors = int(round(value))
        for key, value in self._grouped(ROUTE_DURATION, group, **filters).items():
            if key in result:
                result[key].total_ns = int(round(value * 1e9))
        for key, hist in self._hists(ROUTE_BUCKETS, group, **filters).items():
            if key in result:
                result[key].hist = hist
        return result

    def _hists(self, metric: str, group: tuple[str, ...], **labels: str | None) -> dict[tuple, dict[int, int]]:
        cumulative: dict[tuple, dict[str, float]] = {}
        for (*key, le), value in self._grouped(metric, group + (LE,), **labels).items():
            try:
                le_ns(le)
            except ValueError:
                continue  # not one of funcsight's bucket bounds
            cumulative.setdefault(tuple(key), {})[le] = value
        return {key: buckets_to_hist(les) for key, les in cumulative.items()}

    def code_hashes(self, version: str) -> dict[str, str]:
        """Not in the metrics: the version diff then reports ``code_changed`` as unknown (null)."""
        return {}

    # --------------------------------------------------------------------------- time series
    def _step(self, start: float) -> float:
        if self.step_s is not None:
            step = self.step_s
        else:
            step = self._cache.get("scrape")
            if step is None:
                step = self._cache["scrape"] = self._scrape_interval()
        return max(step, math.ceil((self.now - start) / MAX_POINTS))

    def _scrape_interval(self) -> float:
        """The scrape interval of the targets that export funcsight metrics (the longest of them:
        every step then sees a new scrape of each), from ``/api/v1/targets``."""
        try:
            targets = (self._api("targets", {"state": "active"}) or {}).get("activeTargets") or []
        except SourceError:
            return DEFAULT_SCRAPE_S
        window = self._range_selector()
        ours = set()
        if window is not None:
            ours = {(s["metric"].get("job", ""), s["metric"].get("instance", ""))
                    for s in self._instant(f"group by (job, instance) (last_over_time({PRESENCE}[{window}]))")}
        intervals = []
        for target in targets:
            labels = target.get("labels") or {}
            interval = target.get("scrapeInterval") or (target.get("discoveredLabels") or {}).get("__scrape_interval__")
            if interval and (not ours or (labels.get("job", ""), labels.get("instance", "")) in ours):
                try:
                    intervals.append(parse_duration(str(interval)))
                except SourceError:
                    pass
        return max(intervals) if intervals else DEFAULT_SCRAPE_S

    def _increments(self, metric: str, version: str | None, since: float | None) -> list[tuple[float, float, dict, float]]:
        """``(start, end, labels, increase)`` per step and series, for steps where it increased."""
        key = ("increments", metric, version, since)
        if key in self._cache:
            return self._cache[key]
        presence = self._presence()
        if not presence:
            return []
        first = min(f for f, _ in presence.values())
        begin = max(first, since) if since is not None else first
        step = self._step(begin)
        # A series already there at the first step holds earlier counts: a baseline, not an increase.
        start = self.now - math.ceil(round((self.now - (begin - step)) / step, 6)) * step
        found = []
        # The last value within each step (a range function: staleness markers cannot hide a
        # process' final sample, and every sample falls in exactly one step).
        query = f"last_over_time({selector(metric, **{VERSION: version})}[{step:g}s])"
        for series in self._range(query, start, self.now, step):
            labels = {k: v for k, v in series["metric"].items() if k != "__name__"}
            previous, previous_t = None, None
            for t_text, v_text in series.get("values", []):
                t, value = float(t_text), float(v_text)
                if previous is None:
                    increase = 0.0 if t <= start + 1e-3 else value
                elif previous_t is not None and t - previous_t > 1.5 * step and value < previous:
                    increase = value  # back after a gap with a smaller count: a new process
                else:
                    increase = value - previous if value >= previous else value
                if increase > 0:
                    found.append((t - step, t, labels, increase))
                previous, previous_t = value, t
        self._cache[key] = found
        return found

    def series(self, version: str | None = None, since: float | None = None) -> list[tuple]:
        """Per step: ``(start, end, function, kind, route, version, calls, errors, total_ns)``."""
        cells: dict[tuple, list] = {}
        for column, metric in ((0, FUNCTION_CALLS), (1, FUNCTION_ERRORS), (2, FUNCTION_DURATION)):
            for start, end, labels, increase in self._increments(metric, version, since):
                key = (start, end, labels.get(FUNCTION, ""), labels.get(KIND, ""), labels.get(ROUTE, ""), labels.get(VERSION, ""))
                cell = cells.setdefault(key, [0, 0, 0])
                cell[column] += increase * 1e9 if column == 2 else increase
        rows = [(*key, int(round(c)), int(round(e)), int(round(ns))) for key, (c, e, ns) in cells.items() if round(c) > 0]
        rows.sort(key=lambda row: row[0])
        return rows

    def route_series(self, version: str | None = None, since: float | None = None) -> list[tuple]:
        """Per step: ``(start, end, route, version, requests)``."""
        cells: dict[tuple, float] = {}
        for start, end, labels, increase in self._increments(ROUTE_REQUESTS, version, since):
            key = (start, end, labels.get(ROUTE, ""), labels.get(VERSION, ""))
            cells[key] = cells.get(key, 0.0) + increase
        return sorted((*key, int(round(n))) for key, n in cells.items() if round(n) > 0)

    def error_series(self, version: str | None = None, since: float | None = None) -> list[tuple]:
        """Per step: ``(start, function, route, version, exception_type, count)``."""
        cells: dict[tuple, float] = {}
        for start, _end, labels, increase in self._increments(FUNCTION_ERRORS, version, since):
            key = (start, labels.get(FUNCTION, ""), labels.get(ROUTE, ""), labels.get(VERSION, ""), labels.get(EXCEPTION, ""))
            cells[key] = cells.get(key, 0.0) + increase
        return sorted((*key, int(round(n))) for key, n in cells.items() if round(n) > 0)

    def error_records(self, function: str | None = None, route: str | None = None, version: str | None = None) -> list[dict]:
        """Per function x route x version x exception type: the count and first/last seen (to the
        step). Metrics carry no stacks, messages or trace ids: those fields are empty."""
        counts = self._grouped(FUNCTION_ERRORS, (FUNCTION, ROUTE, VERSION, EXCEPTION), **{FUNCTION: function, ROUTE: route, VERSION: version})
        seen: dict[tuple, list[float]] = {}
        if any(round(value) for value in counts.values()):
            for start, end, labels, _increase in self._increments(FUNCTION_ERRORS, version, None):
                key = (labels.get(FUNCTION, ""), labels.get(ROUTE, ""), labels.get(VERSION, ""), labels.get(EXCEPTION, ""))
                span = seen.setdefault(key, [start, end])
                span[0], span[1] = min(span[0], start), max(span[1], end)
        presence = self._presence()
        records = []
        for key, value in counts.items():
            count = int(round(value))
            if not count:
                continue
            first, last = seen.get(key) or presence.get(key[2], (self.now, self.now))
            records.append({
                "function": key[0], "route": key[1], "version": key[2], "exception_type": key[3], "count": count,
                "first_seen": first, "last_seen": last, "stack": [], "message": None, "trace_id": None, "span_id": None,
            })
        records.sort(key=lambda r: (-r["count"], r["function"], r["route"], r["version"], r["exception_type"]))
        return records


def _key(labels: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))


def _error_text(raw: bytes) -> str | None:
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    if isinstance(document, dict) and document.get("error"):
        return str(document["error"]).splitlines()[0][:300]
    return None
