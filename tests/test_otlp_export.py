"""OTLP: the Flask app with an OTLP endpoint configured delivers funcsight's metrics and function
spans to a real receiver (rotel, printing what arrives), and leaves the embedded store off."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import BACKGROUND, clean_env, get_ok, latest

APP = "flask_shop"
SERVICE, VERSION = "flask-shop-otlp", "3.1"
V, L, B = "shopapp.views.", "shopapp.logic.", "shopapp.background."
SLOW, ITEMS = "/slow", "/items/<int:item_id>"
N_SLOW, N_ITEMS = 6, 4
DELIVERY_TIMEOUT_S = 4.0  # after the app exited everything was sent; rotel prints within ~0.1 s

EXPECTED_CALLS = {
    (V + "slow", SLOW): N_SLOW,
    (L + "slow_step", SLOW): N_SLOW,  # sleeps 20 ms: a function span each time
    (L + "parse_qty", SLOW): N_SLOW,  # raises ValueError: a function span each time
    (V + "get_item", ITEMS): N_ITEMS,
    (L + "Catalog.lookup", ITEMS): N_ITEMS,
    (L + "price_with_tax", ITEMS): N_ITEMS,
    (L + "price_with_tax.<locals>.round_cents", ITEMS): N_ITEMS,
    (L + "normalize", ITEMS): 3 * N_ITEMS,
    (L + "iter_tags", ITEMS): N_ITEMS,
    (L + "parse_qty", ITEMS): N_ITEMS,
    (B + "warm_cache", BACKGROUND): 1,
    (B + "ticker", BACKGROUND): 1,
    (B + "tick", BACKGROUND): 4,
}


def otlp_env(endpoint: str, **extra: str) -> dict[str, str]:
    return clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_METRIC_EXPORT_INTERVAL="500",
        OTEL_LOGS_EXPORTER="none",
        OTEL_SERVICE_NAME=SERVICE,
        OTEL_RESOURCE_ATTRIBUTES=f"service.version={VERSION}",
        FUNCSIGHT_EXPORT_INTERVAL="0.5",
        FUNCSIGHT_SLOW_CALL_MS="5",
        **extra,
    )


def run_and_check_delivery(start_app, rotel, env: dict[str, str]) -> None:
    app = start_app(APP, env)
    for i in range(max(N_SLOW, N_ITEMS)):
        if i < N_SLOW:
            assert get_ok(app.port, SLOW) == {"result": "slow"}
        if i < N_ITEMS:
            assert get_ok(app.port, f"/items/{i}")["item"] == i
    app.stop()  # SIGTERM: the last window, metrics and spans are flushed on the way out

    # With an OTLP endpoint and no FUNCSIGHT_DB, the embedded store stays off: no file anywhere.
    stores = [p for p in Path(app.app_dir).parent.rglob("*.db*")]
    assert stores == [], f"the store was written although OTLP is configured: {stores}"

    def delivered(points, spans):
        calls = latest(points, "funcsight.function.calls", "code.function.name", "http.route")
        function_spans = [s for s in spans if s.scope == "funcsight"]
        slow_spans = [s for s in function_spans if s.name == L + "slow_step"]
        error_spans = [s for s in function_spans if s.name == L + "parse_qty"]
        done = calls == EXPECTED_CALLS and len(slow_spans) == N_SLOW and len(error_spans) == N_SLOW + N_ITEMS
        return done and (points, spans)

    result = rotel.wait_for(delivered, DELIVERY_TIMEOUT_S)
    points, spans = rotel.parsed()
    calls = latest(points, "funcsight.function.calls", "code.function.name", "http.route")
    assert result, (
        f"rotel did not receive the expected data within {DELIVERY_TIMEOUT_S} s.\n"
        f"calls by (function, route): {calls}\nfuncsight spans: {[s.name for s in spans if s.scope == 'funcsight']}\n"
        f"app log:\n{app.log()}\nrotel output (tail):\n{rotel.output()[-3000:]}"
    )

    # Metrics: exact counts per function and route (checked above), errors by type, requests per
    # route, and the deployment's resource on every point.
    errors = latest(points, "funcsight.function.errors", "code.function.name", "http.route", "exception.type")
    assert errors == {
        (L + "parse_qty", SLOW, "ValueError"): N_SLOW,
        (L + "parse_qty", ITEMS, "ValueError"): N_ITEMS,
    }
    assert latest(points, "funcsight.route.requests", "http.route") == {(SLOW,): N_SLOW, (ITEMS,): N_ITEMS}
    for point in points:
        if point.scope == "funcsight":
            assert point.resource.get("service.name") == SERVICE, point
            assert point.resource.get("service.version") == VERSION, point
            if point.metric == "funcsight.function.calls":
                assert point.attributes.get("code.file.path", "").startswith(str(app.app_dir)), point

    # Function spans: named by the function's qualified name, children of their request's span.
    servers = {s.span_id: s for s in spans if s.kind == "SPAN_KIND_SERVER"}
    assert {s.attributes.get("http.route") for s in servers.values()} == {SLOW, ITEMS}
    function_spans = [s for s in spans if s.scope == "funcsight"]
    for span in function_spans:
        assert span.attributes.get("code.function.name") == span.name, span
        assert span.kind == "SPAN_KIND_INTERNAL", span
        parent = servers.get(span.parent_id)
        assert parent is not None and parent.trace_id == span.trace_id, f"orphan function span {span}"
    slow_spans = [s for s in function_spans if s.name == L + "slow_step"]
    assert sorted(servers[s.parent_id].attributes["http.route"] for s in slow_spans) == [SLOW] * N_SLOW
    assert len({s.trace_id for s in slow_spans}) == N_SLOW  # one per request
    for span in (s for s in function_spans if s.name == L + "parse_qty"):
        assert span.status == "STATUS_CODE_ERROR", span
        assert span.attributes.get("exception.type") == "ValueError", span
        assert any(e.get("name") == "exception" for e in span.events), span
    routes_of_errors = sorted(servers[s.parent_id].attributes["http.route"] for s in function_spans if s.name == L + "parse_qty")
    assert routes_of_errors == sorted([SLOW] * N_SLOW + [ITEMS] * N_ITEMS)


def test_otlp_grpc_delivers_metrics_and_function_spans(start_app, rotel):
    # OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER unset: an endpoint alone selects OTLP.
    env = otlp_env(f"http://127.0.0.1:{rotel.grpc_port}", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    run_and_check_delivery(start_app, rotel, env)


def test_otlp_http_protobuf_with_exporter_names(start_app, rotel):
    env = otlp_env(
        f"http://127.0.0.1:{rotel.http_port}",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_TRACES_EXPORTER="otlp_proto_http",
        OTEL_METRICS_EXPORTER="otlp_proto_http",
    )
    run_and_check_delivery(start_app, rotel, env)


@pytest.mark.parametrize("exporter_names", ["unset", "otlp"])
def test_otlp_http_protobuf_selected_by_protocol(start_app, rotel, exporter_names):
    extra = {} if exporter_names == "unset" else {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp"}
    env = otlp_env(f"http://127.0.0.1:{rotel.http_port}", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", **extra)
    run_and_check_delivery(start_app, rotel, env)
