"""Fixtures of funcsight's end-to-end tests (see ``helpers.py`` for the machinery)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import AppProcess, Rotel  # noqa: E402

# The sample apps are run by the tests, never collected.
collect_ignore = ["apps"]


@pytest.fixture(scope="session")
def instrument_launcher() -> Path:
    """The real ``opentelemetry-instrument`` launcher of the interpreter running the tests."""
    launcher = Path(sys.executable).parent / "opentelemetry-instrument"
    if not (launcher.is_file() and os.access(launcher, os.X_OK)):
        pytest.fail(f"opentelemetry-instrument is not installed next to {sys.executable} (pip install opentelemetry-instrumentation)")
    return launcher


@pytest.fixture
def start_app(instrument_launcher, tmp_path):
    """``start_app(app, env)``: copy ``tests/apps/<app>`` to a scratch directory, run it there under
    the launcher on a free loopback port and wait until it listens. Every app is killed at teardown
    whatever happened; tests stop it themselves with ``app.stop()`` (SIGTERM) to read the store."""
    started: list[AppProcess] = []

    def start(app: str, env: dict[str, str]) -> AppProcess:
        workdir = tmp_path / f"run{len(started)}"
        workdir.mkdir()
        process = AppProcess(instrument_launcher, app, workdir, env)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.kill()


@pytest.fixture
def rotel(tmp_path):
    """A real OTLP receiver on loopback; skips only when rotel cannot run on this platform."""
    workdir = tmp_path / "rotel"
    workdir.mkdir()
    receiver = Rotel(workdir)
    reason = receiver.start()
    if reason is not None:
        pytest.skip(reason)
    try:
        yield receiver
    finally:
        receiver.stop()
