#!/usr/bin/env python3
"""Start-up cost: seconds from launching httpbin under gunicorn to its first served request, funcsight on vs off.

Both columns run ``opentelemetry-instrument gunicorn -w 1 app:app`` from a scratch copy of
``apps/httpbinbench`` with the same OpenTelemetry SDK (``BENCH_OTEL_SDK``: an SDK tracer provider in
``off`` too) and the Flask instrumentation; ``off`` sets ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=funcsight``,
``on`` senses httpbin (``FUNCSIGHT_INCLUDE=+httpbin``; ``--framework`` adds ``+flask,+werkzeug``).
From the launch, the script sends ``GET /get`` every 5 ms until one answers 200; the time of that
answer is the start-up. The columns alternate, ``--repeats`` times each; the report gives medians
and the median of the paired differences, of the wall clock and (on Linux) of the CPU time the
master and the worker had used by then (``/proc/<pid>/stat``: the machine's other load moves it
less than the wall clock).

``--importtime`` runs each column once more with ``PYTHONPROFILEIMPORTTIME=1`` (``-X importtime``)
and sums the imports' self time by top-level package (master and worker both import: gunicorn
loads the app in the worker): what the extra start-up is spent importing. Time not spent importing
(funcsight's own set-up: the provider, the sensor's classification of functions) is the rest.

    /tmp/venv/bin/python bench/startup.py --importtime       # about a minute
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

from macro import copy_bench_app, free_port, session_cpu_s, tool

POLL_S = 0.005
TIMEOUT_S = 60.0


def launch(workdir: str, on: bool, framework: bool, importtime: bool, log_path: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FUNCSIGHT_"))}
    env.update(PYTHONPATH=workdir, OTEL_SERVICE_NAME="httpbin", OTEL_TRACES_EXPORTER="none",
               OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none", BENCH_OTEL_SDK="1",
               FUNCSIGHT_DB=os.path.join(workdir, "funcsight.db"))
    if on:
        env["FUNCSIGHT_INCLUDE"] = "+httpbin" + (",+flask,+werkzeug" if framework else "")
    else:
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "funcsight"
    if importtime:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
    command = [tool("opentelemetry-instrument"), tool("gunicorn"), "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{port}",
               "--graceful-timeout", "5", "--log-level", "warning", "app:app"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return process, port


def first_request_s(process: subprocess.Popen, port: int, launched: float) -> tuple[float, float | None]:
    """Seconds from the launch to the first 200, and the server's CPU seconds by then."""
    deadline = launched + TIMEOUT_S
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"startup.py: the server exited with status {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/get")
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                return time.perf_counter() - launched, session_cpu_s(process.pid)  # its own session: master and worker
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(POLL_S)
    raise SystemExit(f"startup.py: no answer within {TIMEOUT_S:.0f} s")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: only what this script started
        process.wait()


def one_run(base: str, on: bool, framework: bool, importtime: bool, index: int) -> tuple[float, float | None, str]:
    workdir = os.path.join(base, f"{'on' if on else 'off'}-{index}")
    copy_bench_app("httpbinbench", workdir)
    log_path = os.path.join(workdir, "server.log")
    launched = time.perf_counter()
    process, port = launch(workdir, on, framework, importtime, log_path)
    try:
        seconds, cpu_s = first_request_s(process, port, launched)
    finally:
        stop(process)
    return seconds, cpu_s, log_path


_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def import_self_us(log_path: str) -> dict[str, int]:
    """Self import time (us) per top-level package, all processes of the log summed."""
    totals: dict[str, int] = defaultdict(int)
    with open(log_path, errors="replace") as handle:
        for line in handle:
            match = _IMPORT_LINE.search(line)
            if match:
                totals[match.group(4).split(".")[0]] += int(match.group(1))
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--framework", action="store_true", help="on senses flask and werkzeug too")
    parser.add_argument("--importtime", action="store_true", help="where the extra start-up goes (import times)")
    args = parser.parse_args()
    for name in ("opentelemetry-instrument", "gunicorn"):
        if tool(name) is None:
            print(f"startup.py: {name} is not installed in this venv", file=sys.stderr)
            return 2
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float | None]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="funcsight-startup-") as base:
        for index in range(args.repeats):
            for on in ((True, False) if index % 2 else (False, True)):
                seconds, cpu_s, _ = one_run(base, on, args.framework, False, index)
                times[on].append(seconds)
                cpu[on].append(cpu_s)
            print(f"  {index + 1}/{args.repeats}: off {times[False][-1]:.3f} s, on {times[True][-1]:.3f} s", flush=True)
        on_s, off_s = statistics.median(times[True]), statistics.median(times[False])
        paired = statistics.median(a - b for a, b in zip(times[True], times[False]))
        print(f"\nPython {sys.version.split()[0]}, httpbin on gunicorn (1 sync worker), launch -> first 200 on /get, "
              f"median of {args.repeats}:")
        print(f"  off {off_s:.3f} s   on {on_s:.3f} s   on - off {paired:+.3f} s (median of paired differences)"
              f"   budget +0.150 s: {'OK' if paired <= 0.15 else 'OVER'}")
        if None not in cpu[True] + cpu[False]:
            # Less moved by other load on the machine than the wall clock (waiting for a core is not counted).
            cpu_paired = statistics.median(a - b for a, b in zip(cpu[True], cpu[False]))
            print(f"  CPU of master + worker by the first answer (/proc, 10 ms ticks): off {statistics.median(cpu[False]):.2f} s"
                  f"   on {statistics.median(cpu[True]):.2f} s   on - off {cpu_paired:+.2f} s (median of paired differences)")
        if args.importtime:
            runs = {True: [], False: []}
            for index in range(3):  # one run moves by tens of ms per package on a shared machine: medians of 3
                for on in (True, False):
                    runs[on].append(import_self_us(one_run(base, on, args.framework, True, 100 + index)[2]))
            median_of = lambda dicts, pkg: statistics.median(d.get(pkg, 0) for d in dicts)  # noqa: E731
            packages = set().union(*runs[True], *runs[False])
            on_us = {pkg: median_of(runs[True], pkg) for pkg in packages}
            off_us = {pkg: median_of(runs[False], pkg) for pkg in packages}
            extra = sum(on_us.values()) - sum(off_us.values())
            print(f"\n  imports (-X importtime, self time summed over master and worker, per package the median of 3 "
                  f"runs): off {sum(off_us.values()) / 1e6:.3f} s, on {sum(on_us.values()) / 1e6:.3f} s, "
                  f"on - off {extra / 1e6:+.3f} s")
            print("  top-level packages by extra import time (on - off):")
            deltas = sorted(((pkg, on_us[pkg] - off_us[pkg]) for pkg in packages), key=lambda kv: -kv[1])
            for pkg, delta in deltas[:10]:
                only = " (imported only with funcsight on)" if not any(pkg in d for d in runs[False]) else ""
                print(f"    {pkg:<36} {delta / 1e3:>+9.1f} ms{only}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
