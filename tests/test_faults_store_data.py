"""The store loses nothing silently while a real app runs (issue 15): the store deleted under a
running app, a stray ``-wal`` beside it, windows that wait in memory at exit (full disk, truncated
file, dropped table, reset schema version), corruption in the middle of the file.

Each test runs the fault app under ``opentelemetry-instrument`` on the real store file, stops it
with SIGTERM and accounts for every request: in the store, in the side store the app's one line
names (``<store>.side-<pid>-<n>.db``), or counted as lost in that line. A file funcsight cannot use
is compared byte for byte before and after.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from faultkit import FAULT_APP, drive, fill_disk, funcsight_lines, otlp_env, stop_timed, work_calls
from helpers import calls_map, diff_maps, run_cli
from test_store_cli import make_read_only, make_writable

INTERVAL = "0.3"
SETTLE_S = 4 * float(INTERVAL)  # every request so far is in a written window


def start(start_app, db: Path, **env: str):
    return start_app(FAULT_APP, otlp_env(None, FUNCSIGHT_DB=str(db), FUNCSIGHT_EXPORT_INTERVAL=INTERVAL, **env))


def stop(app) -> list[str]:
    status, took = stop_timed(app)
    assert status in (0, 143, -signal.SIGTERM), status
    assert took < 15, took
    log = app.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    return funcsight_lines(log)


def stored(db: Path) -> dict:
    """What `funcsight functions` reads from ``db`` (a side-store note on stderr is allowed)."""
    result = run_cli("functions", "--db", str(db), "--format", "json")
    assert result.returncode == 0, (result.returncode, result.stderr)
    return calls_map(json.loads(result.stdout))


def served(port: int, count: int, first: int) -> int:
    traffic = drive(port, count=count, first=first)
    assert traffic.ok == traffic.sent == count, traffic.statuses[:5]
    return count


def side_named_in(line: str) -> Path:
    found = re.findall(r"(/\S+\.side-\d+-\d+\.db)\b", line)
    assert found, f"no side store named in {line!r}"
    return Path(found[0])


def add(*maps: dict) -> dict:
    total: dict = {}
    for calls in maps:
        for key, count in calls.items():
            total[key] = total.get(key, 0) + count
    return total


def assert_same(expected: dict, actual: dict, what: str) -> None:
    assert actual == expected, f"{what}:\n" + diff_maps(expected, actual)


def store_with(start_app, db: Path, requests: int) -> None:
    """A store an earlier run of the app left: ``requests`` requests, closed cleanly."""
    app = start(start_app, db)
    served(app.port, requests, 0)
    assert stop(app) == []
    assert not Path(f"{db}-wal").exists()
    assert_same(work_calls(requests), stored(db), "the earlier run's store")


# ------------------------------------------------------------------------------ 1. deleted
@pytest.mark.parametrize("removed", [("",), ("", "-wal", "-shm")], ids=["db-only", "db-wal-shm"])
def test_a_store_deleted_while_the_app_runs_is_started_anew_and_said(start_app, tmp_path, removed):
    db = tmp_path / "funcsight.db"
    app = start(start_app, db)
    sent = served(app.port, 100, 0)
    time.sleep(SETTLE_S)  # all 100 are in the file that is about to go
    for suffix in removed:  # an operator resetting the store
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    later = served(app.port, 300, sent)
    lines = stop(app)

    assert len(lines) == 1 and f"store {db} was deleted while the app ran" in lines[0], lines
    print(f"\nthe app said: {lines[0]}", flush=True)
    assert_same(work_calls(later), stored(db), "the new store holds every request after the reset")


# --------------------------------------------------------------------------- 3. stray -wal
def foreign_wal(tmp_path: Path) -> bytes:
    """The ``-wal`` of another SQLite database, never checkpointed."""
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO customers (name) VALUES (?)", [(f"c{i}",) for i in range(500)])
    data = Path(f"{other}-wal").read_bytes()
    conn.close()
    return data


def test_a_stray_wal_beside_the_store_is_never_merged_and_the_data_goes_to_a_side_store(start_app, tmp_path):
    db = tmp_path / "funcsight.db"
    store_with(start_app, db, 200)
    wal = Path(f"{db}-wal")
    wal.write_bytes(foreign_wal(tmp_path))
    before = db.read_bytes(), wal.read_bytes()

    app = start(start_app, db)
    sent = served(app.port, 100, 0)
    lines = stop(app)

    assert (db.read_bytes(), wal.read_bytes()) == before, "funcsight modified a store it cannot use, or the -wal beside it"
    assert len(lines) == 1 and str(db) in lines[0] and "another application" in lines[0], lines
    side = side_named_in(lines[0])
    print(f"\nthe app said: {lines[0]}", flush=True)
    assert_same(work_calls(sent), stored(side), "the side store holds the run's requests")

    wal.rename(tmp_path / "stray-wal")  # the operator takes the stray file away: the store is intact
    assert_same(work_calls(200), stored(db), "the store after the stray -wal went")
    merged = run_cli("merge", str(side), "--db", str(db))
    assert merged.returncode == 0 and f"merged" in merged.stdout and "(100 requests)" in merged.stdout, merged
    assert_same(work_calls(300), stored(db), "the store once the side store is merged")
    assert not side.exists()


# -------------------------------------------------------------- 4. what waits at exit
def mount_tmpfs(directory: Path, size: str = "1m") -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk needs a small tmpfs: mounting one needs root and mount(8)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")


def unmount(directory: Path) -> None:
    for _ in range(10):
        if subprocess.run(["umount", str(directory)], capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def test_windows_waiting_at_exit_go_to_a_side_store_beside_a_read_only_store(start_app, tmp_path):
    db = tmp_path / "funcsight.db"
    store_with(start_app, db, 200)
    make_read_only(db)
    try:
        app = start(start_app, db)
        sent = served(app.port, 150, 0)
        lines = stop(app)
    finally:
        make_writable(db)

    assert len(lines) == 2 and "is read-only" in lines[0], lines  # while running; at exit
    print(f"\nthe app said at exit: {lines[1]}", flush=True)
    side = side_named_in(lines[1])
    assert side.parent == db.parent, side
    assert f"(150 requests) are in side store {side}" in lines[1], lines[1]
    assert f"funcsight merge {side} --db {db}" in lines[1], lines[1]
    assert_same(work_calls(200), stored(db), "the read-only store as it was")
    assert_same(work_calls(sent), stored(side), "the side store holds every request of the run")


def test_windows_waiting_at_exit_on_a_full_disk_are_counted_lost_in_one_line(start_app, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mount_tmpfs(disk)
    try:
        db = disk / "funcsight.db"
        app = start(start_app, db)
        sent = served(app.port, 30, 0)
        time.sleep(SETTLE_S)
        fill_disk(disk)
        sent += served(app.port, 200, sent)
        lines = stop(app)
        in_store = stored(db).get(("faultapp.views.work", "/work/<int:n>"), 0)
    finally:
        unmount(disk)

    assert len(lines) == 2 and "database or disk is full" in lines[0], lines  # while running; at exit
    print(f"\nthe app said at exit: {lines[1]}", flush=True)
    lost = sent - in_store
    assert lost > 0 and f"({lost} requests) are lost" in lines[1], (lost, lines[1])
    assert "nor could a side store be written" in lines[1], lines[1]


def truncated(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 2)


def table_dropped(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE route_stats")


def version_reset(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version=0")


def mid_file_damage(db: Path) -> None:
    """A page in the middle of the file overwritten, one the CLI needs (tried from the middle
    outwards), the first page intact: SQLite opens the file and only a full read trips on it."""
    page_size = 4096
    pages = db.stat().st_size // page_size
    original = db.read_bytes()
    middle = pages // 2
    for page in sorted(range(2, pages), key=lambda p: abs(p - middle)):
        with open(db, "r+b") as f:
            f.seek(page * page_size)
            f.write(b"\xa5" * 512)
        if run_cli("functions", "--db", str(db)).returncode == 2:
            return
        db.write_bytes(original)
    raise AssertionError("no page of the store breaks the CLI")


DAMAGE = {
    # name: (how, what the app's line says, the CLI's status on the damaged file)
    "truncated": (truncated, "is corrupt", 2),
    "table-dropped": (table_dropped, "is incomplete (table route_stats missing)", 2),
    "user-version-reset": (version_reset, "was altered outside funcsight (its schema version was reset to 0", 0),
    "mid-file-corruption": (mid_file_damage, "is corrupt", 2),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_store_is_left_alone_and_the_new_data_goes_to_a_side_store(start_app, tmp_path, name):
    """Items 4, 5 and 6 of the issue: the writer finds the damage when it opens the file (a read-only
    check: identity, tables, quick_check) and writes every window to a side store it names in one
    line together with the damaged file and what to do; nothing waits in memory to be dropped."""
    damage, fragment, cli_status = DAMAGE[name]
    db = tmp_path / "funcsight.db"
    store_with(start_app, db, 300)
    damage(db)
    before = db.read_bytes()
    if name == "mid-file-corruption":  # the damage the CLI refuses, while the first page reads fine
        result = run_cli("functions", "--db", str(db))
        assert result.returncode == 2 and "corrupt" in result.stderr, result

    app = start(start_app, db)
    sent = served(app.port, 150, 0)
    lines = stop(app)

    assert db.read_bytes() == before, "funcsight modified the damaged store"
    assert len(lines) == 1, lines
    line = lines[0]
    print(f"\n{name}: the app said: {line}", flush=True)
    side = side_named_in(line)
    assert f"store {db} {fragment}" in line and "funcsight leaves it untouched" in line, line
    assert "move it aside" in line and f"funcsight merge {side} --db {db}" in line, line
    assert "already exists" not in line and "retries" not in line, line
    assert_same(work_calls(sent), stored(side), "the side store holds every request of the run")

    # The CLI on the damaged file: the same remedy, and the side store named.
    result = run_cli("functions", "--db", str(db))
    assert result.returncode == cli_status, result
    if cli_status == 2:
        assert len(result.stderr.splitlines()) == 1 and "move it aside" in result.stderr, result.stderr
    assert str(side) in result.stderr and f"funcsight merge SIDE --db {db}" in result.stderr, result.stderr
    print(f"{name}: the CLI said: {result.stderr.strip()}", flush=True)

    # Done as both lines say: moved aside, side store merged into the new store at the path.
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{db}{suffix}").exists():
            Path(f"{db}{suffix}").rename(tmp_path / f"funcsight.db.bad{suffix}")
    merged = run_cli("merge", str(side), "--db", str(db))
    assert merged.returncode == 0, merged
    assert_same(work_calls(sent), stored(db), "the new store once the side store is merged")
