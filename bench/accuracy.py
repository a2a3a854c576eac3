#!/usr/bin/env python3
"""Accuracy of ``funcsight diff``: does the top finding for the affected route name the function a
release really changed, and does nothing else get named?

Seeded scenarios with a known ground truth, run for real: the shop in ``bench/apps/diagshop`` is
copied to a scratch directory, release 2 of a scenario replaces one marked line (``# PLANT:<name>``)
in the copy, and each release is served under ``opentelemetry-instrument`` (funcsight's embedded
store, export every 0.5 s) and driven over 127.0.0.1 with bounded traffic (192 requests per route
spread over 20 s by default: about 40 export windows a side, one at a time except the lock route's:
four at once). Then ``funcsight.analysis.compare.diff`` judges release 1 -> release 2. How much
traffic a +20 % change of a CPU-bound route needs on a loaded 2-core machine (its per-window means
move by +-20-30 % between two same-code runs there): 48 requests over 5 s (about 10 windows) found
it in about half of the runs, 96 over 10 s in 12 of 24 kept runs, 192 over 20 s in 4 of 4 (3 of 4
with --burst). A per-window load index (each window's figures divided by how slowly unchanged code
ran in it) was tried and did not help on these runs: a burst hits some requests of a 0.5 s window
and not others, which no window-level gauge sees; more windows do. The fast test subset
(tests/test_diagnosis_accuracy.py) keeps 48 over 5 s for the scenarios whose change is several
times that.

Scenarios (route affected -> planted function, kind):

* ``n_plus_one``       /orders   ``diag.orders.order_total`` fan_out: calls ``pricing.lookup`` once per
                                 item; the shared ``storage.fetch`` two levels below runs 6x;
* ``library_slowdown`` /page     ``diag.views.page_view`` self_time: +~20 % of the route's time (json
                                 encodes half the rows again: +0.7 ms on ~4 ms when the machine is
                                 quiet; a third of them, as before, was +~11 %, on the 10 % margin),
                                 spent in json (unsensed library code) called by the view;
* ``retries``          /search   ``diag.search.find`` fan_out: retries ``query_index`` up to 3x;
* ``new_exception``    /checkout ``diag.coupons.validate`` new_error_type: raises CouponExpired, which
                                 ``coupons.apply`` catches (the request succeeds);
* ``lock_contention``  /counter  ``diag.counter.bump`` self_time: holds the lock while persisting;
* ``thread_pool``      /batch    ``diag.work.crunch`` fan_out: submits twice the chunks (8, not 4) to its
                                 4-thread pool and waits for them; work submitted to a pool belongs to
                                 the submitting request and hangs under the submitting call
                                 (``agent/threads.py``), so ``work.chunk`` runs 8 times per call of
                                 ``crunch`` instead of 4: the caller's fan-out (its wait grows too, as
                                 its own time, a second finding on the same function);
* ``same_code``        the same code twice: nothing may be reported;
* ``same_code_busy``   the same code twice, a CPU-burning process beside the second run.

``--burst`` adds load that varies *within* a run to every scenario: one process spinning on a CPU
for 1 s, idle for 1 s, and so on (its phase set by the seed; it stops by itself after 120 s), beside
both releases; the table is headed so.

Every other route of the shop is untouched in every scenario; any finding there is false, as is a
``faster`` verdict or an improvement on the affected route (every plant makes it worse).

    python bench/accuracy.py                 # all scenarios, 3 seeds each: 20-30 minutes on 2 busy cores
    python bench/accuracy.py --seeds 1 --scenarios n_plus_one,same_code_busy
    python bench/accuracy.py --seeds 2 --keep /tmp/stores   # keep each run's store to re-judge it later
    python bench/accuracy.py --burst         # a CPU burner 1 s on / 1 s off beside both releases of every run

Run it with the interpreter of the venv under test (its ``opentelemetry-instrument`` is used).
Exit status 0 when every goal is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent / "apps" / "diagshop"
BIN_DIR = Path(sys.executable).parent
EXPORT_INTERVAL_S = "0.5"
CLIENTS = 4
CONCURRENT_ROUTES = ("/counter/<int:n>",)

ROUTES = {
    "/orders/<int:user>": lambda n: f"/orders/{n}",
    "/page/<int:page>": lambda n: f"/page/{n % 50}",
    "/search/<term>": lambda n: f"/search/t{n % 17}",
    "/checkout/<int:user>": lambda n: f"/checkout/{n}",
    "/counter/<int:n>": lambda n: f"/counter/{n}",
    "/batch/<int:n>": lambda n: f"/batch/{n}",
    "/catalog/<int:page>": lambda n: f"/catalog/{n}",
    "/profile/<int:user>": lambda n: f"/profile/{n}",
}


@dataclass
class Scenario:
    name: str
    route: str | None  # the affected route (None: same code)
    function: str | None  # the planted function the top finding must name
    kind: str | None
    edits: list[tuple[str, str, str]] = field(default_factory=list)  # (file, old text, new text)
    burner: bool = False


def _line(marker: str, new: str) -> tuple[str, str]:
    return marker, new


SCENARIOS = [
    Scenario("n_plus_one", "/orders/<int:user>", "diag.orders.order_total", "fan_out", [(
        "orders.py", "    prices = pricing.lookup(skus)  # PLANT:n_plus_one",
        "    prices = {sku: pricing.lookup([sku])[sku] for sku in skus}  # one lookup per item")]),
    Scenario("library_slowdown", "/page/<int:page>", "diag.views.page_view", "self_time", [(
        "views.py", '    data = json.dumps({"rows": rows, "html": body}, sort_keys=True, indent=1)  # PLANT:library_slowdown',
        '    data = json.dumps({"rows": rows, "html": body, "again": rows[: len(rows) // 2]}, sort_keys=True, indent=1)')]),
    Scenario("retries", "/search/<term>", "diag.search.find", "fan_out", [(
        "search.py", "    wanted = 2  # PLANT:retries", "    wanted = 3  # the index never serves it: 3 attempts")]),
    Scenario("new_exception", "/checkout/<int:user>", "diag.coupons.validate", "new_error_type", [(
        "coupons.py", '    expires = "2025-01-01"  # PLANT:new_exception', '    expires = "2024-01-01"  # every coupon has expired')]),
    Scenario("lock_contention", "/counter/<int:n>", "diag.counter.bump", "self_time", [(
        "counter.py", '        value = _state["visits"]\n    persist(value)  # PLANT:lock_contention',
        '        value = _state["visits"]\n        persist(value)  # now under the lock')]),
    Scenario("thread_pool", "/batch/<int:n>", "diag.work.crunch", "fan_out", [(
        "work.py", "    futures = [_pool.submit(chunk, n + i) for i in range(4)]  # PLANT:thread_pool",
        "    futures = [_pool.submit(chunk, n + i) for i in range(8)]  # twice the chunks, same 4 workers")]),
    Scenario("same_code", None, None, None),
    Scenario("same_code_busy", None, None, None, burner=True),
]
BY_NAME = {s.name: s for s in SCENARIOS}


# -------------------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(db: Path, version: str, app_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FUNCSIGHT_")) and k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(FUNCSIGHT_DB=str(db), FUNCSIGHT_EXPORT_INTERVAL=EXPORT_INTERVAL_S, OTEL_TRACES_EXPORTER="none",
               OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none", OTEL_SERVICE_NAME="diagshop",
               OTEL_RESOURCE_ATTRIBUTES=f"service.version={version}", PYTHONPATH=str(app_dir))
    return env


def deploy(workdir: Path, edits: list[tuple[str, str, str]]) -> Path:
    """A scratch copy of the shop with a release's edits applied (each must match exactly once)."""
    app_dir = workdir / "diagshop"
    shutil.copytree(APP_DIR, app_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name, old, new in edits:
        path = app_dir / "diag" / name
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"accuracy: the edit of {name} does not match exactly once: {old!r}")
        path.write_text(text.replace(old, new))
    return app_dir


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wait_port(port: int, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the app did not listen in time")


def drive(port: int, seed: int, per_route: int, spread_s: float) -> None:
    """``per_route`` GETs of every route, in an order shuffled by ``seed``, spread evenly over
    ``spread_s`` seconds, one at a time, except the lock route's, which come CLIENTS at once (so a
    lock can be contended; concurrent CPU-bound requests elsewhere would only add GIL noise)."""
    rng = random.Random(seed)
    batches = []
    for route in ROUTES:
        size = CLIENTS if route in CONCURRENT_ROUTES else 1
        batches += [[ROUTES[route](rng.randrange(10_000)) for _ in range(size)] for _ in range(per_route // size)]
    rng.shuffle(batches)
    failures: list[str] = []
    gap, started = spread_s / len(batches), time.monotonic()

    def send(path: str) -> None:
        status = get(port, path)
        if status != 200:
            failures.append(f"GET {path} -> {status}")

    for index, batch in enumerate(batches):
        delay = started + index * gap - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if len(batch) == 1:
            send(batch[0])
            continue
        threads = [threading.Thread(target=send, args=(path,)) for path in batch]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    if failures:
        raise RuntimeError(f"{len(failures)} failed requests, e.g. {failures[:3]}")


def run_release(workdir: Path, db: Path, version: str, edits, seed: int, per_route: int, spread_s: float) -> None:
    app_dir = deploy(workdir, edits)
    port = free_port()
    log = open(workdir / "app.log", "wb")
    process = subprocess.Popen([str(BIN_DIR / "opentelemetry-instrument"), sys.executable, "serve.py", str(port)],
                               cwd=app_dir, env=app_env(db, version, app_dir), stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    try:
        wait_port(port, process)
        drive(port, seed, per_route, spread_s)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log.close()
    if "Traceback" in (workdir / "app.log").read_text(errors="replace"):
        raise RuntimeError(f"the app logged a traceback: {workdir / 'app.log'}")


def start_burner() -> subprocess.Popen:
    """One process spinning on a CPU (the machine has two)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)


BURST_PERIOD_S = 2.0  # on for half of it, off for the other half
BURST_LIMIT_S = 120.0  # the burner stops by itself after this, whatever happens to its parent

BURST_CODE = """
import sys, time
period, phase, until = float(sys.argv[1]), float(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while time.monotonic() < until:
    if ((time.monotonic() + phase) % period) < period / 2:
        pass  # on: spin
    else:
        time.sleep(period / 2 - (((time.monotonic() + phase) % period) - period / 2))
"""


def start_burst(seed: int) -> subprocess.Popen:
    """A process spinning on a CPU for 1 s, then idle for 1 s, and so on (a neighbour's bursts: load
    that varies within a run); its phase follows the seed; it stops by itself after BURST_LIMIT_S."""
    phase = random.Random(seed).uniform(0, BURST_PERIOD_S)
    return subprocess.Popen([sys.executable, "-c", BURST_CODE, str(BURST_PERIOD_S), f"{phase:.3f}", str(BURST_LIMIT_S)],
                            stdin=subprocess.DEVNULL)


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(timeout=10)


# ------------------------------------------------------------------------------------- judgement
@dataclass
class Outcome:
    scenario: str
    seed: int
    top: str  # "function kind" of the affected route's first finding, or "-"
    right: bool | None  # None: same-code scenario
    false_findings: list[str]
    route_change_pct: float | None = None


def judge(db: Path, scenario: Scenario, seed: int) -> Outcome:
    from funcsight.analysis.compare import diff
    from funcsight.sources.store import StoreSource

    source = StoreSource(str(db))
    try:
        result = diff(source, "1", "2")
    finally:
        source.close()
    findings = result.regressions + result.improvements
    on_route = [f for f in result.regressions if f.route == scenario.route]  # every plant makes its route worse
    top = f"{on_route[0].function} {on_route[0].change}" if on_route else "-"
    right = None
    if scenario.route is not None:
        right = bool(on_route) and (on_route[0].function, on_route[0].change) == (scenario.function, scenario.kind)
    false = [f"{f.route} {f.function} {f.change} {f.share:+.0%}" for f in findings if f.route != scenario.route]
    false += [f"{f.route} {f.function} {f.change} improvement {f.share:+.0%}" for f in result.improvements if f.route == scenario.route]
    false += [f"{v.route} verdict {v.verdict}" for v in result.routes if v.route != scenario.route and v.verdict != "unchanged"]
    false += [f"{v.route} verdict faster" for v in result.routes if v.route == scenario.route and v.verdict == "faster"]
    verdict = next((v for v in result.routes if v.route == scenario.route), None)
    return Outcome(scenario.name, seed, top, right, false, None if verdict is None else verdict.relative_change)


def run_scenario(scenario: Scenario, seed: int, per_route: int, spread_s: float, keep: Path | None = None,
                 burst: bool = False) -> Outcome:
    """One run; ``burst``: a CPU burner switching on and off (1 s / 1 s) beside both releases."""
    with tempfile.TemporaryDirectory(prefix=f"accuracy-{scenario.name}-") as tmp:
        base = Path(tmp)
        db = base / "funcsight.db"
        burster = start_burst(seed) if burst else None
        try:
            run_release(base / "r1", db, "1", [], seed, per_route, spread_s)
        finally:
            stop(burster)
        burner = start_burner() if scenario.burner else None
        burster = start_burst(seed + 1) if burst else None
        try:
            run_release(base / "r2", db, "2", scenario.edits, seed + 1, per_route, spread_s)
        finally:
            stop(burner)
            stop(burster)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            tag = "-burst" if burst else ""
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{db}{suffix}").exists():
                    shutil.copy2(f"{db}{suffix}", keep / f"{scenario.name}{tag}-{seed}.db{suffix}")
        return judge(db, scenario, seed)


def table(outcomes: list[Outcome]) -> tuple[str, bool]:
    lines = [f"{'scenario':<18} {'runs':>4} {'top finding right':>18} {'false on untouched':>19} {'same-code findings':>19}  top finding (last run)"]
    ok = True
    for name in dict.fromkeys(o.scenario for o in outcomes):
        runs = [o for o in outcomes if o.scenario == name]
        planted = runs[0].right is not None
        right = sum(1 for o in runs if o.right)
        false = sum(len(o.false_findings) for o in runs)
        if planted:
            ok &= right >= 0.95 * len(runs) and false == 0
            cells = (f"{right}/{len(runs)}", str(false), "-")
        else:
            ok &= false == 0
            cells = ("-", "-", str(false))
        lines.append(f"{name:<18} {len(runs):>4} {cells[0]:>18} {cells[1]:>19} {cells[2]:>19}  {runs[-1].top}")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--scenarios", default=",".join(BY_NAME), help="comma-separated names (default: all)")
    parser.add_argument("--requests", type=int, default=192, help="requests per route and release (default 192)")
    parser.add_argument("--spread", type=float, default=20.0, help="seconds each release's traffic covers (default 20)")
    parser.add_argument("--keep", type=Path, help="copy each run's store into this directory")
    parser.add_argument("--burst", action="store_true",
                        help="a CPU burner switching on and off (1 s / 1 s) beside both releases of every run: load that "
                             "varies within a run")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every run's outcome")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the app and the burner on the way out
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(BY_NAME)}")
    if not (BIN_DIR / "opentelemetry-instrument").exists():
        print("accuracy: opentelemetry-instrument is not installed in this venv", file=sys.stderr)
        return 1
    started = time.monotonic()
    outcomes = []
    for name in names:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            outcome = run_scenario(BY_NAME[name], seed * 1000, args.requests, args.spread, args.keep, args.burst)
            outcomes.append(outcome)
            if args.verbose:
                change = "" if outcome.route_change_pct is None else f" route {outcome.route_change_pct:+.1%}"
                print(f"  {name} seed {seed}: top {outcome.top} right={outcome.right}{change} false={outcome.false_findings}", flush=True)
    text, ok = table(outcomes)
    if args.burst:
        print(f"with a CPU burner {BURST_PERIOD_S / 2:.0f} s on / {BURST_PERIOD_S / 2:.0f} s off beside both releases of every run (--burst):")
    print(text)
    print(f"({time.monotonic() - started:.0f} s; goal: top finding right in >= 95 % of runs, no false findings, "
          f"nothing in same-code runs: {'met' if ok else 'NOT met'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
