"""The words the editor shows: CodeLens titles, hover Markdown, diagnostic messages. Pure functions
over :mod:`funcsight.lsp.evidence` records and :mod:`funcsight.lsp.mapping` matches; figures are
the analysis' own (the numbers ``funcsight functions`` and ``funcsight diff`` print), worded with
:mod:`funcsight.analysis.wording`.
"""

from __future__ import annotations

import os

from funcsight.analysis import wording
from funcsight.lsp.evidence import FunctionEvidence, Snapshot
from funcsight.lsp.mapping import FileMap, Match

MAX_ROUTES_SHOWN = 8
MAX_FRAMES_SHOWN = 8


def ms_per_request(row) -> float | None:
    """Time in the function (callees included) per request of the route."""
    return row.total_ms / row.requests if row.requests else None


def short(route: str) -> str:
    return route


def lens_title(evidence: FunctionEvidence, version: str) -> str:
    """``1.1: 1 calls/req · 5.612 ms/req on /cart/<int:user> · p95 1.574 ms · 2 routes · errors 22 OutOfStock``."""
    row = evidence.busiest
    if row is None:
        return f"{version}: not called"
    parts = []
    if row.requests:
        parts.append(f"{row.calls_per_request:g} calls/req · {ms_per_request(row):.3f} ms/req on {short(row.route)}")
    else:
        parts.append(f"{row.calls} calls · {row.total_ms:.3f} ms in {short(row.route)}")
    parts.append(f"p95 {row.p95_ms:.3f} ms")
    parts.append(wording.plural(len(evidence.rows), "route"))
    errors = _error_types(evidence)
    if errors:
        parts.append("errors " + ", ".join(f"{count} {_type(name)}" for name, count in errors))
    return f"{version}: " + " · ".join(parts)


def finding_title(finding, baseline: str, candidate: str) -> str:
    """``1.0 -> 1.1: new_function: not called -> 4.95 calls/req, 5.593 ms/req, +5.593 ms/req on /cart/<int:user>``."""
    return (f"{baseline} -> {candidate}: {finding.change} {wording.change_text(finding)}, "
            f"{finding.impact_ms_per_request:+.3f} ms/req on {short(finding.route)}")


def _error_types(evidence: FunctionEvidence) -> list[tuple[str, int]]:
    totals: dict[str, int] = {}
    for row in evidence.rows:
        for name, count in row.errors_by_type.items():
            totals[name] = totals.get(name, 0) + count
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))


def _type(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def edit_note(match: Match, version: str) -> str | None:
    if match.edited:
        return f"edited since {version} was recorded: the figures are for the recorded code"
    if match.renamed_from:
        return f"recorded as {match.renamed_from} (same code)"
    return None


def hover_markdown(evidence: FunctionEvidence | None, match: Match, snapshot: Snapshot) -> str:
    version = snapshot.candidate or "?"
    name = match.function
    lines = [f"**{name}** · funcsight, version {version}" + (f" (diff against {snapshot.baseline})" if snapshot.baseline else "")]
    rows = evidence.rows if evidence else []
    if rows:
        lines += ["", "| route | calls/req | ms/req | p50 ms | p95 ms | errors |", "|---|---:|---:|---:|---:|---|"]
        for row in rows[:MAX_ROUTES_SHOWN]:
            cpr = f"{row.calls_per_request:g}" if row.calls_per_request is not None else f"{row.calls} calls"
            mpr = ms_per_request(row)
            errors = ", ".join(f"{c} {_type(t)}" for t, c in row.errors_by_type.items()) or str(row.errors)
            lines.append(f"| `{row.route}` | {cpr} | {'-' if mpr is None else f'{mpr:.3f}'} | {row.p50_ms:.3f} | {row.p95_ms:.3f} | {errors} |")
        if len(rows) > MAX_ROUTES_SHOWN:
            lines.append(f"\n({len(rows) - MAX_ROUTES_SHOWN} more routes: `funcsight functions --version {version}`)")
    else:
        lines += ["", f"not called in {version}"]
    if evidence and evidence.regressions and snapshot.baseline:
        lines += ["", f"**Regressions {snapshot.baseline} -> {version}**"]
        for f in evidence.regressions:
            lines.append(f"- {finding_title(f, snapshot.baseline, version)} (p={f.p_value:.1e}, code changed: "
                         f"{wording.code_changed(f.code_changed)})")
    if evidence and evidence.improvements and snapshot.baseline:
        lines += ["", f"**Improvements {snapshot.baseline} -> {version}**"]
        lines += [f"- {finding_title(f, snapshot.baseline, version)}" for f in evidence.improvements]
    if evidence and evidence.call_paths:
        lines += ["", "**Call paths**"] + [f"- {p}" for p in evidence.call_paths]
    if evidence and evidence.errors:
        record = evidence.errors[0]
        lines += ["", f"**Last exception**: `{record['exception_type']}` x{record['count']} on `{record['route']}`, "
                      f"last {wording.local_time(record['last_seen'])}" + (f", trace `{record['trace_id']}`" if record["trace_id"] else "")]
        frames = record["stack"][-MAX_FRAMES_SHOWN:]
        if frames:
            lines.append("```")
            if len(record["stack"]) > len(frames):
                lines.append(f"... {len(record['stack']) - len(frames)} outer frames")
            lines += [f"{fr['function']} ({os.path.basename(fr['file'])}:{fr['line']})" for fr in frames]
            lines.append("```")
    notes = []
    if match.moved:
        notes.append(f"recorded at line {match.recorded.line}, now at line {match.definition.first_line}")
    note = edit_note(match, version)
    if note:
        notes.append(note)
    if notes:
        lines += ["", "_" + "; ".join(notes) + "_"]
    return "\n".join(lines)


def diagnostic_message(finding, baseline: str, candidate: str) -> str:
    return (f"funcsight: regression {finding_title(finding, baseline, candidate)} "
            f"(p={finding.p_value:.1e}, code changed: {wording.code_changed(finding.code_changed)})")


def file_note(file_map: FileMap, version: str) -> str | None:
    """One line flagging a file changed since the recording, or None."""
    if not file_map.changed_since_recording:
        return None
    parts = []
    if file_map.edited:
        parts.append("edited: " + ", ".join(m.definition.qualname for m in file_map.edited))
    if file_map.missing:
        parts.append("no longer defined here: " + ", ".join(n.rsplit(".", 1)[-1] for n in file_map.missing))
    return f"funcsight: this file changed since version {version} was recorded ({'; '.join(parts)}); its figures are for the recorded code"


__all__ = ["diagnostic_message", "file_note", "finding_title", "hover_markdown", "lens_title", "ms_per_request"]
