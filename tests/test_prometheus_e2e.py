"""Prometheus as the analysis source, end to end, with Debian's real Prometheus server.

The demo's sample shop runs twice under ``opentelemetry-instrument`` (release 1.0, then 1.1 with an
N+1 on ``shop.db.fetch_price`` and a new slow ``shop.db.audit``), each with BOTH the embedded store
(``FUNCSIGHT_DB``) and the standard Prometheus exporter (``OTEL_METRICS_EXPORTER=prometheus``) on,
real HTTP traffic on 127.0.0.1, and a real ``prometheus`` scraping both apps every second. Once
Prometheus holds each run's final counts, every analysis command is run twice, ``--db`` and
``--source prometheus+http://…``, and the answers are compared; the Grafana dashboard's every
panel query (template variables filled in) must return data from the same server, and the MCP
server started with ``--source`` must give the CLI's figures.

Without the ``prometheus`` binary the test is skipped, except in CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import clean_env, free_port, run_cli, tail, wait_for_port

from funcsight.sources.prometheus import reset_aware_total
from funcsight.demo.sample_app import RELEASES, traffic
from funcsight.histogram import (
    LE_EXPONENTS,
    LE_LABELS,
    bucket_bounds,
    buckets_to_hist,
    cumulative_le_counts,
    fine_bucket_of_bound,
    quantile_ns,
)

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "funcsight.json"
REQUESTS_PER_RELEASE = 300
CONCURRENCY = 4
SCRAPE_INTERVAL = "1s"
CART, CHECKOUT = "/cart/<int:user>", "/checkout/<int:user>"
# What release 1.1 plants, per affected route: the function diff must name first.
# (A new call path is its caller's finding: the function whose code now makes the calls.)
PLANTED = {CART: {"shop.pricing.price_items"}, CHECKOUT: {"shop.inventory.reserve", "shop.pricing.price_items"}}
# The dashboard's top-regressions panel ranks functions by their own added time (PromQL over
# function metrics, no call tree): it leads with the callee that runs the new calls.
PANEL_PLANTED = {CART: {"shop.db.fetch_price"}, CHECKOUT: {"shop.db.audit", "shop.db.fetch_price"}}
PROMETHEUS_START_S = 30.0
FINAL_SCRAPE_TIMEOUT_S = 20.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing(reason: str):
    if _in_ci():
        pytest.fail(f"{reason}; CI must provide it (see .ci/run)")
    pytest.skip(reason)


def _prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        _missing("the Prometheus server is not installed (Debian: apt-get install -y prometheus)")
    return found


# --------------------------------------------------------------------------------- pure helpers
def test_le_buckets_land_in_the_half_octave_buckets_below_their_bounds():
    for k in LE_EXPONENTS:
        index = fine_bucket_of_bound(repr((1 << k) / 1e9))
        assert index == 2 * k + 1 and bucket_bounds(index)[1] == 2**k


def test_le_buckets_give_the_counts_and_histogram_quantile_back():
    hist = {21: 5, 30: 7, 31: 2, 44: 1, 80: 1}  # fine buckets: 1 us, ~20 us, ~30 us, ~3 ms, 17+ s
    cumulative = dict(zip(LE_LABELS, cumulative_le_counts(hist)))
    back = buckets_to_hist(cumulative)
    assert round(sum(back.values()), 9) == sum(hist.values())
    # Prometheus' histogram_quantile: linear within (previous le, le], the first bucket from 0.
    bounds = [(1 << k) for k in LE_EXPONENTS]
    rank = 0.5 * 16
    below, previous = 0, 0.0
    for bound, label in zip(bounds, LE_LABELS):
        if cumulative[label] >= rank:
            expected = previous + (bound - previous) * (rank - below) / (cumulative[label] - below)
            break
        below, previous = cumulative[label], float(bound)
    assert abs(quantile_ns(back, 0.5) - expected) < 1e-6 * expected


def test_a_counter_that_went_down_is_summed_per_process():
    assert reset_aware_total([3, 5, 9, 2, 4]) == 13  # 9 from the first process, 4 from the next
    assert reset_aware_total([]) == 0


# ------------------------------------------------------------------------------------ the fleet
@dataclass
class Fleet:
    prometheus_port: int
    db: Path
    workdir: Path
    started: float
    sent: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def source(self) -> str:
        return f"prometheus+{self.url}"

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            document = json.load(response)
        assert document["status"] == "success", document
        return document["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr, time=f"{time.time():.3f}")["result"]


def _request(port: int, method: str, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _write_release(directory: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _stop(process: subprocess.Popen, timeout: float = 15) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


def _run_release(fleet: Fleet, launcher: Path, version: str, files: dict[str, str], exporter_port: int) -> None:
    app_dir = fleet.workdir / f"shop-{version}"
    _write_release(app_dir, files)
    port = free_port()
    env = clean_env(
        FUNCSIGHT_DB=str(fleet.db),
        FUNCSIGHT_EXPORT_INTERVAL="0.5",
        OTEL_SERVICE_NAME="shop",
        OTEL_RESOURCE_ATTRIBUTES=f"service.version={version}",
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_METRICS_EXPORTER="prometheus",
        OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
        OTEL_EXPORTER_PROMETHEUS_PORT=str(exporter_port),
        PYTHONPATH=str(app_dir),
    )
    log_path = app_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(launcher), sys.executable, "serve.py", str(port)], cwd=app_dir, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        alive = lambda: process.poll() is None  # noqa: E731
        assert wait_for_port(port, 30, alive) and wait_for_port(exporter_port, 10, alive), \
            f"release {version} did not start (status {process.poll()}):\n{tail(log_path)}"
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            statuses = list(pool.map(lambda i: _request(port, *traffic(i)), range(REQUESTS_PER_RELEASE)))
        assert all(status in (200, 409) for status in statuses), sorted(set(statuses))
        fleet.sent[version] = REQUESTS_PER_RELEASE
        # funcsight hands a window's counts to the OTel counters each export interval; Prometheus has
        # them once it scraped after the last window: wait for that, then stop the app.
        expr = f'sum(funcsight_route_requests_total{{service_version="{version}"}})'
        deadline = time.monotonic() + FINAL_SCRAPE_TIMEOUT_S
        seen = None
        while time.monotonic() < deadline:
            result = fleet.query(expr)
            seen = float(result[0]["value"][1]) if result else None
            if seen == REQUESTS_PER_RELEASE:
                break
            time.sleep(0.25)
        assert seen == REQUESTS_PER_RELEASE, f"Prometheus saw {seen} of {REQUESTS_PER_RELEASE} requests of release {version}"
        # Two more scrapes, so every series has the two samples a rate() needs.
        time.sleep(2 * float(SCRAPE_INTERVAL.rstrip("s")) + 0.5)
    finally:
        status = _stop(process)
    assert status in (0, 143, -signal.SIGTERM), f"release {version} exited with {status}:\n{tail(log_path)}"
    assert "Traceback" not in log_path.read_text(errors="replace"), tail(log_path)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, instrument_launcher):
    binary = _prometheus_binary()
    try:
        import opentelemetry.exporter.prometheus  # noqa: F401
    except ImportError:
        _missing("opentelemetry-exporter-prometheus is not installed (pip install opentelemetry-exporter-prometheus)")
    workdir = tmp_path_factory.mktemp("prometheus-e2e")
    exporter_ports = {version: free_port() for version, _ in RELEASES}
    (workdir / "prometheus.yml").write_text(
        f"global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  scrape_timeout: {SCRAPE_INTERVAL}\n"
        "scrape_configs:\n  - job_name: shop\n    static_configs:\n"
        + "".join(f"      - targets: ['127.0.0.1:{port}']\n" for port in exporter_ports.values())
    )
    port = free_port()
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        prometheus = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + PROMETHEUS_START_S
        while True:
            assert prometheus.poll() is None, f"prometheus exited with {prometheus.returncode}:\n{tail(log_path)}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"prometheus not ready within {PROMETHEUS_START_S:.0f} s:\n{tail(log_path)}"
            time.sleep(0.2)
        result = Fleet(port, workdir / "funcsight.db", workdir, time.time())
        for version, files in RELEASES:
            _run_release(result, instrument_launcher, version, files, exporter_ports[version])
        yield result
    finally:
        _stop(prometheus)


def _json(*args: str):
    done = run_cli(*args, "--format", "json", timeout=60)
    assert done.returncode == 0, f"funcsight {' '.join(args)} -> {done.returncode}\n{done.stderr}"
    assert done.stderr == "", done.stderr
    return json.loads(done.stdout)


def _both(fleet: Fleet, *args: str):
    return _json(*args, "--db", str(fleet.db)), _json(*args, "--source", fleet.source)


# ------------------------------------------------------------------------- analysis comparisons
def test_functions_give_the_stores_figures(fleet):
    store, prom = _both(fleet, "functions")
    key = lambda r: (r["function"], r["route"], r["version"])  # noqa: E731
    by_store, by_prom = {key(r): r for r in store}, {key(r): r for r in prom}
    assert {v for _, _, v in by_store} == {"1.0", "1.1"}
    assert {k: r["calls"] for k, r in by_prom.items()} == {k: r["calls"] for k, r in by_store.items()}
    for k, row in by_store.items():
        other = by_prom[k]
        for name in ("kind", "errors", "errors_by_type", "requests", "calls_per_request"):
            assert other[name] == row[name], (k, name, row[name], other[name])
        for name in ("total_ms", "self_ms", "mean_ms", "self_ms_per_request"):
            assert abs(other[name] - row[name]) <= 2e-3 + 1e-6 * abs(row[name]), (k, name, row[name], other[name])


def test_routes_give_the_stores_requests_and_prometheus_percentiles(fleet):
    store, prom = _both(fleet, "routes")
    key = lambda r: (r["route"], r["version"])  # noqa: E731
    by_store, by_prom = {key(r): r for r in store}, {key(r): r for r in prom}
    assert {k: (r["requests"], r["errors"]) for k, r in by_prom.items()} == {k: (r["requests"], r["errors"]) for k, r in by_store.items()}
    assert {v: sum(r["requests"] for k, r in by_prom.items() if k[1] == v) for v in fleet.sent} == fleet.sent
    for k, row in by_store.items():
        assert abs(by_prom[k]["mean_ms"] - row["mean_ms"]) <= 2e-3, (k, row["mean_ms"], by_prom[k]["mean_ms"])
        # The percentiles are Prometheus' own histogram_quantile over the same buckets.
        expr = (f'histogram_quantile(0.95, sum by (le) (max_over_time(funcsight_route_duration_buckets_total'
                f'{{http_route="{k[0]}",service_version="{k[1]}"}}[1h])))')
        expected_ms = float(fleet.query(expr)[0]["value"][1]) * 1e3
        assert abs(by_prom[k]["p95_ms"] - expected_ms) <= 1e-3 + 1e-6 * expected_ms, (k, by_prom[k]["p95_ms"], expected_ms)
        # Both p95s lie in the exported bucket that holds the 95th percentile request (the store's
        # half-octave buckets nest in the exported ones), so they differ by less than its width.
        low, high = exported_bucket_ms(row["p95_ms"])
        print(f"\n{k}: p95 store {row['p95_ms']:.3f} ms, prometheus {by_prom[k]['p95_ms']:.3f} ms, exported bucket {low:.3f}-{high:.3f}")
        assert low <= by_prom[k]["p95_ms"] <= high, (k, row["p95_ms"], by_prom[k]["p95_ms"], (low, high))


def test_tables_say_how_far_the_percentiles_can_be(fleet):
    store = run_cli("routes", "--db", str(fleet.db)).stdout.splitlines()
    prom = run_cli("routes", "--source", fleet.source).stdout.splitlines()
    assert "half-octave" in store[-1] and "-33 %/+50 %" in store[-1], store[-1]
    assert "octave buckets (x2 wide)" in prom[-1] and "-50 %/+100 %" in prom[-1], prom[-1]


def exported_bucket_ms(value_ms: float) -> tuple[float, float]:
    """The exported ``le`` bucket ``(previous bound, bound]`` in ms around ``value_ms``."""
    bounds = [0.0] + [(1 << k) / 1e6 for k in LE_EXPONENTS]
    for low, high in zip(bounds, bounds[1:]):
        if value_ms <= high:
            return low, high
    return bounds[-1], float("inf")


def _tree_nodes(root: dict, path: tuple = ()) -> dict:
    out = {}
    for child in root["children"]:
        out[path + (child["function"],)] = child
        out.update(_tree_nodes(child, path + (child["function"],)))
    return out


def test_call_trees_from_prometheus_edges_match_the_stores(fleet):
    """The sample app reaches no function through two same-named callers on different paths, so
    the tree rebuilt from the exported caller -> callee edges is the store's, node for node."""
    routes = {r["route"] for r in _json("routes", "--db", str(fleet.db))}
    assert len(routes) >= 3
    for route in sorted(routes):
        for version in ("1.0", "1.1"):
            args = ("tree", "--route", route, "--version", version)
            store, prom = _both(fleet, *args) if _has_requests(fleet, route, version) else (None, None)
            if store is None:
                continue
            by_store, by_prom = _tree_nodes(store["root"]), _tree_nodes(prom["root"])
            assert set(by_prom) == set(by_store), (route, version)
            for path, node in by_store.items():
                other = by_prom[path]
                assert other["calls_per_request"] == node["calls_per_request"], (route, version, path)
                assert abs(other["total_ms_per_request"] - node["total_ms_per_request"]) <= 2e-3, (route, version, path)
                assert abs(other["self_ms_per_request"] - node["self_ms_per_request"]) <= 2e-3, (route, version, path)


