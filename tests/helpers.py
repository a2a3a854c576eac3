"""Shared machinery of the end-to-end tests: real apps under the real launcher, real HTTP on
127.0.0.1, the store read back through the real CLI and analysis code, and a real OTLP receiver.

Nothing here fakes a part of funcsight: the apps in ``tests/apps`` are copied to a scratch
directory (so that directory is the sensed application), started with ``opentelemetry-instrument``
in a subprocess, stopped with SIGTERM, and what funcsight recorded is read back afterwards.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN_DIR = Path(sys.executable).parent
APPS_DIR = Path(__file__).resolve().parent / "apps"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 15.0
CLEAN_EXIT_CODES = (0, 143, -signal.SIGTERM)
BACKGROUND = "(background)"

# Variables of the calling environment that would change what the app under test does.
_SCRUBBED_PREFIXES = ("OTEL_", "FUNCSIGHT_")
_SCRUBBED = {"PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONSAFEPATH"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _SCRUBBED and not key.startswith(_SCRUBBED_PREFIXES)
    }
    env.update({key: str(value) for key, value in extra.items() if value is not None})
    return env


def store_env(db_path: Path | str, service: str, version: str, **extra: str) -> dict[str, str]:
    """The embedded-store configuration every store test uses (nothing leaves the machine)."""
    return clean_env(
        FUNCSIGHT_DB=str(db_path),
        FUNCSIGHT_EXPORT_INTERVAL="0.5",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_SERVICE_NAME=service,
        OTEL_RESOURCE_ATTRIBUTES=f"service.version={version}",
        **extra,
    )


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return "(no log)"


def wait_for_port(port: int, timeout_s: float, alive=lambda: True) -> bool:
    """True once something accepts TCP connections on 127.0.0.1:port (a bare connect, no request,
    so the wait itself never shows up as a request in the store)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class AppProcess:
    """One sample app, copied to ``workdir/<name>`` and run under ``opentelemetry-instrument``."""

    def __init__(self, launcher: Path, app: str, workdir: Path, env: dict[str, str]):
        self.launcher = launcher
        self.app_dir = workdir / app
        shutil.copytree(APPS_DIR / app, self.app_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        self.env = dict(env)
        self.env["PYTHONPATH"] = str(self.app_dir)
        # FUNCSIGHT_TEST_IMPLEMENTATION=c|python runs every app with that sensor (default: auto).
        implementation = os.environ.get("FUNCSIGHT_TEST_IMPLEMENTATION")
        if implementation and "FUNCSIGHT_IMPLEMENTATION" not in env:
            self.env["FUNCSIGHT_IMPLEMENTATION"] = implementation
        self.port = free_port()
        self.log_path = workdir / f"{app}.log"
        self.process: subprocess.Popen | None = None
        self.returncode: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return tail(self.log_path)

    def start(self) -> AppProcess:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(self.launcher), sys.executable, "serve.py", str(self.port)],
                cwd=self.app_dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if not wait_for_port(self.port, START_TIMEOUT_S, alive=lambda: self.process.poll() is None):
            status = self.process.poll()
            self.kill()
            state = f"exited with status {status}" if status is not None else f"did not listen within {START_TIMEOUT_S:.0f} s"
            raise AssertionError(f"app {self.app_dir.name} {state}; its log:\n{self.log()}")
        return self

    def stop(self) -> int:
        """SIGTERM, wait for the exit, and check it was a clean one (funcsight flushes on it)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"app {self.app_dir.name} ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s; its log:\n{self.log()}")
        assert self.returncode in CLEAN_EXIT_CODES, f"app exited with {self.returncode}; its log:\n{self.log()}"
        text = self.log_path.read_text(errors="replace")
        assert "Traceback" not in text, f"the app logged a traceback:\n{self.log()}"
        return self.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


# ------------------------------------------------------------------------------------------ HTTP
def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_ok(port: int, path: str) -> dict:
    status, body = get(port, path)
    assert status == 200, f"GET {path} -> {status}: {body[:300]!r}"
    return json.loads(body)


async def async_get(port: int, path: str) -> tuple[int, bytes]:
    """One HTTP/1.1 GET on its own loopback connection, on asyncio streams.

    A minimal client on purpose: with a couple of hundred connections httpx.AsyncClient spends
    most of its time in its own pool bookkeeping (measured here: ~20 ms per request), so the
    server would never see more than a handful of requests at once. Raw streams put them all
    on the server's event loop together."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        decoded, rest = b"", body
        while rest:
            size_text, _, rest = rest.partition(b"\r\n")
            size = int(size_text.split(b";")[0], 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2:]
        body = decoded
    return int(status_line.split(" ", 2)[1]), body


