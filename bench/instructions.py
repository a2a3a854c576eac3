#!/usr/bin/env python3
"""Instructions per request, funcsight on vs off: the macro comparison without the machine's noise.

On a shared VM, requests/s and even CPU time per request move by 10-15 % from run to run, so a 3 %
difference cannot be seen in them (``macro.py`` reports them anyway). The number of instructions
the CPU executes per request does not move: this script counts them with valgrind's callgrind for
the same two apps as ``macro.py`` (``apps/flaskbench``, ``apps/fastapibench``), driven in-process
(Flask's test client; the ASGI app called directly) so only the app, the framework, OpenTelemetry
and funcsight run, never a socket or a client.

Columns, each in its own process from its own scratch copy of the app (the app's own code):

* ``off``      - an SDK ``TracerProvider`` and the framework's OTel instrumentation; funcsight not loaded;
* ``on, 0 fn`` - funcsight on, ``FUNCSIGHT_INCLUDE`` matching no module: its per-request cost alone;
* ``on, no rollup`` - funcsight on with the C sensor, its rollup span processor taken out of the
  tracer provider: the sensing alone (calls then go to the background table);
* ``on (c)``, ``on (python)`` - funcsight on with that sensor.

Each column runs twice, with N and 3N measured requests after a warm-up (instrumentation switched
on only around them with ``callgrind_control``); per request = difference / 2N, which cancels the
start-up. Instructions are not time (a cache miss costs more than an add), but they are what a
change to funcsight adds to every request, exactly, and the same in every run.

    /tmp/venvs/py312/bin/python bench/instructions.py          # about 3 minutes
    /tmp/venvs/py312/bin/python bench/instructions.py --requests 50 --apps flask

Each funcsight column reports the sensor that ran and the sensed calls per request it recorded
(45 for Flask, 42 for FastAPI); exit status 1 when a column did not run what it claims, 2 without
``valgrind`` (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

APPS = {"flask": "flaskbench", "fastapi": "fastapibench", "httpbin": "httpbinbench"}
NO_MODULE = "funcsight_instructions_no_such_module"
# Sensed beyond the app's directory: httpbin's code is in site-packages ("the app"); the framework
# column adds the framework's own modules ("app + framework").
APP_INCLUDE = {"httpbin": "+httpbin"}
FRAMEWORK_INCLUDE = {"flask": "+flask,+werkzeug", "httpbin": "+flask,+werkzeug", "fastapi": "+fastapi,+starlette"}
COLUMNS = [  # key, label, env
    ("off", "off", None),
    ("on0", "on, 0 fn", {"FUNCSIGHT_INCLUDE": NO_MODULE}),
    ("norollup", "on, no rollup", {"FUNCSIGHT_IMPLEMENTATION": "c", "BENCH_WITHOUT_ROLLUP": "1"}),
    ("c", "on (c)", {"FUNCSIGHT_IMPLEMENTATION": "c"}),
    ("fw", "on (c) +fw", {"FUNCSIGHT_IMPLEMENTATION": "c", "BENCH_FRAMEWORK": "1"}),
    ("python", "on (python)", {"FUNCSIGHT_IMPLEMENTATION": "python"}),
]


def include_for(app: str, env_extra: dict | None) -> dict:
    """The column's environment with the app's FUNCSIGHT_INCLUDE (none for ``off`` and ``on, 0 fn``)."""
    env = dict(env_extra or {})
    if env_extra is None or "FUNCSIGHT_INCLUDE" in env:
        return env
    patterns = [p for p in (APP_INCLUDE.get(app), FRAMEWORK_INCLUDE[app] if env.pop("BENCH_FRAMEWORK", None) else None) if p]
    if patterns:
        env["FUNCSIGHT_INCLUDE"] = ",".join(patterns)
    return env


# ----------------------------------------------------------------------------- child (measured)
def child(app: str, funcsight: bool, warmup: int, requests: int) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    if funcsight:
        from funcsight.agent import FuncsightInstrumentor

        FuncsightInstrumentor().instrument()
        # A process's first window goes out about a second after its first request (the export
        # pipeline's first_window_s). Under valgrind that second falls inside the warm-up and the
        # export runs for tens of seconds beside the requests, into the N or the 3N run at random
        # (FastAPI on (c) read +24k and +55k instructions per request in two runs). Keep every export
        # out of the count, as before the early first window: the pipeline sees no traffic, so its
        # first window waits the whole interval (FUNCSIGHT_EXPORT_INTERVAL=3600 s here). A benchmark
        # knob, like BENCH_WITHOUT_ROLLUP below.
        FuncsightInstrumentor.running.pipeline.has_traffic = lambda: False
        if os.environ.get("BENCH_WITHOUT_ROLLUP"):  # SDK internals: a benchmark knob, not a product one
            active = trace.get_tracer_provider()._active_span_processor
            active._span_processors = tuple(
                p for p in active._span_processors if p is not FuncsightInstrumentor.running.processor
            )
    import app as module  # the scratch copy, on sys.path[0]

    path = getattr(module, "BENCH_PATH", "/order/{i}")
    drive = _asgi_driver(module.app) if app == "fastapi" else _wsgi_driver(module.app, path)
    drive(warmup, 0)
    _callgrind("on")
    drive(requests, warmup)
    _callgrind("off")
    if funcsight:  # proof of what ran: sensed calls per request, from the open window
        running = FuncsightInstrumentor.running
        window = running.windows.drain()
        requests_seen = sum(stats[0] for stats in window.routes.values())
        if requests_seen:
            calls = sum(stats[0] for (fid, route), stats in window.functions.items() if route in window.routes)
        else:  # no rollup: every call is a background call, still in the sink's table
            calls = sum(stats[0] for stats in running.sink.background.stats.values())
            requests_seen = warmup + requests
        print(f"SENSED {running.sensor.implementation} {calls / max(requests_seen, 1):.2f} {requests_seen}")


def _callgrind(state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], capture_output=True, check=False)


def _wsgi_driver(app, path: str):
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(app)
    client = app.test_client()

    def drive(n: int, start: int) -> None:
        for i in range(start, start + n):
            response = client.get(path.format(i=i % 997))
            assert response.status_code == 200, response.status_code

    return drive


def _asgi_driver(app):
    import asyncio

    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app)

    async def one(i: int) -> None:
        path = f"/order/{i % 997}"
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 80)}
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent[0]

    async def run(n: int, start: int) -> None:
        for i in range(start, start + n):
            await one(i)

    return lambda n, start: asyncio.run(run(n, start))


# ----------------------------------------------------------------------------------- parent
def measure(python: str, workdir: str, app: str, env_extra: dict | None, warmup: int, requests: int,
            out_file: str = "/dev/null") -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FUNCSIGHT_"))}
    env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
               FUNCSIGHT_DB=os.path.join(workdir, "funcsight.db"), FUNCSIGHT_EXPORT_INTERVAL="3600",
               PYTHONPATH=workdir, FUNCSIGHT_APP_DIR=workdir, PYTHONHASHSEED="0", **include_for(app, env_extra))
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}",
               python, os.path.abspath(__file__), "--child", app, "1" if env_extra is not None else "0",
               str(warmup), str(requests)]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=1800)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"instructions.py: {app} run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    sensed = re.search(r"SENSED (\S+) ([\d.]+) (\d+)", result.stdout)
    return int(found.group(1)), (sensed.group(1), float(sensed.group(2))) if sensed else None


def scratch_copy(base: str, app: str, key: str) -> str:
    from macro import copy_bench_app  # bench/ is this script's directory, so on sys.path

    target = os.path.join(base, f"{app}-{key}")
    copy_bench_app(APPS[app], target)
    return target


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        app, funcsight, warmup, requests = sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5])
        child(app, funcsight, warmup, requests)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="N: measured requests of the short run (the long one has 3N)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--apps", default="flask,fastapi")
    parser.add_argument("--columns", default="off,on0,norollup,c,python")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("instructions.py: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    apps = [a for a in args.apps.split(",") if a]
    columns = [c for c in COLUMNS if c[0] in args.columns.split(",")]
    print(f"Python {sys.version.split()[0]}; instructions per request (callgrind), "
          f"({args.requests * 3} - {args.requests} requests) / {args.requests * 2}")
    rows, failures = [], []
    with tempfile.TemporaryDirectory(prefix="funcsight-instr-") as base:
        for app in apps:
            per_request = {}
            for key, label, env_extra in columns:
                workdir = scratch_copy(base, app, key)
                short, _ = measure(sys.executable, workdir, app, env_extra, args.warmup, args.requests)
                long, sensed = measure(sys.executable, workdir, app, env_extra, args.warmup, 3 * args.requests)
                per_request[key] = (long - short) / (2 * args.requests)
                proof = f"  sensor {sensed[0]}, {sensed[1]:.2f} sensed calls/request" if sensed else ""
                print(f"  {app:8} {label:12} {per_request[key]:>12,.0f}{proof}", flush=True)
                # 3.11 names the front end too ("c-rewrite"): the sensor is the part before the dash.
                expected = {"c": "c", "python": "python", "norollup": "c", "fw": "c"}.get(key)
                if expected and (sensed is None or sensed[0].split("-")[0] != expected or sensed[1] == 0):
                    failures.append(f"{app} {label}: the {expected} sensor did not sense the app ({sensed})")
                if key == "on0" and sensed is not None and sensed[1] != 0:
                    failures.append(f"{app} {label}: functions were sensed ({sensed})")
            rows.append((app, per_request))
    print("\n  app      column          instr/request   vs off")
    for app, per_request in rows:
        off = per_request.get("off")
        for key, label, _ in columns:
            ratio = f"{per_request[key] / off:.3f}" if off else "-"
            extra = f" ({per_request[key] - off:+,.0f})" if off and key != "off" else ""
            print(f"  {app:8} {label:12} {per_request[key]:>15,.0f}   {ratio}{extra}")
    for failure in failures:
        print(f"WRONG: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
