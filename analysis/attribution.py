"""Route-first verdicts and attribution along the call tree, robust to machine drift.

A route's mean latency per request is, exactly, the time outside sensed code plus every call-tree
node's self time per request: ``T = U + sum(c_n * s_n)`` (``c_n`` calls per request, ``s_n`` self time
per call). Between two versions the change splits, exactly, into

* **own time** of node n: ``c_n(B) * (s_n(B) - D * s_n(A))`` — its self time per call changed
  (``D`` is the machine drift, below);
* **fan-out** of the edge caller -> n: ``(c_n(B) - c_n(A) * c_caller(B) / c_caller(A)) * S_n(A) / c_n(A)``,
  the extra (or missing) calls per call of the caller times what one call of n's subtree cost in
  the baseline. It belongs to the **caller**, whose code decides how often to call;
* **new call**: a node only in B, with its whole subtree (``sum c * s`` in B), to its caller; a
  vanished node's baseline subtree likewise, negative;
* **machine drift**: ``(D - 1) * s_n(A) * c_n(B)`` over the nodes, and ``(D - 1) * U(A)``;
* **outside sensed code**: what is left of U's change.

(Telescoping ``c_n = k_1 k_2 ... k_n`` along the path, ``k`` = calls per call of the parent, switching
the factors from A to B top-down, makes the fan-out parts and own-time parts add up to the change of
``sum c * s`` with no remainder.)

**Drift** is estimated from what did not change: nodes whose code hash is the same in both
versions and whose calls per call of their caller are the same (within 2 %), plus the time outside
sensed code of routes whose whole tree is such nodes (untouched routes). ``D`` is their median
ratio of self time per call (weighted by time), each ratio taken on per-window medians so one busy
window does not move it. ``spread`` is the largest deviation ``|ratio / D - 1|`` among those of them
that matter (>= 5 % of their route's time, enough calls): how much unchanged code moved between the
two runs. A uniform slowdown gives ``D`` > 1 and a small spread; a CPU-burning neighbour, which slows
CPU-bound code but not waits, gives a large spread. Either way unchanged code cannot pass the bars.

**Verdict** (route first): a route is ``slower`` / ``faster`` when the Hodges-Lehmann shift of its
per-window means (baseline x D) is at least ``max(MIN_ROUTE_CHANGE, spread)`` of its baseline's median
window (and ``MIN_ROUTE_CHANGE_MS``), and the per-window means of B rank above (below) A's scaled by
D (Mann-Whitney on windows: one busy window is one observation, not hundreds) below the bar of its
family: the routes where something changed (an untouched route is the machine's, not tested),
alpha/2, Holm's step-down (``stats.holm``). ``errors`` when a new exception type is raised (or an
error rate rose) significantly on it, or its failed-request rate rose (alpha/2 over every route).

**Findings** are parts of a route with a verdict, in its direction, each significant on its own:
own time (per-window self time per call against the baseline's times D; its change beyond D at
least ``max(MIN_SELF_CHANGE, spread of the other unchanged nodes)``), fan-out and new calls (the
calls test on counts, which machine load does not change), errors at the function that raises
(its count minus its callees'), and explaining at least ``MIN_SHARE`` of the route's change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from funcsight.analysis.stats import mann_whitney_exact_greater, proportion_increase_p, rate_increase_p
from funcsight.sources.base import PathAggregate, Source

ALPHA = 0.01
MIN_ROUTE_CHANGE = 0.10
MIN_ROUTE_CHANGE_MS = 0.2
MIN_SHARE = 0.10
MIN_SELF_CHANGE = 0.10
MIN_FANOUT_CHANGE = 0.10
MIN_ERROR_RATE_CHANGE = 0.01
MIN_WINDOWS = 3
SPREAD_QUANTILE = 0.75  # of unchanged code's deviations from the drift factor: the spread
MATERIAL_FRACTION = 0.05  # a drift component must hold this much of its route's time
MIN_CALLS = 20
STABLE_CALLS_TOLERANCE = 0.02
OUTSIDE = "(outside sensed code)"
DRIFT = "(machine drift)"


# ------------------------------------------------------------------------------------- the data
@dataclass
class Side:
    """One route in one version: totals and per-window figures."""

    requests: int = 0
    errors: int = 0
    total_ns: int = 0
    hist: dict = field(default_factory=dict)
    nodes: dict[tuple, PathAggregate] = field(default_factory=dict)
    windows: list[tuple[int, int]] = field(default_factory=list)  # (requests, total_ns) per window
    node_windows: dict[tuple, list[tuple[int, int]]] = field(default_factory=dict)  # path -> (calls, self_ns)
    outside_windows: list[float] = field(default_factory=list)  # U per request per window

    @property
    def mean_ms(self) -> float:
        return self.total_ns / self.requests / 1e6 if self.requests else 0.0

    def per_request(self, ns: float) -> float:
        return ns / self.requests / 1e6 if self.requests else 0.0

    def outside_ms(self) -> float:
        return self.per_request(self.total_ns - sum(n.self_ns for n in self.nodes.values()))


def load_sides(source: Source, version: str, route: str | None = None) -> dict[str, Side]:
    """Every route's :class:`Side` in ``version`` (routes without requests are left out)."""
    sides: dict[str, Side] = {}
    for (route_name, _v), agg in source.route_aggregates(route, version).items():
        if agg.requests:
            sides[route_name] = Side(agg.requests, agg.errors, agg.total_ns, dict(agg.hist))
    for (route_name, _v, path), node in source.path_aggregates(route, version).items():
        if route_name in sides:
            sides[route_name].nodes[path] = node
    window_series = getattr(source, "route_window_series", None)
    path_series = getattr(source, "path_series", None)
    cells: dict[tuple, list] = {}
    if window_series is not None:
        for start, end, route_name, _v, requests, _errors, total_ns in window_series(route, version):
            if route_name in sides:
                cell = cells.setdefault((route_name, start, end), [0, 0, {}])
                cell[0] += requests
                cell[1] += total_ns
    if path_series is not None and cells:
        for start, end, route_name, _v, path, calls, _errors, _total, self_ns in path_series(route, version):
            cell = cells.get((route_name, start, end))
            if cell is not None:
                into = cell[2].setdefault(path, [0, 0])
                into[0] += calls
                into[1] += self_ns
    for (route_name, _start, _end), (requests, total_ns, nodes) in sorted(cells.items(), key=lambda kv: kv[0][1]):
        if not requests:
            continue
        side = sides[route_name]
        side.windows.append((requests, total_ns))
        for path, (calls, self_ns) in nodes.items():
            side.node_windows.setdefault(path, []).append((calls, self_ns))
        if nodes:
            side.outside_windows.append((total_ns - sum(s for _c, s in nodes.values())) / requests / 1e6)
    return sides


