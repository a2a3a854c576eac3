"""The store and the CLI with real files: every way a user can point ``funcsight`` at the wrong
thing ends in exit status 2 and one ``funcsight: error:`` line, and a store that cannot be written
never loses what was queued for it."""

from __future__ import annotations

import logging
import os
import random
import socket
import sqlite3
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from funcsight.exporters.store_writer import ProcessIdentity, StoreWriter
from funcsight.instrumentation.calls import CallTable
from funcsight.instrumentation.registry import FunctionInfo, FunctionRegistry
from funcsight.processors.windows import Window, WindowAggregator

from helpers import clean_env, cli_json, run_cli

FUNCTION = "shop.views.index"
ROUTE = "/index"
VERSION = "1.0"


# ----------------------------------------------------------------------------- building stores
def make_writer(path: Path, version: str = VERSION) -> tuple[StoreWriter, int]:
    registry = FunctionRegistry()
    fid = registry.register(FunctionInfo(FUNCTION, "function", "/srv/shop/views.py", 12, "0123456789abcdef"))
    identity = ProcessIdentity("shop", version, "resource", str(uuid.uuid4()), os.getpid(), socket.gethostname(), time.time())
    return StoreWriter(str(path), registry, identity), fid


def make_window(fid: int, requests: int = 1, raising: int = 0) -> Window:
    """A real window: request call tables folded in by the window aggregator."""
    windows = WindowAggregator()
    for index in range(requests):
        table = CallTable()
        exc_type = ValueError if index < raising else None
        table.add_call(fid, 2_000_000, 1_500_000, exc_type)
        windows.add_request(ROUTE, table, 3_000_000, False)
    return windows.drain()


def write_store(path: Path) -> None:
    writer, fid = make_writer(path)
    try:
        assert writer.write_window(make_window(fid, requests=3, raising=1)) is True
    finally:
        writer.close()


def stored_calls(path: Path) -> dict[tuple[str, str], tuple[int, int]]:
    rows = cli_json("functions", "--db", str(path))
    return {(r["function"], r["route"]): (r["calls"], r["errors"]) for r in rows}


# ----------------------------------------------------------------------------------- the CLI
def assert_usage_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("funcsight: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def test_a_real_store_reads_back(tmp_path):
    """The positive control for the error cases below: the same store, read correctly."""
    db = tmp_path / "funcsight.db"
    write_store(db)
    rows = cli_json("functions", "--db", str(db))
    assert [(r["function"], r["route"], r["version"], r["calls"], r["errors"], r["errors_by_type"], r["requests"]) for r in rows] == [
        (FUNCTION, ROUTE, VERSION, 3, 1, {"ValueError": 1}, 3)
    ]
    assert [(r["route"], r["requests"]) for r in cli_json("routes", "--db", str(db))] == [(ROUTE, 3)]
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nowhere" / "funcsight.db"


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "a-directory.db"
    path.mkdir()
    return path


def _random_bytes(tmp_path: Path) -> Path:
    path = tmp_path / "random.db"
    path.write_bytes(random.Random(20261127).randbytes(64 * 1024))
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    return path


def _foreign(tmp_path: Path) -> Path:
    path = tmp_path / "other-app.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
           CREATE TABLE windows (id INTEGER PRIMARY KEY, pane TEXT);
           INSERT INTO customers (name) VALUES ('ada'), ('grace');"""
    )
    conn.commit()
    conn.close()
    return path


def _newer_schema(tmp_path: Path) -> Path:
    path = tmp_path / "future.db"
    write_store(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    conn.close()
    return path


BAD_STORES = {
    "missing": (_missing, ["no store at"]),
    "directory": (_directory, ["is a directory"]),
    "random-bytes": (_random_bytes, ["corrupt or not an SQLite file"]),
    "empty": (_empty, ["is empty"]),
    "foreign-sqlite": (_foreign, ["another application"]),
    "newer-schema": (_newer_schema, ["schema 99", "upgrade funcsight"]),
}


@pytest.mark.parametrize("command", ["functions", "routes"])
@pytest.mark.parametrize("case", sorted(BAD_STORES))
def test_bad_store_is_one_line_and_status_2(tmp_path, case, command):
    build, fragments = BAD_STORES[case]
    path = build(tmp_path)
    before = path.read_bytes() if path.is_file() else None
    assert_usage_error(run_cli(command, "--db", str(path)), str(path), *fragments)
    if before is not None:
        assert path.read_bytes() == before, "a reader modified the file"
    if case == "missing":
        assert not path.exists() and not path.parent.exists(), "a reader created the store"


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["functions", "--route", "/nope"], ["unknown route '/nope'", ROUTE]),
        (["routes", "--route", "/nope"], ["unknown route '/nope'"]),
        (["functions", "--version", "9.9"], ["unknown version '9.9'", VERSION]),
        (["routes", "--version", "9.9"], ["unknown version '9.9'"]),
        (["functions", "--frobnicate"], ["--frobnicate"]),
        (["functions", "--format", "xml"], ["--format", "xml"]),
        (["routes", "--format", "yaml"], ["--format", "yaml"]),
        (["functions", "--limit", "0"], ["--limit", "'0' must be at least 1"]),
        (["nonsense-command"], ["nonsense-command"]),
    ],
    ids=["route-functions", "route-routes", "version-functions", "version-routes", "bad-flag", "format-xml", "format-yaml", "limit-0", "bad-command"],
)
def test_bad_question_is_one_line_and_status_2(tmp_path, args, fragments):
    db = tmp_path / "funcsight.db"
    write_store(db)
    assert_usage_error(run_cli(*args, "--db", str(db)), *fragments)


def test_default_store_path_comes_from_funcsight_db(tmp_path):
    """Without --db the CLI reads $FUNCSIGHT_DB; a missing one is the same clean error."""
    result = run_cli("functions", env=clean_env(FUNCSIGHT_DB=str(tmp_path / "absent.db")))
    assert_usage_error(result, "absent.db")
    db = tmp_path / "present.db"
    write_store(db)
    result = run_cli("functions", "--format", "json", env=clean_env(FUNCSIGHT_DB=str(db)))
    assert result.returncode == 0 and FUNCTION in result.stdout, result.stderr


# --------------------------------------------------------------------------- the store writer
def funcsight_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "funcsight" and r.levelno >= logging.WARNING]


def make_read_only(path: Path) -> None:
    """Read-only for this process, even as root (root ignores mode bits: use the immutable flag)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
    else:
        result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"running as root and cannot make a file immutable here: {result.stderr.strip()}")
    assert not os.access(path, os.W_OK)


