"""Where and how far funcsight's data reaches on a Prometheus server, and the totals read over it.

* **Range**: reaches back to the first funcsight sample the server holds, found from the sample
  timestamps (a coarse ``query_range`` over the retention, then a fine one around the first and
  last step), unless the address names a ``range``.
* **Totals** per series: the last cumulative value, ``max_over_time(M[RANGE])``, or, for a series
  whose counter went down within the range (``resets() > 0``: a process restarted on the same
  scrape target), the reset-aware sum of its raw samples (:func:`reset_aware_total`).
* **Time series**: increases per step (the targets' scrape interval from ``/api/v1/targets``, at
  least 1/10,000 of the span, unless the address names a ``step``), restarts counted as above.

Every answer is cached for the life of the source (one ``now``).
"""

from __future__ import annotations

import math

from funcsight.durations import parse_duration
from funcsight.sources.base import SourceError
from funcsight.sources.prometheus.client import (
    FUNCTION_CALLS, PRESENCE, ROUTE_REQUESTS, TARGET, VERSION, PrometheusClient, address_duration, quote, selector,
)

DEFAULT_RETENTION_S = 15 * 86400.0  # Prometheus' default, when the server does not say
DEFAULT_SCRAPE_S = 15.0
MAX_POINTS = 10_000  # per series per query_range (Prometheus refuses more than 11,000)


def reset_aware_total(values: list[float]) -> float:
    """The sum a cumulative counter counted over its samples, a drop meaning a new process
    (started at zero) took over the series."""
    total, previous = 0.0, 0.0
    for value in values:
        total += value - previous if value >= previous else value
        previous = value
    return total


class Extent:
    """The time extent of funcsight's series on one server, and the totals and increments over it."""

    def __init__(self, client: PrometheusClient):
        self.client = client
        self.now = client.now
        self.range_s = address_duration(client.options, "range")
        self.step_s = address_duration(client.options, "step")
        self._cache: dict = {}

    # ---------------------------------------------------------------------------- the range
    def _retention_s(self) -> float:
        if self.range_s is not None:
            return self.range_s
        try:
            info = self.client.api("status/runtimeinfo", {})
            text = str((info or {}).get("storageRetention", "")).split(" or ")[0].strip()
            return parse_duration(text) if text else DEFAULT_RETENTION_S
        except (SourceError, ValueError):
            return DEFAULT_RETENTION_S  # not every compatible server has this endpoint

    def presence(self) -> dict[str, tuple[float, float]]:
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
        for series in self.client.range(query, start, self.now, coarse):
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
        values = [float(v) for series in self.client.range(inner, start, end, step) for _, v in series.get("values", [])]
        values = [v for v in values if start - 1e-3 <= v <= end + 1e-3]
        if not values:
            return fallback
        return min(values) if how == "min" else max(values)

    def range_selector(self) -> str | None:
        """The ``[RANGE]`` reaching back to the first funcsight sample; None when there is none."""
        presence = self.presence()
        if not presence:
            return None
        first = min(first for first, _ in presence.values())
        return f"{max(60, math.ceil(self.now - first) + 60)}s"

    # -------------------------------------------------------------------------------- totals
    def totals(self, metric: str, **labels: str | None) -> list[tuple[dict, float]]:
        """``(labels, total)`` per series of ``metric``: its last cumulative value, or the
        reset-aware sum of its samples when its counter went down (a restart on the same target)."""
        key = ("totals", metric, tuple(sorted(labels.items())))
        if key in self._cache:
            return self._cache[key]
        window = self.range_selector()
        if window is None:
            return []
        chosen = selector(metric, **labels)
        instant = self.client.instant
        totals = {_key(s["metric"]): (s["metric"], float(s["value"][1])) for s in instant(f"max_over_time({chosen}[{window}])")}
        restarted = {tuple(s["metric"].get(label, "") for label in TARGET) for s in instant(f"resets({chosen}[{window}]) > 0")}
        for job, instance in sorted(restarted):
            for series in instant(selector(metric, **labels, job=job, instance=instance) + f"[{window}]"):
                labels_of = {k: v for k, v in series["metric"].items() if k != "__name__"}
                totals[_key(labels_of)] = (labels_of, reset_aware_total([float(v) for _, v in series.get("values", [])]))
        result = list(totals.values())
        self._cache[key] = result
        return result

    def grouped(self, metric: str, group: tuple[str, ...], **labels: str | None) -> dict[tuple, float]:
        """Totals summed over processes, per value of the ``group`` labels."""
        sums: dict[tuple, float] = {}
        for series_labels, value in self.totals(metric, **labels):
            key = tuple(series_labels.get(label, "") for label in group)
            sums[key] = sums.get(key, 0.0) + value
        return sums

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
            targets = (self.client.api("targets", {"state": "active"}) or {}).get("activeTargets") or []
        except SourceError:
            return DEFAULT_SCRAPE_S
        window = self.range_selector()
        ours = set()
        if window is not None:
            ours = {(s["metric"].get("job", ""), s["metric"].get("instance", ""))
                    for s in self.client.instant(f"group by (job, instance) (last_over_time({PRESENCE}[{window}]))")}
        intervals = []
        for target in targets:
            labels = target.get("labels") or {}
            interval = target.get("scrapeInterval") or (target.get("discoveredLabels") or {}).get("__scrape_interval__")
            if interval and (not ours or (labels.get("job", ""), labels.get("instance", "")) in ours):
                try:
                    intervals.append(parse_duration(str(interval)))
                except ValueError:
                    pass
        return max(intervals) if intervals else DEFAULT_SCRAPE_S

    def increments(self, metric: str, version: str | None, since: float | None) -> list[tuple[float, float, dict, float]]:
        """``(start, end, labels, increase)`` per step and series, for steps where it increased."""
        key = ("increments", metric, version, since)
        if key in self._cache:
            return self._cache[key]
        presence = self.presence()
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
        for series in self.client.range(query, start, self.now, step):
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


def _key(labels: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))