# ---------------------------------------------------------------------------------------- drift
@dataclass
class Drift:
    factor: float = 1.0
    spread: float = 0.0
    components: int = 0
    material: list[tuple[str, str, float]] = field(default_factory=list)  # (route, node, deviation)


    def as_dict(self) -> dict:
        return {"factor": round(self.factor, 4), "spread": round(self.spread, 4), "components": self.components,
                "method": "median ratio of per-window self time per call over nodes with unchanged code and calls per "
                          "call, and time outside sensed code of untouched routes; spread = largest deviation of those "
                          f">= {MATERIAL_FRACTION:.0%} of their route"}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return 0.0
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def _weighted_median(pairs: list[tuple[float, float]]) -> float:
    pairs = sorted(p for p in pairs if p[1] > 0)
    total = sum(w for _v, w in pairs)
    if not pairs:
        return 1.0
    running = 0.0
    for value, weight in pairs:
        running += weight
        if running >= total / 2:
            return value
    return pairs[-1][0]


def per_call_windows(side: Side, path: tuple) -> list[float]:
    return [s / c for c, s in side.node_windows.get(path, []) if c > 0]


def robust_ratio(a_values: list[float], b_values: list[float], mean_a: float, mean_b: float) -> float:
    """B over A: of the per-window medians when both have enough windows, else of the means."""
    if len(a_values) >= MIN_WINDOWS and len(b_values) >= MIN_WINDOWS:
        med_a, med_b = _median(a_values), _median(b_values)
        if med_a > 0:
            return med_b / med_a
    return mean_b / mean_a if mean_a > 0 else 1.0


def fan_out_ratio(side: Side, path: tuple) -> float | None:
    node = side.nodes.get(path)
    if node is None:
        return None
    parent_calls = side.requests if len(path) == 1 else getattr(side.nodes.get(path[:-1]), "calls", 0)
    return node.calls / parent_calls if parent_calls else None


