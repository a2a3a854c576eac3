"""Machinery of the fault-injection tests (``test_faults_*.py``, ``test_privacy.py``) and of
``bench/soak.py``: a restartable rotel, a backend that accepts and never answers, a steady
traffic driver that times every request, and an RSS sampler reading ``/proc``.

Everything runs on 127.0.0.1 and is bounded in time; nothing here fakes a part of funcsight.
"""

from __future__ import annotations

import http.client
import os
import json
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers import APPS_DIR, BACKGROUND, REQUEST_TIMEOUT_S, Rotel, clean_env, free_port, latest, parse_rotel_output, strip_ansi, tail, wait_for_port

FAULT_APP = "fault_app"
WORK_ROUTE = "/work/<int:n>"
LOGIC, VIEWS = "faultapp.logic.", "faultapp.views."


def work_calls(n: int) -> dict[tuple[str, str], int]:
    """What ``n`` requests to ``/work/<i>`` call (exact)."""
    if not n:
        return {}
    return {(VIEWS + "work", WORK_ROUTE): n, (LOGIC + "handle", WORK_ROUTE): n, (LOGIC + "square", WORK_ROUTE): 2 * n}


HAS_MONITORING = hasattr(sys, "monitoring")


def app_calls(n: int) -> dict[tuple[str, str], int]:
    """Everything a run of the app that served ``n`` requests and then stopped cleanly recorded:
    the requests' calls and the launcher's ``main`` (one call, outside any request; on 3.11 the
    main script is rewritten after the fact, so it is sensed there too)."""
    calls = work_calls(n)
    calls[("serve.main", BACKGROUND)] = 1
    return calls


def quit_calls() -> dict[tuple[str, str], int]:
    """The ``/quit`` view, defined in the main script (sensed on 3.11 too since the main script is
    rewritten after the fact there)."""
    return {("serve.main.<locals>.quit_server", "/quit"): 1}



# ------------------------------------------------------------------------------------ traffic
@dataclass
class Traffic:
    """What a driver sent: per request its status (or the error) and its latency."""

    statuses: list = field(default_factory=list)
    latencies: list = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.statuses)

    @property
    def ok(self) -> int:
        return sum(1 for status in self.statuses if status == 200)

    def median_ms(self) -> float:
        return 1000 * statistics.median(self.latencies) if self.latencies else 0.0

    def max_ms(self) -> float:
        return 1000 * max(self.latencies) if self.latencies else 0.0

    def add(self, other: Traffic) -> None:
        self.statuses += other.statuses
        self.latencies += other.latencies


def request(port: int, path: str, method: str = "GET", body: bytes | None = None, timeout: float = REQUEST_TIMEOUT_S):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Connection": "close"}
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def drive(port: int, *, count: int | None = None, seconds: float | None = None, rate: float | None = None,
          first: int = 0, deadline_s: float = 60.0) -> Traffic:
    """Sequential GET /work/<i>: ``count`` requests, or as many as fit in ``seconds``; with ``rate``
    (requests/s) paced steadily. Never raises: a failed request is recorded as its error."""
    traffic = Traffic()
    started = time.monotonic()
    stop_at = started + (seconds if seconds is not None else deadline_s)
    i = first
    while (count is None or traffic.sent < count) and time.monotonic() < stop_at:
        if rate:
            due = started + traffic.sent / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        begin = time.perf_counter()
        try:
            status, _ = request(port, f"/work/{i}")
        except (OSError, http.client.HTTPException) as err:
            status = f"{type(err).__name__}: {err}"
        traffic.latencies.append(time.perf_counter() - begin)
        traffic.statuses.append(status)
        i += 1
    return traffic


def latency_within_noise(fault: Traffic, baseline: Traffic) -> tuple[bool, str]:
    """The loose rule of these tests (the machine is shared and noisy): the fault run's median is
    below twice the baseline's plus 5 ms, and no request took a second."""
    limit = 2 * baseline.median_ms() + 5
    text = (f"median {fault.median_ms():.2f} ms (baseline {baseline.median_ms():.2f} ms, limit {limit:.2f} ms), "
            f"max {fault.max_ms():.1f} ms")
    return fault.median_ms() < limit and fault.max_ms() < 1000, text


# ---------------------------------------------------------------------------------------- RSS
def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples a process's resident set size every ``every_s`` on a thread, until stopped."""

    def __init__(self, pid: int, every_s: float = 0.1):
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_kb(self.pid)
            if value is not None:
                self.samples.append((time.monotonic(), value))
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def mark(self) -> int:
        """The current RSS (kB), also recorded as a sample."""
        value = rss_kb(self.pid) or 0
        self.samples.append((time.monotonic(), value))
        return value

    def peak_since(self, moment: float) -> int:
        return max((value for at, value in self.samples if at >= moment), default=0)


