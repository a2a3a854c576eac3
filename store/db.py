"""The embedded store: one SQLite file, safe for several writer processes at once (WAL, busy
timeout, one short transaction per window), created owner-only (0600).

Every way a file can be wrong is told apart and reported in one line by :class:`StoreError`:
missing, unreadable, not SQLite (corrupt), SQLite but not funcsight's (foreign), written by a newer
funcsight (schema too new), damaged inside, or altered outside funcsight (a table dropped, the
schema version reset). Those last ones are *unusable*: a writer checks an existing file through a
read-only connection first (identity, tables, ``PRAGMA quick_check``), so such a file, and a stray
``-wal`` beside it, is never modified. Readers never write to the file.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from urllib.parse import quote

from funcsight.store.schema import APPLICATION_ID, EXPECTED_TABLES, MIGRATIONS, SCHEMA_VERSION

BUSY_TIMEOUT_MS = 10_000


MOVE_ASIDE = "move it aside (with its -wal and -shm files); a new store will be created"


class StoreError(Exception):
    """A store that cannot be used; ``str()`` is one line naming the problem and what to do.

    ``problem`` is the first half alone; ``unusable`` says the file itself is wrong (corrupt,
    foreign, newer, altered) rather than the conditions around it (a missing directory, a read-only
    file, a full disk): waiting does not help, and a writer must leave the file alone."""

    def __init__(self, problem: str, remedy: str, unusable: bool = False):
        super().__init__(f"{problem}: {remedy}")
        self.problem = problem
        self.remedy = remedy
        self.unusable = unusable


def open_for_writing(path: str) -> sqlite3.Connection:
    """Open (creating it 0600 if needed) and migrate the store at ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreError(f"store directory {directory} does not exist", "create it or set FUNCSIGHT_DB")
    if not os.path.exists(path):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as err:
            raise StoreError(f"cannot create store {path}: {err.strerror}", "set FUNCSIGHT_DB to a writable path") from None
    elif not os.access(path, os.W_OK):
        raise StoreError(f"store {path} is read-only", "make it writable or set FUNCSIGHT_DB to another path")
    elif os.path.getsize(path) > 0:
        _check_before_writing(path)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    except sqlite3.DatabaseError as err:
        raise explain(err, path) from None
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
            f"no store at {path} yet",
            "a running app writes its first window about 1 s after its first request "
            "(its start-up line 'funcsight: sensing ... data: store ...' names the file); try `funcsight demo`, or pass --db"
        )
    if os.path.isdir(path):
        raise StoreError(f"{path} is a directory, not a store file", "pass --db with the store file")
    if not os.access(path, os.R_OK):
        raise StoreError(f"store {path} is not readable", "check its permissions")
    conn = _connect_read_only(path)
    with _closed_on_error(conn, path):
        _check_identity(conn, path, allow_empty=False)
        conn.execute("SELECT count(*) FROM windows").fetchone()
    conn.row_factory = sqlite3.Row
    return conn


def _connect_read_only(path: str) -> sqlite3.Connection:
    """``path`` opened read-only (``mode=ro``: SQLite neither checkpoints into it nor deletes its
    ``-wal``), with the busy timeout; a file SQLite refuses raises the :class:`StoreError` that
    explains it. The path is URL-quoted: ``?`` or ``#`` in it would end the file name."""
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.DatabaseError as err:
        raise explain(err, path) from None
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # reads nothing from the file
    return conn


@contextmanager
def _closed_on_error(conn: sqlite3.Connection, path: str):
    """Close ``conn`` when checking it fails; turn SQLite errors into one-line StoreErrors."""
    try:
        yield
    except BaseException as err:
        conn.close()
        if isinstance(err, sqlite3.DatabaseError):
            raise explain(err, path) from None
        if isinstance(err, UnicodeDecodeError):  # damaged bytes where SQLite keeps text (its schema)
            raise StoreError(f"store {path} is corrupt (unreadable text in it)", MOVE_ASIDE, unusable=True) from None
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
        raise StoreError(f"store {path} is empty", "no funcsight data was written to it yet")
    if app_id != APPLICATION_ID:
        raise StoreError(f"{path} is an SQLite file of another application, not a funcsight store",
                         "pass another --db / FUNCSIGHT_DB", unusable=True)
    if version > SCHEMA_VERSION:
        raise StoreError(f"store {path} has schema {version}, newer than this funcsight's {SCHEMA_VERSION}",
                         "upgrade funcsight", unusable=True)


def _check_before_writing(path: str) -> None:
    """Check an existing store through a read-only connection before a writer opens it: a file
    that fails here (corrupt, foreign, newer, altered, or a stray ``-wal`` from another database
    beside it) is never opened for writing, so SQLite never checkpoints into it nor deletes the
    ``-wal``. ``quick_check`` reads every page once: about 0.3 s per 100 MB (measured: 0.55 s for a 170 MB
    file on a shared 2-core VM), once per writer open, on the export thread."""
    conn = _connect_read_only(path)
    with _closed_on_error(conn, path):
        _check_identity(conn, path, allow_empty=True)
        version, tables = conn.execute(
            "SELECT (SELECT user_version FROM pragma_user_version),"
            " (SELECT group_concat(name) FROM sqlite_master WHERE type = 'table')"
        ).fetchone()
        present = set((tables or "").split(","))
        if version == 0 and present - {""}:
            raise StoreError(f"store {path} was altered outside funcsight (its schema version was reset to 0; it holds tables)",
                             MOVE_ASIDE, unusable=True)
        missing = sorted(EXPECTED_TABLES[version] - present) if version in EXPECTED_TABLES else []
        if missing:
            raise StoreError(f"store {path} is incomplete (table {', '.join(missing)} missing)", MOVE_ASIDE, unusable=True)
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)").fetchall()]
        if problems != ["ok"]:
            text = " ".join("; ".join(problems).split())[:120]
            raise StoreError(f"store {path} is corrupt (integrity check: {text})", MOVE_ASIDE, unusable=True)
    conn.close()


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


def explain(err: sqlite3.DatabaseError, path: str) -> StoreError:
    # One line: SQLite quotes damaged schema SQL (with its newlines) in "malformed database schema".
    text = " ".join(str(err).split())
    if len(text) > 160:
        text = text[:157] + "..."
    if "not a database" in text or "malformed" in text or "file is encrypted" in text:
        return StoreError(f"store {path} is corrupt or not an SQLite file ({text})", MOVE_ASIDE, unusable=True)
    if "readonly" in text or "read-only" in text:
        return StoreError(f"store {path} is read-only", "make it writable or set FUNCSIGHT_DB to another path")
    if "disk is full" in text or "disk I/O" in text:
        return StoreError(f"cannot write store {path} ({text})", "free disk space or set FUNCSIGHT_DB elsewhere")
    if "no such table" in text or "no such column" in text:
        return StoreError(f"store {path} is incomplete ({text})", MOVE_ASIDE, unusable=True)
    if "already exists" in text:
        return StoreError(f"store {path} was altered outside funcsight ({text})", MOVE_ASIDE, unusable=True)
    if "locked" in text or "busy" in text:
        return StoreError(f"store {path} is locked by another program ({text})", "end what holds it, or set FUNCSIGHT_DB elsewhere")
    return StoreError(f"store {path}: {text}", "check the file, or set FUNCSIGHT_DB to another path")