def is_stable(a: Side, b: Side, path: tuple, changed: set[str], whole_path: bool = True) -> bool:
    """Same code on the whole path, same calls per request (within 2 %) and the same callees below:
    nothing about this node changed but the machine. ``whole_path=False`` asks only of the node's own
    code (its callers may have changed: the same code called as often, whose time may still move
    with what a changed caller hands it)."""
    na, nb = a.nodes.get(path), b.nodes.get(path)
    if na is None or nb is None or not na.calls or not nb.calls:
        return False
    if any(name in changed for name in (path if whole_path else path[-1:])):
        return False
    if abs((nb.calls / b.requests) / (na.calls / a.requests) - 1) > STABLE_CALLS_TOLERANCE:
        return False
    below_a = {p for p in a.nodes if len(p) > len(path) and p[:len(path)] == path}
    below_b = {p for p in b.nodes if len(p) > len(path) and p[:len(path)] == path}
    return below_a == below_b


def stable_paths(a: Side, b: Side, changed: set[str]) -> set[tuple]:
    return {path for path in set(a.nodes) & set(b.nodes) if is_stable(a, b, path, changed)}


def same_code_paths(a: Side, b: Side, changed: set[str]) -> set[tuple]:
    """Nodes whose own code, calls per request and callees are unchanged, whatever their callers."""
    return {path for path in set(a.nodes) & set(b.nodes) if is_stable(a, b, path, changed, whole_path=False)}


def untouched(a: Side, b: Side, stable: set[tuple]) -> bool:
    """Every node of the route is stable, in both versions: nothing about the route changed."""
    return bool(a.nodes) and set(a.nodes) == set(b.nodes) == stable


def estimate_drift(pairs: dict[str, tuple[Side, Side]], changed: set[str]) -> Drift:
    components: list[tuple[str, str, float, float, bool]] = []  # route, name, ratio, weight, material
    for route, (a, b) in pairs.items():
        stable = stable_paths(a, b, changed)
        route_ms = a.mean_ms
        for path in stable:
            na, nb = a.nodes[path], b.nodes[path]
            if na.self_ns <= 0 or nb.self_ns <= 0:
                continue
            ratio = robust_ratio(per_call_windows(a, path), per_call_windows(b, path), na.self_ns / na.calls, nb.self_ns / nb.calls)
            weight = a.per_request(na.self_ns)
            material = weight >= MATERIAL_FRACTION * route_ms and na.calls >= MIN_CALLS and nb.calls >= MIN_CALLS
            components.append((route, "/".join(path), ratio, weight, material))
        if untouched(a, b, stable):
            ua, ub = a.outside_ms(), b.outside_ms()
            if ua > 0 and ub > 0:
                ratio = robust_ratio(a.outside_windows, b.outside_windows, ua, ub)
                material = ua >= MATERIAL_FRACTION * route_ms and a.requests >= MIN_CALLS and b.requests >= MIN_CALLS
                components.append((route, OUTSIDE, ratio, ua, material))
    if len(components) < 3:
        return Drift(components=len(components))
    factor = _weighted_median([(ratio, weight) for _r, _n, ratio, weight, _m in components])
    material = [(r, n, ratio / factor - 1) for r, n, ratio, _w, m in components if m]
    deviations = sorted(abs(d) for _r, _n, d in material)
    spread = deviations[int(SPREAD_QUANTILE * (len(deviations) - 1))] if deviations else 0.0
    return Drift(factor, spread, len(components), material)


# ------------------------------------------------------------------------------------ the parts
@dataclass
class Part:
    """One term of a route's change, ms per request."""

    kind: str  # self_time | fan_out | new_call | removed_call | drift | outside
    path: tuple  # the node the part belongs to (for fan_out/new_call: the caller); () = the route
    ms: float
    callee: tuple | None = None  # fan_out / new_call / removed_call: the callee's path
    calls_per_call: tuple[float, float] | None = None  # of the callee, per call of the caller


