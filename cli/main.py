"""The ``funcsight`` command: a thin layer over :mod:`funcsight.analysis` and the demo.

Every failure a user can cause (missing or bad store, unknown route or version, a bad flag) ends in
one line on stderr that says what is wrong and what to do, and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from funcsight import __version__
from funcsight.analysis.breakdown import AnalysisError, function_rows, route_rows
from funcsight.analysis.source import StoreSource
from funcsight.cli.output import print_json, render_table
from funcsight.config import ConfigError
from funcsight.store.db import StoreError

EXIT_USAGE = 2


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _common(parser: argparse.ArgumentParser, filters: bool = True) -> None:
    parser.add_argument("--db", default=None, help="store file (default: $FUNCSIGHT_DB or ./funcsight.db)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    if filters:
        parser.add_argument("--route", help="only this route (as shown by `funcsight routes`)")
        parser.add_argument("--version", dest="app_version", help="only this deployment version")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="funcsight", description="Function-level runtime evidence from the funcsight store.")
    parser.add_argument("-V", "--version", action="version", version=f"funcsight {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    functions = commands.add_parser("functions", help="per function x route x version: calls, errors, latency, self time")
    _common(functions)
    functions.add_argument("--limit", type=_positive_int, default=50, help="rows in the table (default 50; JSON has all)")
    functions.set_defaults(run=cmd_functions)

    routes = commands.add_parser("routes", help="per route: requests, latency, error rate, top functions")
    _common(routes)
    routes.set_defaults(run=cmd_routes)

    demo = commands.add_parser("demo", help="run the bundled sample app under the sensor, drive traffic, show the results")
    demo.add_argument("--db", default="funcsight.db", help="store file to fill (default ./funcsight.db)")
    demo.add_argument("--requests", type=_positive_int, default=300, help="requests per version (default 300)")
    demo.add_argument("--concurrency", type=_positive_int, default=4, help="parallel clients (default 4)")
    demo.set_defaults(run=cmd_demo)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _store_path(args) -> str:
    if args.db:
        return args.db
    from funcsight.config import Config

    return Config.from_env(strict=True).db_path


def cmd_functions(args) -> int:
    source = StoreSource(_store_path(args))
    rows = function_rows(source, args.route, args.app_version)
    if args.format == "json":
        print_json([row.as_dict() for row in rows])
        return 0
    headers = ("function", "route", "version", "calls", "calls/req", "errors", "p50 ms", "p95 ms", "p99 ms", "self ms/req", "self ms", "total ms")
    shown = sorted(rows, key=lambda r: -r.self_ms)[: args.limit]
    print(render_table(headers, [
        (r.function if r.kind == "function" else f"[span] {r.function}", r.route, r.version, r.calls, r.calls_per_request,
         _errors(r.errors, r.errors_by_type), r.p50_ms, r.p95_ms, r.p99_ms, r.self_ms_per_request, r.self_ms, r.total_ms)
        for r in shown
    ]))
    if len(rows) > len(shown):
        print(f"({len(rows) - len(shown)} more rows; --limit or --format json shows them)")
    return 0


def cmd_routes(args) -> int:
    source = StoreSource(_store_path(args))
    rows = route_rows(source, args.route, args.app_version)
    if args.format == "json":
        print_json([row.as_dict() for row in rows])
        return 0
    headers = ("route", "version", "requests", "errors", "error %", "p50 ms", "p95 ms", "top functions by self time per request")
    print(render_table(headers, [
        (r.route, r.version, r.requests, r.errors, round(100 * r.error_rate, 2), r.p50_ms, r.p95_ms,
         "; ".join(f"{f['function'].rsplit('.', 1)[-1]} {f['self_ms_per_request'] or 0:.3f}" for f in r.top_functions))
        for r in rows
    ], max_width=90))
    return 0


def cmd_demo(args) -> int:
    from funcsight.demo.run import DemoError, run_demo

    try:
        return run_demo(db_path=args.db, requests=args.requests, concurrency=args.concurrency)
    except DemoError as err:
        raise UsageError(str(err)) from None


def _errors(count: int, by_type: dict) -> str:
    if not count:
        return "0"
    return f"{count} ({', '.join(f'{k.rsplit(chr(46), 1)[-1]}:{v}' for k, v in by_type.items())})" if by_type else str(count)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "run", None):
            parser.print_help()
            return EXIT_USAGE
        run: Callable = args.run
        return run(args)
    except (UsageError, StoreError, AnalysisError, ConfigError) as err:
        print(f"funcsight: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("funcsight: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