def _has_requests(fleet, route: str, version: str) -> bool:
    return any(r["route"] == route and r["version"] == version for r in _json("routes", "--db", str(fleet.db)))


def test_versions_lists_both_releases(fleet):
    store, prom = _both(fleet, "versions")
    assert [v["version"] for v in prom] == [v["version"] for v in store] == ["1.0", "1.1"]
    for s, p in zip(store, prom):
        assert (p["requests"], p["calls"], p["processes"]) == (s["requests"], s["calls"], 1)
        assert p["source"] == "prometheus"
        # first/last seen: Prometheus' are sample timestamps, the store's window bounds. They differ
        # by the app's start-up before its first scrape and by its idle time after the last request
        # (empty windows are not written; scrapes go on): a few seconds, more on a loaded machine.
        assert -2 < p["first_seen"] - s["first_seen"] < 15 and -2 < p["last_seen"] - s["last_seen"] < 15, (s, p)
    assert prom[0]["last_seen"] <= prom[1]["first_seen"]


def test_diff_names_the_same_planted_function_first(fleet):
    store, prom = _both(fleet, "diff", "--baseline", "1.0", "--candidate", "1.1")
    for route, planted in PLANTED.items():
        first_store = next(f for f in store["regressions"] if f["route"] == route)
        first_prom = next(f for f in prom["regressions"] if f["route"] == route)
        assert first_prom["function"] == first_store["function"], (route, first_store, first_prom)
        assert first_prom["function"] in planted, (route, first_prom)
        assert (first_prom["kind"], first_prom["candidate"]["calls"]) == (first_store["kind"], first_store["candidate"]["calls"])
    assert all(f["code_changed"] is None for f in prom["regressions"])  # no code hashes in metrics
    found = lambda d: {(f["function"], f["route"], f["kind"]) for f in d["regressions"] if f["kind"] in ("fan_out", "new_call")}  # noqa: E731
    assert found(prom) == found(store)


