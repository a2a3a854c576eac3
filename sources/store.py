"""The embedded store, read: :class:`StoreSource` (the analysis' questions answered with SQL), the
documented views and the locked-down connection the MCP ``query`` tool runs agents' SQL on, and
:func:`default_db_path`. Every SQL statement that reads the store lives here, but for funcsight's
own counters (:mod:`funcsight.sources.store_health`); the schema and the writer live in
:mod:`funcsight.store`.

Every failure (a missing, unreadable, damaged or foreign file, a value funcsight did not write) is a
one-line :class:`~funcsight.sources.base.SourceError`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager

from funcsight.histogram import merge
from funcsight.sources.base import (
    OTHER_PATHS,
    Aggregate,
    ErrorRecord,
    PathAggregate,
    RouteAggregate,
    SourceError,
    VersionInfo,
)
from funcsight.store.db import StoreError, open_for_reading
from funcsight.store.merge import MergeResult, merge_store
from funcsight.store.side import side_stores, writer_pid


def default_db_path() -> str:
    """The store file when none is named: ``$FUNCSIGHT_DB``, else ``./funcsight.db``. A bad value
    raises :class:`funcsight.config.ConfigError`."""
    from funcsight.config import Config

    return Config.from_env(strict=True).db_path


def open_store(path: str) -> sqlite3.Connection:
    """The store at ``path`` opened read-only (rows as :class:`sqlite3.Row`). When it cannot be
    read, the error names the side stores beside it too (what apps wrote meanwhile)."""
    try:
        return open_for_reading(path)
    except StoreError as err:
        sides = side_stores(path)
        if sides:
            raise SourceError(f"{err}; {side_stores_note(path, sides)}") from None
        raise SourceError(str(err)) from None


def side_stores_note(path: str, sides: list[str]) -> str:
    """One clause naming the side stores beside the store at ``path`` and how to fold them in."""
    shown = ", ".join(sides[:3]) + (f" and {len(sides) - 3} more" if len(sides) > 3 else "")
    many = len(sides) > 1
    return (f"{len(sides)} side store{'s' if many else ''} beside {path} hold{'' if many else 's'} windows apps could not "
            f"write to it ({shown}): `funcsight merge SIDE --db {path}` folds one in, `--db SIDE` reads it")


def merge_side_store(side: str, path: str) -> MergeResult:
    """Fold the store ``side`` into the store at ``path`` (see :mod:`funcsight.store.merge`); a
    side store whose writer has ended is then renamed ``SIDE.merged``, so it is not named again."""
    try:
        result = merge_store(side, path)
    except StoreError as err:
        raise SourceError(str(err)) from None
    if not result.writer_alive and writer_pid(side) is not None:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(side + suffix):
                os.replace(side + suffix, side + ".merged" + suffix)
        result.renamed_to = side + ".merged"
    return result


def _damaged(path: str, err: Exception) -> SourceError:
    sides = side_stores(path)
    note = f"; {side_stores_note(path, sides)}" if sides else ""
    return SourceError(f"store {path} could not be read ({err}): it may be corrupt; move it aside (with its -wal and -shm files){note}")


# The joins every reading repeats: a stats row, its function, its window and the window's process.
def _windowed(alias: str) -> str:
    return f"JOIN main.windows w ON w.id = {alias}.window_id JOIN main.processes p ON p.id = w.process_id"


FUNCTION_STATS = f"main.function_stats s JOIN main.functions f ON f.id = s.function_id {_windowed('s')}"
FUNCTION_ERRORS = f"main.function_errors e JOIN main.functions f ON f.id = e.function_id {_windowed('e')}"
ERROR_SAMPLES = f"main.error_samples x JOIN main.functions f ON f.id = x.function_id {_windowed('x')}"
ROUTE_STATS = f"main.route_stats r {_windowed('r')}"
PATH_NODES = f"main.path_nodes n {_windowed('n')}"
PATH_ERRORS = f"main.path_errors e {_windowed('e')}"


class StoreSource:
    """The analysis' questions answered from one store file (a :class:`~funcsight.sources.base.Source`)."""

    def __init__(self, path: str):
        self.path = path
        self.conn = open_store(path)
        self.side_stores = side_stores(path)  # written by apps while this file could not be used

    def close(self) -> None:
        self.conn.close()

    def health(self, limit: int | None = None):
        """Whether the data is complete: windows written, last write and funcsight's own counters
        per process (:func:`funcsight.sources.store_health.store_health`)."""
        from funcsight.sources.store_health import MAX_PROCESSES, store_health

        return store_health(self.conn, self.path, MAX_PROCESSES if limit is None else limit)

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as err:
            raise _damaged(self.path, err) from None

    @contextmanager
    def _decoding(self, table: str):
        """Values funcsight did not write (text in a count, a histogram that is not JSON) are damage
        to the file, reported like any other damage rather than as a traceback from the arithmetic."""
        try:
            yield
        except (TypeError, ValueError) as err:
            raise SourceError(
                f"store {self.path} holds a value in {table} that funcsight did not write ({err}): "
                "the file is damaged; move it aside"
            ) from None

    def _numeric(self, rows: list[sqlite3.Row], table: str, columns: tuple[int, ...]) -> list[tuple]:
        with self._decoding(table):
            for r in rows:
                for i in columns:
                    _number(r[i])
        return [tuple(r) for r in rows]

    def versions(self) -> list[VersionInfo]:
        rows = self._query(
            """SELECT p.version, min(p.version_source) AS source, min(w.start) AS first_seen,
                      max(w.end) AS last_seen, count(DISTINCT p.id) AS processes,
                      (SELECT coalesce(sum(r.requests), 0) FROM route_stats r JOIN windows w2 ON w2.id = r.window_id
                        JOIN processes p2 ON p2.id = w2.process_id WHERE p2.version = p.version) AS requests,
                      (SELECT coalesce(sum(s.calls), 0) FROM function_stats s JOIN windows w3 ON w3.id = s.window_id
                        JOIN processes p3 ON p3.id = w3.process_id WHERE p3.version = p.version) AS calls
               FROM processes p JOIN windows w ON w.process_id = p.id
               GROUP BY p.version ORDER BY first_seen"""
        )
        return [VersionInfo(r["version"], r["source"], r["first_seen"], r["last_seen"], r["processes"], r["requests"], r["calls"]) for r in rows]

    def routes(self) -> set[str]:
        rows = self._query("SELECT DISTINCT route FROM route_stats UNION SELECT DISTINCT route FROM function_stats")
        return {r[0] for r in rows}

    def function_aggregates(self, route: str | None = None, version: str | None = None) -> dict[tuple, Aggregate]:
        """``(function, kind, route, version) -> Aggregate``."""
        result: dict[tuple, Aggregate] = {}
        where, params = _where(("s.route", route), ("p.version", version))
        rows = self._query(
            f"SELECT f.name, f.kind, s.route, p.version, s.calls, s.errors, s.total_ns, s.self_ns, s.hist FROM {FUNCTION_STATS} {where}",
            params,
        )
        with self._decoding("function_stats"):
            for r in rows:
                key = (r[0], r[1], r[2], r[3])
                agg = result.get(key)
                if agg is None:
                    agg = result[key] = Aggregate()
                agg.calls += _count(r[4])
                agg.errors += _count(r[5])
                agg.total_ns += _count(r[6])
                agg.self_ns += _count(r[7])
                merge(agg.hist, _histogram(r[8]))
        where, params = _where(("e.route", route), ("p.version", version))
        for r in self._query(
            f"SELECT f.name, f.kind, e.route, p.version, e.exception_type, sum(e.count) FROM {FUNCTION_ERRORS} {where} GROUP BY 1, 2, 3, 4, 5",
            params,
        ):
            agg = result.get((r[0], r[1], r[2], r[3]))
            if agg is not None:
                with self._decoding("function_errors"):
                    agg.errors_by_type[r[4]] = _count(r[5])
        return result

    def route_aggregates(self, route: str | None = None, version: str | None = None) -> dict[tuple, RouteAggregate]:
        """``(route, version) -> RouteAggregate``."""
        where, params = _where(("r.route", route), ("p.version", version))
        result: dict[tuple, RouteAggregate] = {}
        rows = self._query(f"SELECT r.route, p.version, r.requests, r.errors, r.total_ns, r.hist FROM {ROUTE_STATS} {where}", params)
        with self._decoding("route_stats"):
            for r in rows:
                agg = result.get((r[0], r[1]))
                if agg is None:
                    agg = result[(r[0], r[1])] = RouteAggregate()
                agg.requests += _count(r[2])
                agg.errors += _count(r[3])
                agg.total_ns += _count(r[4])
                merge(agg.hist, _histogram(r[5]))
        return result

    def has_paths(self) -> bool:
        """False for a store written before execution paths (schema 1): it is read as it is."""
        rows = self._query("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'path_nodes'")
        return bool(rows[0][0])

    def path_aggregates(self, route: str | None = None, version: str | None = None) -> dict[tuple, PathAggregate]:
        """``(route, version, path) -> PathAggregate``, ``path`` spelled with function names."""
        if not self.has_paths():
            return {}
        names = {r[0]: r[1] for r in self._query("SELECT id, name FROM functions")}
        where, params = _where(("n.route", route), ("p.version", version))
        rows = self._query(
            f"SELECT n.route, p.version, n.path, sum(n.calls), sum(n.errors), sum(n.total_ns), sum(n.self_ns)"
            f" FROM {PATH_NODES} {where} GROUP BY 1, 2, 3",
            params,
        )
        result: dict[tuple, PathAggregate] = {}
        with self._decoding("path_nodes"):
            for r in rows:
                path = self._path_names(r[2], names)
                key = (r[0], r[1], path)
                agg = result.get(key)  # two store paths may spell the same names (a function recorded twice)
                if agg is None:
                    agg = result[key] = PathAggregate(path)
                agg.calls += _count(r[3])
                agg.errors += _count(r[4])
                agg.total_ns += _count(r[5])
                agg.self_ns += _count(r[6])
            where, params = _where(("e.route", route), ("p.version", version))
            for r in self._query(
                f"SELECT e.route, p.version, e.path, e.exception_type, sum(e.count) FROM {PATH_ERRORS} {where}"
                " GROUP BY 1, 2, 3, 4",
                params,
            ):
                agg = result.get((r[0], r[1], self._path_names(r[2], names)))
                if agg is not None:
                    agg.errors_by_type[r[3]] = agg.errors_by_type.get(r[3], 0) + _count(r[4])
        locations = self.code_locations(version)
        for (_route, _version, path), agg in result.items():
            where = locations.get(path[-1])
            if where is not None:
                agg.file, agg.line = where[0], where[1]
        return result

    def _path_names(self, text: str, names: dict[int, str]) -> tuple[str, ...]:
        parts = []
        for part in str(text).split("/"):
            if part == "*":
                parts.append(OTHER_PATHS)
            else:
                name = names.get(int(part))
                if name is None:
                    raise ValueError(f"path {text!r} names no recorded function")
                parts.append(name)
        return tuple(parts)

    def code_locations(self, version: str | None = None) -> dict[str, tuple[str, int, str]]:
        """``function -> (file, first line, code hash)`` in ``version`` (with None: the latest
        version that recorded it)."""
        where, params = _where(("c.version", version))
        rows = self._query(
            "SELECT f.name, c.file, c.line, c.code_hash, c.version FROM function_code c"
            f" JOIN functions f ON f.id = c.function_id {where} ORDER BY c.rowid",
            params,
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def code_hashes(self, version: str) -> dict[str, str]:
        """``function name -> code hash`` for the functions recorded under ``version``."""
        rows = self._query(
            "SELECT f.name, c.code_hash FROM function_code c JOIN functions f ON f.id = c.function_id WHERE c.version = ?",
            (version,),
        )
        return {r[0]: r[1] for r in rows}

    def function_code(self, version: str | None = None) -> list[tuple[str, str, str, int, str]]:
        """Where each sensed function's code was when it ran: ``(function, version, file, first line,
        code hash)`` per function and version (``version`` filters). Editors map it onto the open
        files (see :mod:`funcsight.lsp`)."""
        where, params = _where(("c.version", version))
        return self._numeric(self._query(
            f"""SELECT f.name, c.version, c.file, c.line, c.code_hash FROM main.function_code c
                JOIN main.functions f ON f.id = c.function_id {where}""",
            params,
        ), "function_code", (3,))

    def series(self, version: str | None = None, since: float | None = None) -> list[tuple]:
        """Per window: ``(start, end, function, kind, route, version, calls, errors, total_ns)``."""
        where, params = _where(("p.version", version), ("w.end >=", since))
        return self._numeric(self._query(
            f"""SELECT w.start, w.end, f.name, f.kind, s.route, p.version, s.calls, s.errors, s.total_ns
                FROM {FUNCTION_STATS} {where} ORDER BY w.start""",
            params,
        ), "function_stats", (0, 1, 6, 7, 8))

    def route_series(self, version: str | None = None, since: float | None = None) -> list[tuple]:
        """Per window: ``(start, end, route, version, requests)``."""
        where, params = _where(("p.version", version), ("w.end >=", since))
        return self._numeric(self._query(f"SELECT w.start, w.end, r.route, p.version, r.requests FROM {ROUTE_STATS} {where}", params),
                             "route_stats", (0, 1, 4))

    def route_window_series(self, route: str | None = None, version: str | None = None) -> list[tuple]:
        """Per window: ``(start, end, route, version, requests, errors, total_ns)``."""
        where, params = _where(("r.route", route), ("p.version", version))
        return self._numeric(self._query(
            f"SELECT w.start, w.end, r.route, p.version, r.requests, r.errors, r.total_ns FROM {ROUTE_STATS} {where} ORDER BY w.start",
            params,
        ), "route_stats", (0, 1, 4, 5, 6))

    def path_series(self, route: str | None = None, version: str | None = None) -> list[tuple]:
        """Per window: ``(start, end, route, version, path, calls, errors, total_ns, self_ns)``, ``path``
        spelled with function names as in :meth:`path_aggregates` (empty without execution paths)."""
        if not self.has_paths():
            return []
        names = {r[0]: r[1] for r in self._query("SELECT id, name FROM functions")}
        where, params = _where(("n.route", route), ("p.version", version))
        rows = self._numeric(self._query(
            f"SELECT w.start, w.end, n.route, p.version, n.path, n.calls, n.errors, n.total_ns, n.self_ns"
            f" FROM {PATH_NODES} {where} ORDER BY w.start",
            params,
        ), "path_nodes", (0, 1, 5, 6, 7, 8))
        with self._decoding("path_nodes"):
            return [(r[0], r[1], r[2], r[3], self._path_names(r[4], names), *r[5:]) for r in rows]

    def error_series(self, version: str | None = None, since: float | None = None) -> list[tuple]:
        """Per window: ``(start, function, route, version, exception_type, count)``."""
        where, params = _where(("p.version", version), ("w.end >=", since))
        return self._numeric(self._query(
            f"SELECT w.start, f.name, e.route, p.version, e.exception_type, e.count FROM {FUNCTION_ERRORS} {where} ORDER BY w.start",
            params,
        ), "function_errors", (0, 5))

    def error_records(self, function: str | None = None, route: str | None = None, version: str | None = None) -> list[ErrorRecord]:
        """Per function x route x version x exception type: count, first/last seen and the latest
        sample (stack, message if captured, trace and span ids; the function span's ids when one
        was recorded for that failure)."""
        where, params = _where(("f.name", function), ("e.route", route), ("p.version", version))
        records = []
        for r in self._query(
            f"""SELECT f.name, e.route, p.version, e.exception_type, sum(e.count), min(w.start), max(w.end)
                FROM {FUNCTION_ERRORS} {where} GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC""",
            params,
        ):
            record: ErrorRecord = {
                "function": r[0], "route": r[1], "version": r[2], "exception_type": r[3], "count": r[4],
                "first_seen": r[5], "last_seen": r[6], "stack": [], "message": None, "trace_id": None, "span_id": None,
            }
            sample = self._query(
                f"""SELECT x.stack, x.message, x.trace_id, x.span_id FROM {ERROR_SAMPLES}
                   WHERE f.name = ? AND x.route = ? AND p.version = ? AND x.exception_type = ?
                   ORDER BY x.seen_at DESC LIMIT 1""",
                (r[0], r[1], r[2], r[3]),
            )
            if sample:
                with self._decoding("error_samples"):
                    record["stack"] = [{"function": name, "file": file, "line": line}
                                       for name, file, line in json.loads(sample[0][0])]
                record["message"], record["trace_id"], record["span_id"] = sample[0][1], sample[0][2], sample[0][3]
            # The function span itself, when one was kept: only from a request of this route (a
            # trace one of this route's samples came from), never another route's with the same
            # function and exception type.
            span = self._query(
                f"""SELECT s.trace_id, s.span_id FROM spans s JOIN processes p ON p.id = s.process_id
                   WHERE s.name = ? AND s.exception_type = ? AND p.version = ? AND s.trace_id IN (
                     SELECT x.trace_id FROM {ERROR_SAMPLES}
                     WHERE f.name = ? AND x.route = ? AND p.version = ? AND x.exception_type = ?)
                   ORDER BY s.start DESC LIMIT 1""",
                (r[0], r[3], r[2], r[0], r[1], r[2], r[3]),
            )
            if span:
                record["trace_id"], record["span_id"] = span[0][0], span[0][1]
            records.append(record)
        return records


def _number(value):
    if type(value) not in (int, float):
        raise TypeError(f"{value!r} is not a number")
    return value


def _count(value) -> int:
    if type(value) is not int:
        raise TypeError(f"{value!r} is not a count")
    return value


def _histogram(text) -> dict:
    hist = json.loads(text)
    if not isinstance(hist, dict) or not all(type(v) is int for v in hist.values()):
        raise ValueError(f"{text!r:.40} is not a histogram")
    return hist


def _where(*conditions: tuple[str, object]) -> tuple[str, tuple]:
    """``WHERE`` over the conditions whose value is not None: ``("p.version", v)`` means equal,
    ``("w.end >=", t)`` the given comparison."""
    clauses, params = [], []
    for column, value in conditions:
        if value is not None:
            clauses.append(f"{column} ?" if column.endswith(("=", "<", ">")) else f"{column} = ?")
            params.append(value)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(params)


# ------------------------------------------------------------------ agents' SQL (MCP `query`)
# A node's parent path and a path's last id, with SQLite's string functions: rtrim(x, chars) drops
# trailing characters found in `chars`, and replace(x, '/', '') is every character but '/'.
_PARENT = "rtrim(rtrim(n.path, replace(n.path, '/', '')), '/')"
_LAST_PART = "replace({0}, rtrim({0}, replace({0}, '/', '')), '')"
# name -> (one-line description, column docs, SQL). Units are in the column names (_s = Unix
# seconds, _ms = milliseconds).
VIEWS: dict[str, tuple[str, str, str]] = {
    "calls": (
        "one row per export window x function x route: what a function did for a route in that window",
        "window_id, window_start_s, window_end_s, service, version, host, pid, function (module.qualname or span name), "
        "kind ('function' or 'span' = outbound call), route, calls, errors, total_ms (incl. callees), self_ms",
        f"""SELECT w.id AS window_id, w.start AS window_start_s, w.end AS window_end_s, p.service, p.version, p.host, p.pid,
                  f.name AS function, f.kind, s.route, s.calls, s.errors, s.total_ns / 1e6 AS total_ms, s.self_ns / 1e6 AS self_ms
           FROM {FUNCTION_STATS}""",
    ),
    "requests": (
        "one row per export window x route: requests served",
        "window_id, window_start_s, window_end_s, service, version, host, pid, route, requests, errors (failed requests), total_ms",
        f"""SELECT w.id AS window_id, w.start AS window_start_s, w.end AS window_end_s, p.service, p.version, p.host, p.pid,
                  r.route, r.requests, r.errors, r.total_ns / 1e6 AS total_ms
           FROM {ROUTE_STATS}""",
    ),
    "exceptions": (
        "one row per export window x function x route x exception type: how many calls raised it",
        "window_id, window_start_s, version, function, route, exception_type, count",
        f"""SELECT w.id AS window_id, w.start AS window_start_s, p.version, f.name AS function, e.route, e.exception_type, e.count
           FROM {FUNCTION_ERRORS}""",
    ),
    "exception_samples": (
        "the first occurrence per window x function x route x exception type, with its stack",
        "seen_at_s, version, function, route, exception_type, message (null unless capture is on), trace_id, span_id, "
        "stack_json ([[function, file, line], ...] outermost first)",
        f"""SELECT x.seen_at AS seen_at_s, p.version, f.name AS function, x.route, x.exception_type, x.message,
                  x.trace_id, x.span_id, x.stack AS stack_json
           FROM {ERROR_SAMPLES}""",
    ),
    "slow_spans": (
        "function spans kept for slow or failing calls in sampled traces",
        "trace_id, span_id, parent_span_id, version, name (function), start_s, duration_ms, exception_type, attributes_json",
        """SELECT s.trace_id, s.span_id, s.parent_span_id, p.version, s.name, s.start AS start_s,
                  s.duration_ns / 1e6 AS duration_ms, s.exception_type, s.attributes AS attributes_json
           FROM main.spans s LEFT JOIN main.processes p ON p.id = s.process_id""",
    ),
    "call_paths": (
        "one row per export window x route x call-tree node: a function at a path (who called it, from the route's entry)",
        "window_id, window_start_s, version, route, function (null for an '(other paths)' node), caller (the function "
        "that called it; null at the route's entry), depth (1 = called by the framework for the route), path_ids (store "
        "function ids from the entry, '/'-joined, '*' = other paths), calls, errors, total_ms, self_ms",
        f"""SELECT w.id AS window_id, w.start AS window_start_s, p.version, n.route, f.name AS function, cf.name AS caller,
                  length(n.path) - length(replace(n.path, '/', '')) + 1 AS depth, n.path AS path_ids,
                  n.calls, n.errors, n.total_ns / 1e6 AS total_ms, n.self_ns / 1e6 AS self_ms
           FROM {PATH_NODES} LEFT JOIN main.functions f ON f.id = n.function_id
           LEFT JOIN main.functions cf ON cf.id = CAST({_LAST_PART.format(_PARENT)} AS INTEGER)""",
    ),
    "deployments": (
        "one row per version x service: processes and time range",
        "version, version_source, service, processes, first_seen_s, last_seen_s",
        """SELECT p.version, min(p.version_source) AS version_source, p.service, count(DISTINCT p.id) AS processes,
                  min(w.start) AS first_seen_s, max(w.end) AS last_seen_s
           FROM main.processes p JOIN main.windows w ON w.process_id = p.id GROUP BY p.version, p.service""",
    ),
}

EXAMPLE = """SELECT c.route, c.version, c.function, sum(c.calls) * 1.0 / r.requests AS calls_per_request,
       sum(c.self_ms) / r.requests AS self_ms_per_request
FROM calls c JOIN (SELECT route, version, sum(requests) AS requests FROM requests GROUP BY 1, 2) r
  USING (route, version)
GROUP BY c.route, c.version, c.function ORDER BY self_ms_per_request DESC LIMIT 10"""

MAX_SQL_CHARS = 20_000
MAX_VALUE_BYTES = 1_000_000


def describe_views() -> str:
    return "\n".join(f"- {name}: {about}. Columns: {columns}." for name, (about, columns, _sql) in VIEWS.items())


_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE}
_DENIED_FUNCTIONS = {"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"}


