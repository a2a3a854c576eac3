"""The ``funcsight`` command: a thin layer over :mod:`funcsight.sources`, :mod:`funcsight.analysis`
and the demo; ``mcp`` and ``report`` are added by :mod:`funcsight.mcp_server.cli` and
:mod:`funcsight.report.cli` (they never import this module).

Every failure a user can cause (missing or bad store, unknown route or version, a bad flag) ends in
one line on stderr that says what is wrong and what to do, and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from funcsight import __version__
from funcsight.analysis import wording
from funcsight.analysis.breakdown import AnalysisError, check_filters, function_rows, resolve_version, route_rows
from funcsight.analysis.errors import app_frames, error_records, sensed_files
from funcsight.cli.output import percentile_cell, percentile_note, print_json, render_table
from funcsight.config import ConfigError
from funcsight.durations import EXAMPLES, parse_duration
from funcsight.lsp.cli import add_command as add_lsp_command
from funcsight.mcp_server.cli import add_command as add_mcp_command
from funcsight.report import ReportError
from funcsight.report.cli import add_command as add_report_command
from funcsight.sources import SourceError, open_source

EXIT_USAGE = 2


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _common(parser: argparse.ArgumentParser, filters: bool = True) -> None:
    parser.add_argument("--db", default=None, help="store file (default: $FUNCSIGHT_DB or ./funcsight.db)")
    parser.add_argument("--source", default=None, help="read from prometheus+http://HOST:PORT instead of the store")
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

    versions = commands.add_parser("versions", help="deployments seen: first/last seen, processes, traffic")
    _common(versions, filters=False)
    versions.set_defaults(run=cmd_versions)

    diff = commands.add_parser("diff", help="what changed between two versions, ranked by impact on route latency")
    _common(diff, filters=False)
    diff.add_argument("--baseline", required=True, help="the earlier version")
    diff.add_argument("--candidate", required=True, help="the version to judge")
    diff.add_argument("--route", help="only this route")
    diff.set_defaults(run=cmd_diff)

    explain = commands.add_parser("explain", help="decompose a route's latency change into per-function parts")
    _common(explain, filters=False)
    explain.add_argument("--route", required=True, help="the route to explain")
    explain.add_argument("--baseline", required=True, help="the earlier version")
    explain.add_argument("--candidate", required=True, help="the later version")
    explain.add_argument("--limit", type=_positive_int, default=15, help="parts in the table (default 15)")
    explain.set_defaults(run=cmd_explain)

    tree = commands.add_parser("tree", help="a route's call tree per request: who called whom, how often, how long")
    tree.add_argument("--db", default=None, help="store file (default: $FUNCSIGHT_DB or ./funcsight.db)")
    tree.add_argument("--source", default=None, help="read from prometheus+http://HOST:PORT instead of the store")
    tree.add_argument("--format", choices=("table", "json", "folded", "speedscope"), default="table",
                      help="table (default), json, folded (flamegraph.pl / Pyroscope) or speedscope (its file format)")
    tree.add_argument("--route", required=True, help="the route (as shown by `funcsight routes`)")
    tree.add_argument("--version", dest="app_version", help="only this deployment version (default: all)")
    tree.add_argument("--baseline", help="with --candidate: the differential tree between two versions")
    tree.add_argument("--candidate", help="with --baseline: the version to compare")
    tree.add_argument("--max-depth", type=_positive_int, default=None, help="levels below the route to show")
    tree.add_argument("--min-share", type=float, default=0.0, help="hide nodes under this share of the route's time (0-1)")
    tree.add_argument("--max-rows", type=_positive_int, default=200, help="rows in the table (default 200)")
    tree.set_defaults(run=cmd_tree)

    anomalies = commands.add_parser("anomalies", help="slowdowns and error increases within a deployment, over time")
    _common(anomalies, filters=False)
    anomalies.add_argument("--since", type=_duration, help=f"only the last DURATION ({EXAMPLES})")
    anomalies.add_argument("--version", dest="app_version", help="only this deployment version")
    anomalies.set_defaults(run=cmd_anomalies)

    errors = commands.add_parser("errors", help="exception forensics: counts, first/last seen, stack, trace id")
    _common(errors)
    errors.add_argument("--function", help="only this function (module.qualname)")
    errors.add_argument("--all-frames", action="store_true",
                        help="show every frame of the stack sample (default: the application's own frames)")
    errors.add_argument("--limit", type=_positive_int, default=20, help="exception groups in the table (default 20; JSON has all)")
    errors.set_defaults(run=cmd_errors)

    status = commands.add_parser("status", help="is the data complete? windows written, last write, drops and failures per process")
    status.add_argument("--db", default=None, help="store file (default: $FUNCSIGHT_DB or ./funcsight.db)")
    status.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    status.add_argument("--limit", type=_positive_int, default=20,
                        help="processes listed, the most recent writers first (default 20; JSON too)")
    status.set_defaults(run=cmd_status)

    demo = commands.add_parser("demo", help="run the bundled sample app under the sensor, drive traffic, show the results")
    demo.add_argument("--db", help="store file to fill: a new file or an earlier demo's (default: a new ./funcsight-demo.db)")
    demo.add_argument("--requests", type=_positive_int, default=300, help="requests per version (default 300)")
    demo.add_argument("--concurrency", type=_positive_int, default=4, help="parallel clients (default 4)")
    demo.set_defaults(run=cmd_demo)
    merge = commands.add_parser("merge", help="fold a side store (written while the store could not be used) into the store")
    merge.add_argument("side", help="the side store, e.g. funcsight.db.side-1234-1.db (the app's warning names it)")
    merge.add_argument("--db", default=None, help="the store to fold it into (default: $FUNCSIGHT_DB or ./funcsight.db; created if missing)")
    merge.set_defaults(run=cmd_merge)
    add_mcp_command(commands)
    add_report_command(commands)
    add_lsp_command(commands)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_opened: list = []  # the sources this command opened: side stores beside a store are named at the end


def _source(args):
    """The source the flags name, with every version flag resolved to the version it records
    (a short git revision names the one it begins)."""
    source = open_source(args.source, db_path=args.db)
    _opened.append(source)
    for flag in ("app_version", "baseline", "candidate"):
        if getattr(args, flag, None) is not None:
            setattr(args, flag, resolve_version(source, getattr(args, flag)))
    return source


def _note_side_stores() -> None:
    """After a command that read a store: one line naming the side stores beside it (an error
    names them in its own line instead)."""
    from funcsight.sources.store import side_stores_note

    for source in _opened:
        sides = getattr(source, "side_stores", None)
        if sides:
            print(f"funcsight: note: {_printable(side_stores_note(source.path, sides))}", file=sys.stderr)
    _opened.clear()


def cmd_merge(args) -> int:
    from funcsight.sources.store import default_db_path, merge_side_store

    target = args.db or default_db_path()
    result = merge_side_store(args.side, target)
    line = (f"merged {result.windows} windows ({result.requests} requests) from {args.side} into {target}"
            + (f"; {result.already} were there already" if result.already else ""))
    if result.writer_alive:
        line += f"; the app that writes {args.side} still runs: merge again after it stops (merged windows are skipped)"
    elif result.renamed_to:
        line += f"; {args.side} renamed {result.renamed_to}"
    print(_printable(line))
    return 0


def cmd_functions(args) -> int:
    source = _source(args)
    rows = function_rows(source, args.route, args.app_version)
    if args.format == "json":
        print_json([row.as_dict() for row in rows])
        return 0
    headers = ("function", "route", "version", "calls", "calls/req", "errors", "p50 ms", "p95 ms", "p99 ms", "self ms/req", "self ms", "total ms")
    shown = sorted(rows, key=lambda r: -r.self_ms)[: args.limit]
    print(render_table(headers, [
        (r.function if r.kind == "function" else f"[span] {r.function}", r.route, r.version, r.calls, r.calls_per_request,
         _errors(r.errors, r.errors_by_type), *map(percentile_cell, (r.p50_ms, r.p95_ms, r.p99_ms)),
         r.self_ms_per_request, r.self_ms, r.total_ms)
        for r in shown
    ]))
    if len(rows) > len(shown):
        print(f"({len(rows) - len(shown)} more rows; --limit or --format json shows them)")
    if shown:
        print(percentile_note(exported=args.source is not None))
    return 0


def cmd_routes(args) -> int:
    source = _source(args)
    rows = route_rows(source, args.route, args.app_version)
    if args.format == "json":
        print_json([row.as_dict() for row in rows])
        return 0
    headers = ("route", "version", "requests", "errors", "error %", "p50 ms", "p95 ms", "top functions by self time per request")
    print(render_table(headers, [
        (r.route, r.version, r.requests, r.errors, round(100 * r.error_rate, 2), percentile_cell(r.p50_ms), percentile_cell(r.p95_ms),
         "; ".join(f"{f['function'].rsplit('.', 1)[-1]} {f['self_ms_per_request'] or 0:.3f}" for f in r.top_functions))
        for r in rows
    ], max_width=90))
    if rows:
        print(percentile_note(exported=args.source is not None))
    return 0


def cmd_versions(args) -> int:
    versions = _source(args).versions()
    if args.format == "json":
        print_json([vars(v) for v in versions])
        return 0
    print(render_table(("version", "detected from", "first seen", "last seen", "processes", "requests", "calls"), [
        (v.version, v.source, _time(v.first_seen), _time(v.last_seen), v.processes, v.requests, v.calls) for v in versions
    ]))
    return 0


def cmd_diff(args) -> int:
    from funcsight.analysis.compare import diff

    result = diff(_source(args), args.baseline, args.candidate, args.route)
    if args.format == "json":
        print_json(result.as_dict())
        return 0
    print(wording.diff_headline(result.baseline, result.candidate, len(result.regressions), len(result.improvements),
                                result.tests_made, result.route, unattributed=result.unattributed_routes()))
    judged = [v for v in result.routes if v.verdict != "unchanged"]
    print(f"machine drift x{result.drift.factor:.3f} (spread {result.drift.spread:.0%}, from {result.drift.components} unchanged parts); "
          f"{len(judged)} of {len(result.routes)} routes changed")
    for verdict in judged:
        print("  " + wording.route_verdict_line(verdict))
    if result.regressions:
        print(render_table(("share", "ms/req", "function", "route", "kind", "before", "after", "p", "code changed", "where"), [
            (f"{r.share:.0%}", f"{r.impact_ms_per_request:+.3f}", r.function, r.route, r.change + (f" {r.exception_types[0]}" if r.exception_types else ""),
             *wording.before_after(r), f"{r.p_value:.1e}", wording.code_changed(r.code_changed),
             f"{r.file.rsplit('/', 1)[-1]}:{r.line}" if r.file else "")
            for r in result.regressions
        ], max_width=50))
    if result.improvements:
        print("\nImprovements")
        print(render_table(("share", "ms/req", "function", "route", "kind", "before", "after"), [
            (f"{r.share:.0%}", f"{r.impact_ms_per_request:+.3f}", r.function, r.route, r.change, *wording.before_after(r))
            for r in result.improvements
        ], max_width=50))
    return 0


def cmd_explain(args) -> int:
    from funcsight.analysis.compare import explain

    result = explain(_source(args), args.route, args.baseline, args.candidate)
    if args.format == "json":
        print_json(result.as_dict())
        return 0
    print(wording.explain_headline(result))
    if result.verdict is not None:
        print(wording.route_verdict_line(result.verdict))
    print("\nThe change along the call tree (ms per request; own = self time per call changed, "
          "calls = how often it calls a callee changed; they add up to the route's change):")
    lines: list[str] = []

    def visit(node: dict, depth: int) -> None:
        if len(lines) >= args.limit * 4:
            return
        label = "  " * depth + node["function"] + (f" [{node['status']}]" if node["status"] else "")
        detail = f"own {node['own_ms']:+.3f}"
        for call in node["calls"][:3]:
            detail += (f"; {call['kind']} {call['callee']} {call['calls_per_call_before']:g} -> {call['calls_per_call_after']:g}/call "
                       f"{call['ms_per_request']:+.3f}")
        lines.append(f"{node['subtree_ms']:+10.3f}  {label}  ({detail})")
        for child in node["children"]:
            if abs(child["subtree_ms"]) >= 0.001 or child["status"]:
                visit(child, depth + 1)

    visit(result.tree, 0)
    lines.append(f"{result.tree['drift_ms']:+10.3f}  (machine drift x{result.drift.get('factor', 1.0):.3f})")
    print("\n".join(lines))
    if result.findings:
        print("\nFindings")
        for f in result.findings:
            print(f"  {f.share:>5.0%}  {f.change:<14} {f.function}  {' / '.join(wording.before_after(f))}  p={f.p_value:.1e}")
    print("\nPer function (self time per request)")
    shown = result.parts[: args.limit]
    rest = sum(p.delta_ms for p in result.parts[args.limit:])
    rows = [(f"{p.delta_ms:+.3f}", p.function, f"{p.baseline_ms_per_request:.3f}", f"{p.candidate_ms_per_request:.3f}",
             f"{p.calls_per_request_baseline:g} -> {p.calls_per_request_candidate:g}") for p in shown]
    if len(result.parts) > len(shown):
        rows.append((f"{rest:+.3f}", f"({len(result.parts) - len(shown)} other functions)", "", "", ""))
    rows.append((f"{result.unexplained_ms:+.3f}", "(outside sensed code)", "", "", ""))
    rows.append((f"{result.change_ms:+.3f}", "= total change", "", "", ""))
    print(render_table(("delta ms/req", "function", "before ms/req", "after ms/req", "calls/req"), rows, max_width=60))
    return 0


def cmd_tree(args) -> int:
    import json

    from funcsight.analysis.tree import call_tree, call_tree_diff, render_folded, render_speedscope, render_table as tree_table

    if (args.baseline is None) != (args.candidate is None):
        raise UsageError("--baseline and --candidate go together (or use --version for one version's tree)")
    if args.baseline is not None and args.app_version is not None:
        raise UsageError("--version cannot be combined with --baseline/--candidate")
    if not 0.0 <= args.min_share <= 1.0:
        raise UsageError(f"--min-share {args.min_share} is not a share between 0 and 1")
    source = _source(args)
    if args.baseline is not None:
        result = call_tree_diff(source, args.route, args.baseline, args.candidate)
    else:
        result = call_tree(source, args.route, args.app_version)
    if args.format == "json":
        print_json(result.as_dict(args.max_depth, args.min_share))
    elif args.format == "folded":
        sys.stdout.write(render_folded(result))
    elif args.format == "speedscope":
        print(json.dumps(render_speedscope(result), separators=(",", ":")))
    else:
        print(tree_table(result, args.max_depth, args.min_share, args.max_rows))
    return 0


def cmd_anomalies(args) -> int:
    from funcsight.analysis.anomalies import anomalies

    source = _source(args)
    if args.app_version is not None:
        check_filters(source, None, args.app_version)
    found = anomalies(source, args.since, args.app_version)
    if args.format == "json":
        print_json([a.as_dict() for a in found])
        return 0
    if not found:
        print(f"no anomalies: {wording.NO_ANOMALIES}")
        return 0
    print(render_table(("function", "route", "version", "kind", "since", "before", "after", "p"), [
        (a.function, a.route, a.version, wording.anomaly_kind(a), _time(a.change_at),
         f"{a.before:.4g}", f"{a.after:.4g}", f"{a.p_value:.1e}") for a in found
    ], max_width=50))
    return 0


def cmd_errors(args) -> int:
    source = _source(args)
    records = error_records(source, args.function, args.route, args.app_version, listed_by="`funcsight functions` lists them")
    if args.format == "json":
        print_json(records)
        return 0
    if not records:
        print(wording.NO_EXCEPTIONS)
        return 0
    files = set() if args.all_frames else sensed_files(source)
    for r in records[: args.limit]:
        print(f"{r['exception_type']} in {r['function']}  route {r['route']}  version {r['version']}  "
              f"count {r['count']}  first {_time(r['first_seen'])}  last {_time(r['last_seen'])}")
        if r["trace_id"]:
            print(f"  trace {r['trace_id']} span {r['span_id']}")
        if r["message"] is not None:
            print(f"  message: {r['message']!r}")
        frames = app_frames(r["stack"], files)
        for frame in frames:
            print(f"    {frame['function']} ({frame['file']}:{frame['line']})")
        if len(frames) < len(r["stack"]):
            print(f"    ({len(r['stack']) - len(frames)} framework and library frames not shown: --all-frames)")
    if len(records) > args.limit:
        print(f"({len(records) - args.limit} more exception groups: raise --limit, or --format json for all)")
    return 0


_time = wording.local_time


def cmd_status(args) -> int:
    from funcsight.sources.store import StoreSource, default_db_path

    source = StoreSource(args.db or default_db_path())
    try:
        health = source.health(args.limit)
    finally:
        source.close()
    if args.format == "json":
        print_json(health.as_dict())
        return 0
    for line in wording.health_lines(health):
        print(line)
    if health.processes:
        print(render_table(("service", "version", "pid", "instance", "windows", "last write", "dropped", "internal errors"), [
            (p.service, p.version, p.pid, p.instance_id, p.windows, _time(p.last_write) if p.last_write else "never",
             p.dropped, p.internal_errors) for p in health.processes
        ], max_width=40))
    if health.processes_total > len(health.processes):
        print(f"({health.processes_total - len(health.processes)} more processes; --limit shows them)")
    return 0


def cmd_demo(args) -> int:
    from funcsight.demo.run import DemoError, result_commands, run_demo

    try:
        db_path = run_demo(db_path=args.db, requests=args.requests, concurrency=args.concurrency)
    except DemoError as err:
        raise UsageError(str(err)) from None
    for title, argv in result_commands(db_path):
        print(f"\n{title}", flush=True)
        main(argv)
    print(f"\nExplore further: funcsight functions --db {db_path} --version 1.1")
    print(f"                 funcsight errors --db {db_path}")
    return 0


def _errors(count: int, by_type: dict) -> str:
    if not count:
        return "0"
    return f"{count} ({', '.join(f'{k.rsplit(chr(46), 1)[-1]}:{v}' for k, v in by_type.items())})" if by_type else str(count)


def _printable(message: str) -> str:
    """Control characters from a path or an argument are escaped: the error stays one line and
    cannot move the terminal's cursor."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "run", None):
            parser.print_help()
            return EXIT_USAGE
        run: Callable = args.run
        status = run(args)
        _note_side_stores()
        return status
    except (UsageError, SourceError, AnalysisError, ReportError, ConfigError) as err:
        _opened.clear()
        print(f"funcsight: error: {_printable(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("funcsight: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