def test_explain_splits_the_change_the_same_way(fleet):
    store, prom = _both(fleet, "explain", "--route", CART, "--baseline", "1.0", "--candidate", "1.1")
    assert prom["parts"][0]["function"] == store["parts"][0]["function"] == "shop.db.fetch_price"
    calls = lambda d: {p["function"]: (p["calls_per_request_baseline"], p["calls_per_request_candidate"]) for p in d["parts"]}  # noqa: E731
    assert calls(prom) == calls(store)
    assert abs(prom["change_ms"] - store["change_ms"]) <= 5e-3


def test_errors_give_the_stores_counts_without_stacks(fleet):
    store, prom = _both(fleet, "errors")
    key = lambda r: (r["function"], r["route"], r["version"], r["exception_type"])  # noqa: E731
    assert store, "the shop raises OutOfStock on some checkouts"
    assert {key(r): r["count"] for r in prom} == {key(r): r["count"] for r in store}
    assert all(r["stack"] == [] and r["trace_id"] is None for r in prom)


def test_anomalies_run_over_prometheus(fleet):
    found = _json("anomalies", "--source", fleet.source)
    assert isinstance(found, list)  # steady traffic per release: nothing needs to be found


def test_time_series_add_up_to_the_stores(fleet):
    from funcsight.sources.prometheus import PrometheusSource
    from funcsight.sources.store import StoreSource

    prom, store = PrometheusSource(fleet.url), StoreSource(str(fleet.db))
    try:
        def totals(rows, key, value):
            sums: dict = {}
            for row in rows:
                sums[key(row)] = sums.get(key(row), 0) + value(row)
            return sums

        per_function = lambda r: (r[2], r[4], r[5])  # noqa: E731
        assert totals(prom.series(), per_function, lambda r: r[6]) == totals(store.series(), per_function, lambda r: r[6])
        per_route = lambda r: (r[2], r[3])  # noqa: E731
        assert totals(prom.route_series(), per_route, lambda r: r[4]) == totals(store.route_series(), per_route, lambda r: r[4])
        per_error = lambda r: (r[1], r[2], r[3], r[4])  # noqa: E731
        assert totals(prom.error_series(), per_error, lambda r: r[5]) == totals(store.error_series(), per_error, lambda r: r[5])
        assert {s - e for s, e, *_ in prom.series()} <= {-1.0}  # one step per row: the 1 s scrape interval
    finally:
        store.close()


