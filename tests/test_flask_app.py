"""A real Flask app under ``opentelemetry-instrument``: every call counted under its route.

The app (``tests/apps/flask_shop``) runs in a subprocess on 127.0.0.1 with the embedded store; the
tests drive a known number of requests, stop it with SIGTERM and compare what the store holds,
read through the ``funcsight`` command and through the analysis library, with exact counts.
"""

from __future__ import annotations

import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from helpers import (
    BACKGROUND,
    analysis_rows,
    calls_map,
    cli_json,
    diff_maps,
    functions_by_key,
    get_ok,
    route_requests,
    store_env,
)

APP = "flask_shop"
VERSION = "1.0"
V, L, B = "shopapp.views.", "shopapp.logic.", "shopapp.background."
ITEMS, STOCK = "/items/<int:item_id>", "/stock/<int:item_id>"
ROUTE_A, ROUTE_B = "/a/<int:n>", "/b/<name>"

# Outside any request: one call at import time, and a thread that runs once and calls tick 4 times.
BACKGROUND_CALLS = {
    (B + "warm_cache", BACKGROUND): 1,
    (B + "ticker", BACKGROUND): 1,
    (B + "tick", BACKGROUND): 4,
}


def items_calls(n: int) -> dict:
    """What one ``/items/<id>`` request calls, times ``n`` requests."""
    return {
        (V + "get_item", ITEMS): n,  # the view, registered by @app.route
        (L + "Catalog.lookup", ITEMS): n,  # a method
        (L + "price_with_tax", ITEMS): n,
        (L + "price_with_tax.<locals>.round_cents", ITEMS): n,  # a nested closure
        (L + "normalize", ITEMS): 3 * n,  # a helper called three times
        (L + "iter_tags", ITEMS): n,  # a generator: one call from first entry to final exit
        (L + "parse_qty", ITEMS): n,  # raises ValueError, caught by the view
    }


def stock_calls(n: int) -> dict:
    return {
        (V + "stock", STOCK): n,
        (L + "reserve", STOCK): n,  # OutOfStock passes through it
        (L + "check_level", STOCK): n,  # raises OutOfStock
    }


def ab_calls(a: int, b: int) -> dict:
    return {
        (V + "route_a", ROUTE_A): a,
        (L + "step_a", ROUTE_A): 2 * a,
        (V + "route_b", ROUTE_B): b,
        (L + "step_b", ROUTE_B): 3 * b,
    }


def test_flask_counts_every_function_under_its_route(start_app, tmp_path):
    n_items, n_stock = 30, 20
    db = tmp_path / "funcsight.db"
    app = start_app(APP, store_env(db, "flask-shop", VERSION))
    for i in range(max(n_items, n_stock)):
        if i < n_items:
            body = get_ok(app.port, f"/items/{i}")
            assert body["qty"] == 1 and body["words"] == ["a", "b", "c"] and len(body["tags"]) == 3
        if i < n_stock:
            assert get_ok(app.port, f"/stock/{i}")["status"] == "out_of_stock"
    app.stop()

    # The app's own directory held the store only because FUNCSIGHT_DB pointed there.
    assert db.exists()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600

    expected = {**items_calls(n_items), **stock_calls(n_stock), **BACKGROUND_CALLS}
    rows = cli_json("functions", "--db", str(db))
    assert calls_map(rows) == expected, "store (CLI) differs:\n" + diff_maps(expected, calls_map(rows))
    library_rows = analysis_rows(db)
    assert calls_map(library_rows) == expected, "store (library) differs:\n" + diff_maps(expected, calls_map(library_rows))

    table = functions_by_key(rows)
    assert {row["version"] for row in rows} == {VERSION}
    assert {row["kind"] for row in rows} == {"function"}

    # Exceptions: the raising function and the one it passed through count an error per call, by
    # type name (builtins bare, others fully qualified); callers that caught them count none.
    raising = {
        (L + "parse_qty", ITEMS): {"ValueError": n_items},
        (L + "reserve", STOCK): {"shopapp.logic.OutOfStock": n_stock},
        (L + "check_level", STOCK): {"shopapp.logic.OutOfStock": n_stock},
    }
    for key, row in table.items():
        if key in raising:
            assert row["errors"] == row["calls"], row
            assert row["errors_by_type"] == raising[key], row
        else:
            assert row["errors"] == 0 and row["errors_by_type"] == {}, row

    # Per-request figures come from the route's request count.
    assert table[(L + "normalize", ITEMS)]["requests"] == n_items
    assert table[(L + "normalize", ITEMS)]["calls_per_request"] == 3.0
    assert table[(V + "stock", STOCK)]["calls_per_request"] == 1.0
    assert table[(B + "tick", BACKGROUND)]["requests"] is None  # background work has no requests

    assert route_requests(db) == {ITEMS: n_items, STOCK: n_stock}

    # Filtering by route returns that route's functions only, with the same counts.
    only_stock = cli_json("functions", "--db", str(db), "--route", STOCK)
    assert calls_map(only_stock) == stock_calls(n_stock)
    assert calls_map(cli_json("functions", "--db", str(db), "--version", VERSION)) == expected


def test_flask_threaded_server_never_mixes_routes(start_app, tmp_path):
    threads, per_thread = 8, 25
    db = tmp_path / "funcsight.db"
    app = start_app(APP, store_env(db, "flask-shop", VERSION))

    plan = [[(t * per_thread + i) % 3 for i in range(per_thread)] for t in range(threads)]
    barrier = threading.Barrier(threads)

    def client(kinds: list[int]) -> None:
        barrier.wait(timeout=10)
        for i, kind in enumerate(kinds):
            if kind == 0:
                assert get_ok(app.port, f"/a/{i}") == {"a": i + 2}
            elif kind == 1:
                assert "b" in get_ok(app.port, f"/b/name{i}")
            else:
                assert get_ok(app.port, f"/items/{i}")["item"] == i

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(client, kinds) for kinds in plan]:
            future.result(timeout=60)
    elapsed = time.monotonic() - started
    app.stop()

    n_a = sum(kinds.count(0) for kinds in plan)
    n_b = sum(kinds.count(1) for kinds in plan)
    n_items = sum(kinds.count(2) for kinds in plan)
    assert n_a + n_b + n_items == threads * per_thread
    expected = {**ab_calls(n_a, n_b), **items_calls(n_items), **BACKGROUND_CALLS}

    rows = cli_json("functions", "--db", str(db))
    actual = calls_map(rows)
    # Exact equality: a function of route A under route B would be an extra key here.
    assert actual == expected, "attribution differs:\n" + diff_maps(expected, actual)
    assert calls_map(analysis_rows(db)) == expected

    routes = cli_json("routes", "--db", str(db))
    assert {r["route"]: r["requests"] for r in routes} == {ROUTE_A: n_a, ROUTE_B: n_b, ITEMS: n_items}
    # The requests really overlapped: their summed durations exceed the wall time they took.
    busy_s = sum(r["mean_ms"] * r["requests"] for r in routes) / 1000
    assert busy_s > 1.5 * elapsed, f"requests did not overlap: {busy_s:.2f} s of requests in {elapsed:.2f} s"
