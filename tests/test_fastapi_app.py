"""A real FastAPI app under uvicorn and ``opentelemetry-instrument``: calls counted per route, also
with ~200 requests in flight on one event loop where tasks interleave at every await."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest

from helpers import (
    BACKGROUND,
    analysis_rows,
    async_get,
    calls_map,
    cli_json,
    diff_maps,
    functions_by_key,
    get_ok,
    route_requests,
    store_env,
)

APP = "fastapi_shop"
VERSION = "2.3"
M, L, B = "fastshop.main.", "fastshop.logic.", "fastshop.background."
ITEMS, STOCK, SYNC = "/items/{item_id}", "/stock/{item_id}", "/sync/{n}"
ROUTE_A, ROUTE_B = "/a/{n}", "/b/{name}"

BACKGROUND_CALLS = {
    (B + "warm_cache", BACKGROUND): 1,
    (B + "ticker", BACKGROUND): 1,
    (B + "tick", BACKGROUND): 4,
}


def items_calls(n: int) -> dict:
    return {
        (M + "get_item", ITEMS): n,  # async handler registered by @app.get
        (L + "fetch_item", ITEMS): n,  # async helper awaited (it suspends once)
        (L + "Catalog.lookup", ITEMS): n,  # a method, called from the coroutine
        (L + "price_with_tax", ITEMS): n,
        (L + "price_with_tax.<locals>.round_cents", ITEMS): n,  # a nested closure
        (L + "normalize", ITEMS): 3 * n,
        (L + "iter_tags", ITEMS): n,  # a generator consumed in the handler
        (L + "parse_qty", ITEMS): n,  # raises ValueError, caught
    }


def stock_calls(n: int) -> dict:
    return {
        (M + "stock", STOCK): n,
        (L + "reserve", STOCK): n,  # awaited coroutine that OutOfStock passes through
        (L + "check_level", STOCK): n,  # raises OutOfStock
    }


def sync_calls(n: int) -> dict:
    return {
        (M + "sync_route", SYNC): n,  # a plain def handler: FastAPI runs it in its thread pool
        (L + "sync_work", SYNC): n,
        (L + "Catalog.lookup", SYNC): n,
    }


def ab_calls(a: int, b: int) -> dict:
    return {
        (M + "route_a", ROUTE_A): a,
        (L + "step_a", ROUTE_A): 2 * a,
        (L + "fetch_item", ROUTE_A): a,
        (L + "Catalog.lookup", ROUTE_A): a,
        (M + "route_b", ROUTE_B): b,
        (L + "step_b", ROUTE_B): 3 * b,
    }


def sensed(rows: list[dict]) -> list[dict]:
    """The rows of sensed functions (``kind == "function"``). Rows of ``kind == "span"`` are other
    instrumentations' spans rolled up beside them; see ``test_fastapi_framing_spans_are_not_work``."""
    return [row for row in rows if row["kind"] == "function"]


def test_fastapi_counts_every_function_under_its_route(start_app, tmp_path):
    n_items, n_stock, n_sync = 30, 20, 10
    db = tmp_path / "funcsight.db"
    app = start_app(APP, store_env(db, "fastapi-shop", VERSION))
    for i in range(n_items):
        body = get_ok(app.port, f"/items/{i}")
        assert body["qty"] == 1 and body["words"] == ["a", "b", "c"] and len(body["tags"]) == 3
        if i < n_stock:
            assert get_ok(app.port, f"/stock/{i}")["status"] == "out_of_stock"
        if i < n_sync:
            assert get_ok(app.port, f"/sync/{i}")["sum"] == sum(range(i))
    app.stop()

    expected = {**items_calls(n_items), **stock_calls(n_stock), **sync_calls(n_sync), **BACKGROUND_CALLS}
    rows = sensed(cli_json("functions", "--db", str(db)))
    assert calls_map(rows) == expected, "store (CLI) differs:\n" + diff_maps(expected, calls_map(rows))
    assert calls_map(sensed(analysis_rows(db))) == expected

    table = functions_by_key(rows)
    assert {row["version"] for row in rows} == {VERSION}
    raising = {
        (L + "parse_qty", ITEMS): {"ValueError": n_items},
        (L + "reserve", STOCK): {"fastshop.logic.OutOfStock": n_stock},
        (L + "check_level", STOCK): {"fastshop.logic.OutOfStock": n_stock},
    }
    for key, row in table.items():
        if key in raising:
            assert row["errors"] == row["calls"], row
            assert row["errors_by_type"] == raising[key], row
        else:
            assert row["errors"] == 0 and row["errors_by_type"] == {}, row

    assert table[(L + "normalize", ITEMS)]["calls_per_request"] == 3.0
    # The awaited helper suspends in asyncio.sleep(0.001): one call lasts from first entry to final
    # exit, so its mean duration covers the sleep; self time stays within [0, total].
    fetch = table[(L + "fetch_item", ITEMS)]
    assert fetch["mean_ms"] >= 1.0, fetch
    assert 0 <= fetch["self_ms"] <= fetch["total_ms"], fetch

    assert route_requests(db) == {ITEMS: n_items, STOCK: n_stock, SYNC: n_sync}


