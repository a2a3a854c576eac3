"""Writes closed windows into the embedded store, off the request path: a consumer of
:class:`~funcsight.processors.windows.Window`.

One transaction per window: its process, function, error, sample and route rows, and its slow calls
as function-span rows (the span ids the window gave them, which the OpenTelemetry function spans
carry too). This module (and so ``sqlite3``) is imported only when the store is on.

A store that cannot be written never stops the application, and what it costs is said in one line:

* conditions around the file (missing directory, read-only, full disk, locked): windows wait in a
  bounded queue and are retried each interval; when the queue is full the oldest are dropped
  (counted, said once); at exit what still waits goes to a side store (see store/side.py);
* the file itself unusable (corrupt, foreign, newer, altered, a stray ``-wal`` beside it; found on
  open or by a corruption error): it is never modified again, the writer moves to a side store;
* the file deleted or replaced while the app runs (``os.stat`` of the path against the open file,
  once per write): the writer says so and opens the file now at the path (a new store if none).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass

from typing import TYPE_CHECKING, Callable

from funcsight import names
from funcsight.processors.windows import Window, exception_name
from funcsight.store.db import StoreError, explain, open_for_writing
from funcsight.store.side import new_side_path

if TYPE_CHECKING:
    from funcsight.instrumentation.registry import FunctionRegistry

_log = logging.getLogger("funcsight")
MAX_PENDING_WINDOWS = 360
# funcsight's own counters, one ``windows`` column each (store/schema.py), named as the window's fields.
COUNTER_COLUMNS = tuple(field for field, _ in names.DROPPED_REASONS + names.INTERNAL_ERROR_COMPONENTS)
BUSY_TIMEOUT_S = 10.0
MAX_SIDE_STORES = 3  # unusable side stores in a row: something else is wrong; wait and retry instead


@dataclass(frozen=True)
class ProcessIdentity:
    service: str
    version: str
    version_source: str
    instance_id: str
    pid: int
    host: str
    started_at: float


def window_requests(window: Window) -> int:
    return sum(stats[0] for stats in window.routes.values())


class StoreWriter:
    def __init__(self, path: str, registry: FunctionRegistry, process: ProcessIdentity):
        self.path = path  # the store asked for (FUNCSIGHT_DB)
        self.target = path  # the file written: the store, or a side store once the store proved unusable
        self.registry = registry
        self.process = process
        self.last_error: str | None = None
        # What the store cost, as plain counters (status pages and tests read them):
        self.windows_written = 0
        self.dropped_windows = 0  # oldest windows dropped while the queue was full
        self.dropped_requests = 0
        self.side_stores: list[str] = []  # side stores written, in order (the last is self.target while running)
        self.stores_recreated = 0  # times the file at the path was deleted or replaced under the writer
        self.saved_windows_at_exit = 0  # windows the store could not take at exit, written to a side store
        self.lost_windows = 0  # at exit: windows no file could take
        self.lost_requests = 0
        # Called with the number of requests in windows that are lost (funcsight.dropped{reason="store_write_failed"}).
        self.on_lost: Callable[[int], None] | None = None
        self._pending: deque[Window] = deque()
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._size = 0  # its size when last seen: a file that shrank is checked again
        self._process_row: int | None = None
        self._function_rows: dict[int, int] = {}
        self._lock = threading.Lock()
        self._finished = False
        self._last_problem: str | None = None

    # ------------------------------------------------------------------------------------ windows
    def write_window(self, window: Window) -> bool:
        """Queue ``window`` and write everything queued; False when the store is unavailable."""
        with self._lock:
            if not window.is_empty():
                if len(self._pending) >= MAX_PENDING_WINDOWS:
                    lost = self._pending.popleft()
                    self._drop(lost)
                    if self._pending:  # its own counters move on to the next oldest (already exported elsewhere)
                        self._pending[0].counters.add(lost.counters)
                self._pending.append(window)
            return self._write_pending()

    def _write_pending(self) -> bool:
        while self._pending:
            err = self._attempt(self._insert_window, self._pending[0])
            if err is None:
                self._pending.popleft()
                self.windows_written += 1
                if self.last_error is not None:
                    _log.warning("funcsight: store %s is writable again; queued windows written", self.target)
                    self.last_error = None
                continue
            if err.unusable and len(self.side_stores) < MAX_SIDE_STORES and self._move_to_side_store(err):
                continue
            self._last_problem = err.problem
            self._report(f"{err.problem}: {err.remedy}; funcsight keeps up to {MAX_PENDING_WINDOWS} windows in memory"
                         " and writes them once it can")
            return False
        return True

    def _move_to_side_store(self, err: StoreError) -> bool:
        """The file is unusable: leave it as it is and write to a new side store beside the store."""
        try:
            side = new_side_path(self.path, os.getpid())
        except OSError:
            return False
        bad, self.target = self.target, side
        self.side_stores.append(side)
        self.last_error = None
        _log.warning("funcsight: %s: funcsight leaves it untouched and writes to %s instead; %s, then "
                     "`funcsight merge %s --db %s` folds the side store in", err.problem, side, err.remedy, side, self.path)
        return True

    def _drop(self, window: Window) -> None:
        requests = window_requests(window)
        self.dropped_windows += 1
        self.dropped_requests += requests
        if self.dropped_windows == 1:
            _log.warning("funcsight: store %s could not be written for %d windows: from now on the oldest waiting window "
                         "is dropped each interval (counted; the total is said at exit)", self.target, MAX_PENDING_WINDOWS)
        self._lost(requests)

    def _lost(self, requests: int) -> None:
        if self.on_lost is not None:
            try:
                self.on_lost(requests)
            except Exception:
                pass

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
    def _attempt(self, write, payload) -> StoreError | None:
        """Write ``payload`` in one transaction; the error that stopped it, or None."""
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
            self._close()
            return err
        except sqlite3.Error as err:
            self._close()
            return explain(err, self.target)
        return None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and not self._same_file():
            self._close()
        if self._conn is None:
            conn = open_for_writing(self.target)
            try:
                stat = os.stat(self.target)
                p = self.process
                conn.execute(
                    "INSERT OR IGNORE INTO processes (service, version, version_source, instance_id, pid, host, started_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (p.service, p.version, p.version_source, p.instance_id, p.pid, p.host, p.started_at),
                )
                self._process_row = conn.execute("SELECT id FROM processes WHERE instance_id = ?", (p.instance_id,)).fetchone()[0]
            except BaseException:
                conn.close()
                raise
            self._file, self._size = (stat.st_dev, stat.st_ino), stat.st_size
            self._function_rows = {}
            self._conn = conn
        return self._conn

    def _same_file(self) -> bool:
        """Whether the open connection still writes the file at the path: an operator may have
        deleted or replaced it (a reset), and SQLite would go on writing the unlinked file."""
        try:
            stat = os.stat(self.target)
        except OSError:
            stat = None
        if stat is None or (stat.st_dev, stat.st_ino) != self._file:
            self.stores_recreated += 1
            what = "deleted" if stat is None else "replaced by another file"
            _log.warning("funcsight: store %s was %s while the app ran: funcsight now writes to the file at that path "
                         "(a new store if none); windows written before stay with the old file", self.target, what)
            return False
        if stat.st_size < self._size:  # truncated under the writer: reopening checks it again
            return False
        self._size = stat.st_size
        return True

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

    # ---------------------------------------------------------------------------------------- exit
    def finish(self) -> None:
        """At exit, after the last window: what the store could not take goes to a side store
        beside it; what that cannot take either is counted as lost.
        One line says where it went or what was lost. Runs once."""
        held = self._lock.acquire(timeout=2 * BUSY_TIMEOUT_S)
        try:
            if self._finished:
                return
            self._finished = True
            waiting = list(self._pending)
            self._pending.clear()
            problem = self._last_problem or f"store {self.target} could not be written"
            parts = []
            if waiting:
                requests = sum(window_requests(w) for w in waiting)
                side, failure = self._save_aside(waiting)
                if side is not None:
                    self.saved_windows_at_exit += len(waiting)
                    parts.append(f"{problem}: the last {len(waiting)} windows ({requests} requests) are in side store {side}; "
                                 f"read it with `funcsight functions --db {side}`, fold it in with `funcsight merge {side} --db {self.path}`")
                else:
                    self.lost_windows += len(waiting)
                    self.lost_requests += requests
                    self._lost(requests)
                    parts.append(f"{problem}, nor could a side store be written ({failure}): {len(waiting)} windows "
                                 f"({requests} requests) are lost")
            if self.dropped_windows:
                parts.append(f"{self.dropped_windows} older windows ({self.dropped_requests} requests) were dropped while "
                             f"{MAX_PENDING_WINDOWS} windows waited for the store")
            if parts:
                _log.warning("funcsight: %s", "; ".join(parts))
            self._close()
        finally:
            if held:
                self._lock.release()

    def _save_aside(self, windows: list[Window]) -> tuple[str | None, str]:
        """Write ``windows`` to a new side store beside the store (only there: every read of the
        store names the side stores beside it). The side store, or None and why not."""
        self._close()
        try:
            self.target = new_side_path(self.path, os.getpid())
        except OSError as err:
            return None, str(err)
        for window in windows:
            err = self._attempt(self._insert_window, window)
            if err is not None:
                self._close()
                return None, err.problem
        self.side_stores.append(self.target)
        self._close()
        return self.target, ""

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
        """The child must not use the parent's connection, nor write as the parent; its counters
        start from zero (it keeps writing where the parent did, a side store included)."""
        self._lock = threading.Lock()
        self._conn = None
        self._pending = deque()
        self.process = process
        self.windows_written = self.dropped_windows = self.dropped_requests = self.stores_recreated = 0
        self.saved_windows_at_exit = self.lost_windows = self.lost_requests = 0
        self.side_stores = [self.target] if self.target != self.path else []
        self._finished = False


def store_path(path: tuple[int, ...], rows: dict[int, int]) -> str:
    """A path of the process's function ids as the store keeps it: store ids joined by ``/``, an
    "(other paths)" node as ``*`` (see store/schema.py)."""
    return "/".join(str(rows[fid]) if fid >= 0 else "*" for fid in path)

