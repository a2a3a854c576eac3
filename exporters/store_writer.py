"""Writes windows and function spans into the embedded store, off the request path.

A store that cannot be written (missing directory, read-only, full disk, corrupt or foreign file)
never stops the application: one warning line names the problem, windows wait in a bounded queue
and are retried each interval; the oldest are dropped (and counted) only when the queue is full.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from funcsight import names
from funcsight.instrumentation.registry import FunctionRegistry
from funcsight.processors.windows import Window
from funcsight.store.db import StoreError, open_for_writing

_log = logging.getLogger("funcsight")
MAX_PENDING_WINDOWS = 360
BUSY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ProcessIdentity:
    service: str
    version: str
    version_source: str
    instance_id: str
    pid: int
    host: str
    started_at: float


class StoreWriter:
    def __init__(self, path: str, registry: FunctionRegistry, process: ProcessIdentity):
        self.path = path
        self.registry = registry
        self.process = process
        self.dropped_windows = 0
        self.last_error: str | None = None
        self._pending: deque[Window] = deque()
        self._conn: sqlite3.Connection | None = None
        self._process_row: int | None = None
        self._function_rows: dict[int, int] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------ windows
    def write_window(self, window: Window) -> bool:
        """Queue ``window`` and write everything queued; False when the store is unavailable."""
        with self._lock:
            if not window.is_empty():
                if len(self._pending) >= MAX_PENDING_WINDOWS:
                    self._pending.popleft()
                    self.dropped_windows += 1
                self._pending.append(window)
            return self._write_pending()

    def _write_pending(self) -> bool:
        while self._pending:
            if not self._attempt(self._insert_window, self._pending[0]):
                return False
            self._pending.popleft()
        return True

    def _insert_window(self, conn: sqlite3.Connection, window: Window) -> None:
        rows = self._function_rows_for(
            {fid for fid, _ in window.functions} | {key[0] for key in window.errors} | {key[0] for key in window.samples}
        )
        cursor = conn.execute(
            "INSERT INTO windows (process_id, start, end, overflow_series, overflow_routes) VALUES (?, ?, ?, ?, ?)",
            (self._process_row, window.start, window.end, window.overflow_series, window.overflow_routes),
        )
        window_id = cursor.lastrowid
        conn.executemany(
            "INSERT INTO function_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (window_id, rows[fid], route, s[0], s[1], s[2], s[3], json.dumps(s[4], separators=(",", ":")))
                for (fid, route), s in window.functions.items()
            ],
        )
        conn.executemany(
            "INSERT INTO function_errors VALUES (?, ?, ?, ?, ?)",
            [(window_id, rows[fid], route, exc, count) for (fid, route, exc), count in window.errors.items()],
        )
        conn.executemany(
            "INSERT INTO error_samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (window_id, rows[fid], route, exc, json.dumps(s.stack), s.message, s.trace_id, s.span_id, s.seen_at)
                for (fid, route, exc), s in window.samples.items()
            ],
        )
        conn.executemany(
            "INSERT INTO route_stats VALUES (?, ?, ?, ?, ?, ?)",
            [
                (window_id, route, s[0], s[1], s[2], json.dumps(s[3], separators=(",", ":")))
                for route, s in window.routes.items()
            ],
        )

    def _function_rows_for(self, fids: set[int]) -> dict[int, int]:
        conn = self._conn
        for fid in fids - self._function_rows.keys():
            info = self.registry.functions[fid]
            conn.execute("INSERT OR IGNORE INTO functions (name, kind) VALUES (?, ?)", (info.name, info.kind))
            row = conn.execute("SELECT id FROM functions WHERE name = ? AND kind = ?", (info.name, info.kind)).fetchone()[0]
            conn.execute(
                "INSERT OR REPLACE INTO function_code VALUES (?, ?, ?, ?, ?)",
                (row, self.process.version, info.file, info.line, info.code_hash),
            )
            self._function_rows[fid] = row
        return self._function_rows

    # -------------------------------------------------------------------------------------- spans
    def write_spans(self, rows: list[tuple]) -> bool:
        with self._lock:
            return self._attempt(self._insert_spans, rows)

    def _insert_spans(self, conn: sqlite3.Connection, rows: list[tuple]) -> None:
        conn.executemany(
            "INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*row[:3], self._process_row, *row[3:]) for row in rows],
        )

    # ----------------------------------------------------------------------------------- plumbing
    def _attempt(self, write, payload) -> bool:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                write(conn, payload)
                conn.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (a full disk does): a failing ROLLBACK must
                # not replace the error that says what is wrong.
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise
        except StoreError as err:
            self._report(str(err))
            return False
        except sqlite3.Error as err:
            self._report(f"cannot write store {self.path} ({err}): funcsight keeps the data in memory and retries")
            self._close()
            return False
        if self.last_error is not None:
            _log.warning("funcsight: store %s is writable again; queued windows written", self.path)
            self.last_error = None
        return True

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = open_for_writing(self.path)
            p = self.process
            conn.execute(
                "INSERT OR IGNORE INTO processes (service, version, version_source, instance_id, pid, host, started_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (p.service, p.version, p.version_source, p.instance_id, p.pid, p.host, p.started_at),
            )
            self._process_row = conn.execute("SELECT id FROM processes WHERE instance_id = ?", (p.instance_id,)).fetchone()[0]
            self._function_rows = {}
            self._conn = conn
        return self._conn

    def _report(self, message: str) -> None:
        if message != self.last_error:
            _log.warning("funcsight: %s", message)
            self.last_error = message

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()

    def before_fork(self) -> None:
        """Let a write in progress finish and close the connection: a child must not inherit
        SQLite's in-process lock state (it would wait on it forever)."""
        self._held_for_fork = self._lock.acquire(timeout=2 * BUSY_TIMEOUT_S)
        self._close()

    def after_fork_in_parent(self) -> None:
        if getattr(self, "_held_for_fork", False):
            self._held_for_fork = False
            self._lock.release()

    def reset_after_fork(self, process: ProcessIdentity) -> None:
        """The child must not use the parent's connection, nor write as the parent."""
        self._lock = threading.Lock()
        self._conn = None
        self._pending = deque()
        self.process = process


class StoreSpanExporter(SpanExporter):
    """Keeps funcsight's function spans (not every span of the process) in the store."""

    def __init__(self, writer: StoreWriter):
        self.writer = writer

    def export(self, spans) -> SpanExportResult:
        rows = []
        for span in spans:
            scope = span.instrumentation_scope
            if scope is None or scope.name != names.SCOPE:
                continue
            context = span.get_span_context()
            parent = span.parent
            attributes = dict(span.attributes or {})
            rows.append(
                (
                    format(context.trace_id, "032x"),
                    format(context.span_id, "016x"),
                    format(parent.span_id, "016x") if parent is not None else None,
                    span.name,
                    (span.start_time or 0) / 1e9,
                    max(0, (span.end_time or 0) - (span.start_time or 0)),
                    attributes.get(names.EXCEPTION_TYPE),
                    json.dumps(attributes, default=str, separators=(",", ":")),
                )
            )
        if rows and not self.writer.write_spans(rows):
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass
