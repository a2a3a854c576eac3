"""The evidence the editor shows, read once per store change: a :class:`Snapshot` of every sensed
function's figures in the shown version, its findings in the latest version diff and its last
exception, indexed by function name so a CodeLens or hover request is a dictionary lookup.

Everything comes from :mod:`funcsight.analysis` over a :func:`funcsight.sources.open_source`
source, opened for the load and closed after it (the store is only ever read). Pure Python: no
pygls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from funcsight.analysis.breakdown import FunctionRow, function_rows
from funcsight.analysis.errors import error_records
from funcsight.lsp.mapping import Recorded, module_of
from funcsight.sources import ErrorRecord, Source, open_source


@dataclass
class FunctionEvidence:
    name: str
    rows: list[FunctionRow] = field(default_factory=list)  # shown version, one per route, most calls first
    regressions: list = field(default_factory=list)  # funcsight.analysis.compare.Finding, biggest impact first
    improvements: list = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)  # shown version, latest first
    call_paths: list[str] = field(default_factory=list)  # the call paths that reach it, most calls first

    @property
    def busiest(self) -> FunctionRow | None:
        return self.rows[0] if self.rows else None


@dataclass
class Snapshot:
    label: str  # the store path or Prometheus URL
    versions: list[str]
    baseline: str | None
    candidate: str | None
    functions: dict[str, FunctionEvidence]
    recorded: dict[str, Recorded]  # function -> where it was in the shown version (else its latest)
    by_module: dict[str, list[str]]
    regressions: int = 0
    tests_made: int = 0
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)
    problem: str | None = None  # why there is nothing to show (no store yet, unknown version...)

    @classmethod
    def empty(cls, label: str, problem: str | None = None) -> Snapshot:
        return cls(label, [], None, None, {}, {}, {}, problem=problem)


def load(source_spec: str | None, db_path: str | None, baseline: str | None = None, candidate: str | None = None) -> Snapshot:
    """Read a snapshot; :class:`funcsight.sources.SourceError` or
    :class:`funcsight.analysis.breakdown.AnalysisError` when the source cannot answer."""
    label = source_spec or db_path or ""
    started = time.perf_counter()
    source = open_source(source_spec, db_path=db_path)
    try:
        snapshot = _read(source, label, baseline, candidate)
    finally:
        source.close()
    snapshot.load_seconds = time.perf_counter() - started
    return snapshot


def _read(source: Source, label: str, baseline: str | None, candidate: str | None) -> Snapshot:
    versions = [v.version for v in source.versions()]
    if not versions:
        return Snapshot.empty(label, "no windows recorded yet")
    candidate = candidate or versions[-1]
    if baseline is None and candidate in versions:
        index = versions.index(candidate)
        baseline = versions[index - 1] if index > 0 else None
    functions: dict[str, FunctionEvidence] = {}
    for row in function_rows(source, version=candidate):
        if row.kind != "function":
            continue  # outbound spans have no definition to show them on
        functions.setdefault(row.function, FunctionEvidence(row.function)).rows.append(row)
    for evidence in functions.values():
        evidence.rows.sort(key=lambda r: (-r.calls, r.route))
    regressions = tests = 0
    if baseline is not None and baseline != candidate:
        from funcsight.analysis.compare import diff

        result = diff(source, baseline, candidate)
        regressions, tests = len(result.regressions), result.tests_made
        for finding in result.regressions:
            if finding.kind == "function":
                functions.setdefault(finding.function, FunctionEvidence(finding.function)).regressions.append(finding)
        for finding in result.improvements:
            if finding.kind == "function":
                functions.setdefault(finding.function, FunctionEvidence(finding.function)).improvements.append(finding)
    for record in error_records(source, version=candidate):
        if record["function"] in functions:
            functions[record["function"]].errors.append(record)
    for evidence in functions.values():
        evidence.errors.sort(key=lambda r: -r["last_seen"])
    _add_call_paths(source, candidate, functions)
    recorded = _recorded(source, candidate, versions)
    by_module: dict[str, list[str]] = {}
    for name, rec in recorded.items():
        module = module_of(name, rec)
        if module is not None:
            by_module.setdefault(module, []).append(name)
    return Snapshot(label, versions, baseline, candidate, functions, recorded, by_module, regressions, tests)


MAX_CALL_PATHS = 5  # per function, in its hover


def _add_call_paths(source: Source, version: str, functions: dict[str, FunctionEvidence]) -> None:
    """The call paths that reach each function in ``version`` (from the execution paths), most
    calls per request first: ``/route: a > b > f (2.5 calls/req)``."""
    requests = {route: agg.requests for (route, _v), agg in source.route_aggregates(None, version).items()}
    found: dict[str, list[tuple[float, str]]] = {}
    for (route, _v, path), agg in source.path_aggregates(None, version).items():
        if path[-1] in functions and requests.get(route):
            per_request = agg.calls / requests[route]
            found.setdefault(path[-1], []).append((per_request, f"`{route}`: {' > '.join(path)} ({per_request:.2f} calls/req)"))
    for name, paths in found.items():
        paths.sort(key=lambda item: (-item[0], item[1]))
        shown = [text for _, text in paths[:MAX_CALL_PATHS]]
        if len(paths) > MAX_CALL_PATHS:
            shown.append(f"({len(paths) - MAX_CALL_PATHS} more paths)")
        functions[name].call_paths = shown


def _recorded(source: Source, candidate: str, versions: list[str]) -> dict[str, Recorded]:
    """Where each function's code was: in the shown version, else in the latest version that ran it.
    Sources that keep no code locations (Prometheus) give nothing, so no file maps."""
    reader = getattr(source, "function_code", None)
    if reader is None:
        return {}
    order = {v: i for i, v in enumerate(versions)}
    chosen: dict[str, Recorded] = {}
    for name, version, file, line, code_hash in reader():
        rec = Recorded(name, version, file, int(line), code_hash)
        old = chosen.get(name)
        if old is None or _rank(rec, candidate, order) > _rank(old, candidate, order):
            chosen[name] = rec
    return chosen


def _rank(rec: Recorded, candidate: str, order: dict[str, int]) -> tuple[int, int]:
    return (rec.version == candidate, order.get(rec.version, -1))


__all__ = ["FunctionEvidence", "Snapshot", "load"]