def make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o600)


def test_read_only_store_keeps_windows_queued_until_writable(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="funcsight")
    db = tmp_path / "funcsight.db"
    write_store(db)  # something already recorded: 3 calls, 1 error
    assert stored_calls(db) == {(FUNCTION, ROUTE): (3, 1)}
    make_read_only(db)
    try:
        writer, fid = make_writer(db)  # a new process starts writing to the same store
        assert writer.write_window(make_window(fid, requests=5)) is False
        assert writer.write_window(make_window(fid, requests=7, raising=2)) is False
        warnings = funcsight_warnings(caplog)
        assert len(warnings) == 1, warnings  # one line, not one per window
        assert "read-only" in warnings[0] and str(db) in warnings[0]
        assert stored_calls(db) == {(FUNCTION, ROUTE): (3, 1)}  # untouched meanwhile
    finally:
        make_writable(db)

    caplog.clear()
    assert writer.write_window(make_window(fid, requests=11)) is True
    writer.close()
    assert any("writable again" in message for message in funcsight_warnings(caplog))
    # Nothing lost: the first writer's 3 calls, both queued windows (5 + 7) and the new one (11).
    assert stored_calls(db) == {(FUNCTION, ROUTE): (3 + 5 + 7 + 11, 1 + 2)}
    assert [(r["route"], r["requests"]) for r in cli_json("routes", "--db", str(db))] == [(ROUTE, 26)]


def test_missing_directory_keeps_windows_queued_until_created(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="funcsight")
    directory = tmp_path / "not" / "yet"
    db = directory / "funcsight.db"
    writer, fid = make_writer(db)
    assert writer.write_window(make_window(fid, requests=2)) is False
    assert writer.write_window(make_window(fid, requests=3, raising=3)) is False
    assert writer.write_window(Window(start=time.time(), end=time.time())) is False  # empty: still failing
    warnings = funcsight_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "does not exist" in warnings[0] and str(directory) in warnings[0]
    assert not directory.exists(), "the writer must not create directories on its own"

    directory.mkdir(parents=True)
    # The next interval's window, even an empty one, writes everything queued.
    assert writer.write_window(Window(start=time.time(), end=time.time())) is True
    writer.close()
    assert stored_calls(db) == {(FUNCTION, ROUTE): (5, 3)}
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_store_file_is_created_owner_only_whatever_the_umask(tmp_path):
    previous = os.umask(0o000)
    try:
        db = tmp_path / "fresh.db"
        writer, fid = make_writer(db)
        assert writer.write_window(make_window(fid)) is True
        writer.close()
    finally:
        os.umask(previous)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


