"""Exception forensics: what ``funcsight errors`` and the MCP ``recent_errors`` tool show, checked
the same way for both."""

from __future__ import annotations

from funcsight.analysis.breakdown import AnalysisError, check_filters, function_rows
from funcsight.sources.base import ErrorRecord, Source


def error_records(source: Source, function: str | None = None, route: str | None = None, version: str | None = None,
                  listed_by: str = "the function listing shows the names") -> list[ErrorRecord]:
    """Per function x route x version x exception type, most frequent first (see
    :meth:`~funcsight.sources.base.Source.error_records`). An unknown route or version raises
    :class:`AnalysisError`, and so does a function never recorded (its message ends with
    ``listed_by``: where the caller's user finds the names)."""
    check_filters(source, route, version)
    records = source.error_records(function, route, version)
    if function is not None and not records and function not in known_functions(source):
        raise AnalysisError(f"unknown function {function!r}; {listed_by}")
    return records


def sensed_files(source: Source) -> set[str]:
    """The files of the sensed code, in every version: a stack frame in one of them is the
    application's own."""
    return {where[0] for info in source.versions() for where in source.code_locations(info.version).values()}


def app_frames(stack: list, files: set[str]) -> list:
    """The frames of ``stack`` in the application's own files (all of them when the source keeps
    no code locations, or none of the frames is the application's)."""
    if not files:
        return list(stack)
    own = [frame for frame in stack if frame["file"] in files]
    return own or list(stack)


def known_functions(source: Source) -> set[str]:
    """Every function (and outbound span) name recorded, in any route and version."""
    return {row.function for row in function_rows(source)}
