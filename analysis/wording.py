"""The words every face uses for the analysis' results: one renderer for "before -> after", code
changes, headlines and times, so the CLI, the MCP tools and the HTML report say the same thing.

Pure functions over analysis records returning plain text. ``quote`` is how a face marks
application text (function names, routes, versions, exception types): the CLI and the report
(which escapes it itself) show it as is, the MCP tools pass a JSON quoting function so an agent can
tell data from instructions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Callable

Quote = Callable[[str], str]

ANOMALY_UNITS = {
    "latency": "mean ms per call",
    "calls": "calls per request",
    "errors": "error rate (fraction of calls)",
    "new_error_type": "error rate of the new type (fraction of calls)",
}


def _as_is(text: str) -> str:
    return text


def before_after(finding, quote: Quote = _as_is) -> tuple[str, str]:
    """A diff finding's tested figure in the baseline and in the candidate."""
    b, c = finding.baseline, finding.candidate
    if finding.change in ("fan_out", "new_call") and finding.callees:
        callee = finding.callees[0]
        more = f" (+{len(finding.callees) - 1} more)" if len(finding.callees) > 1 else ""
        name = quote(callee["function"])
        return (f"{name} {callee['calls_per_call_before']:g}/call{more}", f"{name} {callee['calls_per_call_after']:g}/call{more}")
    if finding.change == "self_time":
        return f"{b.self_ms_per_call:.3f} ms self/call", f"{c.self_ms_per_call:.3f} ms self/call"
    if finding.change == "calls":
        return f"{b.calls_per_request:g} calls/req", f"{c.calls_per_request:g} calls/req"
    if finding.change == "latency":
        return f"{b.self_ms_per_call:.3f} ms self/call", f"{c.self_ms_per_call:.3f} ms self/call"
    if finding.change in ("errors", "new_error_type"):
        return f"{b.error_rate:.1%} {_types(b.error_types, quote)}", f"{c.error_rate:.1%} {_types(c.error_types, quote)}"
    return "not called", f"{c.calls_per_request:g} calls/req, {c.self_ms_per_request:.3f} ms/req"


def change_text(finding, quote: Quote = _as_is) -> str:
    """``before -> after`` on one line."""
    before, after = before_after(finding, quote)
    return f"{before} -> {after}"


def _types(types, quote: Quote) -> str:
    return ", ".join(quote(t) for t in types) or "-"


def code_changed(value: bool | None) -> str:
    """Whether the function's code differs between the versions: yes, no, or unknown (not recorded
    in both, or a source without code hashes)."""
    return {True: "yes", False: "no", None: "unknown"}[value]


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def diff_headline(baseline: str, candidate: str, regressions: int, improvements: int, tests_made: int,
                  route: str | None = None, quote: Quote = _as_is, unattributed: Sequence[tuple[str, str]] = ()) -> str:
    """``unattributed``: (route, verdict) of routes judged slower or faster with no part of their change
    significant on its own, so that "0 regressions" never hides a route that is slower."""
    scope = f" on route {quote(route)}" if route else ""
    line = (f"{quote(baseline)} -> {quote(candidate)}{scope}: {plural(regressions, 'regression')}, "
            f"{plural(improvements, 'improvement')} ({tests_made} changes tested)")
    for verdict in ("slower", "faster"):
        routes = [quote(r) for r, v in unattributed if v == verdict]
        if routes:
            line += (f"; {plural(len(routes), 'route')} {verdict} with no single part significant on its own: "
                     f"{', '.join(routes[:5])}{' ...' if len(routes) > 5 else ''}")
    return line


def route_verdict_line(v, quote: Quote = _as_is) -> str:
    """One route's verdict: mean before -> after, the change net of drift against its margin, the test."""
    # With too few export windows the route is tested over its requests' durations instead (the
    # verdict's `test` says which): the line says what the p-value is over.
    over = (f"{v.baseline_requests}+{v.candidate_requests} requests, too few windows ({v.windows[0]}+{v.windows[1]})"
            if "request durations" in v.test else f"{v.windows[0]}+{v.windows[1]} windows")
    return (f"{quote(v.route)}: {v.verdict} - mean {v.baseline_mean_ms:.3f} -> {v.candidate_mean_ms:.3f} ms "
            f"(p95 {v.baseline_p95_ms:.3f} -> {v.candidate_p95_ms:.3f}), {v.relative_change:+.1%} net of drift "
            f"(margin {v.margin:.0%}, p={v.p_value:.1e} over {over}), "
            f"failed {v.baseline_failed_rate:.1%} -> {v.candidate_failed_rate:.1%}")


def explain_headline(explanation, quote: Quote = _as_is) -> str:
    e = explanation
    return (f"{quote(e.route)}: mean {e.baseline_mean_ms:.3f} ms ({quote(e.baseline)}) -> {e.candidate_mean_ms:.3f} ms "
            f"({quote(e.candidate)}), change {e.change_ms:+.3f} ms per request")


def anomaly_kind(anomaly, quote: Quote = _as_is) -> str:
    """``latency``, ``calls``, ``errors``, or ``new_error_type TYPE``."""
    return anomaly.kind + (f" {quote(anomaly.exception_type)}" if anomaly.exception_type else "")


NO_ANOMALIES = "no function changed its behaviour significantly over time"
NO_EXCEPTIONS = "no exceptions recorded"


def local_time(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))


def utc_time(epoch_s: float | None) -> str | None:
    return None if epoch_s is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


# What each of funcsight's own counters means for the data, and what to do about it.
DROP_HINTS = {
    "series_cap": "function x route series past FUNCSIGHT_MAX_SERIES, counted under route (overflow)",
    "route_cap": "requests past FUNCSIGHT_MAX_ROUTES, counted under route (overflow)",
    "function_cap": "code past FUNCSIGHT_MAX_FUNCTIONS, its calls counted under function (overflow)",
    "path_cap": "call-tree nodes past FUNCSIGHT_MAX_PATHS, folded into (other paths)",
    "path_node_cap": "call edges past the process's call-tree node cap, folded into (other paths)",
    "span_queue_full": "requests whose function spans were dropped (queue full)",
    "store_window_dropped": "windows lost: the store could not be written for too long (see the app's warning line)",
    "span_export_failed": "spans the trace backend did not take",
    "sensor": "failures inside the sensor (calls may be missing)",
    "processor": "spans the rollup processor could not read (their requests are missing)",
    "exporter": "windows an exporter failed on (see the app's log)",
}


def health_lines(health, quote: Quote = _as_is) -> list[str]:
    """The verdict on a store's completeness (:class:`funcsight.sources.store_health.StoreHealth`),
    a few lines: what was written, what was dropped or failed and what it means."""
    span = f", {local_time(health.first_window)} .. {local_time(health.last_write)}" if health.last_write else ""
    lines = [f"store {quote(health.path)} (schema {health.schema}): {health.windows} windows from "
             f"{health.processes_total} processes{span}"]
    if health.complete:
        lines.append("complete: nothing dropped, folded or failed")
    else:
        for title, counts in (("dropped", health.dropped), ("internal errors", health.internal_errors)):
            for label, count in sorted(counts.items(), key=lambda item: -item[1]):
                lines.append(f"{title}: {label} {count} ({DROP_HINTS.get(label, label)})")
    if health.overflow_calls or health.overflow_requests:
        lines.append(f"overflow: {health.overflow_calls} calls under (overflow) functions, "
                     f"{health.overflow_requests} requests under the (overflow) route")
    if health.not_recorded:
        lines.append(f"not recorded (store written by an older funcsight, schema {health.schema}): "
                     + ", ".join(health.not_recorded))
    return lines
