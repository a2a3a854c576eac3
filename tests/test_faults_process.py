"""Process-level faults: how the app stops (SIGTERM, SIGINT, normal exit, SIGKILL), forks
(multiprocessing fork/spawn, pools terminated, a fork while another thread is inside funcsight,
gunicorn ``--preload`` with workers recycled), concurrency (threads, thousands of asyncio tasks,
cancellation, generators closed early, exceptions thrown into coroutines, recursion to the limit,
functions made at runtime) and cardinality attacks (10^5 routes, 10^5 functions).

Real processes throughout; every wait is bounded, so a deadlock fails the test instead of hanging.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from funcsight.agent.lifecycle import SIGTERM_FLUSH_BUDGET_S

from faultkit import (
    FAULT_APP,
    LOGIC,
    VIEWS,
    WORK_ROUTE,
    app_calls,
    copy_app,
    integrity,
    last_json,
    otlp_env,
    quit_calls,
    request,
    run_script,
    stop_timed,
    store_calls_by_pid,
)
from helpers import (
    BACKGROUND,
    START_TIMEOUT_S,
    AppProcess,
    analysis_rows,
    calls_map,
    cli_json,
    diff_maps,
    functions_by_key,
    run_cli,
    wait_for_port,
)
from test_sensor import _require

EXIT_ONLY = "3600"  # no periodic window during a test: only the flush on the way out counts


def store_env(db: Path, interval: str = EXIT_ONLY, **extra: str) -> dict[str, str]:
    return otlp_env(None, FUNCSIGHT_DB=str(db), FUNCSIGHT_EXPORT_INTERVAL=interval, **extra)


def exact(db: Path, expected: dict) -> None:
    actual = calls_map(cli_json("functions", "--db", str(db)))
    for key in quit_calls():  # see test_clean_stop_flushes_the_last_window
        actual.pop(key, None)
    assert actual == expected, "store differs:\n" + diff_maps(expected, actual)


def concurrent_traffic(port: int, n: int, threads: int = 8) -> int:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        statuses = list(pool.map(lambda i: request(port, f"/work/{i}")[0], range(n)))
    assert statuses == [200] * n, Counter(statuses)
    return n


# ------------------------------------------------------------------------------------- shutdown
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "normal-exit"])
def test_clean_stop_flushes_the_last_window(start_app, tmp_path, how):
    """With no periodic window at all, everything the store holds comes from the flush on the way
    out: it must hold every request, exactly."""
    db = tmp_path / "funcsight.db"
    app = start_app(FAULT_APP, store_env(db))
    sent = concurrent_traffic(app.port, 300)
    expected = app_calls(sent)
    if how == "SIGTERM":
        status, took = stop_timed(app, signal.SIGTERM)
        # funcsight flushes, then the process ends by SIGTERM's default action, as it would without
        # funcsight: serve.main() never returns, so it is no completed call.
        assert status == -signal.SIGTERM, status
        expected.pop(("serve.main", BACKGROUND), None)
    elif how == "SIGINT":
        status, took = stop_timed(app, signal.SIGINT)  # KeyboardInterrupt: werkzeug returns, so does main()
        assert status == 0, status
    else:
        assert request(app.port, "/quit")[0] == 200
        status, took = stop_timed(app, 0)  # signal 0: only wait for the exit it asked for
        assert status == 0, status
        # The /quit request itself may still be finishing on its (daemon) thread when the server
        # returns and the interpreter exits: it is in flight then, not a completed request (exact()
        # leaves it out).
    assert took < 10, took
    log = app.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    exact(db, expected)
    assert integrity(db) == "ok"


def test_sigkill_loses_at_most_one_interval_and_the_store_stays_readable(start_app, tmp_path):
    interval, slack = 0.5, 0.5
    db = tmp_path / "funcsight.db"
    app = start_app(FAULT_APP, store_env(db, str(interval)))
    done_at: list[float] = []
    for i in range(400):  # ~100 requests/s for ~4 s, each completion time noted
        if request(app.port, f"/work/{i}")[0] == 200:
            done_at.append(time.monotonic())
        time.sleep(0.01)
    app.process.kill()
    killed_at = time.monotonic()
    app.process.wait(timeout=10)

    rows = calls_map(cli_json("functions", "--db", str(db)))  # readable right after a SIGKILL
    recorded = rows.get((LOGIC + "handle", WORK_ROUTE), 0)
    sent = len(done_at)
    old_enough = sum(1 for t in done_at if t < killed_at - interval - slack)
    recent = sent - old_enough
    print(f"\nSIGKILL: {sent} requests served, {recorded} recorded, lost {sent - recorded} "
          f"(at most {recent} finished within {interval + slack:.1f} s of the kill)", flush=True)
    assert old_enough <= recorded <= sent, (old_enough, recorded, sent)
    assert rows.get((LOGIC + "square", WORK_ROUTE), 0) == 2 * recorded  # whole windows, never torn ones
    assert rows.get((VIEWS + "work", WORK_ROUTE), 0) == recorded
    assert integrity(db) == "ok"


def test_repeated_sigkill_under_load_never_corrupts_the_store(start_app, tmp_path):
    """Three app runs on one store, each SIGKILLed at a random moment of concurrent traffic with
    a window written every 50 ms: the store stays consistent, and the next run appends to it."""
    db = tmp_path / "funcsight.db"
    rng = random.Random(11)
    for run in range(3):
        app = start_app(FAULT_APP, store_env(db, "0.05"))
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set():
                try:
                    request(app.port, f"/work/{i}", timeout=2)
                except Exception:  # the app is being killed under it: any way the request ends is fine
                    pass
                i += 1

        clients = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for client in clients:
            client.start()
        time.sleep(0.5 + rng.random())
        app.process.kill()
        app.process.wait(timeout=10)
        stop.set()
        for client in clients:
            client.join(timeout=10)
        assert integrity(db) == "ok", f"run {run}"
        result = run_cli("functions", "--db", str(db), "--format", "json")
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        rows = {(r["function"], r["route"]): r["calls"] for r in json.loads(result.stdout)}
        assert rows[(LOGIC + "square", WORK_ROUTE)] == 2 * rows[(LOGIC + "handle", WORK_ROUTE)]


# ------------------------------------------------------------------------------------------ fork
def test_multiprocessing_fork_and_spawn_children_start_empty_and_all_arrive(instrument_launcher, tmp_path):
    app_dir = copy_app(tmp_path)
    db = tmp_path / "funcsight.db"
    result = run_script(instrument_launcher, app_dir, ["forks.py"], store_env(db), timeout_s=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    report = last_json(result.stdout)
    assert report["hung"] == [], f"children that did not end: {report['hung']}"
    assert set(report["exitcodes"].values()) == {0}, report["exitcodes"]
    # A terminated pool's workers end within their SIGTERM flush budget (10 s), not never. Usually
    # at once; on a loaded machine one worker's flush has been seen to use the whole budget.
    assert report["terminate_s"] < SIGTERM_FLUSH_BUDGET_S + 5, report
    assert report["pool_sum"] == 90 and report["terminated_pool_sum"] == 30

    by_pid = store_calls_by_pid(db)
    parent = report["parent"]
    F = "forkwork."
    assert by_pid.get(parent, {}).get((F + "parent_work", BACKGROUND)) == 3, by_pid.get(parent)
    children = {pid: calls for pid, calls in by_pid.items() if pid != parent}
    # Every child started from empty aggregates: the parent's 3 calls (still in its window when
    # it forked) appear once, under the parent.
    for pid, calls in children.items():
        assert (F + "parent_work", BACKGROUND) not in calls, (pid, calls)
    # Every process's data arrived: 2 fork + 2 spawn children with 5 calls each, 10 calls in the
    # pool that was closed, 6 in the pool that was terminated (SIGTERM to its idle workers).
    child_work = sum(calls.get((F + "child_work", BACKGROUND), 0) for calls in children.values())
    run_child = Counter(calls.get((F + "run_child", BACKGROUND), 0) for calls in children.values())
    assert child_work == 4 * 5 + 10 + 6, children
    assert run_child[1] == 4, children
    # A spawned child imports the script as __mp_main__: its functions keep the script's name.
    # (3.11 rewrites imported modules only, so a script run as a script is not sensed there; README.)
    script = [calls for calls in children.values() if ("forks.script_child", BACKGROUND) in calls]
    assert len(script) == (1 if sys.version_info >= (3, 12) else 0), str(by_pid)
    if script:
        assert script[0][("forks.script_work", BACKGROUND)] == 4, script
    assert not any(name.startswith("__") for calls in by_pid.values() for name, _ in calls), by_pid
    pool_pids = set(report["pool_pids"])
    assert sum(calls.get((F + "child_work", BACKGROUND), 0) for pid, calls in children.items() if pid in pool_pids) == 16


def test_a_forked_child_exports_its_own_counts_under_its_own_instance_id(tmp_path):
    """OTel counters are cumulative in the SDK: a child forked from a parent that already counted
    3 calls must export its own 2, not 5, under the new service.instance.id the SDK gives it, and
    its store rows must carry that same id."""
    import sqlite3

    app_dir = copy_app(tmp_path)
    db = tmp_path / "f.db"
    result = run_script(None, app_dir, ["fork_metrics.py"], store_env(db), timeout_s=40)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "WARNING" not in result.stderr, result.stderr[-3000:]
    report = last_json(result.stdout)
    parent_before, parent_after, child = report["parent_before"], report["parent_after"], report["child"]
    assert parent_before["calls"] == 3 and parent_after["calls"] == 4, report
    assert child["calls"] == 2, report
    assert child["instance"] != parent_before["instance"] == parent_after["instance"], report
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        stored = dict(conn.execute("SELECT pid, instance_id FROM processes").fetchall())
    assert stored == {parent_before["pid"]: parent_before["instance"], child["pid"]: child["instance"]}, (stored, report)


def test_fork_while_another_thread_is_inside_funcsight_does_not_deadlock(instrument_launcher, tmp_path):
    """A thread of the parent holds the function registry's lock (as while registering a new
    function) when the main thread forks; the child then senses a function it never saw."""
    app_dir = copy_app(tmp_path)
    result = run_script(instrument_launcher, app_dir, ["fork_locked.py"], store_env(tmp_path / "f.db"), timeout_s=40)
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_json(result.stdout) == {"child": 0}, "the forked child hung on a lock copied while held"


def gunicorn_bin() -> str:
    path = Path(sys.executable).parent / "gunicorn"
    if not path.exists():
        pytest.skip(f"gunicorn is not installed next to {sys.executable}")
    return str(path)


def test_gunicorn_preload_with_workers_recycled(instrument_launcher, tmp_path):
    """``gunicorn --preload -w 3 --max-requests 25``: workers are forked from the master again and
    again (each retires after ~25 requests and flushes on its way out). Each starts from empty
    aggregates (the master's import-time calls stay the master's), and every request arrives."""
    import gunicorn.config

    quiet = ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in gunicorn.config.KNOWN_SETTINGS) else []
    db = tmp_path / "funcsight.db"
    app = AppProcess(instrument_launcher, FAULT_APP, tmp_path, store_env(db))
    command = [gunicorn_bin(), *quiet, "--preload", "-w", "3", "--max-requests", "25", "--max-requests-jitter", "5",
               "-b", f"127.0.0.1:{app.port}", "--graceful-timeout", "10", "faultapp.preloaded:app"]
    with open(app.log_path, "wb") as log:
        app.process = subprocess.Popen([str(instrument_launcher), *command], cwd=app.app_dir, env=app.env,
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        assert wait_for_port(app.port, START_TIMEOUT_S, alive=lambda: app.process.poll() is None), app.log()
        served: Counter = Counter()

        def one(i: int) -> int:
            status, body = request(app.port, f"/work/{i}")
            assert status == 200, (status, body[:200])
            return json.loads(body)["pid"]

        with ThreadPoolExecutor(max_workers=6) as pool:
            served.update(pool.map(one, range(300)))
        status, took = stop_timed(app)
    finally:
        app.kill()
    assert took < 20, took
    sent = sum(served.values())
    print(f"\ngunicorn --preload: {sent} requests served by {len(served)} worker processes", flush=True)
    assert len(served) >= 6, f"workers were not recycled: {served}"

    by_pid = store_calls_by_pid(db)
    master = app.process.pid
    handle = (LOGIC + "handle", WORK_ROUTE)
    recorded = {pid: calls.get(handle, 0) for pid, calls in by_pid.items() if pid != master}
    assert recorded == dict(served), f"per worker: recorded {recorded}, served {dict(served)}"
    warm = (LOGIC + "handle", BACKGROUND)
    assert by_pid.get(master, {}).get(warm) == 7, by_pid.get(master)
    assert all(warm not in calls for pid, calls in by_pid.items() if pid != master)


# ----------------------------------------------------------------------------------- concurrency
SCENARIOS = ["threads", "asyncio-tasks", "cancellation", "generators", "thrown-into-coroutines", "recursion", "runtime-functions"]
_plain_runs: dict[str, dict] = {}


def run_scenario(tmp_path: Path, scenario: str, impl: str | None) -> tuple[dict, Path]:
    app_dir = copy_app(tmp_path / (impl or "plain"))
    db = tmp_path / f"{impl or 'plain'}.db"
    args = ["scenarios.py", impl or "c", scenario] + (["plain"] if impl is None else [])
    result = run_script(None, app_dir, args, store_env(db), timeout_s=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return last_json(result.stdout), db


def plain_run(tmp_path_factory, scenario: str) -> dict:
    """The same scenario without funcsight: what the application sees then."""
    if scenario not in _plain_runs:
        _plain_runs[scenario] = run_scenario(tmp_path_factory.mktemp(f"plain-{scenario}"), scenario, None)[0]
    return _plain_runs[scenario]


@pytest.mark.parametrize(
    "scenario, impl",
    [
        pytest.param(scenario, impl, id=f"{scenario}-{impl}")
        for scenario in SCENARIOS
        for impl in ("python", "c")
    ],
)
def test_concurrency_counts_stay_exact_and_nothing_reaches_the_app(tmp_path, tmp_path_factory, scenario, impl):
    _require(impl)
    report, db = run_scenario(tmp_path, scenario, impl)
    plain = plain_run(tmp_path_factory, scenario)
    # Nothing raised into the application, and it saw exactly what it sees without funcsight.
    assert report["raised"] is None and plain["raised"] is None, (report["raised"], plain["raised"])
    seen, plain_seen = dict(report["seen"]), dict(plain["seen"])
    if scenario == "recursion":
        # The RecursionError reaches the app as without funcsight; the Python sensor's callbacks
        # are Python frames too, so the limit may be met a few frames earlier.
        reached, plain_reached = seen.pop("reached"), plain_seen.pop("reached")
        print(f"\nrecursion ({impl}): RecursionError at depth {reached} (without funcsight: {plain_reached})", flush=True)
        assert plain_reached - 5 <= reached <= plain_reached, (reached, plain_reached)
    assert seen == plain_seen
    assert report["internal_errors"] == 0

    rows = analysis_rows(db)
    table = {(r["function"], r["route"]): r for r in rows}
    expected = {(name, route): calls for name, route, calls in report["expected"]}
    expected_errors: dict = {}
    for name, route, exc, calls in report["errors"]:
        expected_errors.setdefault((name, route), {})[exc] = calls
    actual = {key: row["calls"] for key, row in table.items()}
    if scenario == "recursion":
        infinite = actual.pop(("workload.infinite", "/rec"))
        row = table[("workload.infinite", "/rec")]
        # Every frame of infinite() that ran was one call, and each ended by the RecursionError.
        print(f"infinite() ({impl}): {infinite} calls recorded, {reached + 1} frames ran", flush=True)
        assert infinite == reached + 1, (infinite, reached)
        assert row["errors"] == infinite and row["errors_by_type"] == {"RecursionError": infinite}, row
    assert actual == expected, "counts differ:\n" + diff_maps(expected, actual)
    for key, row in table.items():
        if key[0] == "workload.infinite":
            continue
        assert row["errors_by_type"] == expected_errors.get(key, {}), (key, row)


# ----------------------------------------------------------------------------------- cardinality
N = 100_000


def run_cardinality(tmp_path: Path, impl: str | None, kind: str, **env: str) -> dict:
    app_dir = copy_app(tmp_path / (impl or "plain"))
    args = ["cardinality.py", impl or "c", kind, str(N)] + (["plain"] if impl is None else [])
    result = run_script(None, app_dir, args, store_env(tmp_path / f"{impl or 'plain'}.db", **env), timeout_s=90)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return last_json(result.stdout)


@pytest.mark.parametrize("impl", ["python", "c"])
def test_cardinality_routes(tmp_path, impl):
    """10^5 requests, each with its own http.route, through a real TracerProvider and the rollup
    processor: the window holds at most FUNCSIGHT_MAX_ROUTES (500) routes, the rest is counted
    under (overflow) and in overflow_routes, no request is lost, memory stays flat."""
    _require(impl)
    report = run_cardinality(tmp_path, impl, "routes")
    growth_kb = report["rss_after_kb"] - report["rss_before_kb"]
    print(f"\n{N} routes ({impl}): {report['routes']} routes held, overflow_routes {report['overflow_routes']}, "
          f"RSS +{growth_kb} kB in {report['seconds']} s", flush=True)
    assert report["routes"] == report["max_routes"] + 1  # the cap and (overflow)
    warm = 200  # the warm-up requests, all under one route of their own
    overflowed = N + 1 - report["max_routes"]  # requests of the routes beyond the cap
    assert report["overflow_routes"] == overflowed
    assert report["requests"] == N + warm  # every request counted, under its route or (overflow)
    assert report["series"] <= report["max_series"]
    assert growth_kb < 10 * 1024, f"RSS grew by {growth_kb} kB over {N} routes"
    # What reached the store: the cap, (overflow), and every request.
    db = tmp_path / f"{impl}.db"
    routes = {row["route"]: row["requests"] for row in cli_json("routes", "--db", str(db))}
    assert len(routes) == report["max_routes"] + 1 and sum(routes.values()) == N + warm
    assert routes["(overflow)"] == overflowed
    rows = functions_by_key(analysis_rows(db))
    assert sum(r["calls"] for (f, _), r in rows.items() if f == "workload.handle") == N + warm
    assert sum(r["calls"] for (f, _), r in rows.items() if f == "workload.leaf") == 3 * (N + warm)


@pytest.mark.parametrize("impl", ["python", "c"])
def test_cardinality_functions(tmp_path, impl):
    """10^5 distinct functions made at runtime and called: the registry stops at
    FUNCSIGHT_MAX_FUNCTIONS, counts every one beyond it as dropped, their calls are counted under
    "(overflow)", and funcsight's memory beyond what the application itself uses stays small."""
    _require(impl)
    cap = 2000
    report = run_cardinality(tmp_path, impl, "functions", FUNCSIGHT_MAX_FUNCTIONS=str(cap))
    plain = run_cardinality(tmp_path, None, "functions")
    growth = report["rss_after_kb"] - report["rss_before_kb"]
    plain_growth = plain["rss_after_kb"] - plain["rss_before_kb"]
    print(f"\n{N} functions ({impl}): {report['registered']} registered, {report['registry_dropped']} dropped; "
          f"RSS +{growth} kB (+{plain_growth} kB without funcsight)", flush=True)
    assert report["registered"] == cap + 1  # and the (overflow) pseudo function
    assert report["registry_dropped"] >= N - cap
    assert report["series"] <= cap + 1
    assert growth - plain_growth < 20 * 1024, (growth, plain_growth)
    # Every call of a made function reached the store: under its own name or under (overflow).
    rows = functions_by_key(analysis_rows(tmp_path / f"{impl}.db", route="/functions"))
    made = sum(r["calls"] for (f, _), r in rows.items() if f.startswith(("workload.f", "made_")))
    assert made + rows[("(overflow)", "/functions")]["calls"] == N
