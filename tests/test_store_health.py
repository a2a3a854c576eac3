"""Is the data complete? funcsight's own counters leave the process: in every window row of the
store, as ``funcsight.dropped{reason}`` / ``funcsight.internal_errors{component}`` at a real OTLP
receiver, and through ``funcsight status`` and the MCP ``store_health`` tool.

The end-to-end run: a Flask app under ``opentelemetry-instrument`` makes functions at run time past
a small ``FUNCSIGHT_MAX_FUNCTIONS``; the calls of those past the cap are counted under
``(overflow)`` on their route, and every figure is checked against what the app says it did.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import sys
import time
import uuid
from pathlib import Path

import pytest

from funcsight.exporters.store_writer import MAX_PENDING_WINDOWS, ProcessIdentity, StoreWriter
from funcsight.instrumentation.calls import CallTable
from funcsight.instrumentation.registry import FunctionInfo, FunctionRegistry
from funcsight.processors.windows import WindowAggregator
from funcsight.store.schema import MIGRATIONS, SCHEMA_VERSION

from helpers import clean_env, get_ok, latest, run_cli
from test_sensor import _require

MAKE = "/make/<int:n>"
BATCHES, PER_BATCH, CALLS_EACH = 8, 20, 3  # manyapp.CALLS_EACH
CAP = 40
OVERFLOW = "(overflow)"


def status_json(db: Path, *args: str) -> dict:
    result = run_cli("status", "--db", str(db), "--format", "json", *args)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return json.loads(result.stdout)


def store_rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


# ------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("impl", ["python", "c"])
def test_calls_past_the_function_cap_are_counted_stored_exported_and_reported(start_app, rotel, tmp_path, impl):
    _require(impl)
    db = tmp_path / "health.db"
    env = clean_env(
        FUNCSIGHT_DB=str(db), FUNCSIGHT_EXPORT_INTERVAL="0.5", FUNCSIGHT_MAX_FUNCTIONS=str(CAP),
        FUNCSIGHT_IMPLEMENTATION=impl, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{rotel.grpc_port}",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_METRIC_EXPORT_INTERVAL="500", OTEL_LOGS_EXPORTER="none",
        OTEL_SERVICE_NAME="many-functions", OTEL_RESOURCE_ATTRIBUTES="service.version=1.0",
    )
    app = start_app("many_functions", env)
    assert get_ok(app.port, "/fixed") == {"value": 42}
    assert get_ok(app.port, "/make/0")["calls"] == 0  # the app's own functions are met before the cap
    made_calls = sum(get_ok(app.port, f"/make/{PER_BATCH}")["calls"] for _ in range(BATCHES))
    assert made_calls == BATCHES * PER_BATCH * CALLS_EACH
    pid = app.process.pid
    app.stop()

    # The store: every call of a made function is under its own name or under (overflow), per route.
    rows = store_rows(db, "SELECT f.name, s.route, sum(s.calls) FROM function_stats s JOIN functions f ON f.id = s.function_id"
                          " GROUP BY f.name, s.route")
    made = {name: calls for name, route, calls in rows if name.startswith("made_") and route == MAKE}
    overflow = {route: calls for name, route, calls in rows if name == OVERFLOW}
    registered = len(made)
    assert 0 < registered < BATCHES * PER_BATCH, made
    assert all(calls == CALLS_EACH for calls in made.values()), made
    past_cap = BATCHES * PER_BATCH - registered
    print(f"\n{impl}: {registered} of {BATCHES * PER_BATCH} made functions registered under FUNCSIGHT_MAX_FUNCTIONS={CAP}; "
          f"{past_cap} past the cap, {past_cap * CALLS_EACH} calls under (overflow)", flush=True)
    assert overflow == {MAKE: past_cap * CALLS_EACH}, overflow
    assert sum(made.values()) + overflow[MAKE] == made_calls
    [(windows, dropped_functions, sensor_errors)] = store_rows(
        db, "SELECT count(*), sum(registry_dropped), sum(sensor_errors) FROM windows")
    assert dropped_functions == past_cap and sensor_errors == 0

    # funcsight status: the same figures, and who wrote when.
    status = status_json(db)
    assert status["windows"] == windows and status["schema"] == SCHEMA_VERSION
    assert status["dropped"] == {"function_cap": past_cap}, status
    assert status["internal_errors"] == {} and status["complete"] is False
    assert status["overflow_calls"] == past_cap * CALLS_EACH
    [process] = status["processes"]
    [(last_end,)] = store_rows(db, "SELECT max(end) FROM windows")
    assert (process["pid"], process["windows"], process["last_write"]) == (pid, windows, last_end)
    assert (process["service"], process["version"]) == ("many-functions", "1.0")
    table = run_cli("status", "--db", str(db))
    assert table.returncode == 0, table.stderr
    assert f"dropped: function_cap {past_cap} (code past FUNCSIGHT_MAX_FUNCTIONS" in table.stdout, table.stdout
    assert f"overflow: {past_cap * CALLS_EACH} calls under (overflow) functions" in table.stdout

    # The OTLP receiver: funcsight.dropped{reason=function_cap} and the (overflow) function's calls.
    def delivered(points, _spans):
        dropped = latest(points, "funcsight.dropped", "reason")
        calls = latest(points, "funcsight.function.calls", "code.function.name", "http.route")
        return dropped.get(("function_cap",)) == past_cap and calls.get((OVERFLOW, MAKE)) == past_cap * CALLS_EACH
    assert rotel.wait_for(delivered, 4.0), (
        f"dropped: {latest(rotel.parsed()[0], 'funcsight.dropped', 'reason')}\napp log:\n{app.log()}")
    points, _ = rotel.parsed()
    assert latest(points, "funcsight.internal_errors", "component") == {}

    # The MCP tool, through the real client: the same figures as the CLI.
    health = mcp_store_health(db, tmp_path)
    assert health["dropped"] == status["dropped"] and health["windows"] == windows
    assert health["overflow_calls"] == status["overflow_calls"] and health["complete"] is False
    assert [(p["pid"], p["windows"], p["last_write_epoch_s"]) for p in health["processes"]] == [(pid, windows, last_end)]


def mcp_store_health(db: Path, tmp_path: Path, arguments: dict | None = None) -> dict:
    pytest.importorskip("mcp")
    from anyio.from_thread import start_blocking_portal
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    env = {key: os.environ[key] for key in ("PYTHONPATH",) if key in os.environ}
    params = StdioServerParameters(command=sys.executable, args=["-m", "funcsight.cli.main", "mcp", "--db", str(db)], env=env)

    async def call() -> dict:
        with open(tmp_path / "mcp.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    tools = {tool.name for tool in (await session.list_tools()).tools}
                    assert "store_health" in tools
                    result = await session.call_tool("store_health", arguments or {})
        assert not result.is_error, result.content[0].text
        assert json.loads(result.content[1].text) == result.structured_content
        assert "store " in result.content[0].text  # the verdict's first line
        return result.structured_content

    with start_blocking_portal() as portal:
        return portal.call(call)


# ------------------------------------------------------------------------- store, in process
def make_writer(path: Path, pid: int = 0) -> tuple[StoreWriter, int]:
    registry = FunctionRegistry()
    fid = registry.register(FunctionInfo("shop.views.index", "function", "/srv/shop/views.py", 3, "abc"))
    identity = ProcessIdentity("shop", "1.0", "resource", str(uuid.uuid4()), pid or os.getpid(), socket.gethostname(), time.time())
    return StoreWriter(str(path), registry, identity), fid


def a_window(fid: int, **counters: int):
    windows = WindowAggregator()
    table = CallTable()
    table.add_call(fid, 1_000_000, 1_000_000)
    windows.add_request("/index", table, 2_000_000, False)
    window = windows.drain()
    for name, value in counters.items():
        setattr(window.counters, name, value)
    return window


def test_windows_the_writer_drops_keep_their_counters_in_the_store(tmp_path):
    """The store down for more windows than the queue holds: the oldest are dropped, their own
    counters move on to the next one, so the store's sums stay whole once it is writable again."""
    directory = tmp_path / "later"
    writer, fid = make_writer(directory / "f.db")
    extra = 5
    for _ in range(MAX_PENDING_WINDOWS + extra):
        assert writer.write_window(a_window(fid, registry_dropped=2, sensor_errors=1)) is False
    assert writer.dropped_windows == extra
    directory.mkdir()
    # The next window records the drops (the rollup processor reads writer.dropped_windows into it).
    assert writer.write_window(a_window(fid, dropped_windows=writer.dropped_windows)) is True
    writer.close()
    [(windows, registry_dropped, sensor_errors, dropped)] = store_rows(
        directory / "f.db", "SELECT count(*), sum(registry_dropped), sum(sensor_errors), sum(dropped_windows) FROM windows")
    assert windows == MAX_PENDING_WINDOWS
    assert (registry_dropped, sensor_errors, dropped) == (2 * (MAX_PENDING_WINDOWS + extra), MAX_PENDING_WINDOWS + extra, extra)
    status = status_json(directory / "f.db")
    assert status["dropped"] == {"function_cap": 2 * (MAX_PENDING_WINDOWS + extra), "store_window_dropped": extra}
    assert status["internal_errors"] == {"sensor": MAX_PENDING_WINDOWS + extra}


