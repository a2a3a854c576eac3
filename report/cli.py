"""``funcsight report --html PATH``: write the self-contained HTML report.

``add_command(subparsers)`` adds the subcommand to the ``funcsight`` parser; ``run(args)`` runs it.
User errors raise :class:`funcsight.sources.SourceError` (no store, no server),
:class:`funcsight.analysis.breakdown.AnalysisError` (unknown version),
:class:`funcsight.report.ReportError` (an unwritable path) or
:class:`funcsight.config.ConfigError`, which the ``funcsight`` command (and ``main`` here) prints as
one line with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_command(subparsers) -> argparse.ArgumentParser:
    """Add ``report`` to the ``funcsight`` sub-commands (the object ``add_subparsers()`` returned)."""
    parser = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report: routes, breakdowns, the version diff, flame graphs, anomalies, errors",
        description="Write one self-contained HTML page (inline CSS and SVG, no network needed to view it): routes, "
                    "per-route function breakdowns, the latest version diff as a waterfall, flame graphs of the call paths (one "
                    "version's and the differential between the two), anomalies and errors.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--html", required=True, metavar="PATH", help="the HTML file to write (replaced if it exists)")
    parser.add_argument("--db", default=None, help="store file (default: $FUNCSIGHT_DB or ./funcsight.db)")
    parser.add_argument("--source", default=None, help="read from prometheus+http://HOST:PORT instead of the store")
    parser.add_argument("--baseline", default=None, help="the earlier version (default: the one seen before the candidate)")
    parser.add_argument("--candidate", default=None, help="the version to judge (default: the latest seen)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from funcsight.analysis.breakdown import resolve_version
    from funcsight.report import write_report
    from funcsight.sources import open_source
    from funcsight.sources.store import default_db_path

    db_path = args.db or default_db_path()
    source = open_source(args.source, db_path=db_path)
    try:
        baseline, candidate = (resolve_version(source, given) for given in (args.baseline, args.candidate))
        data = write_report(source, args.html, baseline, candidate, label=args.source or os.path.abspath(db_path))
    finally:
        source.close()
    compared = f"{data.baseline} -> {data.candidate}" if data.baseline else f"version {data.candidate}"
    print(f"funcsight report: {compared}, {len({r.route for r in data.routes})} routes, "
          f"{len(data.diff.regressions) if data.diff else 0} regressions; wrote {os.path.abspath(args.html)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m funcsight.report``: the same command without the ``funcsight`` parser."""
    from funcsight.analysis.breakdown import AnalysisError
    from funcsight.config import ConfigError
    from funcsight.report import ReportError
    from funcsight.sources import SourceError

    parser = argparse.ArgumentParser(prog="python -m funcsight.report", description="Write the funcsight HTML report.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (AnalysisError, SourceError, ReportError, ConfigError) as err:
        print(f"funcsight: error: {err}", file=sys.stderr)
        return 2
