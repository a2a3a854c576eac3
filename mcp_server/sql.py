"""The ``query`` tool's engine: one read-only SELECT over the store, bounded in rows, cell size and
time.

The store side (the documented views, the read-only connection with its authorizer, ``query_only``
and SQLite limits) is :func:`funcsight.sources.store.connect_for_queries`, where every SQL that
reads the store lives. Here, what the MCP tool adds on top:

* only one statement, and it must start with SELECT or WITH;
* a progress handler that aborts the statement after :data:`TIME_LIMIT_MS`;
* at most :data:`ROW_CAP` rows returned (how many more there were is counted, within the time
  limit), text cells cut at :data:`CELL_CHARS` characters, at most :data:`MAX_COLUMNS` columns, and
  the rows' JSON within :data:`ROWS_BYTES` bytes (rows past it are left out and counted);
* refusals as :class:`QueryRefused`, a message saying what to do instead.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time

from funcsight.mcp_server.models import QueryResult
from funcsight.sources.store import EXAMPLE, MAX_SQL_CHARS, MAX_VALUE_BYTES, VIEWS, connect_for_queries, describe_views

ROW_CAP = 200
TIME_LIMIT_MS = 2000
CELL_CHARS = 1000
MAX_COLUMNS = 64
ROWS_BYTES = 150_000  # the rows' JSON at most: further rows are left out and counted (the reply's budget)


class QueryRefused(Exception):
    """The SQL was not run (or was stopped): ``str()`` says why and what to do instead."""


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


def run_query(db_path: str, sql: str, row_cap: int = ROW_CAP, time_limit_ms: int = TIME_LIMIT_MS) -> QueryResult:
    """Run one read-only SELECT/WITH statement; raises :class:`QueryRefused` or
    :class:`funcsight.sources.SourceError`."""
    if not sql.strip():
        raise QueryRefused("empty SQL: send one SELECT (or WITH ... SELECT) statement")
    if len(sql) > MAX_SQL_CHARS:
        raise QueryRefused(f"SQL longer than {MAX_SQL_CHARS} characters: send a shorter statement")
    keyword = _first_keyword(sql)
    if keyword not in ("SELECT", "WITH"):
        raise QueryRefused(f"only a single read-only SELECT or WITH statement is allowed, not {keyword or 'this'}: "
                           "the store is read-only for agents")
    conn = connect_for_queries(db_path, sql)
    started = time.monotonic()
    deadline = started + time_limit_ms / 1000
    conn.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
    try:
        try:
            cursor = conn.execute(sql)
            columns = [d[0] for d in cursor.description or ()]
            if len(columns) > MAX_COLUMNS:
                raise QueryRefused(f"{len(columns)} columns: select at most {MAX_COLUMNS} (name the columns you need)")
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
    dropped = _fit_rows(rows, ROWS_BYTES)
    notes = []
    if dropped:
        notes.append(f"{dropped} returned row(s) left out to keep the reply under {ROWS_BYTES} bytes: select fewer "
                     "or narrower columns, or aggregate")
    if more:
        notes.append(f"{'at least ' if lower_bound else ''}{more} more row(s) were cut at the cap of {row_cap}: "
                     "aggregate (GROUP BY) or add a LIMIT / WHERE")
    if truncated:
        notes.append(f"{truncated} text cell(s) cut to {CELL_CHARS} characters")
    return QueryResult(
        columns=columns, rows=rows, rows_returned=len(rows), more_rows=more + dropped, more_rows_is_lower_bound=lower_bound,
        truncated_cells=truncated, elapsed_ms=round((time.monotonic() - started) * 1000, 1), note="; ".join(notes) or None,
    )


def _fit_rows(rows: list, budget: int) -> int:
    """Drop rows from the end until their JSON fits in ``budget`` bytes; how many were dropped."""
    size, kept = 2, 0
    for row in rows:
        size += len(json.dumps(row, ensure_ascii=False, default=str).encode()) + 1
        if size > budget:
            break
        kept += 1
    dropped = len(rows) - kept
    del rows[kept:]
    return dropped


def _explain(err: sqlite3.DatabaseError, time_limit_ms: int) -> str:
    text = str(err)
    if "interrupted" in text:
        return f"query stopped at the time limit of {time_limit_ms} ms: narrow it (WHERE, LIMIT, fewer joins) or aggregate"
    if "not authorized" in text or "readonly" in text or "read-only" in text:
        return f"refused ({text}): the query tool only reads; writes, ATTACH, PRAGMAs and extensions are not allowed"
    if "too big" in text or "too long" in text:
        return f"refused ({text}): values are limited to {MAX_VALUE_BYTES} bytes"
    return f"SQL error: {text}"


__all__ = ["CELL_CHARS", "EXAMPLE", "QueryRefused", "ROW_CAP", "TIME_LIMIT_MS", "VIEWS", "describe_views", "run_query"]