def test_an_unreachable_source_is_one_line(fleet):
    done = run_cli("routes", "--source", f"prometheus+http://127.0.0.1:{free_port()}")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "cannot be reached" in done.stderr, done.stderr


# --------------------------------------------------------------------------------- the dashboard
def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return [p for p in found if p.get("type") != "row"]


def _substitute(expr: str, values: dict[str, str]) -> str:
    for name, value in sorted(values.items(), key=lambda item: -len(item[0])):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def test_the_dashboard_is_a_grafana_dashboard_on_a_prometheus_variable():
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41 and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("version", "route", "baseline", "candidate"):
        assert variables[name]["type"] == "query" and variables[name]["query"]["query"].startswith("label_values(")
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    panels = _panels(dashboard)
    titles = " ".join(p["title"].lower() for p in panels)
    for needed in ("routes", "functions on", "errors", "baseline vs candidate", "top regressions", "p95"):
        assert needed in titles, needed
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["expr"], panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_every_dashboard_panel_returns_data(fleet):
    now = time.time()
    window = f"{int(now - fleet.started) + 60}s"  # covers both releases
    values = {"version": "1.1", "route": CHECKOUT, "baseline": "1.0", "candidate": "1.1",
              "__range": window, "__rate_interval": "60s", "datasource": "prometheus"}
    start = now - int(window[:-1])
    checked = 0
    for panel in _panels(_dashboard()):
        for target in panel["targets"]:
            expr = _substitute(target["expr"], values)
            if target.get("instant"):
                result = fleet.api("query", query=expr, time=f"{now:.3f}")["result"]
            else:
                result = fleet.api("query_range", query=expr, start=f"{start:.3f}", end=f"{now:.3f}", step="1")["result"]
            assert result, f"panel {panel['title']!r} query {target['refId']} returned nothing: {expr}"
            checked += 1
    assert checked >= 15