@pytest.mark.parametrize("case", ["foreign-sqlite", "newer-schema", "random-bytes"])
def test_writer_never_clobbers_a_file_it_cannot_use(tmp_path, caplog, case):
    caplog.set_level(logging.WARNING, logger="funcsight")
    path = BAD_STORES[case][0](tmp_path)
    before = path.read_bytes()
    writer, fid = make_writer(path)
    # The windows go to a side store beside it, named in the one warning line.
    assert writer.write_window(make_window(fid, requests=2)) is True
    assert writer.write_window(make_window(fid, requests=2)) is True
    writer.close()
    warnings = funcsight_warnings(caplog)
    side = Path(f"{path}.side-{os.getpid()}-1.db")
    assert writer.side_stores == [str(side)]
    assert len(warnings) == 1 and str(path) in warnings[0] and f"writes to {side} instead" in warnings[0], warnings
    assert f"funcsight merge {side} --db {path}" in warnings[0], warnings[0]
    assert path.read_bytes() == before, "the writer modified a file that is not a usable store"
    assert stored_calls(side) == {(FUNCTION, ROUTE): (4, 0)}


def test_an_error_records_trace_ids_belong_to_a_request_of_its_route(tmp_path):
    """One function raising one exception type on two routes, each in its own sampled trace, with
    a function span kept for each: each route's record names its own trace (the function-span
    lookup filters by the route's requests)."""
    import os
    import socket
    import time
    import uuid

    from opentelemetry.trace import SpanContext, TraceFlags

    from funcsight.analysis.errors import error_records
    from funcsight.exporters.store_writer import ProcessIdentity, StoreWriter
    from funcsight.instrumentation.calls import CallTable
    from funcsight.instrumentation.registry import FunctionInfo, FunctionRegistry
    from funcsight.processors.windows import ErrorSample, WindowAggregator
    from funcsight.sources.store import StoreSource

    db = tmp_path / "funcsight.db"
    registry = FunctionRegistry()
    fid = registry.register(FunctionInfo("shop.db.lookup", "function", "/srv/shop/db.py", 3, "0123456789abcdef"))
    identity = ProcessIdentity("shop", "1.0", "resource", str(uuid.uuid4()), os.getpid(), socket.gethostname(), time.time())
    writer = StoreWriter(str(db), registry, identity)
    windows = WindowAggregator()
    roots = {"/a": SpanContext(0xA1, 0xA2, False, TraceFlags(1)), "/b": SpanContext(0xB1, 0xB2, False, TraceFlags(1))}
    for route in ("/a", "/b"):
        table = CallTable()
        table.add_call(fid, 1_000, 1_000, KeyError)
        windows.add_request(route, table, 2_000, False)
    window = windows.drain()
    for route, root in roots.items():
        window.samples[(fid, route, "KeyError")] = ErrorSample(
            [["lookup", "/srv/shop/db.py", 4]], None, format(root.trace_id, "032x"), format(root.span_id, "016x"), time.time())
    # "/b"'s span is the later one: a lookup that ignored the route would give it to "/a" too.
    window.slow_calls = [(roots["/a"], [(fid, 100, 200, KeyError, 0xA3)]), (roots["/b"], [(fid, 300, 400, KeyError, 0xB3)])]
    assert writer.write_window(window) is True
    writer.close()
    source = StoreSource(str(db))
    try:
        records = {r["route"]: (r["trace_id"], r["span_id"]) for r in error_records(source)}
    finally:
        source.close()
    assert records == {"/a": (format(0xA1, "032x"), format(0xA3, "016x")), "/b": (format(0xB1, "032x"), format(0xB3, "016x"))}


# ---------------------------------------------------------------------- percentiles as shown
def test_percentiles_print_what_the_buckets_support_and_say_the_bound(tmp_path):
    """The table shows each percentile of the JSON to 2 significant digits and one line saying how
    far the true value can be (the JSON keeps the interpolated figure)."""
    from funcsight.cli.output import percentile_cell

    db = tmp_path / "funcsight.db"
    write_store(db)
    (row,) = cli_json("routes", "--db", str(db))
    done = run_cli("routes", "--db", str(db))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    cells = lines[2].split()
    assert cells[5:7] == [percentile_cell(row["p50_ms"]), percentile_cell(row["p95_ms"])], (lines[2], row)
    assert lines[-1].startswith("percentiles: ") and "-33 %/+50 %" in lines[-1], lines
    assert [percentile_cell(v) for v in (0.0, 0.000456, 0.459, 7.34, 9.96, 37.7, 1234.5)] == [
        "0", "0.00046", "0.46", "7.3", "10", "38", "1,234"]
