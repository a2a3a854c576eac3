"""Automatic detection within one deployment: slowdowns and error increases from a change in
behaviour over time, not from static thresholds.

Each function x route series is cut into time bins (about 20 over the period, never shorter than
the export windows). Per bin: mean duration per call, calls per request and error rate. A CUSUM
finds the most likely change point; Welch's t-test compares the bins before it (the trailing
baseline) with the bins after it, and its p-value is multiplied by the number of split points the
CUSUM could have chosen (the split was picked because it looked most different). A finding needs
that p below ``ALPHA`` / every test evaluated, at least ``MIN_BINS_BEFORE`` baseline and
``MIN_BINS_AFTER`` recent bins, a relative increase of at least 25 % and, for latency and calls,
an added cost of at least 1 % of the route's mean latency per request (as ``diff``). An exception
type that first appears after a baseline in which the function ran often enough to have shown it
(p of never seeing it by chance below the same bound) is reported as new.

Route first, as ``diff``: a latency or calls anomaly is kept only when its route's own mean latency
per request shifted up by at least 10 % at a significant change point (the same CUSUM + Welch test on
the route's per-bin means); error findings stand on their own (they are the route's error verdict).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

from funcsight.analysis.attribution import MIN_ROUTE_CHANGE
from funcsight.analysis.compare import ALPHA, MIN_IMPACT_FRACTION, MIN_RELATIVE_CHANGE
from funcsight.analysis.stats import cusum_changepoint, welch_greater
from funcsight.sources.base import Source

MIN_BINS_BEFORE = 3
MIN_BINS_AFTER = 2
TARGET_BINS = 20


@dataclass
class Anomaly:
    function: str
    route: str
    version: str
    kind: str  # latency | calls | errors | new_error_type
    change_at: float  # epoch seconds: start of the first bin after the change
    before: float
    after: float
    relative_change: float | None
    p_value: float
    bins_before: int
    bins_after: int
    bin_seconds: float
    exception_type: str | None = None
    route_change: float | None = None  # the route's own relative latency shift at its change point (route first)

    def as_dict(self) -> dict:
        return asdict(self)


def anomalies(source: Source, since_s: float | None = None, version: str | None = None, now: float | None = None) -> list[Anomaly]:
    since = (now or time.time()) - since_s if since_s else None
    rows = source.series(version, since)
    if not rows:
        return []
    window_lengths = [end - start for start, end, *_ in rows]
    first, last = min(r[0] for r in rows), max(r[1] for r in rows)
    bin_s = max(statistics.median(window_lengths), (last - first) / TARGET_BINS, 1e-3)

    def bin_of(t: float) -> int:
        return int((t - first) // bin_s)

    requests: dict[tuple, int] = {}
    for start, _end, route, ver, count in source.route_series(version, since):
        key = (route, ver, bin_of(start))
        requests[key] = requests.get(key, 0) + count
    series: dict[tuple, dict[int, list]] = {}
    for start, _end, name, _kind, route, ver, calls, errors, total_ns in rows:
        bins = series.setdefault((name, route, ver), {})
        cell = bins.setdefault(bin_of(start), [0, 0, 0])
        cell[0] += calls
        cell[1] += errors
        cell[2] += total_ns
    errors_by_type: dict[tuple, dict[int, int]] = {}
    for start, name, route, ver, exc_type, count in source.error_series(version, since):
        cells = errors_by_type.setdefault((name, route, ver, exc_type), {})
        cells[bin_of(start)] = cells.get(bin_of(start), 0) + count

    route_mean_ms = {key: agg.total_ns / agg.requests / 1e6 for key, agg in source.route_aggregates(None, version).items() if agg.requests}
    candidates: list[Anomaly] = []
    tests = 0
    for (name, route, ver), bins in series.items():
        ordered = sorted(b for b, cell in bins.items() if cell[0] > 0)
        if len(ordered) < MIN_BINS_BEFORE + MIN_BINS_AFTER:
            continue
        calls_per_request = None
        if all(requests.get((route, ver, b)) for b in ordered):
            calls_per_request = sum(bins[b][0] for b in ordered) / sum(requests[(route, ver, b)] for b in ordered)
        mean_ms_per_call = sum(bins[b][2] for b in ordered) / sum(bins[b][0] for b in ordered) / 1e6
        min_impact_ms = MIN_IMPACT_FRACTION * route_mean_ms.get((route, ver), 0.0)
        metrics = {
            "latency": [bins[b][2] / bins[b][0] / 1e6 for b in ordered],
            "errors": [bins[b][1] / bins[b][0] for b in ordered],
        }
        if all(requests.get((route, ver, b)) for b in ordered):
            metrics["calls"] = [bins[b][0] / requests[(route, ver, b)] for b in ordered]
        for kind, values in metrics.items():
            tests += 1
            found = _shift(values)
            if found is not None:
                split, p, before, after = found
                relative = after / before - 1 if before else None
                big_enough = relative is None or relative >= MIN_RELATIVE_CHANGE
                if kind == "errors":
                    big_enough = after - before >= 0.01 and big_enough
                elif kind == "latency" and calls_per_request is not None:
                    big_enough = big_enough and (after - before) * calls_per_request >= min_impact_ms
                elif kind == "calls":
                    big_enough = big_enough and (after - before) * mean_ms_per_call >= min_impact_ms
                if big_enough:
                    candidates.append(Anomaly(name, route, ver, kind, first + ordered[split] * bin_s, before, after,
                                              None if relative is None else round(relative, 4), p, split, len(ordered) - split, bin_s))
        for (e_name, e_route, e_ver, exc_type), cells in errors_by_type.items():
            if (e_name, e_route, e_ver) != (name, route, ver):
                continue
            first_bin = min(cells)
            baseline_calls = sum(bins[b][0] for b in ordered if b < first_bin)
            bins_before = sum(1 for b in ordered if b < first_bin)
            if bins_before < MIN_BINS_BEFORE:
                continue
            tests += 1
            after_calls = sum(bins[b][0] for b in ordered if b >= first_bin)
            rate = sum(cells.values()) / after_calls if after_calls else 0.0
            p = (1 - rate) ** baseline_calls if rate < 1 else 0.0
            candidates.append(Anomaly(name, route, ver, "new_error_type", first + first_bin * bin_s, 0.0, round(rate, 4), None, p,
                                      bins_before, len(ordered) - bins_before, bin_s, exc_type))
    # Route first, as diff: a latency or calls anomaly stands only on a route whose own mean latency
    # per request shifted up, by at least MIN_ROUTE_CHANGE, significantly (same CUSUM + Welch test).
    route_shifts: dict[tuple, tuple[float, float]] = {}
    window_series = getattr(source, "route_window_series", None)
    if window_series is not None:
        route_bins: dict[tuple, dict[int, list]] = {}
        for start, end, route, ver, count, _errors, total_ns in window_series(None, version):
            if since is not None and end < since:
                continue
            cell = route_bins.setdefault((route, ver), {}).setdefault(bin_of(start), [0, 0])
            cell[0] += count
            cell[1] += total_ns
        for key, bins in route_bins.items():
            ordered = sorted(b for b, cell in bins.items() if cell[0] > 0)
            if len(ordered) < MIN_BINS_BEFORE + MIN_BINS_AFTER:
                continue
            tests += 1
            found_shift = _shift([bins[b][1] / bins[b][0] / 1e6 for b in ordered])
            if found_shift is not None:
                _split, p, before, after = found_shift
                if before > 0 and after / before - 1 >= MIN_ROUTE_CHANGE:
                    route_shifts[key] = (p, round(after / before - 1, 4))
    threshold = ALPHA / max(1, tests)
    if window_series is not None:
        kept = []
        for a in candidates:
            shift = route_shifts.get((a.route, a.version))
            if a.kind in ("latency", "calls"):
                if shift is None or shift[0] >= threshold:
                    continue
            if shift is not None:
                a.route_change = shift[1]
            kept.append(a)
        candidates = kept
    found = [a for a in candidates if a.p_value < threshold]
    found.sort(key=lambda a: (a.p_value, a.function))
    return found


def _shift(values: list[float]):
    """(index of the first bin after the change, p, mean before, mean after) or None."""
    split = cusum_changepoint(values) + 1
    if split < MIN_BINS_BEFORE or len(values) - split < MIN_BINS_AFTER:
        return None
    before, after = values[:split], values[split:]
    mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
    if mean_after <= mean_before:
        return None
    splits_possible = len(values) - MIN_BINS_BEFORE - MIN_BINS_AFTER + 1
    p = min(1.0, welch_greater(before, after) * splits_possible)
    return split, p, round(mean_before, 6), round(mean_after, 6)
