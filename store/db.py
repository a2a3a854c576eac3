"""The embedded store: one SQLite file, safe for several writer processes at once (WAL, busy
timeout, one short transaction per window), created owner-only (0600).

Every way a file can be wrong is told apart and reported in one line by :class:`StoreError`:
missing, unreadable, not SQLite (corrupt), SQLite but not funcsight's (foreign), or written by a
newer funcsight (schema too new). Readers never write to the file.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager

from funcsight.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

BUSY_TIMEOUT_MS = 10_000


class StoreError(Exception):
    """A store that cannot be used; ``str()`` is one line naming the problem and what to do."""


def open_for_writing(path: str) -> sqlite3.Connection:
    """Open (creating it 0600 if needed) and migrate the store at ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreError(f"store directory {directory} does not exist: create it or set FUNCSIGHT_DB")
    if not os.path.exists(path):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as err:
            raise StoreError(f"cannot create store {path}: {err.strerror}; set FUNCSIGHT_DB to a writable path") from None
    elif not os.access(path, os.W_OK):
        raise StoreError(f"store {path} is read-only: make it writable or set FUNCSIGHT_DB to another path")
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    except sqlite3.DatabaseError as err:
        raise _explain(err, path) from None
    with _closed_on_error(conn, path):
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _check_identity(conn, path, allow_empty=True)
        _retry_while_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
        conn.execute("PRAGMA synchronous=NORMAL")
        _migrate(conn)
    return conn


def _retry_while_locked(statement, attempts: int = 100, pause_s: float = 0.05):
    """Switching to WAL answers "database is locked" at once, without the busy handler, while
    another process creates the same store: wait for it instead of failing."""
    for attempt in range(attempts):
        try:
            return statement()
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(pause_s)


def open_for_reading(path: str) -> sqlite3.Connection:
    """Open an existing store read-only; raises :class:`StoreError` when it cannot be read."""
    if not os.path.exists(path):
        raise StoreError(
            f"no store at {path} yet: a running app writes its first window about 1 s after its first request "
            "(its start-up line 'funcsight: sensing ... data: store ...' names the file); try `funcsight demo`, or pass --db"
        )
    if os.path.isdir(path):
        raise StoreError(f"{path} is a directory, not a store file: pass --db with the store file")
    if not os.access(path, os.R_OK):
        raise StoreError(f"store {path} is not readable: check its permissions")
    try:
        conn = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.DatabaseError as err:
        raise _explain(err, path) from None
    with _closed_on_error(conn, path):
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _check_identity(conn, path, allow_empty=False)
        conn.execute("SELECT count(*) FROM windows").fetchone()
    conn.row_factory = sqlite3.Row
    return conn


@contextmanager
def _closed_on_error(conn: sqlite3.Connection, path: str):
    """Close ``conn`` when checking it fails; turn SQLite errors into one-line StoreErrors."""
    try:
        yield
    except BaseException as err:
        conn.close()
        if isinstance(err, sqlite3.DatabaseError):
            raise _explain(err, path) from None
        if isinstance(err, UnicodeDecodeError):  # damaged bytes where SQLite keeps text (its schema)
            raise StoreError(f"store {path} is corrupt (unreadable text in it): move it aside; a new store will be created") from None
        raise


def _check_identity(conn: sqlite3.Connection, path: str, allow_empty: bool) -> None:
    # One statement, so one snapshot: read apart, another process's migration could land between
    # the two reads and make a funcsight store look foreign.
    app_id, version, tables = conn.execute(
        "SELECT (SELECT application_id FROM pragma_application_id),"
        " (SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_master)"
    ).fetchone()
    if app_id == 0 and tables == 0:
        if allow_empty:
            return
        raise StoreError(f"store {path} is empty: no funcsight data was written to it yet")
    if app_id != APPLICATION_ID:
        raise StoreError(f"{path} is an SQLite file of another application, not a funcsight store: pass another --db / FUNCSIGHT_DB")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store {path} has schema {version}, newer than this funcsight's {SCHEMA_VERSION}: upgrade funcsight"
        )


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
        for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _explain(err: sqlite3.DatabaseError, path: str) -> StoreError:
    # One line: SQLite quotes damaged schema SQL (with its newlines) in "malformed database schema".
    text = " ".join(str(err).split())
    if len(text) > 160:
        text = text[:157] + "..."
    if "not a database" in text or "malformed" in text or "file is encrypted" in text:
        return StoreError(f"store {path} is corrupt or not an SQLite file ({text}): move it aside; a new store will be created")
    if "readonly" in text or "read-only" in text:
        return StoreError(f"store {path} is read-only: make it writable or set FUNCSIGHT_DB to another path")
    if "disk is full" in text or "disk I/O" in text:
        return StoreError(f"cannot write store {path} ({text}): free disk space or set FUNCSIGHT_DB elsewhere")
    if "no such table" in text:
        return StoreError(f"store {path} is incomplete ({text}): move it aside; a new store will be created")
    return StoreError(f"store {path}: {text}")