def test_top_regressions_panel_leads_with_a_planted_function(fleet):
    panel = next(p for p in _panels(_dashboard()) if p["title"].startswith("Top regressions"))
    window = f"{int(time.time() - fleet.started) + 60}s"
    expr = _substitute(panel["targets"][0]["expr"], {"baseline": "1.0", "candidate": "1.1", "__range": window})
    top = max(fleet.query(expr), key=lambda s: float(s["value"][1]))["metric"]
    assert top["code_function_name"] in PANEL_PLANTED[top["http_route"]], top


def test_the_breakdown_panel_shows_the_clis_calls_per_request(fleet):
    panel = next(p for p in _panels(_dashboard()) if p["title"] == "Functions on $route")
    window = f"{int(time.time() - fleet.started) + 60}s"
    cli = {(r["function"], r["version"]): r["calls_per_request"]
           for r in _json("functions", "--source", fleet.source, "--route", CART)}
    for version in ("1.0", "1.1"):
        expr = _substitute(panel["targets"][0]["expr"], {"route": CART, "version": version, "__range": window})
        shown = {s["metric"]["code_function_name"]: round(float(s["value"][1]), 4) for s in fleet.query(expr)}
        assert shown == {f: v for (f, ver), v in cli.items() if ver == version}, version


def test_dashboard_variables_resolve(fleet):
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = _substitute(variable["query"]["query"], {"version": "1.1"})
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, query
        values = fleet.api(f"label/{match.group(2)}/values", **{"match[]": match.group(1)})
        expected = {"1.0", "1.1"} if match.group(2) == "service_version" else {CART, CHECKOUT}
        assert expected <= set(values), (variable["name"], values)


