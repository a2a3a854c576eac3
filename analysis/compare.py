"""Version diff and route-change explanation: which function's code or behaviour changed, and how
much of each route's change it explains.

Route first: every route gets a verdict (``slower``, ``faster``, ``errors`` or ``unchanged``) from its own
figures, judged across export windows and net of machine drift; only a route with a verdict gets
findings, and a finding is a part of that route's change along its call tree: a function's own
time, its fan-out (how often it calls a callee, per call of itself: N+1, retries; the caller's part,
not the callee's), a new call path, or an exception type it raises. The parts add up exactly to
the route's observed change. See :mod:`funcsight.analysis.attribution` for the rules and bars.

The JSON of the last release keeps its fields: ``kind`` now names the kind of part (``self_time``,
``fan_out``, ``new_call``, ``errors``, ``new_error_type``) and ``impact_ms_per_request`` is the part in ms
per request; ``path``, ``share``, ``test``, ``callees``, ``file``, ``line`` are new, as are the
diff's ``routes`` (verdicts) and ``drift``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from funcsight.analysis import attribution as at
from funcsight.analysis.breakdown import AnalysisError, check_filters
from funcsight.analysis.stats import hodges_lehmann_shift, holm, mann_whitney_greater
from funcsight.histogram import quantile_ns
from funcsight.sources.base import Aggregate, Source

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
    change: str  # self_time | fan_out | new_call | removed_call | errors | new_error_type
    baseline: Figures
    candidate: Figures
    impact_ms_per_request: float  # the part of the route's change, ms per request
    p_value: float
    relative_change: float | None
    code_changed: bool | None
    exception_types: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)  # from the route's entry down to the function
    share: float = 0.0  # of the route's change net of drift (errors: of its requests that raised it)
    test: str = ""  # the significance test behind p_value
    callees: list[dict] = field(default_factory=list)  # fan_out/new_call: callee, calls per call before -> after
    file: str | None = None
    line: int | None = None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["kind"] = self.change  # the contract's `kind`: what changed
        data["function_kind"] = self.kind
        data["significance"] = self.p_value
        del data["change"]
        return data


@dataclass
class RouteVerdict:
    route: str
    verdict: str  # slower | faster | errors | unchanged
    baseline_requests: int
    candidate_requests: int
    baseline_mean_ms: float
    candidate_mean_ms: float
    change_ms: float  # observed
    drift_ms: float  # the part machine drift explains
    relative_change: float  # Hodges-Lehmann shift of per-window latency net of drift / baseline median window
    baseline_p95_ms: float
    candidate_p95_ms: float
    baseline_failed_rate: float
    candidate_failed_rate: float
    p_value: float
    margin: float  # the relative change it had to reach
    windows: tuple[int, int]
    test: str

    def as_dict(self) -> dict:
        return asdict(self)


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
    routes: list[RouteVerdict] = field(default_factory=list)
    drift: at.Drift = field(default_factory=at.Drift)

    def unattributed_routes(self) -> list[tuple[str, str]]:
        """(route, verdict) of routes judged slower or faster with no finding in that direction: the
        route's change is real but no part of it is significant on its own (say so, never "0")."""
        named = {(f.route, "slower") for f in self.regressions} | {(f.route, "faster") for f in self.improvements}
        return [(v.route, v.verdict) for v in self.routes if v.verdict in ("slower", "faster") and (v.route, v.verdict) not in named]

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
            "routes": [v.as_dict() for v in self.routes],
            "drift": self.drift.as_dict(),
            "unattributed_routes": [{"route": r, "verdict": v} for r, v in self.unattributed_routes()],
            "method": {
                "alpha": ALPHA,
                "tests_made": self.tests_made,
                "min_relative_change": MIN_RELATIVE_CHANGE,
                "min_latency_change": MIN_LATENCY_CHANGE,
                "min_impact_fraction_of_route_latency": MIN_IMPACT_FRACTION,
                "min_route_change": at.MIN_ROUTE_CHANGE,
                "min_share_of_route_change": at.MIN_SHARE,
                "route_test": ("exact Mann-Whitney U on per-window mean latency (baseline x drift factor), size by the Hodges-Lehmann "
                               "shift; latency over the routes where something changed, failed requests over all, "
                               "alpha split between them, Holm within each"),
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


def _window_ms(side: at.Side, scale: float = 1.0) -> list[float]:
    return [total / requests / 1e6 * scale for requests, total in side.windows if requests]


def _changed_ms(side: at.Side, stable: set[tuple]) -> list[float]:
    """Per window: the route's time per request minus the self time of its stable nodes (the time of
    what may have changed)."""
    if not stable:
        return [total / requests / 1e6 for requests, total in side.windows if requests]
    cells = []
    by_window = list(zip(*[side.node_windows.get(p, []) for p in stable])) if all(
        len(side.node_windows.get(p, [])) == len(side.windows) for p in stable) else None
    if by_window is None:
        return []
    for (requests, total), nodes in zip(side.windows, by_window):
        if requests:
            cells.append((total - sum(self_ns for _calls, self_ns in nodes)) / requests / 1e6)
    return cells


def _latency_test(a: at.Side, b: at.Side, factor: float, margin: float, bar: float, what: str, excluded: set[tuple]):
    """(windows A, windows B, direction, p, relative change, test) of the route's time minus the
    self time of ``excluded``, across export windows."""
    win_a, win_b = _changed_ms(a, excluded), _changed_ms(b, excluded)
    stable_a = sum(a.per_request(a.nodes[p].self_ns) for p in excluded)
    stable_b = sum(b.per_request(b.nodes[p].self_ns) for p in excluded)
    net_ms = (b.mean_ms - stable_b) - factor * (a.mean_ms - stable_a)
    typical_a = a.mean_ms
    windowed = len(win_a) >= at.MIN_WINDOWS and len(win_b) >= at.MIN_WINDOWS
    if windowed:
        typical_a = at._median(_window_ms(a)) or a.mean_ms
        net_ms = hodges_lehmann_shift([v * factor for v in win_a], win_b)
    relative = net_ms / typical_a if typical_a else 0.0
    direction = ""
    if relative >= margin and net_ms >= at.MIN_ROUTE_CHANGE_MS:
        direction = "slower"
    elif relative <= -margin / (1 + margin) and -net_ms >= at.MIN_ROUTE_CHANGE_MS:
        direction = "faster"
    if not direction:
        return win_a, win_b, "", 1.0, relative, "none: the change is below the margin"
    scaled_a = [v * factor for v in win_a]
    # Across windows when there are enough of them to reach the bar at all (the smallest p of the
    # exact test is 1 / C(n_a + n_b, n_a)); with fewer, over requests, and the test says so.
    if windowed and 1 / math.comb(len(win_a) + len(win_b), len(win_a)) < bar / 10:
        test = f"exact Mann-Whitney U on per-window mean {what} per request (baseline x drift)"
        p = at.window_test(win_b, scaled_a) if direction == "slower" else at.window_test(scaled_a, win_b)
    else:
        test = "Mann-Whitney U on request durations (too few export windows to test across them)"
        p = mann_whitney_greater(a.hist, b.hist) if direction == "slower" else mann_whitney_greater(b.hist, a.hist)
    return win_a, win_b, direction, p, relative, test


def _route_verdict(route: str, a: at.Side, b: at.Side, drift: at.Drift, parts: list[at.Part], stable: set[tuple],
                   hashes_known: bool, changed: set[str], bar: float = ALPHA) -> tuple[RouteVerdict, float, str]:
    """The latency verdict's figures and its p (the direction decided by the change); the failed-
    request test is made by the caller. With code hashes, the self time of nodes whose code, calls and
    callees are unchanged is the machine's and is taken out; the rest is compared with the baseline's
    times the drift factor. Without them the whole route is, against a margin widened by the spread.

    A second test, when it differs, takes out the self time of every node whose own code, calls and
    callees are unchanged whatever its callers (see ``_latency_test``'s caller below).

    The size of the change is taken across export windows, as the test is: the Hodges-Lehmann shift
    of the per-window means (baseline x drift) over the baseline's median window. The run's plain
    mean is not used for the decision: one cold or busy window (the first request of a process
    compiling templates, a neighbour's burst) moves it by its whole weight."""
    factor = drift.factor
    margin = at.MIN_ROUTE_CHANGE if hashes_known else max(at.MIN_ROUTE_CHANGE, drift.spread)
    excluded = stable if hashes_known else set()
    if excluded and at.untouched(a, b, excluded):  # nothing on the route changed: its time outside sensed code is the machine's too
        win_a, win_b = _changed_ms(a, excluded), _changed_ms(b, excluded)
        relative, p, direction = 0.0, 1.0, ""
        test = "none: nothing on the route changed (code, calls and callees): the machine's"
    else:
        # What is tested: the route's time minus the self time of unchanged code (whole path
        # unchanged), and - a second test when it differs - minus the self time of every node whose
        # own code, calls and callees are unchanged (a lock holder's sleeping callee whose wake-ups a
        # busy machine delays tenfold in some windows is not evidence about the changed code). The
        # smaller p of the two, doubled (Bonferroni), decides.
        sets = [("route time minus unchanged code" if excluded else "route time", excluded)]
        same_code = at.same_code_paths(a, b, changed) if hashes_known else set()
        if same_code - excluded:
            sets.append(("route time minus same-code callees", excluded | same_code))
        tried = [_latency_test(a, b, factor, margin, bar / len(sets), what, paths) for what, paths in sets]
        chosen = min(tried, key=lambda t: (not t[2], t[3]))
        win_a, win_b, direction, p, relative, test = chosen
        p = min(1.0, p * len(sets)) if direction else 1.0
        if direction and len(sets) > 1:
            test += f" (the smaller p of {len(sets)} tests, x{len(sets)})"
    drift_ms = sum(part.ms for part in parts if part.kind in ("drift", "unchanged_code"))
    verdict = RouteVerdict(
        route, "unchanged", a.requests, b.requests, round(a.mean_ms, 4), round(b.mean_ms, 4), round(b.mean_ms - a.mean_ms, 4),
        round(drift_ms, 4), round(relative, 4),
        round(quantile_ns(a.hist, 0.95) / 1e6, 4) if a.hist else 0.0, round(quantile_ns(b.hist, 0.95) / 1e6, 4) if b.hist else 0.0,
        round(a.errors / a.requests, 4), round(b.errors / b.requests, 4), p, round(margin, 4), (len(win_a), len(win_b)), test,
    )
    return verdict, p, direction


def _enclosing(path: tuple) -> tuple:
    """``path`` up to the nearest function that is not a comprehension, generator expression or
    lambda defined in its caller (``f.<locals>.<genexpr>`` called by ``f``): the code that decides."""
    while len(path) >= 2 and path[-1].startswith(path[-2] + ".<locals>.<") and path[-1].endswith(">"):
        path = path[:-1]
    return path


def _own_time_p(a: at.Side, b: at.Side, path: tuple, factor: float, slower: bool, fallback: tuple) -> tuple[float, float]:
    """(p, relative change net of drift) of one node's self time per call, across windows."""
    na, nb = a.nodes[path], b.nodes[path]
    wa, wb = at.per_call_windows(a, path), at.per_call_windows(b, path)
    rel = at.robust_ratio(wa, wb, na.self_ns / na.calls, nb.self_ns / nb.calls) / factor - 1
    if len(wa) >= at.MIN_WINDOWS and len(wb) >= at.MIN_WINDOWS:
        scaled = [v * factor for v in wa]
        return (at.window_test(wb, scaled) if slower else at.window_test(scaled, wb)), rel
    agg_a, agg_b = fallback  # no per-window tree: the function's duration histograms on the route
    if agg_a is None or agg_b is None:
        return 1.0, rel
    return (mann_whitney_greater(agg_a.hist, agg_b.hist) if slower else mann_whitney_greater(agg_b.hist, agg_a.hist)), rel


def diff(source: Source, baseline: str, candidate: str, route: str | None = None) -> Diff:
    if baseline == candidate:
        raise AnalysisError("baseline and candidate are the same version; name two different versions")
    check_filters(source, route, baseline)
    check_filters(source, route, candidate)
    sides_a, sides_b = at.load_sides(source, baseline), at.load_sides(source, candidate)
    hashes_a, hashes_b = source.code_hashes(baseline), source.code_hashes(candidate)
    changed = {name for name in set(hashes_a) & set(hashes_b) if hashes_a[name] != hashes_b[name]}
    pairs = {r: (sides_a[r], sides_b[r]) for r in sorted(set(sides_a) & set(sides_b))}
    hashes_known = bool(hashes_a) and bool(hashes_b)
    drift = at.estimate_drift(pairs, changed)  # from every route, whatever the filter
    aggregates = source.function_aggregates(route)
    functions_a, functions_b = _by_route(aggregates, baseline), _by_route(aggregates, candidate)
    locations = source.code_locations(candidate)

    def code_changed(name: str) -> bool | None:
        if name in hashes_a and name in hashes_b:
            return hashes_a[name] != hashes_b[name]
        return None

    tests = 0  # tests of parts (the findings' family)
    # Route verdicts are their own families, judged before any part: latency over the routes where
    # something changed (code, calls or callees: decided from hashes and call counts, not from the
    # latencies tested; an untouched route's time is the machine's and is not tested at all), and
    # the failed-request rate over every route; alpha split between the two, Holm within each.
    in_scope = [r for r in pairs if route is None or r == route]
    stables = {r: at.stable_paths(*pairs[r], changed) for r in in_scope}
    latency_family = [r for r in in_scope if not (hashes_known and at.untouched(*pairs[r], stables[r]))]
    latency_alpha, failed_alpha = ALPHA / 2, ALPHA / 2
    route_tests = len(latency_family) + len(in_scope)
    verdicts: list[RouteVerdict] = []
    route_p: dict[str, tuple[float, str, float, str]] = {}  # route -> (latency p, direction, failed p, ...)
    candidates: list[tuple[str, Finding]] = []  # (route direction it needs, finding)
    removed: list[dict] = []
    for route_name in in_scope:
        a, b = pairs[route_name]
        stable = stables[route_name]
        parts = at.decompose(a, b, drift.factor, stable if hashes_known else set())
        bar = latency_alpha / max(1, len(latency_family))  # the smallest p must pass this (Holm's first step)
        verdict, p_latency, direction = _route_verdict(route_name, a, b, drift, parts, stable, hashes_known, changed, bar)
        failed_p = 1.0
        if b.errors / b.requests - a.errors / a.requests >= at.MIN_ERROR_RATE_CHANGE:
            failed_p = at.error_rate_test(a.errors, a.requests, b.errors, b.requests)
        verdicts.append(verdict)
        route_p[route_name] = (p_latency, direction, failed_p, "")
        net_change = (b.mean_ms - a.mean_ms) - verdict.drift_ms
        route_wa, route_wb = _window_ms(a, drift.factor), _window_ms(b)
        if len(route_wa) >= at.MIN_WINDOWS and len(route_wb) >= at.MIN_WINDOWS:
            # shares of the change the verdict saw, across windows (the run's means move with one cold window)
            net_change = hodges_lehmann_shift(route_wa, route_wb)
        fa_route, fb_route = functions_a.get(route_name, {}), functions_b.get(route_name, {})

        def figures(name: str) -> tuple[Figures, Figures, str]:
            keys = [k for k in set(fa_route) | set(fb_route) if k[0] == name]
            key = keys[0] if keys else (name, "function")
            return _figures(fa_route.get(key, Aggregate()), a.requests), _figures(fb_route.get(key, Aggregate()), b.requests), key[1]

        def finding(path: tuple, change: str, ms: float, p: float, rel: float | None, test: str, callees=(), types=()) -> Finding:
            if change in ("fan_out", "new_call"):
                path = _enclosing(path)  # a generator expression's calls are its defining function's
            name = path[-1] if path else route_name
            fa, fb, kind = figures(name)
            where = locations.get(name)
            node = b.nodes.get(path) or a.nodes.get(path)
            share = ms / net_change if net_change else 0.0
            return Finding(name, kind, route_name, change, fa, fb, round(ms, 4), p, None if rel is None else round(rel, 4),
                           code_changed(name), list(types), list(path), round(share, 4), test, list(callees),
                           (node.file if node is not None and node.file else where[0] if where else None),
                           (node.line if node is not None and node.line else where[1] if where else None))

        # own time
        for part in parts:
            if part.kind != "self_time" or not part.ms:
                continue
            tests += 1
            ms = part.ms
            wa, wb = at.per_call_windows(a, part.path), at.per_call_windows(b, part.path)
            if len(wa) >= at.MIN_WINDOWS and len(wb) >= at.MIN_WINDOWS:  # sized across windows, as the verdict
                ms = b.nodes[part.path].calls / b.requests * hodges_lehmann_shift([v * drift.factor for v in wa], wb) / 1e6
            slower = ms > 0
            fallback = (fa_route.get((part.path[-1], "function")), fb_route.get((part.path[-1], "function")))
            p, rel = _own_time_p(a, b, part.path, drift.factor, slower, fallback)
            bar = max(at.MIN_SELF_CHANGE, drift.spread)
            if (rel >= bar if slower else rel <= -bar / (1 + bar)):
                candidates.append(("slower" if slower else "faster",
                                   finding(part.path, "self_time", ms, p, rel, "Mann-Whitney U on per-window self time per call (baseline x drift)")))
        # fan-out, new and removed calls: per caller
        by_caller: dict[tuple, list] = {}
        for part in parts:
            if part.kind in ("fan_out", "new_call", "removed_call") and part.ms:
                tests += 1
                ka, kb = part.calls_per_call
                parent = part.path
                exposure_a = a.nodes[parent].calls if parent else a.requests
                exposure_b = b.nodes[parent].calls if parent in b.nodes else (b.requests if not parent else 0)
                calls_a = a.nodes[part.callee].calls if part.callee in a.nodes else 0
                calls_b = b.nodes[part.callee].calls if part.callee in b.nodes else 0
                up = kb > ka
                if part.kind == "fan_out" and (not ka or abs(kb / ka - 1) < at.MIN_FANOUT_CHANGE):
                    continue
                if (part.ms > 0) != up:
                    continue  # more calls of a callee that now costs less: not a fan-out regression
                p = at.count_test(calls_a, exposure_a, calls_b, exposure_b, up)
                by_caller.setdefault((parent, part.kind), []).append((part, p))
        for (parent, kind), items in by_caller.items():
            ms = sum(part.ms for part, _p in items)
            p = max(p for _part, p in items)
            callees = [{"function": part.callee[-1], "path": list(part.callee), "calls_per_call_before": round(part.calls_per_call[0], 4),
                        "calls_per_call_after": round(part.calls_per_call[1], 4), "part_ms_per_request": round(part.ms, 4)}
                       for part, _p in sorted(items, key=lambda item: -abs(item[0].ms))]
            first = items[0][0]
            rel = (first.calls_per_call[1] / first.calls_per_call[0] - 1) if first.calls_per_call[0] else None
            shown_kind = "fan_out" if kind == "removed_call" else kind
            candidates.append(("slower" if ms > 0 else "faster",
                               finding(parent, shown_kind, ms, p, rel, "conditional binomial test on calls per call of the caller", callees)))
            if kind == "new_call":
                for part, _p in items:
                    pass
        # errors, at the function that raises them
        for path in b.nodes:
            raised_b = at.raised_here(b, path)
            raised_a = at.raised_here(a, path) if path in a.nodes else {}
            calls_a = a.nodes[path].calls if path in a.nodes else 0
            calls_b = b.nodes[path].calls
            for exc, count in raised_b.items():
                tests += 1
                if count / b.requests < at.MIN_ERROR_RATE_CHANGE:
                    continue
                if exc not in raised_a:
                    p = at.count_test(0, a.requests, count, b.requests, True)
                    candidates.append(("errors", finding(path, "new_error_type", 0.0, p, None,
                                                         "conditional binomial test on raises per request", types=[exc])))
                    candidates[-1][1].share = round(count / b.requests, 4)
                elif calls_a and count / calls_b - raised_a[exc] / calls_a >= at.MIN_ERROR_RATE_CHANGE and (
                        count / calls_b) / (raised_a[exc] / calls_a) - 1 >= MIN_RELATIVE_CHANGE:
                    p = at.error_rate_test(raised_a[exc], calls_a, count, calls_b)
                    candidates.append(("errors", finding(path, "errors", 0.0, p, round((count / calls_b) / (raised_a[exc] / calls_a) - 1, 4),
                                                         "two-proportion z-test on raises per call", types=[exc])))
                    candidates[-1][1].share = round(count / b.requests - raised_a[exc] / a.requests, 4)
        for key in sorted(set(fa_route) - set(fb_route)):
            removed.append({"function": key[0], "kind": key[1], "route": route_name, "baseline": asdict(_figures(fa_route[key], a.requests))})

    threshold = ALPHA / max(1, tests)
    slower_or_faster = holm({r: route_p[r][0] for r in latency_family}, latency_alpha)
    failed_rose = holm({r: route_p[r][2] for r in in_scope}, failed_alpha)
    directions: dict[str, str] = {}
    for verdict in verdicts:
        _p, direction, _failed_p, _ = route_p[verdict.route]
        if direction and verdict.route in slower_or_faster:
            verdict.verdict = direction
        elif verdict.route in failed_rose:
            verdict.verdict = "errors"
        directions[verdict.route] = verdict.verdict
    regressions, improvements = [], []
    for needs, item in candidates:
        if item.p_value >= threshold:
            continue
        verdict = directions.get(item.route, "unchanged")
        if needs == "errors":
            regressions.append(item)
            if verdict == "unchanged":
                next(v for v in verdicts if v.route == item.route).verdict = "errors"
        elif needs == verdict and item.share >= at.MIN_SHARE:
            (regressions if needs == "slower" else improvements).append(item)
    regressions.sort(key=lambda f: (-f.share, f.p_value))
    improvements.sort(key=lambda f: (-f.share, f.p_value))
    new_errors = [f for f in regressions if f.change in ("errors", "new_error_type")]
    new_functions = [f for f in regressions if f.change == "new_call"]
    return Diff(baseline, candidate, route, regressions, improvements, new_errors, new_functions, removed, tests + route_tests, verdicts, drift)

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
    parts: list[Part]  # per function: change of self time per request (the flat view)
    unexplained_ms: float  # time outside sensed code (framework, server, unsensed libraries)
    verdict: RouteVerdict | None = None
    drift: dict = field(default_factory=dict)
    drift_ms: float = 0.0
    findings: list[Finding] = field(default_factory=list)  # this route's findings, as diff gives them
    tree: dict = field(default_factory=dict)  # the decomposition along the call tree (adds up to change_ms)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["findings"] = [f.as_dict() for f in self.findings]
        return data


def explain(source: Source, route: str, baseline: str, candidate: str) -> Explanation:
    """Decompose the change of ``route``'s mean latency into per-function (and per outbound span)
    changes of self time per request; the remainder is time outside sensed code."""
    if baseline == candidate:
        raise AnalysisError("baseline and candidate are the same version; name two different versions")
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
    judged = diff(source, baseline, candidate, route)
    verdict = next((v for v in judged.routes if v.route == route), None)
    side_a, side_b = at.load_sides(source, baseline, route)[route], at.load_sides(source, candidate, route)[route]
    hashes_a, hashes_b = source.code_hashes(baseline), source.code_hashes(candidate)
    changed = {name for name in set(hashes_a) & set(hashes_b) if hashes_a[name] != hashes_b[name]}
    stable = at.stable_paths(side_a, side_b, changed) if hashes_a and hashes_b else set()
    decomposition = at.decompose(side_a, side_b, judged.drift.factor, stable)
    tree = decomposition_tree(route, side_a, side_b, decomposition)
    drift_ms = sum(p.ms for p in decomposition if p.kind in ("drift", "unchanged_code"))
    return Explanation(route, baseline, candidate, round(mean_a, 4), round(mean_b, 4), round(mean_b - mean_a, 4), parts,
                       round(unexplained, 4), verdict, judged.drift.as_dict(), round(drift_ms, 4),
                       judged.regressions + judged.improvements, tree)


def decomposition_tree(route: str, a: at.Side, b: at.Side, parts: list[at.Part]) -> dict:
    """The route's change along its call tree: per node its own-time part and the parts of the
    calls it makes (fan-out, new and removed calls: the caller's), ``subtree_ms`` summing both over
    the subtree; the root adds the time outside sensed code and the machine drift. The root's
    ``subtree_ms`` is the route's whole change."""
    own = {p.path: p.ms for p in parts if p.kind in ("self_time", "unchanged_code")}
    unchanged = {p.path for p in parts if p.kind == "unchanged_code"}
    calls: dict[tuple, list] = {}
    for p in parts:
        if p.kind in ("fan_out", "new_call", "removed_call") and abs(p.ms) > 0:
            calls.setdefault(p.path, []).append({
                "kind": p.kind, "callee": p.callee[-1], "ms_per_request": round(p.ms, 4),
                "calls_per_call_before": round(p.calls_per_call[0], 4), "calls_per_call_after": round(p.calls_per_call[1], 4)})
    paths = set(a.nodes) | set(b.nodes)

    def node(path: tuple) -> dict:
        na, nb = a.nodes.get(path), b.nodes.get(path)
        children = sorted((p for p in paths if len(p) == len(path) + 1 and p[:-1] == path))
        kids = [node(p) for p in children]
        mine = own.get(path, 0.0) + sum(c["ms_per_request"] for c in calls.get(path, []))
        out = {
            "function": path[-1] if path else route,
            "path": list(path),
            "status": "" if (na and nb) or not path else ("new" if nb else "vanished"),
            "file": (nb or na).file if path else None,
            "line": (nb or na).line if path else None,
            "calls_per_request": [round(na.calls / a.requests, 4) if na else 0.0, round(nb.calls / b.requests, 4) if nb else 0.0] if path else [1.0, 1.0],
            "self_ms_per_call": [round(na.self_ns / na.calls / 1e6, 4) if na and na.calls else 0.0,
                                 round(nb.self_ns / nb.calls / 1e6, 4) if nb and nb.calls else 0.0] if path else None,
            "own_ms": round(own.get(path, 0.0), 4),
            "unchanged_code": path in unchanged,  # code, calls and callees unchanged: its own change is the machine's
            "calls": sorted(calls.get(path, []), key=lambda c: -abs(c["ms_per_request"])),
            "subtree_ms": round(mine + sum(k["subtree_ms"] for k in kids), 4),
            "children": sorted(kids, key=lambda k: -abs(k["subtree_ms"])),
        }
        return out

    root = node(())
    outside = sum(p.ms for p in parts if p.kind == "outside")
    drift_ms = sum(p.ms for p in parts if p.kind == "drift")
    root["own_ms"] = round(outside, 4)
    root["outside_sensed_code_ms"] = round(outside, 4)
    root["drift_ms"] = round(drift_ms, 4)
    root["subtree_ms"] = round(root["subtree_ms"] + outside + drift_ms, 4)
    return root
