"""The ``query`` tool's engine: one read-only SELECT over the store, bounded in rows, cell size and
time.

Every call opens its own connection with :func:`funcsight.store.db.open_for_reading` (the file is
opened ``mode=ro``), adds the documented TEMP views below, then locks the connection down:

* ``PRAGMA query_only=ON``;
* an authorizer that allows reading (SELECT, reading columns, recursive CTEs, functions except
  ``load_extension`` and friends) and denies everything else: INSERT/UPDATE/DELETE,
  CREATE/DROP/ALTER, ATTACH/DETACH (which ``query_only`` alone does not stop), transactions and
  every PRAGMA;
* only one statement, and it must start with SELECT or WITH;
* a progress handler that aborts the statement after :data:`TIME_LIMIT_MS`;
* SQLite limits on string/blob length (no ``randomblob(1e9)``) and on the SQL text length;
* at most :data:`ROW_CAP` rows returned (how many more there were is counted, within the time
  limit) and text cells cut at :data:`CELL_CHARS` characters.
"""

from __future__ import annotations

import re
import sqlite3
import time

from funcsight.mcp_server.models import QueryResult
from funcsight.store.db import StoreError, open_for_reading

ROW_CAP = 200
TIME_LIMIT_MS = 2000
CELL_CHARS = 1000
MAX_SQL_CHARS = 20_000
MAX_VALUE_BYTES = 1_000_000

