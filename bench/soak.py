"""Soak: funcsight in a real app for N minutes while its OTLP backend flaps (not run in CI).

    python bench/soak.py                 # 10 minutes (the issue's soak)
    python bench/soak.py --minutes 2     # a short one

On 127.0.0.1 only: the fault app of the tests (``tests/apps/fault_app``, Flask on werkzeug's
threaded server) runs under the real ``opentelemetry-instrument`` with both the embedded store and
OTLP (gRPC) to a real rotel collector. rotel is killed and restarted on the same port every
``--flap-s`` seconds (up, down, up, ...; up again at the end). Traffic is steady (``--rate``
requests/s: ``GET /work/<n>``, and every 10th a ``POST /secret`` whose handler raises and catches
an exception). RSS is sampled from /proc every 5 s.

At the end the app is stopped with SIGTERM and the report says: requests sent and answered (and
how many were not 200), RSS at start (after a 10 s warm-up), end and peak, requests recorded in
the store (exact count expected), and the cumulative ``funcsight.route.requests`` that the last
rotel instance received (metrics are cumulative: what was exported while the backend was down
arrives with the next export), and ``funcsight.dropped`` by reason.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from faultkit import FAULT_APP, RotelAt, latest, otlp_env, request, rss_kb, wait_until  # noqa: E402
from helpers import AppProcess, cli_json  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long traffic runs (default 10)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    parser.add_argument("--flap-s", type=float, default=60.0, help="seconds between backend up/down switches (default 60)")
    parser.add_argument("--interval", default="5", help="FUNCSIGHT_EXPORT_INTERVAL and the metric export interval, seconds (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (store, logs, rotel output)")
    args = parser.parse_args()

    launcher = Path(sys.executable).parent / "opentelemetry-instrument"
    workdir = Path(tempfile.mkdtemp(prefix="funcsight-soak-"))
    (workdir / "rotel").mkdir()
    rotel = RotelAt(workdir / "rotel")
    reason = rotel.start()
    if reason is not None:
        print(f"soak: cannot run rotel here: {reason}", file=sys.stderr)
        return 2
    db = workdir / "soak.db"
    env = otlp_env(
        f"http://127.0.0.1:{rotel.grpc_port}",
        FUNCSIGHT_DB=str(db),
        FUNCSIGHT_EXPORT_INTERVAL=args.interval,
        OTEL_METRIC_EXPORT_INTERVAL=str(int(float(args.interval) * 1000)),
        OTEL_BSP_SCHEDULE_DELAY="1000",
        FAULT_APP_SECRET="soak-secret",
    )
    app = AppProcess(launcher, FAULT_APP, workdir, env).start()
    pid = app.process.pid
    print(f"soak: app pid {pid} on 127.0.0.1:{app.port}, rotel gRPC 127.0.0.1:{rotel.grpc_port}, {args.minutes:g} min at "
          f"{args.rate:g} req/s, backend flapping every {args.flap_s:g} s; scratch {workdir}", flush=True)

    statuses: Counter = Counter()
    sent = {"work": 0, "secret": 0}
    stop = threading.Event()
    duration = args.minutes * 60

    def traffic() -> None:
        began = time.monotonic()
        i = 0
        while not stop.is_set() and time.monotonic() - began < duration:
            due = began + i / args.rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                if i % 10 == 9:
                    status, _ = request(app.port, "/secret", method="POST", body=b"token=soak", timeout=10)
                    sent["secret"] += 1
                else:
                    status, _ = request(app.port, f"/work/{i}", timeout=10)
                    sent["work"] += 1
            except (OSError, http.client.HTTPException) as err:
                status = type(err).__name__
                sent["work"] += 1
            statuses[status] += 1
            i += 1

    rss: list[tuple[float, int]] = []
    flaps: list[str] = []
    driver = threading.Thread(target=traffic, daemon=True)
    began = time.monotonic()
    driver.start()
    next_flap = began + args.flap_s
    backend_up = True
    rss_start = None
    while driver.is_alive():
        now = time.monotonic()
        value = rss_kb(pid)
        if value:
            rss.append((now - began, value))
        if rss_start is None and now - began >= 10:
            rss_start = value
        if now >= next_flap:
            if backend_up:
                rotel.kill()
                flaps.append(f"{now - began:.0f}s down")
            else:
                rotel.start()
                flaps.append(f"{now - began:.0f}s up")
            backend_up = not backend_up
            next_flap += args.flap_s
            print(f"soak: {now - began:6.0f} s  backend {'up' if backend_up else 'down'}  sent {sum(sent.values())}  RSS {value} kB", flush=True)
        driver.join(timeout=5)
    if not backend_up:
        rotel.start()
        flaps.append(f"{time.monotonic() - began:.0f}s up (final)")
    total_sent = sum(sent.values())
    # The backend is up: wait for an export that carries everything, then stop the app.
    seen = wait_until(lambda: sum(latest(rotel.parsed()[0], "funcsight.route.requests", "http.route").values()) >= total_sent,
                      4 * float(args.interval) + 30, every_s=1)
    rss_end = rss_kb(pid)
    app.process.send_signal(signal.SIGTERM)
    status = app.process.wait(timeout=60)
    time.sleep(1)
    points, _ = rotel.parsed()
    rotel.stop()

    routes = {row["route"]: row["requests"] for row in cli_json("routes", "--db", str(db))}
    received = latest(points, "funcsight.route.requests", "http.route")
    dropped = latest(points, "funcsight.dropped", "reason")
    log = app.log_path.read_text(errors="replace")
    report = {
        "minutes": args.minutes,
        "rate": args.rate,
        "flaps": flaps,
        "requests_sent": total_sent,
        "responses": {str(k): v for k, v in statuses.items()},
        "rss_kb": {"start": rss_start, "end": rss_end, "peak": max(v for _, v in rss), "min": min(v for _, v in rss)},
        "store_requests": routes,
        "store_total": sum(routes.values()),
        "rotel_cumulative_requests": {k[0]: v for k, v in received.items()},
        "rotel_total": int(sum(received.values())),
        "rotel_caught_up_before_stop": bool(seen),
        "dropped": {k[0]: v for k, v in dropped.items()},
        "app_exit_status": status,
        "tracebacks_in_app_log": log.count("Traceback"),
    }
    print(json.dumps(report, indent=2))
    print(f"\nsoak: sent {total_sent} requests ({statuses.get(200, 0)} answered 200); store recorded {report['store_total']}; "
          f"rotel received {report['rotel_total']} (cumulative); RSS {rss_start} kB after warm-up -> {rss_end} kB at the end "
          f"(peak {report['rss_kb']['peak']} kB)")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = report["store_total"] == total_sent == statuses.get(200, 0) and report["rotel_total"] == total_sent
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
