"""Version diff and route-change explanation: which function's behaviour changed, and by how much
it moved each route's latency.

Everything is per request of the route, so a baseline and a candidate with different traffic are
comparable: calls per request, self time per request, error rate, duration distribution.

A change is reported when it is both **significant** and **large enough** (one rule for every app,
no per-app tuning):

* significance: one-sided p below ``ALPHA`` divided by the number of tests evaluated (Bonferroni:
  every function x route x test, whether or not its effect was large enough), from
  Mann-Whitney U on the duration histograms (latency), the conditional binomial test on call counts
  per request (calls, new functions, new exception types) and the two-proportion z-test (errors).
  A latency change must also hold across export windows: with at least ``MIN_WINDOWS`` windows on
  each side, Welch's t-test on the per-window mean duration must agree (calls within one window share
  the machine's load, so they are not independent evidence of a change);
* effect: a relative increase of at least ``MIN_RELATIVE_CHANGE`` (25 %) in calls per request or
  error rate, or ``MIN_LATENCY_CHANGE`` (50 %) in self time per call, and, for latency and call
  counts, at least ``MIN_IMPACT_FRACTION`` (1 %) of the route's baseline mean latency added per
  request. Latency is judged on self time per call, after dividing out the median change of all
  functions (machine-wide drift), so a caller that got slower only because a callee did does not
  count. Its bar is higher because wall time moves with machine load between two runs (scheduling,
  timer slack, GIL waits) in ways a per-call test cannot tell from a real change; call counts and
  exception types do not.

``impact_ms_per_request`` is the change of the function's self time per request: the parts of all
functions (plus what ran outside sensed code) add up exactly to the route's mean latency change,
which is what ``explain`` shows.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

from funcsight.analysis.breakdown import AnalysisError, check_filters
from funcsight.histogram import quantile_ns
from funcsight.sources.base import Aggregate, RouteAggregate, Source
from funcsight.analysis.stats import mann_whitney_greater, proportion_increase_p, rate_increase_p, welch_greater

ALPHA = 0.01
MIN_RELATIVE_CHANGE = 0.25
MIN_LATENCY_CHANGE = 0.50
MIN_IMPACT_FRACTION = 0.01
MIN_ERROR_RATE_CHANGE = 0.01  # one percentage point
MIN_WINDOWS = 3
OUTSIDE_SENSED_CODE = "(outside sensed code)"


@dataclass
class Figures:
    calls: int
    requests: int
    calls_per_request: float
    p50_ms: float
    p95_ms: float
    mean_ms: float
    self_ms_per_call: float
    self_ms_per_request: float
    error_rate: float
    error_types: dict[str, int]


@dataclass
class Finding:
    function: str
    kind: str  # function | span
    route: str
    change: str  # latency | calls | errors | new_error_type | new_function
    baseline: Figures
    candidate: Figures
    impact_ms_per_request: float
    p_value: float
    relative_change: float | None
    code_changed: bool | None
    exception_types: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["kind"] = self.change  # the contract's `kind`: what changed
        data["function_kind"] = self.kind
        del data["change"]
        return data


@dataclass
class Diff:
    baseline: str
    candidate: str
    route: str | None
    regressions: list[Finding]
    improvements: list[Finding]
    new_errors: list[Finding]
    new_functions: list[Finding]
    removed_functions: list[dict]
    tests_made: int

    def as_dict(self) -> dict:
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "route": self.route,
            "regressions": [f.as_dict() for f in self.regressions],
            "improvements": [f.as_dict() for f in self.improvements],
            "new_errors": [f.as_dict() for f in self.new_errors],
            "new_functions": [f.as_dict() for f in self.new_functions],
            "removed_functions": self.removed_functions,
            "method": {
                "alpha": ALPHA,
                "tests_made": self.tests_made,
                "min_relative_change": MIN_RELATIVE_CHANGE,
                "min_latency_change": MIN_LATENCY_CHANGE,
                "min_impact_fraction_of_route_latency": MIN_IMPACT_FRACTION,
            },
        }


def _figures(agg: Aggregate, requests: int) -> Figures:
    per_request = requests or 1
    return Figures(
        calls=agg.calls,
        requests=requests,
        calls_per_request=round(agg.calls / per_request, 4),
        p50_ms=round(quantile_ns(agg.hist, 0.5) / 1e6, 4),
        p95_ms=round(quantile_ns(agg.hist, 0.95) / 1e6, 4),
        mean_ms=round(agg.total_ns / agg.calls / 1e6, 4) if agg.calls else 0.0,
        self_ms_per_call=round(agg.self_ns / agg.calls / 1e6, 4) if agg.calls else 0.0,
        self_ms_per_request=round(agg.self_ns / per_request / 1e6, 4),
        error_rate=round(agg.errors / agg.calls, 4) if agg.calls else 0.0,
        error_types=dict(sorted(agg.errors_by_type.items())),
    )


def _by_route(aggregates: dict[tuple, Aggregate], version: str) -> dict[str, dict[tuple[str, str], Aggregate]]:
    routes: dict[str, dict] = {}
    for (name, kind, route, agg_version), agg in aggregates.items():
        if agg_version == version:
            routes.setdefault(route, {})[(name, kind)] = agg
    return routes


def diff(source: Source, baseline: str, candidate: str, route: str | None = None) -> Diff:
    if baseline == candidate:
        raise AnalysisError("baseline and candidate are the same version; name two different versions")
    check_filters(source, route, baseline)
    check_filters(source, route, candidate)
    aggregates = source.function_aggregates(route)
    route_aggs = source.route_aggregates(route)
    functions_a, functions_b = _by_route(aggregates, baseline), _by_route(aggregates, candidate)
    hashes_a, hashes_b = source.code_hashes(baseline), source.code_hashes(candidate)
    drift = _latency_drift(functions_a, functions_b)
    windows_a, windows_b = _window_means(source, baseline), _window_means(source, candidate)

    candidates: list[tuple[str, Finding]] = []  # (what it is, finding) before the significance cut
    removed: list[dict] = []
    tests = 0  # every test evaluated, passed its effect-size bar or not: the Bonferroni divisor
    for route_name in sorted(set(functions_a) & set(functions_b)):
        requests_a = route_aggs.get((route_name, baseline), RouteAggregate()).requests
        requests_b = route_aggs.get((route_name, candidate), RouteAggregate()).requests
        if not requests_a or not requests_b:
            continue  # background work has no requests to compare per
        route_mean_ms = route_aggs[(route_name, baseline)].total_ns / requests_a / 1e6
        min_impact = MIN_IMPACT_FRACTION * route_mean_ms
        in_a, in_b = functions_a[route_name], functions_b[route_name]
        for key in sorted(set(in_a) | set(in_b)):
            a, b = in_a.get(key, Aggregate()), in_b.get(key, Aggregate())
            fa, fb = _figures(a, requests_a), _figures(b, requests_b)
            code_changed = None
            if key[0] in hashes_a and key[0] in hashes_b:
                code_changed = hashes_a[key[0]] != hashes_b[key[0]]

            def finding(change: str, p: float, relative: float | None, types=()) -> Finding:
                return Finding(
                    key[0], key[1], route_name, change, fa, fb,
                    round(fb.self_ms_per_request - fa.self_ms_per_request, 4), p, relative, code_changed, list(types),
                )

            if a.calls == 0:
                tests += 1
                p = rate_increase_p(0, requests_a, b.calls, requests_b)
                candidates.append(("new_function", finding("new_function", p, None)))
                continue
            if b.calls == 0:
                removed.append({"function": key[0], "kind": key[1], "route": route_name, "baseline": asdict(fa)})
                continue
            tests += 2 + len(b.errors_by_type) + 1  # latency, calls, each exception type, error rate
            per_window = (windows_a.get(key + (route_name,), []), windows_b.get(key + (route_name,), []))
            _latency_and_calls(candidates, finding, a, b, fa, fb, requests_a, requests_b, drift, min_impact, per_window)
            _errors(candidates, finding, a, b)

    threshold = ALPHA / max(1, tests)
    significant = [(what, item) for what, item in candidates if item.p_value < threshold]
    regressions = [item for what, item in significant if what != "improvement"]
    improvements = [item for what, item in significant if what == "improvement"]
    new_errors = [item for item in regressions if item.change in ("errors", "new_error_type")]
    new_functions = [item for item in regressions if item.change == "new_function"]
    regressions.sort(key=lambda f: (-f.impact_ms_per_request, f.p_value))
    improvements.sort(key=lambda f: f.impact_ms_per_request)
    return Diff(baseline, candidate, route, regressions, improvements, new_errors, new_functions, removed, tests)


def _latency_drift(functions_a: dict, functions_b: dict) -> float:
    """Median ratio of self time per call, over functions seen in both versions: what changed for
    everything at once (a busier machine), not for one function."""
    ratios = []
    for route_name in set(functions_a) & set(functions_b):
        for key, a in functions_a[route_name].items():
            b = functions_b[route_name].get(key)
            if b is not None and a.calls and b.calls and a.self_ns > 0 and b.self_ns > 0:
                ratios.append((b.self_ns / b.calls) / (a.self_ns / a.calls))
    return statistics.median(ratios) if len(ratios) >= 3 else 1.0


def _window_means(source: Source, version: str) -> dict[tuple, list[float]]:
    """``(function, kind, route) -> [mean duration per call in each export window]``."""
    means: dict[tuple, list[float]] = {}
    for _start, _end, name, kind, route, _version, calls, _errors, total_ns in source.series(version):
        if calls:
            means.setdefault((name, kind, route), []).append(total_ns / calls)
    return means


def _latency_p(slower: Aggregate, faster: Aggregate, windows_slower: list, windows_faster: list) -> float:
    """Per-call evidence (Mann-Whitney on the histograms), confirmed across windows when there are
    enough of them: the larger of the two p-values."""
    p = mann_whitney_greater(faster.hist, slower.hist)
    if len(windows_slower) >= MIN_WINDOWS and len(windows_faster) >= MIN_WINDOWS:
        p = max(p, welch_greater(windows_faster, windows_slower))
    return p


def _latency_and_calls(candidates, finding, a, b, fa, fb, requests_a, requests_b, drift, min_impact, per_window) -> None:
    impact = fb.self_ms_per_request - fa.self_ms_per_request
    self_a = a.self_ns / a.calls
    self_b = b.self_ns / b.calls
    if self_a > 0:
        relative = (self_b / self_a) / drift - 1
        # Self time per call moved; its distribution is unrecorded, so the duration histograms
        # carry the significance test (for a leaf they are the same thing).
        if relative >= MIN_LATENCY_CHANGE and impact >= min_impact:
            p = _latency_p(b, a, per_window[1], per_window[0])
            candidates.append(("latency", finding("latency", p, round(relative, 4))))
        elif relative <= -MIN_LATENCY_CHANGE / (1 + MIN_LATENCY_CHANGE) and -impact >= min_impact:
            p = _latency_p(a, b, per_window[0], per_window[1])
            candidates.append(("improvement", finding("latency", p, round(relative, 4))))
    cpr_a, cpr_b = a.calls / requests_a, b.calls / requests_b
    relative_calls = cpr_b / cpr_a - 1
    if relative_calls >= MIN_RELATIVE_CHANGE and impact >= min_impact:
        candidates.append(("calls", finding("calls", rate_increase_p(a.calls, requests_a, b.calls, requests_b), round(relative_calls, 4))))
    elif relative_calls <= -MIN_RELATIVE_CHANGE / (1 + MIN_RELATIVE_CHANGE) and -impact >= min_impact:
        candidates.append(("improvement", finding("calls", rate_increase_p(b.calls, requests_b, a.calls, requests_a), round(relative_calls, 4))))


def _errors(candidates, finding, a: Aggregate, b: Aggregate) -> None:
    for exc_type, count in b.errors_by_type.items():
        if exc_type not in a.errors_by_type:
            p = rate_increase_p(0, a.calls, count, b.calls)
            candidates.append(("new_error_type", finding("new_error_type", p, None, [exc_type])))
    rate_a, rate_b = a.errors / a.calls, b.errors / b.calls
    known_types = [t for t in b.errors_by_type if t in a.errors_by_type]
    if known_types and rate_b - rate_a >= MIN_ERROR_RATE_CHANGE and (rate_a == 0 or rate_b / rate_a - 1 >= MIN_RELATIVE_CHANGE):
        p = proportion_increase_p(a.errors, a.calls, b.errors, b.calls)
        candidates.append(("errors", finding("errors", p, round(rate_b / rate_a - 1, 4) if rate_a else None, known_types)))


@dataclass
class Part:
    function: str
    kind: str
    baseline_ms_per_request: float
    candidate_ms_per_request: float
    delta_ms: float
    calls_per_request_baseline: float
    calls_per_request_candidate: float


@dataclass
class Explanation:
    route: str
    baseline: str
    candidate: str
    baseline_mean_ms: float
    candidate_mean_ms: float
    change_ms: float
    parts: list[Part]
    unexplained_ms: float  # time outside sensed code (framework, server, unsensed libraries)

    def as_dict(self) -> dict:
        return asdict(self)


def explain(source: Source, route: str, baseline: str, candidate: str) -> Explanation:
    """Decompose the change of ``route``'s mean latency into per-function (and per outbound span)
    changes of self time per request; the remainder is time outside sensed code."""
    check_filters(source, route, baseline)
    check_filters(source, route, candidate)
    route_aggs = source.route_aggregates(route)
    ra, rb = route_aggs.get((route, baseline)), route_aggs.get((route, candidate))
    if ra is None or rb is None or not ra.requests or not rb.requests:
        missing = baseline if ra is None or not ra.requests else candidate
        raise AnalysisError(f"route {route!r} has no requests in version {missing!r}; pick versions where it ran")
    aggregates = source.function_aggregates(route)
    in_a = _by_route(aggregates, baseline).get(route, {})
    in_b = _by_route(aggregates, candidate).get(route, {})
    parts = []
    for key in set(in_a) | set(in_b):
        a, b = in_a.get(key, Aggregate()), in_b.get(key, Aggregate())
        before, after = a.self_ns / ra.requests / 1e6, b.self_ns / rb.requests / 1e6
        parts.append(Part(key[0], key[1], round(before, 4), round(after, 4), after - before,
                          round(a.calls / ra.requests, 4), round(b.calls / rb.requests, 4)))
    parts.sort(key=lambda part: -abs(part.delta_ms))
    mean_a, mean_b = ra.total_ns / ra.requests / 1e6, rb.total_ns / rb.requests / 1e6
    sensed_a = sum(p.baseline_ms_per_request for p in parts)
    sensed_b = sum(p.candidate_ms_per_request for p in parts)
    unexplained = (mean_b - sensed_b) - (mean_a - sensed_a)
    for part in parts:
        part.delta_ms = round(part.delta_ms, 4)
    return Explanation(route, baseline, candidate, round(mean_a, 4), round(mean_b, 4), round(mean_b - mean_a, 4), parts, round(unexplained, 4))
