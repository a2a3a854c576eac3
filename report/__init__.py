"""The self-contained HTML report: routes, per-route breakdowns, the version diff, anomalies, errors.

``collect(source, baseline, candidate)`` asks the analysis (:mod:`funcsight.analysis`) every question
the page answers and returns plain results; :func:`funcsight.report.html.render` turns them into one
HTML page that needs nothing at view time: inline CSS, inline SVG charts (drawn here, in Python, so
they show without JavaScript), a few lines of inline JavaScript for sorting tables, and a Content
Security Policy that forbids every network fetch. All application text (function names, routes,
exception types and messages) is escaped.

Versions compared: ``candidate`` defaults to the latest version (by first seen), ``baseline`` to the
one seen before the candidate; with a single version the page has no comparison.

Execution paths: the candidate's call tree of each route (the ``MAX_ROUTE_CHARTS`` routes with the
most time, requests x mean latency) and, with a baseline, the differential tree of each of them
recorded in both versions, drawn as flame graphs. A store written before execution paths (schema
1) has none: the page says so instead.

Modules: this one (collecting, writing the file), ``html`` (the page and its SVG charts), ``flame``
(the flame graphs), ``cli`` (the ``report`` subcommand, which :mod:`funcsight.cli` registers; the
report never imports the CLI). May import funcsight core, :mod:`funcsight.sources` and :mod:`funcsight.analysis` (its
``wording`` for every sentence it shares with the other faces); never the MCP server, the CLI or
the write side.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field

from funcsight.analysis.breakdown import AnalysisError, FunctionRow, RouteRow, check_filters, function_rows, route_rows
from funcsight.sources.base import ErrorRecord, Source, VersionInfo

MAX_ROUTE_CHARTS = 24  # per-route breakdowns and waterfalls drawn; the tables list everything


class ReportError(Exception):
    """The page cannot be written where asked (a directory, a missing directory, no permission)."""


@dataclass
class ReportData:
    source: str
    generated_at: float
    versions: list[VersionInfo]  # by first seen
    baseline: str | None
    candidate: str  # the version the breakdowns show (the latest, when only one was recorded)
    routes: list[RouteRow]  # every route x version
    functions: list[FunctionRow]  # the candidate's function x route rows
    baseline_functions: list[FunctionRow]
    diff: object | None  # analysis.compare.Diff
    explanations: list = field(default_factory=list)  # analysis.compare.Explanation, slowest first
    routes_not_drawn: int = 0
    anomalies: list = field(default_factory=list)  # analysis.anomalies.Anomaly
    errors: list[ErrorRecord] = field(default_factory=list)
    trees: list = field(default_factory=list)  # analysis.tree.CallTree of the candidate, most time first
    tree_diffs: list = field(default_factory=list)  # differential CallTrees (routes in both versions)
    trees_not_drawn: int = 0
    paths_note: str = ""  # why some or all routes have no flame graph


def choose_versions(versions: list, baseline: str | None, candidate: str | None) -> tuple[str | None, str]:
    """``(baseline or None, candidate)``: the two latest by first seen unless named."""
    names = [v.version for v in versions]
    if not names:
        raise AnalysisError("nothing recorded yet: run the app under funcsight (or `funcsight demo`) first")
    for given in (baseline, candidate):
        if given is not None and given not in names:
            raise AnalysisError(f"unknown version {given!r}; known versions: {', '.join(names)}")
    if candidate is None:
        candidate = names[-1]
        if candidate == baseline:
            raise AnalysisError(f"{baseline!r} is the latest version: name a --candidate to compare it with")
    if baseline is None:
        position = names.index(candidate)
        baseline = names[position - 1] if position > 0 else None  # None: nothing recorded before it
    if baseline == candidate:
        raise AnalysisError("baseline and candidate are the same version; name two different versions")
    return baseline, candidate


def collect(source: Source, baseline: str | None = None, candidate: str | None = None, label: str = "") -> ReportData:
    from funcsight.analysis.anomalies import anomalies
    from funcsight.analysis.compare import diff, explain

    versions = source.versions()
    baseline, candidate = choose_versions(versions, baseline, candidate)
    check_filters(source, None, candidate)
    routes = route_rows(source)
    data = ReportData(
        source=label, generated_at=time.time(), versions=versions, baseline=baseline, candidate=candidate,
        routes=routes, functions=function_rows(source, version=candidate),
        baseline_functions=function_rows(source, version=baseline) if baseline else [], diff=None,
    )
    if baseline is not None:
        data.diff = diff(source, baseline, candidate)
        requests = {(r.route, r.version): r.requests for r in routes}
        both = [r.route for r in routes if r.version == candidate and r.requests and requests.get((r.route, baseline))]
        explanations = [explain(source, route, baseline, candidate) for route in both]
        drawn = sorted(explanations, key=lambda e: -abs(e.change_ms))[:MAX_ROUTE_CHARTS]  # the largest changes
        data.explanations = sorted(drawn, key=lambda e: (-e.change_ms, e.route))  # slowest first
        data.routes_not_drawn = max(0, len(explanations) - MAX_ROUTE_CHARTS)
    data.anomalies = anomalies(source)
    data.errors = source.error_records()
    _collect_trees(source, data)
    return data


def _collect_trees(source: Source, data: ReportData) -> None:
    from funcsight.analysis.tree import call_tree, call_tree_diff

    mine = sorted((r for r in data.routes if r.version == data.candidate and r.requests),
                  key=lambda r: (-r.requests * (r.mean_ms or 0.0), r.route))
    before = {r.route for r in data.routes if r.version == data.baseline and r.requests}
    without = 0
    for row in mine:
        if len(data.trees) >= MAX_ROUTE_CHARTS:
            data.trees_not_drawn += 1
            continue
        try:
            data.trees.append(call_tree(source, row.route, data.candidate))
        except AnalysisError:  # no paths for this route (a schema-1 store: none at all)
            without += 1
            continue
        if data.baseline is not None and row.route in before:
            try:
                data.tree_diffs.append(call_tree_diff(source, row.route, data.baseline, data.candidate))
            except AnalysisError:
                pass  # the baseline has no paths for it (recorded before execution paths)
    if mine and without == len(mine):
        data.paths_note = ("No execution paths are recorded for these routes: the store was written before funcsight "
                           "recorded them (schema 1), or no sensed function ran. Record a new run to see flame graphs.")
    elif without:
        data.paths_note = f"{without} routes have no recorded execution paths and are not drawn."


def write_report(source: Source, path: str, baseline: str | None = None, candidate: str | None = None, label: str = "") -> ReportData:
    """Collect, render and write the page to ``path`` (atomically: a reader never sees half a page)."""
    from funcsight.report.html import render

    data = collect(source, baseline, candidate, label)
    page = render(data)
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    if os.path.isdir(target):
        raise ReportError(f"{path} is a directory: name the HTML file to write, e.g. {os.path.join(path, 'report.html')}")
    if not os.path.isdir(directory):
        raise ReportError(f"cannot write {path}: directory {directory} does not exist")
    try:
        fd, temporary = tempfile.mkstemp(prefix=".funcsight-report-", suffix=".html", dir=directory)
    except OSError as err:
        raise ReportError(f"cannot write {path} ({err.strerror or err})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(page)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as open() would have created it
        os.replace(temporary, target)
    except OSError as err:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise ReportError(f"cannot write {path} ({err.strerror or err})") from None
    return data