def test_a_window_with_only_counters_is_written(tmp_path):
    writer, fid = make_writer(tmp_path / "f.db")
    window = WindowAggregator().drain()
    assert window.is_empty()
    window.counters.consumer_failures = 1
    assert not window.is_empty()
    assert writer.write_window(window) is True
    writer.close()
    assert status_json(tmp_path / "f.db")["internal_errors"] == {"exporter": 1}


def test_a_schema_2_store_is_read_as_it_is_and_upgraded_when_written(tmp_path):
    """A store of the previous schema: status says which counters it never recorded (not zero);
    a writer upgrades it (migration 3 recorded in user_version) and the old rows stay."""
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for statements in MIGRATIONS[:2]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("PRAGMA user_version=2")
        conn.execute("PRAGMA application_id=1179863380")
        conn.execute("INSERT INTO processes VALUES (1, 'shop', '0.9', 'resource', 'old-instance', 77, 'h', 1.0)")
        conn.execute("INSERT INTO windows (process_id, start, end, overflow_series) VALUES (1, 10.0, 11.0, 4)")
        conn.commit()
    old = status_json(path)
    assert old["schema"] == 2 and old["windows"] == 1 and old["dropped"] == {"series_cap": 4}
    assert "function_cap" in old["not_recorded"] and "sensor" in old["not_recorded"] and old["complete"] is False
    writer, fid = make_writer(path)
    assert writer.write_window(a_window(fid, registry_dropped=3)) is True
    writer.close()
    new = status_json(path)
    assert new["schema"] == SCHEMA_VERSION == 3 and new["not_recorded"] == []
    assert new["windows"] == 2 and new["dropped"] == {"series_cap": 4, "function_cap": 3}
    assert [p["pid"] for p in new["processes"]] == [os.getpid(), 77]  # the most recent writer first


