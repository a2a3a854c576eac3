"""``funcsight demo``: the main job on the embedded default, end to end.

For each release of the sample shop (1.0, then 1.1 with planted regressions) it writes the app to a
scratch directory, starts it on 127.0.0.1 under the real ``opentelemetry-instrument`` launcher with
funcsight writing to the store, drives a bounded number of requests with a progress display, stops
it with SIGTERM (funcsight flushes the last window) and finally prints what the store now knows: routes, the version diff and the explanation of one
route's slowdown.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from funcsight.demo.sample_app import RELEASES, traffic

_START_TIMEOUT_S = 30.0
_REQUEST_TIMEOUT_S = 10.0


class DemoError(Exception):
    pass


DEFAULT_DB = "funcsight-demo.db"
INSTANCE_PREFIX = "funcsight-demo-"  # the demo's processes' service.instance.id: marks a store as the demo's


def run_demo(db_path: str | None = None, requests: int = 300, concurrency: int = 4, out=None) -> str:
    """Fill a store the demo owns and return its path: ``db_path`` when given (an existing file only if an earlier demo
    made it), else ./funcsight-demo.db (or the next free funcsight-demo-N.db when that file is not
    the demo's). It never touches any other store."""
    out = out or sys.stdout
    missing = [name for name in ("flask", "opentelemetry.instrumentation.flask") if importlib.util.find_spec(name) is None]
    if missing:
        from funcsight.install import install_hint

        raise DemoError(f"the demo needs {', '.join(missing)}: {install_hint('demo')}")
    db_path = _demo_store(db_path)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            os.remove(db_path + suffix)
    print(f"funcsight demo: sample shop, {requests} requests per release, store {db_path}", file=out)
    with tempfile.TemporaryDirectory(prefix="funcsight-demo-") as workdir:
        for version, files in RELEASES:
            app_dir = os.path.join(workdir, f"shop-{version}")
            _write_app(app_dir, files)
            _run_release(app_dir, version, db_path, requests, concurrency, out)
    return db_path


def _demo_store(db_path: str | None) -> str:
    """The store file the demo may (re)create, or DemoError when ``db_path`` is someone else's."""
    if db_path is not None:
        path = os.path.abspath(db_path)
        if _exists(path) and not made_by_demo(path):
            raise DemoError(f"{path} exists and was not made by the demo: the demo never overwrites a store; "
                            "pass --db with a new file name")
        return path
    base, ext = os.path.splitext(os.path.abspath(DEFAULT_DB))
    for number in range(1, 1000):
        path = f"{base}{'' if number == 1 else f'-{number}'}{ext}"
        if not _exists(path) or made_by_demo(path):
            return path
    raise DemoError("no free funcsight-demo-N.db name in this directory: pass --db")


def _exists(path: str) -> bool:
    return any(os.path.lexists(path + suffix) for suffix in ("", "-wal", "-shm"))


def made_by_demo(path: str) -> bool:
    """True only for a store whose every process is one the demo started (see INSTANCE_PREFIX)."""
    import sqlite3

    if not os.path.isfile(path) or os.path.islink(path):
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            ids = [row[0] for row in conn.execute("SELECT instance_id FROM processes")]
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return bool(ids) and all(str(i).startswith(INSTANCE_PREFIX) for i in ids)


def _write_app(app_dir: str, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = os.path.join(app_dir, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)


def _launcher() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    if os.path.exists(script):
        return [script]
    found = shutil.which("opentelemetry-instrument")
    if found:
        return [found]
    return [sys.executable, "-c", "from opentelemetry.instrumentation.auto_instrumentation import run; run()"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_release(app_dir: str, version: str, db_path: str, requests: int, concurrency: int, out) -> None:
    port = _free_port()
    env = dict(os.environ)
    env.update(
        FUNCSIGHT_DB=db_path,
        FUNCSIGHT_EXPORT_INTERVAL="0.5",  # several windows per release: diff checks changes across them
        OTEL_SERVICE_NAME="shop",
        OTEL_RESOURCE_ATTRIBUTES=f"service.version={version},service.instance.id={INSTANCE_PREFIX}{uuid.uuid4()}",
        # The demo is the embedded default: nothing leaves the machine.
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        PYTHONPATH=app_dir,
    )
    log_path = os.path.join(app_dir, "server.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            _launcher() + [sys.executable, "serve.py", str(port)], cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _wait_until_serving(port, process, log_path)
        _drive(port, version, requests, concurrency, out)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_serving(port: int, process: subprocess.Popen, log_path: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"the sample app exited with status {process.returncode}: see {log_path}\n{_tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise DemoError(f"the sample app did not start within {_START_TIMEOUT_S:.0f} s: see {log_path}")


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def _drive(port: int, version: str, requests: int, concurrency: int, out) -> None:
    done = 0
    failures = 0
    lock = threading.Lock()
    interactive = hasattr(out, "isatty") and out.isatty()

    def one(index: int) -> None:
        nonlocal done, failures
        method, path = traffic(index)
        ok = True
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=_REQUEST_TIMEOUT_S)
            conn.request(method, path)
            conn.getresponse().read()
            conn.close()
        except OSError:
            ok = False
        with lock:
            done += 1
            failures += 0 if ok else 1
            if interactive or done % max(1, requests // 4) == 0 or done == requests:
                _progress(out, version, done, requests, interactive)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests)))
    elapsed = time.monotonic() - started
    if interactive:
        out.write("\n")
    print(f"  release {version}: {requests} requests in {elapsed:.1f} s ({requests / elapsed:.0f}/s), {failures} failed", file=out)


def _progress(out, version: str, done: int, total: int, interactive: bool) -> None:
    width = 30
    filled = int(width * done / total)
    bar = f"  release {version} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
    if interactive:
        out.write("\r" + bar)
        out.flush()
    else:
        print(bar, file=out)


def result_commands(db_path: str) -> list[tuple[str, list[str]]]:
    """What to show once the demo ran: (title, ``funcsight`` arguments); the CLI runs them."""
    return [
        ("Routes", ["routes", "--db", db_path]),
        ("What changed from 1.0 to 1.1 (ranked by impact on route latency)",
         ["diff", "--db", db_path, "--baseline", "1.0", "--candidate", "1.1"]),
        ("Why /checkout/<int:user> got slower",
         ["explain", "--db", db_path, "--route", "/checkout/<int:user>", "--baseline", "1.0", "--candidate", "1.1", "--limit", "6"]),
    ]
