"""Writes closed windows into the embedded store, off the request path: a consumer of
:class:`~funcsight.processors.windows.Window`.

One transaction per window: its process, function, error, sample and route rows, and its slow calls
as function-span rows (the span ids the window gave them, which the OpenTelemetry function spans
carry too). This module (and so ``sqlite3``) is imported only when the store is on.

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

from typing import TYPE_CHECKING

from funcsight import names
from funcsight.processors.windows import Window, exception_name
from funcsight.store.db import StoreError, open_for_writing

if TYPE_CHECKING:
    from funcsight.instrumentation.registry import FunctionRegistry

_log = logging.getLogger("funcsight")
MAX_PENDING_WINDOWS = 360
# funcsight's own counters, one ``windows`` column each (store/schema.py), named as the window's fields.
COUNTER_COLUMNS = tuple(field for field, _ in names.DROPPED_REASONS + names.INTERNAL_ERROR_COMPONENTS)
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
                    lost = self._pending.popleft()
                    self.dropped_windows += 1
                    if self._pending:  # its own counters move on to the next oldest (already exported elsewhere)
                        self._pending[0].counters.add(lost.counters)
                self._pending.append(window)
            return self._write_pending()

    def _write_pending(self) -> bool:
        while self._pending:
            if not self._attempt(self._insert_window, self._pending[0]):
                return False
            self._pending.popleft()
        return True

    def _insert_window(self, conn: sqlite3.Connection, window: Window) -> None:
        path_fids = {fid for _, path in window.paths for fid in path if fid >= 0}
        rows = self._function_rows_for(
            {fid for fid, _ in window.functions} | {key[0] for key in window.errors} | {key[0] for key in window.samples}
            | path_fids
        )
        counters = window.counters
        cursor = conn.execute(
            f"INSERT INTO windows (process_id, start, end, {', '.join(COUNTER_COLUMNS)})"
            f" VALUES (?, ?, ?{', ?' * len(COUNTER_COLUMNS)})",
            (self._process_row, window.start, window.end, *(getattr(counters, column) for column in COUNTER_COLUMNS)),
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
        if window.paths:
            conn.executemany(
                "INSERT INTO path_nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (window_id, route, store_path(path, rows), rows[path[-1]] if path[-1] >= 0 else None, *counts[:4])
                    for (route, path), counts in window.paths.items() if path
                ],
            )
            conn.executemany(
                "INSERT INTO path_errors VALUES (?, ?, ?, ?, ?)",
                [(window_id, route, store_path(path, rows), exc, count)
                 for (route, path, exc), count in window.path_errors.items() if path],
            )
        if window.slow_calls:
            conn.executemany("INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", self._span_rows(window))

    def _span_rows(self, window: Window) -> list[tuple]:
        """The function spans of the window's slow calls, as the OpenTelemetry ones are made
        (exporters/spans.py): same ids, names, times and attributes."""
        functions = self.registry.functions
        offset = window.clock_offset_ns
        rows = []
        for root, calls in window.slow_calls:
            trace_id, parent_id = format(root.trace_id, "032x"), format(root.span_id, "016x")
            for fid, start, end, exc_type, span_id in calls:
                info = functions[fid]
                attributes = {
                    names.CODE_FUNCTION_NAME: info.name,
                    names.CODE_FILE_PATH: info.file,
                    names.CODE_LINE_NUMBER: info.line,
                }
                if exc_type is not None:
                    attributes[names.EXCEPTION_TYPE] = exception_name(exc_type)
                rows.append((
                    trace_id, format(span_id, "016x"), parent_id, self._process_row, info.name,
                    (start + offset) / 1e9, max(0, end - start), attributes.get(names.EXCEPTION_TYPE),
                    json.dumps(attributes, default=str, separators=(",", ":")),
                ))
        return rows

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


def store_path(path: tuple[int, ...], rows: dict[int, int]) -> str:
    """A path of the process's function ids as the store keeps it: store ids joined by ``/``, an
    "(other paths)" node as ``*`` (see store/schema.py)."""
    return "/".join(str(rows[fid]) if fid >= 0 else "*" for fid in path)

