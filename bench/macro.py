#!/usr/bin/env python3
"""Macro benchmark: requests/s of real web apps with funcsight ON vs OFF under ``opentelemetry-instrument``.

Two apps from ``bench/apps`` (each request calls 40-odd of the app's own functions: helpers, a
class with methods, a generator, and for FastAPI awaited async helpers; CPU only, no sleeps):

* ``flaskbench``   - Flask under ``gunicorn -w 1`` (sync worker), or werkzeug threaded without gunicorn;
* ``fastapibench`` - FastAPI under ``uvicorn`` with one worker.

Each app is served in several configurations at once, each from its own scratch copy of the app
directory (so the modules are "the application's own code"), on 127.0.0.1:

* ``on``       - ``opentelemetry-instrument <server>`` with the standard Flask/FastAPI instrumentation
                 and funcsight (one column per sensor, ``on (c)`` and ``on (python)``, when the C
                 sensor is built);
* ``off``      - the same command with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=funcsight``;
* ``plain``    - the server without OpenTelemetry at all (``--no-plain`` drops it);
* ``on, 0 fn`` - with ``--breakdown``: funcsight on but ``FUNCSIGHT_INCLUDE`` matching no module, which
                 separates what funcsight costs per request from what it costs per sensed call.

The load comes from this process: a fixed number of requests per round over keep-alive
``http.client`` connections from a few client threads (gunicorn's sync worker and werkzeug close the
connection after each response; the client reconnects). The configurations are measured one after
the other in rotating order, for several rounds, after a warm-up; the report gives median requests/s
and the median of the per-round on/off ratios. The client shares the CPUs with the server, so read
the ratios, not the absolute figures. On Linux it also reads the CPU time the server's processes
used in each round (``/proc/<pid>/stat``): server CPU microseconds per request is far less sensitive
to other load on the machine than requests/s, and on - off of it is what funcsight costs a request.

Each server reports what really runs in it (``GET /_bench/meta``: Python, OTel loaded, framework
instrumented, active funcsight sensor), and after the rounds the ON server's store is read back with
``funcsight functions/routes --format json``: it must hold every request sent and exactly
requests x functions-per-request sensed calls, which proves the sensor was active throughout.

Run with the interpreter of the venv under test (its ``opentelemetry-instrument``, ``gunicorn`` and
``uvicorn`` are used)::

    /tmp/venvs/py312/bin/python bench/macro.py            # about 2-3 minutes
    /tmp/venvs/py312/bin/python bench/macro.py --quick    # under 40 s

Exit status: 0, or 1 when a server did not run what it should or the store check failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
APPS_DIR = os.path.join(HERE, "apps")
BIN_DIR = os.path.dirname(sys.executable)  # the venv under test: no symlink resolution on purpose
START_TIMEOUT_S = 40.0
STOP_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 10.0
ORDER_IDS = 997  # requests cycle over /order/0 .. /order/996
NO_MODULE = "funcsight_macro_no_such_module"  # FUNCSIGHT_INCLUDE of the --breakdown column
# "app + framework" columns (--framework; always for httpbin) sense the framework's modules too.
FRAMEWORK_INCLUDE = {"flask": "+flask,+werkzeug", "httpbin": "+flask,+werkzeug", "fastapi": "+fastapi,+starlette"}


# ------------------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class Variant:
    key: str  # "on", "on-c", "on-python", "off", "plain"
    label: str
    launcher: bool  # under opentelemetry-instrument
    funcsight: bool
    implementation: str | None = None  # FUNCSIGHT_IMPLEMENTATION, None = leave to funcsight
    senses_app: bool = True  # False: funcsight runs but FUNCSIGHT_INCLUDE matches no module
    framework: bool = False  # True: the framework's modules are sensed too (FRAMEWORK_INCLUDE)


@dataclass
class App:
    name: str  # "flask" / "fastapi"
    directory: str  # under bench/apps
    server: str  # description for the report
    command: list[str]  # with {port}
    path: str = "/order/{i}"  # the measured request, {i}: 0..996
    include: str = ""  # FUNCSIGHT_INCLUDE for the app's own code when it is not in the app directory


@dataclass
class Server:
    app: App
    variant: Variant
    workdir: str
    port: int
    db_path: str
    log_path: str
    process: subprocess.Popen | None = None
    meta: dict = field(default_factory=dict)
    sent_ok: int = 0  # successful /order requests, warm-up included
    failed: int = 0
    rates: list[float] = field(default_factory=list)  # requests/s per round
    cpu_us: list[float] = field(default_factory=list)  # server CPU us per request per round (Linux)
    measured_per_request: float = 0.0  # sensed calls per request the store showed


def tool(name: str) -> str | None:
    path = os.path.join(BIN_DIR, name)
    if os.path.exists(path):
        return path
    return shutil.which(name)


def version_of(distribution: str) -> str:
    try:
        from importlib.metadata import version

        return version(distribution)
    except Exception:
        return "?"


def c_sensor_available() -> bool:
    result = subprocess.run(
        [sys.executable, "-c", "import funcsight.instrumentation._csensor"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return result.returncode == 0


def build_apps(selected: list[str], flask_server: str) -> tuple[list[App], list[str]]:
    apps, problems = [], []
    gunicorn, uvicorn = tool("gunicorn"), tool("uvicorn")
    if flask_server == "gunicorn" and not gunicorn:
        problems.append("gunicorn is not installed (pip install gunicorn): Flask runs on werkzeug")
    for name in selected:
        if name == "flask":
            if gunicorn and flask_server != "werkzeug":
                command = [gunicorn, "-w", "1", "-k", "sync", "-b", "127.0.0.1:{port}", "--graceful-timeout", "5",
                           "--log-level", "warning", "app:app"]
                server = f"gunicorn {version_of('gunicorn')}, 1 sync worker"
            else:
                command = [sys.executable, "serve.py", "{port}"]
                server = f"werkzeug {version_of('werkzeug')} threaded, 1 process"
            apps.append(App("flask", "flaskbench", server, command))
        elif name == "fastapi":
            if not uvicorn:
                problems.append("fastapi skipped: uvicorn is not installed (pip install uvicorn)")
                continue
            command = [uvicorn, "app:app", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning",
                       "--no-access-log"]
            apps.append(App("fastapi", "fastapibench", f"uvicorn {version_of('uvicorn')}, 1 worker", command))
        elif name == "httpbin":  # httpbin from PyPI (site-packages), wrapped by apps/httpbinbench
            if not gunicorn:
                problems.append("httpbin skipped: gunicorn is not installed (pip install gunicorn)")
                continue
            try:
                import httpbin  # noqa: F401
            except ImportError:
                problems.append("httpbin skipped: it is not installed (pip install httpbin)")
                continue
            command = [gunicorn, "-w", "1", "-k", "sync", "-b", "127.0.0.1:{port}", "--graceful-timeout", "5",
                       "--log-level", "warning", "app:app"]
            apps.append(App("httpbin", "httpbinbench", f"httpbin {version_of('httpbin')} on gunicorn "
                            f"{version_of('gunicorn')}, 1 sync worker", command, "/get?order={i}", "+httpbin"))
    return apps, problems


def build_variants(implementations: list[str], plain: bool, breakdown: bool, framework: bool = False) -> list[Variant]:
    variants = []
    for impl in implementations:
        if impl == "auto":
            variants.append(Variant("on", "on", True, True))
        else:
            variants.append(Variant(f"on-{impl}", f"on ({impl})", True, True, impl))
    if framework:
        impl = implementations[0] if implementations[0] != "auto" else None
        variants.append(Variant("on-fw", f"on ({impl or 'auto'}) +fw", True, True, impl, framework=True))
    if breakdown:
        impl = implementations[0] if implementations[0] != "auto" else None
        variants.append(Variant("on-nothing", "on, 0 fn", True, True, impl, senses_app=False))
    variants.append(Variant("off", "off", True, False))
    if plain:
        variants.append(Variant("plain", "plain", False, False))
    return variants


# ---------------------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(server: Server) -> dict[str, str]:
    # A clean slate: OTEL_* / FUNCSIGHT_* from the caller's shell would make the columns differ
    # in more than the one thing being measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FUNCSIGHT_"))}
    env["PYTHONPATH"] = server.workdir
    if server.variant.launcher:
        env.update(
            OTEL_SERVICE_NAME=server.app.directory,
            OTEL_TRACES_EXPORTER="none",
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
            FUNCSIGHT_DB=server.db_path,
            BENCH_OTEL_SDK="1",
        )
        if not server.variant.funcsight:
            env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "funcsight"
        else:
            if server.variant.implementation:
                env["FUNCSIGHT_IMPLEMENTATION"] = server.variant.implementation
            if not server.variant.senses_app:
                env["FUNCSIGHT_INCLUDE"] = NO_MODULE
            else:
                patterns = [server.app.include, FRAMEWORK_INCLUDE.get(server.app.name, "") if server.variant.framework else ""]
                if any(patterns):
                    env["FUNCSIGHT_INCLUDE"] = ",".join(p for p in patterns if p)
    return env


def copy_bench_app(directory: str, workdir: str) -> None:
    """The shop package both apps share, then the app's own files (its modules win)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(os.path.join(APPS_DIR, "shop"), os.path.join(workdir, "shop"), ignore=ignore)
    shutil.copytree(os.path.join(APPS_DIR, directory), workdir, ignore=ignore, dirs_exist_ok=True)