def test_status_is_bounded_and_bad_input_is_one_line(tmp_path):
    path = tmp_path / "many.db"
    for pid in range(1, 31):
        writer, fid = make_writer(path, pid=pid)
        assert writer.write_window(a_window(fid)) is True
        writer.close()
    status = status_json(path, "--limit", "5")
    assert status["processes_total"] == 30 and len(status["processes"]) == 5 and status["processes_omitted"] == 25
    assert status["complete"] is True
    table = run_cli("status", "--db", str(path))
    assert table.returncode == 0 and "complete: nothing dropped" in table.stdout
    assert "(10 more processes; --limit shows them)" in table.stdout
    for args, fragment in (((), "no store at"), (("--limit", "0"), "must be at least 1")):
        result = run_cli("status", "--db", str(tmp_path / "missing.db"), *args)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr


# ------------------------------------------------------------------- counters, metrics, in process
def test_counters_kept_outside_the_processor_ride_on_windows_and_are_exported():
    """The pipeline's failures and the sensor's internal errors reach the next window (as deltas)
    and the SDK's real metric reader as funcsight.internal_errors{component}."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from funcsight.exporters.metrics import MetricsBridge
    from test_rollup import World

    world = World()
    reader = InMemoryMetricReader()
    bridge = MetricsBridge(MeterProvider(metric_readers=[reader]).get_meter("funcsight"), world.registry, "1.0")
    failures = iter([True, False, False])

    def flaky(window):
        if next(failures):
            raise RuntimeError("an exporter failing once")

    world.pipeline.consumers = [world.windows_seen.append, flaky, bridge.consume]
    world.processor.counter_sources["consumer_failures"] = lambda: world.pipeline.consumer_failures
    world.processor.counter_sources["dropped_windows"] = lambda: 7
    assert world.window().counters.consumer_failures == 0 and world.pipeline.consumer_failures == 1
    world.sensor.internal_errors += 2
    second = world.window()
    assert (second.counters.consumer_failures, second.counters.sensor_errors, second.counters.dropped_windows) == (1, 2, 0)
    assert world.window().counters.consumer_failures == 0  # deltas: counted once
    exported = {}
    for metric in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics:
        for point in metric.data.data_points:
            exported[(metric.name, *point.attributes.values())] = point.value
    assert exported[("funcsight.internal_errors", "exporter")] == 1
    assert exported[("funcsight.internal_errors", "sensor")] == 2
    assert exported[("funcsight.dropped", "store_window_dropped")] == 7  # the first window's delta from 0
