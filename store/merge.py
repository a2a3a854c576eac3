"""Folding a side store (or any funcsight store) into another: every window the target does not
hold yet, with its rows, in one transaction.

Windows are matched by their process's ``service.instance.id`` and their start and end, so merging
the same side store twice (or again after its app wrote more) copies each window once. Functions
and processes are matched by name and instance id; ids are renumbered, call paths rewritten.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

from funcsight.store.db import StoreError, open_for_reading, open_for_writing
from funcsight.store.side import writer_pid

# table -> its columns after window_id; the function_id ones and path ones are renumbered
_PER_WINDOW = {
    "function_stats": ("function_id", "route", "calls", "errors", "total_ns", "self_ns", "hist"),
    "function_errors": ("function_id", "route", "exception_type", "count"),
    "route_stats": ("route", "requests", "errors", "total_ns", "hist"),
    "error_samples": ("function_id", "route", "exception_type", "stack", "message", "trace_id", "span_id", "seen_at"),
    "path_nodes": ("route", "path", "function_id", "calls", "errors", "total_ns", "self_ns"),
    "path_errors": ("route", "path", "exception_type", "count"),
}


@dataclass
class MergeResult:
    windows: int = 0  # copied
    already: int = 0  # the target held them already
    requests: int = 0  # in the copied windows
    writer_alive: bool = False  # the process named in the side store's file name still runs
    renamed_to: str | None = None  # where the side store went once merged (its writer had ended)


def merge_store(source: str, target: str) -> MergeResult:
    """Copy into ``target`` (created if missing) every window of ``source`` it lacks."""
    if os.path.abspath(source) == os.path.abspath(target):
        raise StoreError(f"{source} is the store itself", "name a side store (funcsight.db.side-PID-N.db) to merge")
    src = open_for_reading(source)
    try:
        dst = open_for_writing(target)
    except BaseException:
        src.close()
        raise
    result = MergeResult()
    try:
        dst.execute("BEGIN IMMEDIATE")
        try:
            _copy(src, dst, result)
            dst.execute("COMMIT")
        except BaseException:
            if dst.in_transaction:
                dst.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as err:
        raise StoreError(f"merging {source} into {target} failed ({' '.join(str(err).split())[:160]})",
                         "check both files with `funcsight functions --db FILE`") from None
    finally:
        src.close()
        dst.close()
    pid = writer_pid(source)
    result.writer_alive = pid is not None and pid != os.getpid() and _alive(pid)
    return result


def _copy(src: sqlite3.Connection, dst: sqlite3.Connection, result: MergeResult) -> None:
    tables = {row[0] for row in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    processes = {}
    for row in src.execute("SELECT id, service, version, version_source, instance_id, pid, host, started_at FROM processes"):
        dst.execute("INSERT OR IGNORE INTO processes (service, version, version_source, instance_id, pid, host, started_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)", tuple(row)[1:])
        processes[row[0]] = dst.execute("SELECT id FROM processes WHERE instance_id = ?", (row[4],)).fetchone()[0]
    functions = {}
    for fid, name, kind in src.execute("SELECT id, name, kind FROM functions"):
        dst.execute("INSERT OR IGNORE INTO functions (name, kind) VALUES (?, ?)", (name, kind))
        functions[fid] = dst.execute("SELECT id FROM functions WHERE name = ? AND kind = ?", (name, kind)).fetchone()[0]
    dst.executemany("INSERT OR IGNORE INTO function_code VALUES (?, ?, ?, ?, ?)",
                    [(functions[row[0]], *tuple(row)[1:]) for row in src.execute(
                        "SELECT function_id, version, file, line, code_hash FROM function_code")])
    paths = "overflow_paths" if "path_nodes" in tables else "0"
    for wid, pid, start, end, series, routes, overflow_paths in src.execute(
            f"SELECT id, process_id, start, end, overflow_series, overflow_routes, {paths} FROM windows ORDER BY id").fetchall():
        if dst.execute("SELECT 1 FROM windows WHERE process_id = ? AND start = ? AND end = ?",
                       (processes[pid], start, end)).fetchone():
            result.already += 1
            continue
        new = dst.execute("INSERT INTO windows (process_id, start, end, overflow_series, overflow_routes, overflow_paths)"
                          " VALUES (?, ?, ?, ?, ?, ?)", (processes[pid], start, end, series, routes, overflow_paths)).lastrowid
        for table, columns in _PER_WINDOW.items():
            if table not in tables:
                continue
            rows = src.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE window_id = ?", (wid,)).fetchall()
            dst.executemany(f"INSERT INTO {table} (window_id, {', '.join(columns)}) VALUES (?{', ?' * len(columns)})",
                            [(new, *_renumbered(columns, row, functions)) for row in rows])
        result.requests += src.execute("SELECT coalesce(sum(requests), 0) FROM route_stats WHERE window_id = ?", (wid,)).fetchone()[0]
        result.windows += 1
    # Spans belong to no window: per process, those later than the last one the target holds
    # (one scan of the target's spans; merging again copies only what the app wrote since).
    mapped = sorted(set(processes.values()))
    last = dict(dst.execute(f"SELECT process_id, max(start) FROM spans WHERE process_id IN ({', '.join('?' * len(mapped))})"
                            " GROUP BY process_id", mapped).fetchall()) if mapped else {}
    spans = []
    for row in src.execute("SELECT trace_id, span_id, parent_span_id, process_id, name, start, duration_ns, exception_type,"
                           " attributes FROM spans"):
        row = tuple(row)
        process = processes.get(row[3])
        if process is None or last.get(process) is None or row[5] > last[process]:
            spans.append((*row[:3], process, *row[4:]))
    dst.executemany("INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", spans)


def _renumbered(columns: tuple[str, ...], row: tuple, functions: dict[int, int]) -> tuple:
    values = list(row)
    for i, column in enumerate(columns):
        if column == "function_id" and values[i] is not None:
            values[i] = functions[values[i]]
        elif column == "path":
            values[i] = "/".join(part if part == "*" else str(functions[int(part)]) for part in values[i].split("/"))
    return tuple(values)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
