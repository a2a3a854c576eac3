"""Is the data complete? funcsight's own counters, read back from the store.

Each window row carries what funcsight had to drop or could not do in that window (its own
counters: ``funcsight.names.DROPPED_REASONS`` and ``INTERNAL_ERROR_COMPONENTS``, one column each).
:func:`store_health` sums them per process and over the store, with how many windows each process
wrote and when it wrote last, and the calls counted under the overflow pseudo functions (code past
``FUNCSIGHT_MAX_FUNCTIONS``) and requests under the overflow route. ``funcsight status`` and the
MCP ``store_health`` tool print this.

A store written by an older funcsight lacks some columns: those counters are listed in
``not_recorded`` (never shown as zero, which would claim nothing was dropped).
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field

from funcsight import names
from funcsight.sources.base import SourceError

OVERFLOW_FUNCTIONS = (names.OVERFLOW_FUNCTION, names.OVERFLOW_GENERATORS, names.OVERFLOW_COROUTINES)
MAX_PROCESSES = 20  # per-process rows, the most recent writers first; the rest are counted


@dataclass
class ProcessHealth:
    service: str
    version: str
    instance_id: str  # service.instance.id
    pid: int
    host: str
    started_at: float  # epoch s
    windows: int  # windows written
    last_write: float | None  # end of its last window, epoch s
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count (non-zero only)
    internal_errors: dict[str, int] = field(default_factory=dict)  # component -> count (non-zero only)


@dataclass
class StoreHealth:
    path: str
    schema: int  # the store's schema version
    windows: int  # windows written, all processes
    processes_total: int
    first_window: float | None  # epoch s
    last_write: float | None  # epoch s
    dropped: dict[str, int]  # reason -> count over the store (non-zero only)
    internal_errors: dict[str, int]  # component -> count over the store (non-zero only)
    overflow_calls: int  # calls counted under (overflow) functions: code past FUNCSIGHT_MAX_FUNCTIONS
    overflow_requests: int  # requests counted under the (overflow) route: FUNCSIGHT_MAX_ROUTES
    not_recorded: list[str]  # counters this store's schema has no column for (written by an older funcsight)
    processes: list[ProcessHealth]  # the most recent writers first, at most ``limit``

    @property
    def complete(self) -> bool:
        """Nothing dropped, folded or failed that the store knows of (and every counter recorded)."""
        return not (self.dropped or self.internal_errors or self.not_recorded)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["complete"] = self.complete
        data["processes_omitted"] = self.processes_total - len(self.processes)
        return data


COUNTERS = names.DROPPED_REASONS + names.INTERNAL_ERROR_COMPONENTS


def store_health(conn: sqlite3.Connection, path: str, limit: int = MAX_PROCESSES) -> StoreHealth:
    """The health of the store open on ``conn`` (read-only); ``limit`` bounds the process rows."""
    try:
        return _read(conn, path, max(1, limit))
    except sqlite3.DatabaseError as err:
        raise SourceError(f"store {path} could not be read ({err}): it may be corrupt; move it aside") from None
    except (TypeError, ValueError) as err:
        raise SourceError(f"store {path} holds a value in windows that funcsight did not write ({err}): "
                          "the file is damaged; move it aside") from None


def _read(conn: sqlite3.Connection, path: str, limit: int) -> StoreHealth:
    columns = {row[1] for row in conn.execute("PRAGMA main.table_info(windows)")}
    present = [(column, label) for column, label in COUNTERS if column in columns]
    not_recorded = [label for column, label in COUNTERS if column not in columns]
    sums = "".join(f", coalesce(sum(w.{column}), 0)" for column, _ in present)
    by_process = conn.execute(
        f"SELECT p.service, p.version, p.instance_id, p.pid, p.host, p.started_at, count(w.id), max(w.end){sums}"
        " FROM main.processes p LEFT JOIN main.windows w ON w.process_id = p.id"
        " GROUP BY p.id ORDER BY max(w.end) IS NULL, max(w.end) DESC, p.id DESC"
    ).fetchall()
    dropped_total: dict[str, int] = {}
    errors_total: dict[str, int] = {}
    processes = []
    for row in by_process:
        dropped, errors = _split(present, row[8:])
        for into, part in ((dropped_total, dropped), (errors_total, errors)):
            for label, count in part.items():
                into[label] = into.get(label, 0) + count
        if len(processes) < limit:
            processes.append(ProcessHealth(str(row[0]), str(row[1]), str(row[2]), int(row[3]), str(row[4]),
                                           float(row[5]), int(row[6]), _epoch(row[7]), dropped, errors))
    windows, first, last = conn.execute("SELECT count(*), min(start), max(end) FROM main.windows").fetchone()
    marks = ", ".join("?" * len(OVERFLOW_FUNCTIONS))
    overflow_calls = conn.execute(
        f"SELECT coalesce(sum(s.calls), 0) FROM main.function_stats s JOIN main.functions f ON f.id = s.function_id"
        f" WHERE f.name IN ({marks})", OVERFLOW_FUNCTIONS,
    ).fetchone()[0]
    overflow_requests = conn.execute(
        "SELECT coalesce(sum(requests), 0) FROM main.route_stats WHERE route = ?", (names.OVERFLOW_ROUTE,),
    ).fetchone()[0]
    schema = conn.execute("PRAGMA main.user_version").fetchone()[0]
    return StoreHealth(
        path=path, schema=int(schema), windows=int(windows), processes_total=len(by_process),
        first_window=_epoch(first), last_write=_epoch(last), dropped=dropped_total, internal_errors=errors_total,
        overflow_calls=int(overflow_calls), overflow_requests=int(overflow_requests), not_recorded=not_recorded,
        processes=processes,
    )


def _split(present: list[tuple[str, str]], values) -> tuple[dict[str, int], dict[str, int]]:
    """The non-zero counters of one row, as ``(reason -> count, component -> count)``."""
    reasons = {column for column, _ in names.DROPPED_REASONS}
    dropped: dict[str, int] = {}
    errors: dict[str, int] = {}
    for (column, label), value in zip(present, values):
        count = int(value)
        if count:
            (dropped if column in reasons else errors)[label] = count
    return dropped, errors


def _epoch(value) -> float | None:
    return None if value is None else float(value)


__all__ = ["MAX_PROCESSES", "OVERFLOW_FUNCTIONS", "ProcessHealth", "StoreHealth", "store_health"]
