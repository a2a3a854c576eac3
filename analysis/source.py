"""Sources of recorded data for the analysis: the embedded store (default).

A source answers a few aggregate questions; every analysis (functions, routes, and the version
comparisons built on them) is computed from those answers, so another backend only has to answer
the same questions.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field

from funcsight.histogram import merge
from funcsight.store.db import StoreError, open_for_reading


@dataclass
class Aggregate:
    calls: int = 0
    errors: int = 0
    total_ns: int = 0
    self_ns: int = 0
    hist: dict = field(default_factory=dict)
    errors_by_type: dict = field(default_factory=dict)


@dataclass
class RouteAggregate:
    requests: int = 0
    errors: int = 0
    total_ns: int = 0
    hist: dict = field(default_factory=dict)


@dataclass
class VersionInfo:
    version: str
    source: str
    first_seen: float
    last_seen: float
    processes: int
    requests: int
    calls: int


class StoreSource:
    def __init__(self, path: str):
        self.path = path
        self.conn = open_for_reading(path)

    def close(self) -> None:
        self.conn.close()

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as err:
            raise StoreError(f"store {self.path} could not be read ({err}): it may be corrupt; move it aside") from None

    @contextmanager
    def _decoding(self, table: str):
        """Values funcsight did not write (text in a count, a histogram that is not JSON) are damage
        to the file, reported like any other damage rather than as a traceback from the arithmetic."""
        try:
            yield
        except (TypeError, ValueError) as err:
            raise StoreError(
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
        where, params = _filters(route, version, "s.route")
        result: dict[tuple, Aggregate] = {}
        rows = self._query(
            f"""SELECT f.name, f.kind, s.route, p.version, s.calls, s.errors, s.total_ns, s.self_ns, s.hist
                FROM function_stats s JOIN functions f ON f.id = s.function_id
                JOIN windows w ON w.id = s.window_id JOIN processes p ON p.id = w.process_id {where}""",
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
        for r in self._query(
            f"""SELECT f.name, f.kind, s.route, p.version, s.exception_type, sum(s.count)
                FROM function_errors s JOIN functions f ON f.id = s.function_id
                JOIN windows w ON w.id = s.window_id JOIN processes p ON p.id = w.process_id {where}
                GROUP BY 1, 2, 3, 4, 5""",
            params,
        ):
            agg = result.get((r[0], r[1], r[2], r[3]))
            if agg is not None:
                with self._decoding("function_errors"):
                    agg.errors_by_type[r[4]] = _count(r[5])
        return result

    def route_aggregates(self, route: str | None = None, version: str | None = None) -> dict[tuple, RouteAggregate]:
        """``(route, version) -> RouteAggregate``."""
        where, params = _filters(route, version, "s.route")
        result: dict[tuple, RouteAggregate] = {}
        rows = self._query(
            f"""SELECT s.route, p.version, s.requests, s.errors, s.total_ns, s.hist
                FROM route_stats s JOIN windows w ON w.id = s.window_id
                JOIN processes p ON p.id = w.process_id {where}""",
            params,
        )
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

    def code_hashes(self, version: str) -> dict[str, str]:
        """``function name -> code hash`` for the functions recorded under ``version``."""
        rows = self._query(
            "SELECT f.name, c.code_hash FROM function_code c JOIN functions f ON f.id = c.function_id WHERE c.version = ?",
            (version,),
        )
        return {r[0]: r[1] for r in rows}

    def series(self, version: str | None = None, since: float | None = None) -> list[tuple]:
        """Per window: ``(start, end, function, kind, route, version, calls, errors, total_ns)``."""
        where, params = _time_filter(version, since)
        return self._numeric(self._query(
            f"""SELECT w.start, w.end, f.name, f.kind, s.route, p.version, s.calls, s.errors, s.total_ns
                FROM function_stats s JOIN functions f ON f.id = s.function_id
                JOIN windows w ON w.id = s.window_id JOIN processes p ON p.id = w.process_id {where}
                ORDER BY w.start""",
            params,
        ), "function_stats", (0, 1, 6, 7, 8))

    def route_series(self, version: str | None = None, since: float | None = None) -> list[tuple]:
        """Per window: ``(start, end, route, version, requests)``."""
        where, params = _time_filter(version, since)
        return self._numeric(self._query(
            f"""SELECT w.start, w.end, s.route, p.version, s.requests FROM route_stats s
                JOIN windows w ON w.id = s.window_id JOIN processes p ON p.id = w.process_id {where}""",
            params,
        ), "route_stats", (0, 1, 4))

    def error_series(self, version: str | None = None, since: float | None = None) -> list[tuple]:
        """Per window: ``(start, function, route, version, exception_type, count)``."""
        where, params = _time_filter(version, since)
        return self._numeric(self._query(
            f"""SELECT w.start, f.name, e.route, p.version, e.exception_type, e.count FROM function_errors e
                JOIN functions f ON f.id = e.function_id JOIN windows w ON w.id = e.window_id
                JOIN processes p ON p.id = w.process_id {where} ORDER BY w.start""",
            params,
        ), "function_errors", (0, 5))

    def error_records(self, function: str | None = None, route: str | None = None, version: str | None = None) -> list[dict]:
        """Per function x route x version x exception type: count, first/last seen and the latest
        sample (stack, message if captured, trace and span ids; the function span's ids when one
        was recorded for that failure)."""
        clauses, params = [], []
        for column, value in (("f.name", function), ("e.route", route), ("p.version", version)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        records = []
        for r in self._query(
            f"""SELECT f.name, e.route, p.version, e.exception_type, sum(e.count), min(w.start), max(w.end)
                FROM function_errors e JOIN functions f ON f.id = e.function_id
                JOIN windows w ON w.id = e.window_id JOIN processes p ON p.id = w.process_id {where}
                GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC""",
            tuple(params),
        ):
            record = {
                "function": r[0], "route": r[1], "version": r[2], "exception_type": r[3], "count": r[4],
                "first_seen": r[5], "last_seen": r[6], "stack": [], "message": None, "trace_id": None, "span_id": None,
            }
            sample = self._query(
                """SELECT x.stack, x.message, x.trace_id, x.span_id FROM error_samples x
                   JOIN functions f ON f.id = x.function_id JOIN windows w ON w.id = x.window_id
                   JOIN processes p ON p.id = w.process_id
                   WHERE f.name = ? AND x.route = ? AND p.version = ? AND x.exception_type = ?
                   ORDER BY x.seen_at DESC LIMIT 1""",
                (r[0], r[1], r[2], r[3]),
            )
            if sample:
                with self._decoding("error_samples"):
                    record["stack"] = [{"function": name, "file": file, "line": line}
                                       for name, file, line in json.loads(sample[0][0])]
                record["message"], record["trace_id"], record["span_id"] = sample[0][1], sample[0][2], sample[0][3]
            span = self._query(
                """SELECT s.trace_id, s.span_id FROM spans s JOIN processes p ON p.id = s.process_id
                   WHERE s.name = ? AND s.exception_type = ? AND p.version = ? ORDER BY s.start DESC LIMIT 1""",
                (r[0], r[3], r[2]),
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


def _time_filter(version: str | None, since: float | None) -> tuple[str, tuple]:
    clauses, params = [], []
    if version is not None:
        clauses.append("p.version = ?")
        params.append(version)
    if since is not None:
        clauses.append("w.end >= ?")
        params.append(since)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(params)


def _filters(route: str | None, version: str | None, route_column: str) -> tuple[str, tuple]:
    clauses, params = [], []
    if route is not None:
        clauses.append(f"{route_column} = ?")
        params.append(route)
    if version is not None:
        clauses.append("p.version = ?")
        params.append(version)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(params)