# ----------------------------------------------------------------------------------------- store
def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """The installed ``funcsight`` command, as a user runs it."""
    return subprocess.run(
        [str(BIN_DIR / "funcsight"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else clean_env(),
        stdin=subprocess.DEVNULL,
    )


def cli_json(*args: str) -> list[dict]:
    result = run_cli(*args, "--format", "json")
    assert result.returncode == 0, f"funcsight {' '.join(args)} -> {result.returncode}\n{result.stderr}"
    assert result.stderr == "", result.stderr
    return json.loads(result.stdout)


def functions_by_key(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """``(function, route) -> row``; fails if a key appears twice (one version per test)."""
    table: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["function"], row["route"])
        assert key not in table, f"two rows for {key}: {table[key]} and {row}"
        table[key] = row
    return table


def calls_map(rows: list[dict]) -> dict[tuple[str, str], int]:
    return {key: row["calls"] for key, row in functions_by_key(rows).items()}


def analysis_rows(db_path: Path | str, route: str | None = None, version: str | None = None) -> list[dict]:
    """The same figures through the library: ``function_rows(StoreSource(path))``."""
    from funcsight.analysis.breakdown import function_rows
    from funcsight.sources.store import StoreSource

    source = StoreSource(str(db_path))
    try:
        return [row.as_dict() for row in function_rows(source, route, version)]
    finally:
        source.close()


def route_requests(db_path: Path | str) -> dict[str, int]:
    rows = cli_json("routes", "--db", str(db_path))
    result: dict[str, int] = {}
    for row in rows:
        assert row["route"] not in result, f"route {row['route']} listed twice: {rows}"
        result[row["route"]] = row["requests"]
    return result


def diff_maps(expected: dict, actual: dict) -> str:
    lines = []
    for key in sorted(set(expected) | set(actual), key=str):
        if expected.get(key) != actual.get(key):
            lines.append(f"  {key}: expected {expected.get(key)}, got {actual.get(key)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ rotel
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ATTRIBUTE = re.compile(r"^\s*-> ([^:]+): (\w+)\((.*)\)\s*$")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def rotel_binary() -> Path | None:
    try:
        import rotel
    except ImportError:
        return None
    for directory in getattr(rotel, "__path__", []):
        for name in ("rotel-agent", "rotel"):
            candidate = Path(directory) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None


def _attribute_value(kind: str, raw: str):
    if kind == "Int":
        return int(raw)
    if kind == "Double":
        return float(raw)
    if kind == "Bool":
        return raw.lower() == "true"
    return raw


@dataclass
class DataPoint:
    metric: str
    scope: str
    resource: dict
    attributes: dict = field(default_factory=dict)
    value: float | None = None


@dataclass
class SpanRecord:
    name: str
    scope: str
    resource: dict
    trace_id: str = ""
    parent_id: str = ""
    span_id: str = ""
    kind: str = ""
    status: str = ""
    attributes: dict = field(default_factory=dict)
    events: list = field(default_factory=list)


def latest(points, metric: str, *keys: str) -> dict[tuple, float]:
    """Cumulative sums of funcsight's metric: the largest value seen per attribute combination."""
    result: dict[tuple, float] = {}
    for point in points:
        if point.metric != metric or point.scope != "funcsight":
            continue
        key = tuple(point.attributes.get(k) for k in keys)
        result[key] = max(result.get(key, 0), point.value or 0)
    return result


def parse_rotel_output(text: str) -> tuple[list[DataPoint], list[SpanRecord]]:
    """Parse what ``--debug-log traces --debug-log metrics --debug-log-verbosity detailed`` prints:
    number data points of every metric and every span, with their attributes."""
    points: list[DataPoint] = []
    spans: list[SpanRecord] = []
    resource: dict = {}
    scope = ""
    metric = ""
    target: dict | None = None  # where "-> key: Type(value)" lines go
    point: DataPoint | None = None
    span: SpanRecord | None = None
    expect_metric_name = False
    for raw_line in strip_ansi(text).splitlines():
        line = raw_line.rstrip()
        stripped = line.strip()
        if stripped.startswith(("ResourceMetrics #", "ResourceSpans #", "ResourceLogs #")):
            resource, scope, metric, point, span = {}, "", "", None, None
            target = None
        elif stripped == "Resource attributes:":
            target = resource
        elif stripped.startswith("InstrumentationScope "):
            scope = stripped.split()[1] if len(stripped.split()) > 1 else ""
            target = None
        elif stripped.startswith("Metric #"):
            metric, point, target = "", None, None
        elif stripped == "Descriptor:":
            expect_metric_name, target = True, None
        elif expect_metric_name and stripped.startswith("-> Name: "):
            metric = stripped[len("-> Name: "):]
            expect_metric_name = False
        elif re.match(r"^(Number|Histogram|ExponentialHistogram|Summary)DataPoints #\d+", stripped):
            expect_metric_name = False
            point = DataPoint(metric, scope, dict(resource))
            if stripped.startswith("NumberDataPoints"):
                points.append(point)
            target = None
        elif stripped == "Data point attributes:" and point is not None:
            target = point.attributes
        elif stripped.startswith("Value: ") and point is not None:
            number = stripped[len("Value: "):]
            try:
                point.value = float(number) if any(c in number for c in ".eE") else int(number)
            except ValueError:
                point.value = None
            target = None
        elif stripped.startswith(("StartTimestamp:", "Timestamp:", "Exemplars:", "Count:", "Sum:")):
            target = None
        elif re.match(r"^Span #\d+", stripped):
            span = SpanRecord("", scope, dict(resource))
            spans.append(span)
            target = None
        elif span is not None and re.match(r"^(Trace ID|Parent ID|ID|Name|Kind|Status code)\s+:", stripped):
            key, _, value = stripped.partition(":")
            key, value = key.strip(), value.strip()
            if key == "Trace ID":
                span.trace_id = value
            elif key == "Parent ID":
                span.parent_id = value
            elif key == "ID":
                span.span_id = value
            elif key == "Name":
                span.name = value
            elif key == "Kind":
                span.kind = value
            elif key == "Status code":
                span.status = value
        elif stripped == "Attributes:" and span is not None:
            target = span.attributes
        elif stripped == "Events:" and span is not None:
            target = None
        elif stripped.startswith("SpanEvent #") and span is not None:
            span.events.append({})
            target = None
        elif stripped.startswith("-> Name: ") and span is not None and span.events:
            span.events[-1]["name"] = stripped[len("-> Name: "):]
        elif stripped == "-> Attributes::" and span is not None and span.events:
            target = span.events[-1].setdefault("attributes", {})
        else:
            match = _ATTRIBUTE.match(line)
            if match and target is not None:
                target[match.group(1).strip()] = _attribute_value(match.group(2), match.group(3))
    return points, spans


class Rotel:
    """A real OTLP receiver (rotel) on two free loopback ports, printing what it receives."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.out_path = workdir / "rotel.out"
        self.process: subprocess.Popen | None = None

    def start(self) -> str | None:
        """Start it; None when running, else the reason it cannot run here."""
        binary = rotel_binary()
        if binary is None:
            return "the rotel package (pip install rotel==0.0.1a15) is not installed"
        env = clean_env()
        libdir = sysconfig.get_config_var("LIBDIR")
        if libdir:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH")]))
        command = [
            str(binary), "start",
            "--exporter", "blackhole",
            "--debug-log", "traces", "--debug-log", "metrics",
            "--debug-log-verbosity", "detailed",
            "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
            "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
            "--batch-timeout", "50ms",
            "--pid-file", str(self.workdir / "rotel.pid"),
            "--log-file", str(self.workdir / "rotel.log"),
        ]
        with open(self.out_path, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workdir, stdin=subprocess.DEVNULL)
        alive = lambda: self.process.poll() is None  # noqa: E731
        if wait_for_port(self.grpc_port, 10, alive) and wait_for_port(self.http_port, 10, alive):
            return None
        status = self.process.poll()
        self.stop()
        return f"rotel-agent could not start here (status {status}): {tail(self.out_path, 10)}"

    def output(self) -> str:
        return strip_ansi(self.out_path.read_text(errors="replace"))

    def parsed(self) -> tuple[list[DataPoint], list[SpanRecord]]:
        return parse_rotel_output(self.output())

    def wait_for(self, condition, timeout_s: float = 10.0):
        """Poll the parsed output until ``condition(points, spans)`` is truthy; return its value
        (or the last falsy value on timeout, for the assertion message)."""
        deadline = time.monotonic() + timeout_s
        while True:
            points, spans = self.parsed()
            result = condition(points, spans)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


# ------------------------------------------------------------------------------ call trees
def tree_nodes(db, route: str) -> dict[tuple[str, ...], dict]:
    """``funcsight tree --format json``, flattened: path of function names -> node."""
    result = json.loads(cli_ok("tree", "--db", str(db), "--route", route, "--format", "json"))
    out = {}

    def visit(node: dict, path: tuple[str, ...]) -> None:
        for child in node["children"]:
            child_path = path + (child["function"],)
            out[child_path] = child
            visit(child, child_path)

    visit(result["root"], ())
    return out


def cli_ok(*args: str) -> str:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_functions_are_sums_of_nodes(db) -> None:
    """Every function x route: its calls (``funcsight functions``) = the sum over its tree nodes."""
    functions = calls_map(cli_json("functions", "--db", str(db)))
    for route in {route for _, route in functions if not route.startswith("(")}:
        per_function: dict[str, float] = {}
        requests = json.loads(cli_ok("tree", "--db", str(db), "--route", route, "--format", "json"))["requests"]
        for path, node in tree_nodes(db, route).items():
            per_function[path[-1]] = per_function.get(path[-1], 0) + node["calls_per_request"] * requests
        expected = {f: n for (f, r), n in functions.items() if r == route}
        assert {f: round(n) for f, n in per_function.items()} == expected, route


def write_versions_store(path: Path | str, versions: list[str], routes: tuple[str, ...] = ("/index",),
                         function: str = "shop.views.index") -> None:
    """A store holding one real window per version (the window aggregator folds real call tables,
    the store writer writes them), each version as if detected from git: for questions about
    versions and names, where no figure depends on an app's timing."""
    import uuid

    from funcsight.exporters.store_writer import ProcessIdentity, StoreWriter
    from funcsight.instrumentation.calls import CallTable
    from funcsight.instrumentation.registry import FunctionInfo, FunctionRegistry
    from funcsight.processors.windows import WindowAggregator

    for version in versions:
        registry = FunctionRegistry()
        fid = registry.register(FunctionInfo(function, "function", "/srv/shop/views.py", 12, "0123456789abcdef"))
        identity = ProcessIdentity("shop", version, "git", str(uuid.uuid4()), os.getpid(), socket.gethostname(), time.time())
        writer = StoreWriter(str(path), registry, identity)
        try:
            windows = WindowAggregator()
            for route in routes:
                table = CallTable()
                table.add_call(fid, 2_000_000, 1_500_000, ValueError if "fail" in route else None)
                windows.add_request(route, table, 3_000_000, False)
            assert writer.write_window(windows.drain()) is True
        finally:
            writer.close()


def outside_table(background, held: list):
    """One Python call table with the counts of a sensor's ``background`` table and of the tables
    its threads ``held`` for enclosing calls (``sensor.take_all_held()``; without a rollup processor
    nothing folds them): what was counted outside any request."""
    from funcsight.instrumentation.calls import CallTable, merge_stats, new_stats

    merged = CallTable()
    for table in [background, *held]:
        for fid, stats in table.stats.items():
            merge_stats(merged.stats.setdefault(fid, new_stats()), stats)
        for node, counts in table.paths.items():
            into = merged.paths.setdefault(node, [0, 0, 0, 0, None])
            for i in range(4):
                into[i] += counts[i]
        for key, count in table.errors.items():
            merged.errors[key] = merged.errors.get(key, 0) + count
        for key, sample in table.samples.items():
            merged.samples.setdefault(key, sample)
    return merged