def _authorize(action: int, _arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    """Reading only. PRAGMAs are denied too, even their table-valued forms (``pragma_table_info``):
    SQLite checks those as a schema update; ``sqlite_master`` / ``sqlite_temp_master`` give the schema."""
    if action in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in _DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


_TABLE_FUNCTIONS = ("json_each", "json_tree")
# Other table-valued functions a SQLite build may have: pragma_* must stay denied (see _authorize);
# the rest expose pages or internals, not the store's rows.
_OTHER_TABLE_FUNCTIONS = ("pragma_", "dbstat", "sqlite_dbpage", "sqlite_stmt", "fts3tokenize", "fts5vocab", "carray", "completion")


def authorizer_for(sql: str):
    """The authorizer for one statement: :func:`_authorize`, and, when the statement names
    ``json_each`` / ``json_tree`` and no other table-valued function, the step every table-valued
    function's constructor takes (SQLite reports declaring its columns as updates of
    ``sqlite_master``'s columns, with nothing saying which function it is: so the statement's text tells
    them apart; a text that merely mentions ``pragma_`` is refused, never the reverse). The
    connection stays read-only and ``query_only`` whatever the authorizer allows."""
    text = sql.lower()
    if not any(name in text for name in _TABLE_FUNCTIONS) or any(name in text for name in _OTHER_TABLE_FUNCTIONS):
        return _authorize

    def authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
        if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master" and trigger is None:
            return sqlite3.SQLITE_OK
        return _authorize(action, arg1, arg2, db, trigger)

    return authorize


def connect_for_queries(path: str, statement: str = "") -> sqlite3.Connection:
    """A connection for SQL from outside funcsight: the store opened read-only (``mode=ro``), the
    TEMP :data:`VIEWS` added, then locked down: ``PRAGMA query_only=ON``; an authorizer that allows
    reading (SELECT, reading columns, recursive CTEs, functions except ``load_extension`` and
    friends) and denies everything else (writes, CREATE/DROP/ALTER, ATTACH/DETACH, which
    ``query_only`` alone does not stop, transactions, every PRAGMA); SQLite limits on value and SQL
    text length and no attached databases. Rows are plain tuples. With ``statement``, the
    authorizer is the one for it (:func:`authorizer_for`: ``json_each`` / ``json_tree`` work)."""
    conn = open_store(path)
    conn.row_factory = None
    try:
        for name, (_about, _columns, sql) in VIEWS.items():
            conn.execute(f"CREATE TEMP VIEW {name} AS {sql}")
        conn.execute("PRAGMA query_only=ON")
    except sqlite3.DatabaseError as err:
        conn.close()
        raise _damaged(path, err) from None
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_CHARS)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(authorizer_for(statement))
    return conn


def check_readable(path: str) -> None:
    """Raise :class:`SourceError` unless the store at ``path`` can be opened for reading."""
    open_store(path).close()


__all__ = ["StoreSource", "VIEWS", "EXAMPLE", "MAX_SQL_CHARS", "MAX_VALUE_BYTES", "check_readable", "connect_for_queries",
           "default_db_path", "describe_views", "merge_side_store", "open_store", "side_stores_note"]