# ---------------------------------------------------------------------------------- MCP server
def test_mcp_server_over_prometheus_gives_the_cli_figures(fleet):
    pytest.importorskip("mcp")
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    expected = _json("routes", "--source", fleet.source)
    errlog_path = fleet.workdir / "mcp.log"

    async def list_routes():
        env = {key: os.environ[key] for key in ("PATH", "PYTHONPATH") if key in os.environ}
        params = StdioServerParameters(command=sys.executable, args=["-m", "funcsight.cli.main", "mcp", "--source", fleet.source], env=env)
        with open(errlog_path, "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                routes = await session.call_tool("list_routes", {})
                query = await session.call_tool("query", {"sql": "SELECT 1"})
                return routes, query

    routes, query = anyio.run(list_routes)
    assert not routes.is_error, routes.content[0].text
    got = {(r["route"], r["version"]): r for r in routes.structured_content["routes"]}
    assert set(got) == {(r["route"], r["version"]) for r in expected}
    for row in expected:
        mine = got[(row["route"], row["version"])]
        for name in ("requests", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "mean_ms"):
            assert mine[name] == row[name], (row["route"], row["version"], name, row[name], mine[name])
        assert [f["function"] for f in mine["top_functions"]] == [f["function"] for f in row["top_functions"]]
    assert query.is_error and "PromQL" in query.content[0].text  # SQL needs the store
    log = errlog_path.read_text()
    assert "Traceback" not in log and f"serving {fleet.source}" in log, log