def decompose(a: Side, b: Side, drift: float, stable: set[tuple] = frozenset()) -> list[Part]:
    """The exact decomposition of ``b.mean_ms - a.mean_ms`` (see the module docstring). The own
    time of a ``stable`` node (nothing about it changed but the machine) is kind ``unchanged_code``."""
    parts: list[Part] = []
    both = set(a.nodes) & set(b.nodes)
    ca = {p: a.nodes[p].calls / a.requests for p in a.nodes}
    cb = {p: b.nodes[p].calls / b.requests for p in b.nodes}
    sa = {p: a.per_request(n.self_ns) for p, n in a.nodes.items()}  # self ms per request
    sb = {p: b.per_request(n.self_ns) for p, n in b.nodes.items()}
    drift_ms = 0.0
    for p in both:
        per_call_a = sa[p] / ca[p] if ca[p] else 0.0
        per_call_b = sb[p] / cb[p] if cb[p] else 0.0
        own = cb[p] * (per_call_b - drift * per_call_a)
        drift_ms += cb[p] * (drift - 1) * per_call_a
        parts.append(Part("unchanged_code" if p in stable else "self_time", p, own))
    # subtree baseline self per request, over nodes in both
    subtree_a: dict[tuple, float] = {p: 0.0 for p in both}
    for p in both:
        for depth in range(1, len(p) + 1):
            anc = p[:depth]
            if anc in subtree_a:
                subtree_a[anc] += sa[p]
    for p in both:
        parent = p[:-1]
        cp_a, cp_b = (1.0, 1.0) if not parent else (ca.get(parent, 0.0), cb.get(parent, 0.0))
        if not ca[p] or not cp_a:
            continue
        ms = (cb[p] - ca[p] * cp_b / cp_a) * subtree_a[p] / ca[p]
        k = (ca[p] / cp_a, cb[p] / cp_b if cp_b else 0.0)
        parts.append(Part("fan_out", parent, ms, p, k))
    for p in set(b.nodes) - set(a.nodes):
        if p[:-1] in b.nodes and p[:-1] not in a.nodes:
            continue  # inside a new subtree: counted with its new root
        ms = sum(sb[q] for q in b.nodes if q[:len(p)] == p)
        parent = p[:-1]
        cp_b = cb.get(parent, 1.0) if parent else 1.0
        parts.append(Part("new_call", parent, ms, p, (0.0, cb[p] / cp_b if cp_b else 0.0)))
    for p in set(a.nodes) - set(b.nodes):
        if p[:-1] in a.nodes and p[:-1] not in b.nodes:
            continue
        ms = -sum(sa[q] for q in a.nodes if q[:len(p)] == p)
        parent = p[:-1]
        cp_a = ca.get(parent, 1.0) if parent else 1.0
        parts.append(Part("removed_call", parent, ms, p, (ca[p] / cp_a if cp_a else 0.0, 0.0)))
    ua, ub = a.outside_ms(), b.outside_ms()
    drift_ms += (drift - 1) * ua
    parts.append(Part("outside", (), ub - drift * ua))
    parts.append(Part("drift", (), drift_ms))
    return parts


def raised_here(side: Side, path: tuple) -> dict[str, int]:
    """Exception type -> calls of this node that raised it themselves (its count minus its callees')."""
    node = side.nodes[path]
    counts = dict(node.errors_by_type)
    for child, agg in side.nodes.items():
        if len(child) == len(path) + 1 and child[:-1] == path:
            for exc, n in agg.errors_by_type.items():
                if exc in counts:
                    counts[exc] -= n
    return {exc: n for exc, n in counts.items() if n > 0}


def window_test(slower: list[float], faster: list[float]) -> float:
    """One-sided p that ``slower``'s windows rank above ``faster``'s (Mann-Whitney on window values)."""
    if len(slower) < MIN_WINDOWS or len(faster) < MIN_WINDOWS:
        return 1.0
    return mann_whitney_exact_greater(faster, slower)


def _as_hist(values: list[float]) -> dict:
    hist: dict = {}
    for v in values:
        hist[v] = hist.get(v, 0) + 1
    return hist


def count_test(count_a: int, exposure_a: float, count_b: int, exposure_b: float, up: bool) -> float:
    return rate_increase_p(count_a, exposure_a, count_b, exposure_b) if up else rate_increase_p(count_b, exposure_b, count_a, exposure_a)


def error_rate_test(events_a: int, trials_a: int, events_b: int, trials_b: int) -> float:
    return proportion_increase_p(events_a, trials_a, events_b, trials_b)


def log_ratio(x: float) -> float:
    return math.log(x) if x > 0 else float("-inf")