# name -> (one-line description, column docs, SQL). Units are in the column names (_s = Unix
# seconds, _ms = milliseconds).
VIEWS: dict[str, tuple[str, str, str]] = {
    "calls": (
        "one row per export window x function x route: what a function did for a route in that window",
        "window_id, window_start_s, window_end_s, service, version, host, pid, function (module.qualname or span name), "
        "kind ('function' or 'span' = outbound call), route, calls, errors, total_ms (incl. callees), self_ms",
        """SELECT w.id AS window_id, w.start AS window_start_s, w.end AS window_end_s, p.service, p.version, p.host, p.pid,
                  f.name AS function, f.kind, s.route, s.calls, s.errors, s.total_ns / 1e6 AS total_ms, s.self_ns / 1e6 AS self_ms
           FROM main.function_stats s JOIN main.functions f ON f.id = s.function_id
           JOIN main.windows w ON w.id = s.window_id JOIN main.processes p ON p.id = w.process_id""",
    ),
    "requests": (
        "one row per export window x route: requests served",
        "window_id, window_start_s, window_end_s, service, version, host, pid, route, requests, errors (failed requests), total_ms",
        """SELECT w.id AS window_id, w.start AS window_start_s, w.end AS window_end_s, p.service, p.version, p.host, p.pid,
                  r.route, r.requests, r.errors, r.total_ns / 1e6 AS total_ms
           FROM main.route_stats r JOIN main.windows w ON w.id = r.window_id JOIN main.processes p ON p.id = w.process_id""",
    ),
    "exceptions": (
        "one row per export window x function x route x exception type: how many calls raised it",
        "window_id, window_start_s, version, function, route, exception_type, count",
        """SELECT w.id AS window_id, w.start AS window_start_s, p.version, f.name AS function, e.route, e.exception_type, e.count
           FROM main.function_errors e JOIN main.functions f ON f.id = e.function_id
           JOIN main.windows w ON w.id = e.window_id JOIN main.processes p ON p.id = w.process_id""",
    ),
    "exception_samples": (
        "the first occurrence per window x function x route x exception type, with its stack",
        "seen_at_s, version, function, route, exception_type, message (null unless capture is on), trace_id, span_id, "
        "stack_json ([[function, file, line], ...] outermost first)",
        """SELECT x.seen_at AS seen_at_s, p.version, f.name AS function, x.route, x.exception_type, x.message,
                  x.trace_id, x.span_id, x.stack AS stack_json
           FROM main.error_samples x JOIN main.functions f ON f.id = x.function_id
           JOIN main.windows w ON w.id = x.window_id JOIN main.processes p ON p.id = w.process_id""",
    ),
    "slow_spans": (
        "function spans kept for slow or failing calls in sampled traces",
        "trace_id, span_id, parent_span_id, version, name (function), start_s, duration_ms, exception_type, attributes_json",
        """SELECT s.trace_id, s.span_id, s.parent_span_id, p.version, s.name, s.start AS start_s,
                  s.duration_ns / 1e6 AS duration_ms, s.exception_type, s.attributes AS attributes_json
           FROM main.spans s LEFT JOIN main.processes p ON p.id = s.process_id""",
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


def describe_views() -> str:
    lines = [f"- {name}: {about}. Columns: {columns}." for name, (about, columns, _sql) in VIEWS.items()]
    return "\n".join(lines)


class QueryRefused(Exception):
    """The SQL was not run (or was stopped): ``str()`` says why and what to do instead."""


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


_COMMENT = re.compile(r"\s*(--[^\n]*(\n|$)|/\*.*?(\*/|$))", re.S)


def _first_keyword(sql: str) -> str:
    position = 0
    while True:
        match = _COMMENT.match(sql, position)
        if not match or match.end() == position:
            break
        position = match.end()
    word = re.match(r"\s*([A-Za-z]+)", sql[position:])
    return word.group(1).upper() if word else ""


def connect(db_path: str) -> sqlite3.Connection:
    """A locked-down read-only connection with the TEMP views."""
    conn = open_for_reading(db_path)
    conn.row_factory = None
    try:
        for name, (_about, _columns, sql) in VIEWS.items():
            conn.execute(f"CREATE TEMP VIEW {name} AS {sql}")
        conn.execute("PRAGMA query_only=ON")
    except sqlite3.DatabaseError as err:
        conn.close()
        raise StoreError(f"store {db_path} could not be read ({err}): it may be corrupt; move it aside") from None
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_CHARS)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(_authorize)
    return conn


def run_query(db_path: str, sql: str, row_cap: int = ROW_CAP, time_limit_ms: int = TIME_LIMIT_MS) -> QueryResult:
    """Run one read-only SELECT/WITH statement; raises :class:`QueryRefused` or ``StoreError``."""
    if not sql.strip():
        raise QueryRefused("empty SQL: send one SELECT (or WITH ... SELECT) statement")
    if len(sql) > MAX_SQL_CHARS:
        raise QueryRefused(f"SQL longer than {MAX_SQL_CHARS} characters: send a shorter statement")
    keyword = _first_keyword(sql)
    if keyword not in ("SELECT", "WITH"):
        raise QueryRefused(f"only a single read-only SELECT or WITH statement is allowed, not {keyword or 'this'}: "
                           "the store is read-only for agents")
    conn = connect(db_path)
    started = time.monotonic()
    deadline = started + time_limit_ms / 1000
    conn.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
    try:
        try:
            cursor = conn.execute(sql)
            columns = [d[0] for d in cursor.description or ()]
            fetched = cursor.fetchmany(row_cap + 1)
        except (sqlite3.Warning, sqlite3.ProgrammingError) as err:
            if "one statement" in str(err):
                raise QueryRefused("only one statement per call: remove the extra statements") from None
            raise QueryRefused(f"SQL error: {err}") from None
        except sqlite3.DatabaseError as err:
            raise QueryRefused(_explain(err, time_limit_ms)) from None
        more, lower_bound = 0, False
        if len(fetched) > row_cap:
            fetched = fetched[:row_cap]
            more = 1
            try:
                while cursor.fetchone() is not None:
                    more += 1
            except sqlite3.OperationalError:
                lower_bound = True  # the time limit stopped the counting
    finally:
        conn.close()
    truncated = 0
    rows = []
    for row in fetched:
        cells = []
        for value in row:
            if isinstance(value, bytes):
                value = f"<blob, {len(value)} bytes>"
            elif isinstance(value, str) and len(value) > CELL_CHARS:
                value = value[:CELL_CHARS] + f"…(+{len(value) - CELL_CHARS} chars)"
                truncated += 1
            cells.append(value)
        rows.append(cells)
    notes = []
    if more:
        notes.append(f"{'at least ' if lower_bound else ''}{more} more row(s) were cut at the cap of {row_cap}: "
                     "aggregate (GROUP BY) or add a LIMIT / WHERE")
    if truncated:
        notes.append(f"{truncated} text cell(s) cut to {CELL_CHARS} characters")
    return QueryResult(
        columns=columns, rows=rows, rows_returned=len(rows), more_rows=more, more_rows_is_lower_bound=lower_bound,
        truncated_cells=truncated, elapsed_ms=round((time.monotonic() - started) * 1000, 1), note="; ".join(notes) or None,
    )


def _explain(err: sqlite3.DatabaseError, time_limit_ms: int) -> str:
    text = str(err)
    if "interrupted" in text:
        return f"query stopped at the time limit of {time_limit_ms} ms: narrow it (WHERE, LIMIT, fewer joins) or aggregate"
    if "not authorized" in text or "readonly" in text or "read-only" in text:
        return f"refused ({text}): the query tool only reads; writes, ATTACH, PRAGMAs and extensions are not allowed"
    if "too big" in text or "too long" in text:
        return f"refused ({text}): values are limited to {MAX_VALUE_BYTES} bytes"
    return f"SQL error: {text}"


__all__ = ["QueryRefused", "VIEWS", "describe_views", "run_query", "ROW_CAP", "TIME_LIMIT_MS"]