def start(server: Server, launcher: str) -> None:
    copy_bench_app(server.app.directory, server.workdir)
    command = [part.replace("{port}", str(server.port)) for part in server.app.command]
    if server.variant.launcher:
        command = [launcher] + command
    with open(server.log_path, "wb") as log:
        server.process = subprocess.Popen(
            command, cwd=server.workdir, env=server_env(server), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def wait_ready(server: Server, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"{server.app.name} [{server.variant.label}] exited with status "
                             f"{server.process.returncode}; log {server.log_path}:\n{tail(server.log_path)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
            conn.request("GET", "/_bench/meta")
            response = conn.getresponse()
            body = response.read()
            conn.close()
            if response.status == 200:
                server.meta = json.loads(body)
                return
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.1)
    raise BenchError(f"{server.app.name} [{server.variant.label}] did not answer within {START_TIMEOUT_S:.0f} s; "
                     f"log {server.log_path}:\n{tail(server.log_path)}")


def stop_all(servers: list[Server]) -> None:
    """SIGTERM to every server still running (funcsight flushes its last window on a normal exit),
    then wait; a server that does not exit in time is killed with its process group."""
    running = [s.process for s in servers if s.process is not None and s.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: only what this run started
            except OSError:
                pass
            process.wait()


def tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


class BenchError(Exception):
    pass


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def session_cpu_s(session: int) -> float | None:
    """User + system CPU seconds of every live process in ``session`` (the server was started in
    its own session: gunicorn's master and worker, or the one uvicorn process); None off Linux."""
    if not os.path.isdir("/proc"):
        return None
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == session:  # fields after "(comm)": state ppid pgrp session ... utime stime
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLOCK_TICKS


# ------------------------------------------------------------------------------------------- load
def drive(server: Server, requests: int, threads: int, first: int, record: bool = True) -> None:
    """Send ``requests`` GET requests (the app's path, /order/<id> for the bench apps) over ``threads`` keep-alive connections; with ``record``,
    append the round's requests/s and server CPU per request to the server's figures."""
    counts = [requests // threads + (1 if k < requests % threads else 0) for k in range(threads)]
    ok = [0] * threads
    bad = [0] * threads
    barrier = threading.Barrier(threads + 1)

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT_S)
        barrier.wait()
        for i in range(counts[k]):
            try:
                conn.request("GET", server.app.path.format(i=(first + k + i * threads) % ORDER_IDS))
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    ok[k] += 1
                else:
                    bad[k] += 1
            except (OSError, http.client.HTTPException):
                bad[k] += 1
                conn.close()  # reconnects on the next request
        conn.close()

    workers = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(threads)]
    for worker in workers:
        worker.start()
    cpu_before = session_cpu_s(server.process.pid)
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    cpu_after = session_cpu_s(server.process.pid)
    server.sent_ok += sum(ok)
    server.failed += sum(bad)
    if record:
        server.rates.append(sum(ok) / elapsed if elapsed > 0 else 0.0)
        if cpu_before is not None and cpu_after is not None and sum(ok):
            server.cpu_us.append((cpu_after - cpu_before) * 1e6 / sum(ok))


# ------------------------------------------------------------------------------------ store check
def store_check(server: Server) -> tuple[bool, str]:
    funcsight = tool("funcsight")
    if not funcsight:
        return False, "the funcsight command is not installed in this venv"
    route = server.meta.get("route")
    expected_per_request = fixed_functions_per_request(server)
    outputs = {}
    for command in ("functions", "routes"):
        result = subprocess.run([funcsight, command, "--db", server.db_path, "--format", "json"],
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            return False, f"`funcsight {command}` failed: {result.stderr.strip() or result.stdout.strip()}"
        outputs[command] = json.loads(result.stdout)
    rows = [row for row in outputs["functions"] if row.get("kind") == "function" and row.get("route") == route]
    calls = sum(row["calls"] for row in rows)
    requests = sum(row["requests"] for row in outputs["routes"] if row.get("route") == route)
    sent = server.sent_ok
    per_request = calls / requests if requests else 0.0
    server.measured_per_request = per_request
    if expected_per_request is None:  # httpbin, or the framework sensed: no constant to check against
        ok = requests == sent and calls > 0
        expectation = f"expected {sent} requests and some sensed calls"
    else:
        expected = sent * expected_per_request
        ok = requests == sent and calls == expected
        expectation = f"expected {sent} x {expected_per_request} = {expected}"
    text = (f"store: {requests} requests on {route} (sent {sent}), {calls} sensed calls in {len(rows)} functions"
            f" = {per_request:.2f}/request ({expectation}) " + ("OK" if ok else "MISMATCH"))
    return ok, text


# ------------------------------------------------------------------------------------------ report
def fixed_functions_per_request(server: Server) -> int | None:
    """Sensed calls per request the server's store must show; None when the app does not fix it
    (httpbin) or the framework is sensed too."""
    if not server.variant.senses_app:
        return 0
    if server.variant.framework:
        return None
    return server.meta.get("functions_per_request")


def functions_per_request(server: Server) -> float:
    """Sensed calls per request for the report: the app's constant, else what the store showed."""
    fixed = fixed_functions_per_request(server)
    return fixed if fixed is not None else round(server.measured_per_request, 1)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def describe_meta(meta: dict) -> str:
    if not meta:
        return "?"
    parts = ["OTel" if meta.get("otel") else "no OTel"]
    if meta.get("otel"):
        parts.append("framework instrumented" if meta.get("framework_instrumented") else "framework NOT instrumented")
        provider = meta.get("tracer_provider")
        parts.append("no-op tracer (no SDK)" if provider in (None, "ProxyTracerProvider", "NoOpTracerProvider")
                     else f"SDK {provider}")
        parts.append(f"funcsight {meta['funcsight']} sensor" if meta.get("funcsight") else "funcsight off")
    return ", ".join(parts)


def expected_meta_ok(server: Server) -> str | None:
    """None when the server runs what its column claims, else what is wrong."""
    meta, variant = server.meta, server.variant
    if variant.launcher and not meta.get("otel"):
        return "OpenTelemetry is not loaded"
    if not variant.launcher and meta.get("otel"):
        return "OpenTelemetry is loaded in the plain server"
    if variant.launcher and not meta.get("framework_instrumented"):
        return "the framework instrumentation is not active"
    if variant.funcsight and not meta.get("funcsight"):
        return "funcsight is not running (see the log)"
    if not variant.funcsight and meta.get("funcsight"):
        return "funcsight is running although disabled"
    if variant.implementation and meta.get("funcsight") and not str(meta["funcsight"]).startswith(variant.implementation):
        return f"asked for the {variant.implementation} sensor, got {meta['funcsight']}"
    return None


def paired_median(a: list[float], b: list[float], op) -> float:
    values = [op(x, y) for x, y in zip(a, b) if y]
    return statistics.median(values) if values else float("nan")


def render(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    print("  " + "  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    print("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        print("  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def fmt(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value + 0.0:.{digits}f}" if round(value, digits) else f"{0.0:.{digits}f}"  # never "-0"


def print_results(results: list[tuple[App, list[Server]]]) -> None:
    ratio = lambda x, y: x / y  # noqa: E731
    minus = lambda x, y: x - y  # noqa: E731
    nan = float("nan")
    throughput, cpu = [], []
    for app, servers in results:
        by_key = {s.variant.key: s for s in servers}
        off, plain = by_key.get("off"), by_key.get("plain")
        for server in servers:
            if not server.variant.funcsight:
                continue
            per_request = functions_per_request(server)
            sensor = f"{server.variant.label}: {server.meta.get('funcsight') or 'NOT RUNNING'}"
            throughput.append((
                app.name, sensor, str(per_request),
                fmt(median(plain.rates)) if plain else "-",
                fmt(median(off.rates)) if off else "-",
                fmt(median(server.rates)),
                fmt(paired_median(server.rates, off.rates, ratio), 3) if off else "-",
                fmt(paired_median(off.rates, plain.rates, ratio), 3) if off and plain else "-",
            ))
            if not server.cpu_us:
                continue
            added = paired_median(server.cpu_us, off.cpu_us, minus) if off and off.cpu_us else nan
            base = by_key.get("on-nothing") if server.variant.senses_app else None
            if base is not None and base.cpu_us and base.variant.implementation == server.variant.implementation:
                per_call = fmt(paired_median(server.cpu_us, base.cpu_us, minus) / per_request, 2)
            elif per_request:
                per_call = "<=" + fmt(added / per_request, 2) if added == added else "-"
            else:
                per_call = "-"
            cpu.append((
                app.name, sensor, str(per_request),
                fmt(median(plain.cpu_us)) if plain and plain.cpu_us else "-",
                fmt(median(off.cpu_us)) if off and off.cpu_us else "-",
                fmt(median(server.cpu_us)),
                fmt(added), per_call,
            ))
    print("Throughput (requests/s, median of the rounds; ratios: median of the per-round ratios, 1.000 = no cost)")
    render(("app", "column: active sensor", "fn/req", "plain", "off", "on", "on/off", "off/plain"), throughput)
    if cpu:
        print()
        print("Server CPU per request (us, median of the rounds; user+system time of the server's processes)")
        render(("app", "column: active sensor", "fn/req", "plain", "off", "on", "on-off", "us/call"), cpu)
        print("  on-off: median of the per-round differences. us/call: (on - 'on, 0 fn')/fn-per-request with")
        print("  --breakdown; without it '<=' (on - off)/fn, an upper bound that includes the per-request cost")
        print("  funcsight adds even with no function sensed (an SDK tracer provider, the rollup processor).")
    print("  Client and server share the machine's CPUs: compare columns, not absolute rates across machines.")


# -------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds: under 40 s")
    parser.add_argument("--rounds", type=int, help="measured rounds per configuration (default 9; quick 5)")
    parser.add_argument("--requests", type=int, help="requests per configuration per round (default 800; quick 150)")
    parser.add_argument("--warmup", type=int, help="warm-up requests per server (default 300; quick 60)")
    parser.add_argument("--threads", type=int, default=2, help="client threads (default 2)")
    parser.add_argument("--apps", default="flask,fastapi", help="comma-separated: flask, fastapi, httpbin "
                                                               "(default flask,fastapi)")
    parser.add_argument("--framework", action="store_true",
                        help="add an 'on +fw' column sensing the framework's modules too (always for httpbin)")
    parser.add_argument("--implementations", default=None,
                        help="funcsight sensors for ON columns, comma-separated: auto, c, python "
                             "(default: c,python when the C sensor is built, else auto)")
    parser.add_argument("--flask-server", choices=("auto", "gunicorn", "werkzeug"), default="auto",
                        help="Flask under gunicorn (auto: when installed) or werkzeug threaded")
    parser.add_argument("--no-plain", action="store_true", help="skip the no-OpenTelemetry column")
    parser.add_argument("--breakdown", action="store_true",
                        help="add a column with funcsight on but sensing no function (FUNCSIGHT_INCLUDE matches "
                             "nothing): separates the per-request cost from the per-call cost")
    parser.add_argument("--budget", type=float, help="seconds after which remaining rounds are skipped "
                                                     "(default 160; quick 32; shared equally by the apps)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (apps, logs, stores)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (5 if quick else 9)
    args.requests = args.requests or (150 if quick else 800)
    args.warmup = args.warmup if args.warmup is not None else (60 if quick else 300)
    args.budget = args.budget or (32.0 if quick else 160.0)
    for name in ("rounds", "requests", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.implementations:
        bad = {i.strip() for i in args.implementations.split(",") if i.strip()} - {"auto", "c", "python"}
        if bad:
            parser.error(f"unknown implementation(s): {', '.join(sorted(bad))} (auto, c, python)")
    args.apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    unknown = set(args.apps) - {"flask", "fastapi", "httpbin"}
    if unknown:
        parser.error(f"unknown app(s): {', '.join(sorted(unknown))}")
    return args


def run_app(servers: list[Server], launcher: str, args: argparse.Namespace, budget_end: float,
            failures: list[str]) -> int:
    """Start the app's servers, warm up, measure the rounds, stop, check the stores; rounds done.
    A round that would end after ``budget_end`` (judged by the previous one) is not started."""
    app = servers[0].app
    label_width = max(len(s.variant.label) for s in servers)
    done = 0
    try:
        for server in servers:
            os.makedirs(os.path.dirname(server.workdir), exist_ok=True)
            start(server, launcher)
        started = time.monotonic()
        deadline = started + START_TIMEOUT_S
        for server in servers:
            wait_ready(server, deadline)
            wrong = expected_meta_ok(server)
            print(f"  {server.variant.label:<{label_width}} pid {server.process.pid}: Python {server.meta.get('python')}, "
                  f"{describe_meta(server.meta)}" + (f"  <-- WRONG: {wrong}" if wrong else ""))
            if wrong:
                failures.append(f"{app.name} [{server.variant.label}]: {wrong}")
                log_tail = tail(server.log_path, 8).strip()
                if server.variant.funcsight and log_tail:
                    print("    " + log_tail.replace("\n", "\n    "))
        print(f"  all {len(servers)} servers answered {time.monotonic() - started:.1f} s after start; warming up")
        for server in servers:
            drive(server, args.warmup, args.threads, first=0, record=False)
        print("  rounds (requests/s, then server CPU us per request):")
        first = args.warmup
        last_round_s = 0.0
        for round_index in range(args.rounds):
            if done > 0 and time.monotonic() + last_round_s > budget_end:
                print(f"  time budget reached: {args.rounds - done} round(s) skipped (--budget, --requests)")
                break
            round_started = time.monotonic()
            shift = round_index % len(servers)
            for server in servers[shift:] + servers[:shift]:  # rotating order cancels drift
                drive(server, args.requests, args.threads, first)
            first += args.requests
            done += 1
            last_round_s = time.monotonic() - round_started
            print(f"  {round_index + 1}/{args.rounds}: " + "  ".join(
                f"{s.variant.label} {s.rates[-1]:.0f}/s" + (f" {s.cpu_us[-1]:.0f}us" if s.cpu_us else "") for s in servers))
    finally:
        stop_all(servers)
    for server in servers:
        if server.failed:
            failures.append(f"{app.name} [{server.variant.label}]: {server.failed} failed requests")
            print(f"  {server.variant.label}: {server.failed} requests failed; log {server.log_path}")
        if server.variant.funcsight:
            ok, text = store_check(server)
            print(f"  {server.variant.label} {text}")
            if not ok:
                failures.append(f"{app.name} [{server.variant.label}]: {text}")
    return done


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows up when piped too
    launcher = tool("opentelemetry-instrument")
    if not launcher:
        print("macro: opentelemetry-instrument is not installed in this venv (pip install opentelemetry-instrumentation)",
              file=sys.stderr)
        return 2
    has_c = c_sensor_available()
    implementations = ([i.strip() for i in args.implementations.split(",") if i.strip()] if args.implementations
                       else (["c", "python"] if has_c else ["auto"]))
    apps, problems = build_apps(args.apps, args.flask_server)
    variants = build_variants(implementations, not args.no_plain, args.breakdown)
    framework_variants = build_variants(implementations, not args.no_plain, args.breakdown, framework=True)

    print(f"funcsight macro benchmark{' (quick)' if args.quick else ''}: Python {platform.python_version()} "
          f"({platform.python_implementation()}, {sys.prefix}), {os.cpu_count()} CPUs")
    print(f"  funcsight {version_of('funcsight')}, C sensor {'built' if has_c else 'not built'}; "
          f"opentelemetry-instrumentation {version_of('opentelemetry-instrumentation')}")
    print(f"  {args.rounds} rounds x {args.requests} requests per configuration, {args.warmup} warm-up, "
          f"{args.threads} client threads, 127.0.0.1; columns: {', '.join(v.label for v in variants)}")
    for problem in problems:
        print(f"  note: {problem}")

    scratch = tempfile.mkdtemp(prefix="funcsight-macro-")
    failures: list[str] = []
    results: list[tuple[App, list[Server]]] = []
    rounds_done: dict[str, int] = {}
    try:
        for index, app in enumerate(apps):
            now = time.monotonic()  # each app gets an equal share of the budget still left
            budget_end = now + max(0.0, began + args.budget - now) / (len(apps) - index)
            servers = [
                Server(app, variant, os.path.join(scratch, f"{app.name}-{variant.key}", app.directory), free_port(),
                       os.path.join(scratch, f"{app.name}-{variant.key}", "funcsight.db"),
                       os.path.join(scratch, f"{app.name}-{variant.key}", "server.log"))
                for variant in (framework_variants if args.framework or app.name == "httpbin" else variants)
            ]
            print(f"\n[{app.name}] {app.server}")
            try:
                rounds_done[app.name] = run_app(servers, launcher, args, budget_end, failures)
            except BenchError as err:
                print(f"  {err}")
                failures.append(f"{app.name}: {str(err).splitlines()[0]}")
                continue
            results.append((app, servers))
    except KeyboardInterrupt:
        print("macro: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"\nscratch directory kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    if results:
        print(f"\nResults: Python {platform.python_version()}, median of "
              + ", ".join(f"{app.name} {rounds_done.get(app.name, 0)}" for app, _ in results) + " rounds")
        for app, _ in results:
            print(f"  {app.name}: {app.server}")
        print()
        print_results(results)
    print(f"\nwall time {time.monotonic() - began:.1f} s")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