def test_fastapi_200_in_flight_never_mixes_routes(start_app, tmp_path):
    total, in_flight = 400, 200
    db = tmp_path / "funcsight.db"
    app = start_app(APP, store_env(db, "fastapi-shop", VERSION))

    kinds = [i % 4 for i in range(total)]  # a, b, items, sync

    async def drive() -> float:
        gate = asyncio.Semaphore(in_flight)

        async def one(i: int, kind: int) -> None:
            path = (f"/a/{i}", f"/b/n{i}", f"/items/{i}", f"/sync/{i % 50}")[kind]
            async with gate:
                status, body = await async_get(app.port, path)
            assert status == 200, (path, status, body[:200])
            if kind == 0:
                assert json.loads(body) == {"a": 10.0 + i + 2}

        started = time.monotonic()
        await asyncio.gather(*(one(i, kind) for i, kind in enumerate(kinds)))
        return time.monotonic() - started

    elapsed = asyncio.run(asyncio.wait_for(drive(), timeout=60))
    app.stop()

    n_a, n_b, n_items, n_sync = (kinds.count(k) for k in range(4))
    expected = {**ab_calls(n_a, n_b), **items_calls(n_items), **sync_calls(n_sync), **BACKGROUND_CALLS}
    # fetch_item and Catalog.lookup run under three routes: each route keeps its own count.
    rows = sensed(cli_json("functions", "--db", str(db)))
    actual = calls_map(rows)
    assert actual == expected, "attribution differs:\n" + diff_maps(expected, actual)
    assert calls_map(sensed(analysis_rows(db))) == expected

    routes = cli_json("routes", "--db", str(db))
    assert {r["route"]: r["requests"] for r in routes} == {ROUTE_A: n_a, ROUTE_B: n_b, ITEMS: n_items, SYNC: n_sync}
    busy_s = sum(r["mean_ms"] * r["requests"] for r in routes) / 1000
    # ~200 requests were on the server's loop at once: far more request time than wall time.
    assert busy_s > 20 * elapsed, f"requests did not overlap: {busy_s:.2f} s of requests in {elapsed:.2f} s"


def test_fastapi_framing_spans_are_not_work(start_app, tmp_path):
    """The ASGI middleware's ``http send`` spans frame the request; they are not work done in it
    (the rollup processor's own rule for the asgi/wsgi scopes), so they must not become rows."""
    n = 10
    db = tmp_path / "funcsight.db"
    app = start_app(APP, store_env(db, "fastapi-shop", VERSION))
    for i in range(n):
        get_ok(app.port, f"/sync/{i}")
    app.stop()
    rows = cli_json("functions", "--db", str(db))
    assert calls_map(sensed(rows)) == {**sync_calls(n), **BACKGROUND_CALLS}
    spans = {(row["function"], row["route"]): row["calls"] for row in rows if row["kind"] == "span"}
    assert spans == {}, f"framing spans counted as work: {spans}"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.11's rewritten coroutines leave the thread's stack before "
                    "each await (rewrite.py's await_), so one awaiting the request's span does not enclose it there")
def test_framework_code_around_the_asgi_request_span_belongs_to_the_request(start_app, tmp_path):
    """Sensing ``fastapi`` and ``starlette``: their coroutines run around the ASGI server span that
    the OpenTelemetry middleware makes; what they run in the same task step as the span's start or
    end is the request's (enclosure.py). Printed: the split per request."""
    n = 30
    db = tmp_path / "funcsight.db"
    app = start_app(APP, store_env(db, "fastapi-shop", VERSION, FUNCSIGHT_INCLUDE="+fastapi,+starlette"))
    for i in range(n):
        get_ok(app.port, f"/items/{i}")
    app.stop()
    rows = cli_json("functions", "--db", str(db))
    calls = calls_map(sensed(rows))
    framework = {k: v for k, v in calls.items() if k[0].startswith(("fastapi.", "starlette."))}
    in_route = sum(v for (f, r), v in framework.items() if r == ITEMS)
    print(f"\nframework calls per request: {in_route / n:.1f} in the request", flush=True)
    assert calls[(M + "get_item", ITEMS)] == n
    for function in ("fastapi.applications.FastAPI.__call__", "starlette.applications.Starlette.__call__",
                     "starlette.routing.Router.__call__", "starlette.middleware.exceptions.ExceptionMiddleware.__call__"):
        assert calls.get((function, ITEMS)) == n, (function, {k: v for k, v in calls.items() if k[0] == function})
    # the lifespan's own pass through the app (start-up to shut-down) is no request's
    assert calls.get(("fastapi.routing._DefaultLifespan.__call__", BACKGROUND)) == 1
    assert calls.get(("fastapi.applications.FastAPI.__call__", BACKGROUND)) == 1