# -------------------------------------------------------------------------------------- rotel
class RotelAt(Rotel):
    """A rotel that can be killed, stopped (SIGSTOP) and started again on the same two ports;
    each start prints to its own file."""

    def __init__(self, workdir: Path, grpc_port: int | None = None, http_port: int | None = None):
        super().__init__(workdir)
        self.grpc_port = grpc_port or self.grpc_port
        self.http_port = http_port or self.http_port
        self.starts = 0
        self.outputs: list[Path] = []

    def start(self) -> str | None:
        self.starts += 1
        self.out_path = self.workdir / f"rotel.{self.starts}.out"
        self.outputs.append(self.out_path)
        deadline = time.monotonic() + 10
        while True:  # the port of a just-killed instance can take a moment to be free again
            reason = super().start()
            if reason is None or time.monotonic() > deadline:
                return reason
            time.sleep(0.3)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
        super().stop()

    def all_output(self) -> str:
        return "".join(strip_ansi(path.read_text(errors="replace")) for path in self.outputs if path.exists())

    def parsed_all(self):
        return parse_rotel_output(self.all_output())


def requests_seen(points) -> int:
    return int(latest(points, "funcsight.route.requests", "http.route").get((WORK_ROUTE,), 0))


def wait_until(condition, timeout_s: float, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


# ------------------------------------------------------------------------------ stalled backend
class BlackHole:
    """Accepts TCP connections on 127.0.0.1 and never answers: a backend that stalls."""

    def __init__(self, port: int | None = None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.bytes_received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                conn.setblocking(False)
                self.accepted.append(conn)
            except (TimeoutError, socket.timeout):
                pass
            except OSError:
                return
            for conn in self.accepted:  # read and discard, so the client's writes never block
                try:
                    data = conn.recv(65536)
                    self.bytes_received += len(data)
                except (BlockingIOError, OSError):
                    pass

    def __enter__(self) -> BlackHole:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


# ---------------------------------------------------------------------------------- app logs
START_LINE = "funcsight: sensing "  # the one start-up line (what is sensed, where data goes): not a problem


def funcsight_lines(log: str) -> list[str]:
    """What funcsight said in an app's log, but its start-up line (tests/test_newcomer.py checks
    that one appears exactly once per service)."""
    return [line for line in log.splitlines()
            if (line.startswith("funcsight:") or " funcsight: " in line) and START_LINE not in line]


def otlp_env(endpoint: str | None, **extra: str) -> dict[str, str]:
    """An app sending to ``endpoint`` (gRPC) every 0.3 s, spans batched every 0.2 s."""
    settings = {
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "fault-app",
        "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.0",
        "FUNCSIGHT_EXPORT_INTERVAL": "0.3",
    }
    if endpoint:
        settings.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    else:
        settings.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
    settings.update(extra)
    return clean_env(**settings)


def copy_app(workdir: Path, app: str = FAULT_APP) -> Path:
    target = workdir / app
    shutil.copytree(APPS_DIR / app, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def run_script(launcher: Path | None, app_dir: Path, args: list[str], env: dict[str, str], timeout_s: float = 40.0) -> subprocess.CompletedProcess:
    """``[launcher] python ARGS`` in ``app_dir`` (on PYTHONPATH), bounded in time: a run that
    does not end is killed and reported as a failure with its output."""
    env = dict(env)
    env["PYTHONPATH"] = str(app_dir)
    command = ([str(launcher)] if launcher else []) + [sys.executable, *args]
    try:
        return subprocess.run(command, cwd=app_dir, env=env, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        errors = (err.stderr or b"").decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        raise AssertionError(f"{' '.join(args)} did not end within {timeout_s:.0f} s (a deadlock?)\nstdout:\n{out[-2000:]}\nstderr:\n{errors[-4000:]}") from None


def last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON report in:\n{text[-3000:]}")


def store_calls_by_pid(db: Path) -> dict[int, dict[tuple[str, str], int]]:
    """Calls per process (pid) per (function, route), read from the store with plain SQL."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT p.pid, f.name, s.route, SUM(s.calls) FROM function_stats s"
            " JOIN windows w ON w.id = s.window_id JOIN processes p ON p.id = w.process_id"
            " JOIN functions f ON f.id = s.function_id GROUP BY 1, 2, 3"
        ).fetchall()
    result: dict[int, dict[tuple[str, str], int]] = {}
    for pid, name, route, calls in rows:
        result.setdefault(pid, {})[(name, route)] = calls
    return result


def integrity(db: Path) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def stop_timed(app, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> tuple[int, float]:
    """Send ``sig`` and wait for the exit: (status, seconds it took)."""
    began = time.monotonic()
    if app.process.poll() is None:
        app.process.send_signal(sig)
    try:
        status = app.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        app.kill()
        raise AssertionError(f"the app did not exit within {timeout_s:.0f} s of signal {sig}; its log:\n{app.log()}")
    return status, time.monotonic() - began


__all__ = [
    "BlackHole", "FAULT_APP", "HAS_MONITORING", "app_calls", "quit_calls", "copy_app", "integrity", "last_json", "run_script", "store_calls_by_pid", "LOGIC", "RotelAt", "RssSampler", "Traffic", "VIEWS", "WORK_ROUTE",
    "drive", "free_port", "funcsight_lines", "latency_within_noise", "latest", "otlp_env", "request",
    "requests_seen", "rss_kb", "stop_timed", "tail", "wait_for_port", "wait_until", "work_calls",
]


def fill_disk(directory: Path) -> Path:
    """Write zeros into ``directory/filler`` until the file system says it is full; the filler."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler
