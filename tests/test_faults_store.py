"""The store goes wrong while a real app runs: a read-only file, a missing directory, a full disk
(a small tmpfs), a corrupt file, another application's SQLite file, a store written by a newer
funcsight.

For each: the app keeps serving (every request 200, none slow), its log holds exactly one
``funcsight:`` line naming the problem and the path (no traceback), the CLI on that file says the
same in one line and exits 2 (or reads it, when the file itself is fine: read-only, full disk),
a file funcsight cannot use is never modified, and once the problem is fixed the way the warning
says (made writable, directory created, space freed) every window that waited in memory is
written: the store then holds every request exactly. A file that is itself unusable (corrupt,
foreign, newer) is left alone from the start: the app writes to a side store beside it, which
`funcsight merge` folds into a new store once the bad file is moved aside.

(``test_store_cli.py`` covers the same faults one level down, on the StoreWriter and the CLI.)
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from faultkit import FAULT_APP, drive, fill_disk, funcsight_lines, otlp_env, stop_timed, work_calls
from helpers import calls_map, cli_json, diff_maps, run_cli
from test_store_cli import FUNCTION, ROUTE, make_read_only, make_writable, write_store

INTERVAL = "0.3"
PHASE_S = 1.5


class Case:
    """One way the store is wrong: how to make it, what the warning says, how to fix it."""

    fragments: tuple[str, ...] = ()
    side_store = False  # the file itself is unusable: the app writes to a side store beside it
    cli_status = 2  # what `funcsight functions` on the path does while the fault lasts
    keeps_old_data = False  # the fixed store still holds what was there before (3 calls)

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.db = tmp_path / "store" / "funcsight.db"
        self.db.parent.mkdir()

    def make(self) -> None:
        raise NotImplementedError

    def fix(self) -> None:
        """The remedy the warning names: moving the bad file aside with its -wal and -shm."""
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{self.db}{suffix}").exists():
                Path(f"{self.db}{suffix}").rename(f"{self.db.with_suffix('.bad')}{suffix}")

    def cleanup(self) -> None:
        pass


class ReadOnly(Case):
    fragments = ("is read-only",)
    cli_status = 0
    keeps_old_data = True

    def make(self) -> None:
        write_store(self.db)
        make_read_only(self.db)

    def fix(self) -> None:
        make_writable(self.db)

    def cleanup(self) -> None:
        make_writable(self.db)


class MissingDirectory(Case):
    fragments = ("does not exist",)

    def make(self) -> None:
        self.db = self.tmp_path / "not" / "yet" / "funcsight.db"

    def fix(self) -> None:
        self.db.parent.mkdir(parents=True)


class DiskFull(Case):
    """A 1 MiB tmpfs: the app creates the store there, then a filler file takes the rest."""

    fragments = ("database or disk is full",)
    cli_status = 0

    def make(self) -> None:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("a full disk needs a small tmpfs: mounting one needs root and mount(8)")
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(self.db.parent)], capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        self.mounted = True

    def fill(self) -> None:
        self.filler = fill_disk(self.db.parent)

    def fix(self) -> None:
        self.filler.unlink()

    def cleanup(self) -> None:
        if getattr(self, "mounted", False):
            self.mounted = False
            for _ in range(10):
                if subprocess.run(["umount", str(self.db.parent)], capture_output=True).returncode == 0:
                    return
                time.sleep(0.2)
            # Still busy (an app that failed the test is still running): detach it anyway.
            subprocess.run(["umount", "-l", str(self.db.parent)], capture_output=True)


class Corrupt(Case):
    side_store = True
    fragments = ("is corrupt or not an SQLite file", "move it aside")

    def make(self) -> None:
        self.db.write_bytes(random.Random(7).randbytes(64 * 1024))


class Foreign(Case):
    side_store = True
    fragments = ("SQLite file of another application",)

    def make(self) -> None:
        conn = sqlite3.connect(self.db)
        conn.executescript("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('ada');")
        conn.commit()
        conn.close()


class NewerSchema(Case):
    side_store = True
    fragments = ("has schema 99, newer than", "upgrade funcsight")

    def make(self) -> None:
        write_store(self.db)
        conn = sqlite3.connect(self.db)
        conn.execute("PRAGMA user_version=99")
        conn.commit()
        conn.close()


CASES = {
    "read-only": ReadOnly,
    "missing-directory": MissingDirectory,
    "disk-full": DiskFull,
    "corrupt": Corrupt,
    "foreign-sqlite": Foreign,
    "newer-schema": NewerSchema,
}


def problem_lines(log: str) -> list[str]:
    return [line for line in funcsight_lines(log) if "writable again" not in line]


@pytest.mark.parametrize("name", list(CASES))
def test_app_survives_a_bad_store_and_nothing_is_lost_once_fixed(start_app, tmp_path, name):
    case = CASES[name](tmp_path)
    case.make()
    try:
        run_and_fix(start_app, case, name)
    finally:
        case.cleanup()


def run_and_fix(start_app, case: Case, name: str) -> None:
    app = start_app(FAULT_APP, otlp_env(None, FUNCSIGHT_DB=str(case.db), FUNCSIGHT_EXPORT_INTERVAL=INTERVAL))
    traffic = drive(app.port, count=30)
    if isinstance(case, DiskFull):
        time.sleep(3 * float(INTERVAL))  # the store exists (and holds the first requests)
        case.fill()
    before = case.db.read_bytes() if case.db.is_file() and not isinstance(case, (DiskFull, ReadOnly)) else None
    traffic.add(drive(app.port, seconds=PHASE_S, first=traffic.sent))
    time.sleep(3 * float(INTERVAL))

    # The app served everything; one line says what is wrong with which file; no traceback.
    assert traffic.ok == traffic.sent, traffic.statuses[:5]
    assert traffic.max_ms() < 1000, f"a request took {traffic.max_ms():.0f} ms"
    log = app.log_path.read_text(errors="replace")
    lines = problem_lines(log)
    assert len(lines) == 1, f"expected one funcsight warning, got {lines}"
    assert str(case.db.parent) in lines[0] and all(f in lines[0] for f in case.fragments), lines[0]
    if case.side_store:
        assert f"writes to {case.db}.side-" in lines[0] and "funcsight merge" in lines[0], lines[0]
    assert "Traceback" not in log, log[-3000:]
    print(f"\n{name}: {traffic.sent} requests served; the app said: {lines[0]}", flush=True)

    # The CLI on the same file: one clear line and status 2, or (a readable file) the data.
    result = run_cli("functions", "--db", str(case.db))
    assert result.returncode == case.cli_status, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    if case.cli_status == 2:
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("funcsight: error: ") and str(case.db) in result.stderr, result.stderr
        print(f"{name}: the CLI said: {result.stderr.strip()}", flush=True)
    if before is not None:
        assert case.db.read_bytes() == before, "funcsight modified a file it cannot use"

    # Fixed the way the warning says: what waited in memory is written, nothing lost.
    case.fix()
    traffic.add(drive(app.port, seconds=0.5, first=traffic.sent))
    status, took = stop_timed(app)
    assert status in (0, 143, -signal.SIGTERM), status
    assert took < 10, took

    # Stopped by SIGTERM: funcsight flushed, then the process ended by the signal (serve.main
    # never returned, so it is no completed call); every request is there.
    expected = work_calls(traffic.sent)
    if case.keeps_old_data:
        expected[(FUNCTION, ROUTE)] = 3
    log = app.log_path.read_text(errors="replace")
    assert len(problem_lines(log)) == 1 and "Traceback" not in log, funcsight_lines(log)
    if case.side_store:
        # The bad file was never used: everything is in the side store; merged into a new store
        # at the path, as the warning says.
        side = next(case.db.parent.glob(f"{case.db.name}.side-*.db"))
        merged = run_cli("merge", str(side), "--db", str(case.db))
        assert merged.returncode == 0, (merged.stdout, merged.stderr)
    else:
        assert any("writable again" in line for line in funcsight_lines(log)), funcsight_lines(log)
    actual = calls_map(cli_json("functions", "--db", str(case.db)))
    assert actual == expected, "store differs once fixed:\n" + diff_maps(expected, actual)
    with sqlite3.connect(f"file:{case.db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
