"""Change intelligence on real deployments: ``versions``, ``diff``, ``explain``, ``anomalies`` and
``errors`` over a store filled by a real app under ``opentelemetry-instrument``.

The app (``tests/apps/release_shop``) is deployed the way code is deployed: its scratch copy gets
the files of one release (``releases/v1`` or ``releases/v2``: two versions of ``shop/logic.py``)
before it starts, with ``service.version`` set from the resource. Release 2.0 plants four changes of
different kinds, each on its own route (see the docstring of ``releases/v2/shop/logic.py``); two
routes are untouched controls. Every release writes into the same store file. Traffic is real HTTP
on 127.0.0.1, bounded, cycling through the routes in the same order for every release, one request
at a time: concurrent requests in one process make a thread that wakes from a wait queue for the
GIL, and how often that happens depends on the release's own timing, so it would be a confound.

Effects are several milliseconds per request (round trips and work are ``time.sleep`` in the app's
own functions, which is the function's own time, like waiting on a socket), so the verdicts hold on
a busy machine; no threshold here is tuned to a measured value.

The library-level tests at the end check the statistics deterministically (seeded): the false-alarm
rate without any change stays near ALPHA for ``diff`` and ``anomalies`` (every test evaluated counts
in the Bonferroni divisor; a CUSUM split is paid for by the number of splits it could choose), and a
microsecond drift on a millisecond route is below the minimum effect.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import AppProcess, cli_json, get, run_cli, store_env

APP = "release_shop"
SERVICE = "release-shop"

L, DB, VIEWS = "shop.logic.", "shop.db.", "shop.views."
ORDERS, REPORT, CHECKOUT = "/orders/<int:user>", "/report/<int:day>", "/checkout/<int:user>"
SEARCH, CATALOG, PROFILE = "/search/<term>", "/catalog/<int:page>", "/profile/<int:user>"
EVENTS, RESERVE = "/events/<int:n>", "/reserve/<int:sku>"
CONTROL_ROUTES = (CATALOG, PROFILE)

# route -> how to build its n-th request path
PATHS = {
    ORDERS: lambda n: f"/orders/{n}",
    REPORT: lambda n: f"/report/{n}",
    CHECKOUT: lambda n: f"/checkout/{n}",
    SEARCH: lambda n: f"/search/term{n % 17}",
    CATALOG: lambda n: f"/catalog/{n}",
    PROFILE: lambda n: f"/profile/{n}",
    EVENTS: lambda n: f"/events/{n}",
    RESERVE: lambda n: f"/reserve/{7 + n % 3}",
}
SHOP_ROUTES = (ORDERS, REPORT, CHECKOUT, SEARCH, CATALOG, PROFILE)

# What release 2.0 planted, per route: the function whose code decides the change, the kind of part
# `diff` must name, whether that function's own code changed, and the planted cost in ms/request.
# A fan-out (N+1, retries) belongs to the caller that now calls more often, not to the callee.
PLANTED = {
    ORDERS: (L + "order_total", "fan_out", True, 6 * 3.05 - 3.3),  # N+1: 6 queries instead of 1
    REPORT: (L + "render_summary", "self_time", True, 12.0 - 2.0),  # 2 ms -> 12 ms of its own time
    CHECKOUT: (L + "validate_coupon", "new_error_type", True, 0.0),  # raises CouponExpired, caught
    SEARCH: (L + "search", "fan_out", True, 2 * 4.0),  # 3 attempts instead of 1
}
# The callee whose calls per call of the caller changed, before -> after, per fan-out route.
FAN_OUT = {ORDERS: (DB + "fetch_prices", 1.0, 6.0), SEARCH: (DB + "query_index", 1.0, 3.0)}
# explain's flat per-function view: the function whose self time per request grew most.
LARGEST_PART = {ORDERS: DB + "fetch_prices", REPORT: L + "render_summary", SEARCH: DB + "query_index"}
COUPON_EXPIRED = "shop.logic.CouponExpired"

REQUESTS_PER_ROUTE = 150
CLIENTS = 1


# ------------------------------------------------------------------------------------- machinery
@dataclass
class Deployment:
    """One release, run once: what was deployed, where, and the traffic it served."""

    release: str
    version: str
    app_dir: Path
    requests: dict[str, int] = field(default_factory=dict)  # route -> requests served
    started_at: float = 0.0
    stopped_at: float = 0.0


def deploy(launcher: Path, workdir: Path, release: str, env: dict[str, str]) -> AppProcess:
    """Copy the app, lay the release's files over it (as a deploy replaces code) and drop the other
    releases from the copy; ``.start()`` then runs it under the launcher."""
    workdir.mkdir(parents=True)
    app = AppProcess(launcher, APP, workdir, env)  # copies tests/apps/release_shop
    shutil.copytree(app.app_dir / "releases" / release, app.app_dir, dirs_exist_ok=True)
    shutil.rmtree(app.app_dir / "releases")
    return app


def drive(port: int, routes: tuple[str, ...], per_route: int | dict[str, int], spread_s: float | None = None,
          clients: int = CLIENTS) -> dict[str, int]:
    """``per_route`` GETs of every route (or ``per_route[route]`` of each), interleaved so each
    route's requests are spread evenly over the plan (with one count: route order cycles), from
    ``clients`` threads; with ``spread_s`` request i is not sent before ``i * spread_s / total``
    seconds, so the traffic covers that much time evenly. Every response must be 200."""
    counts = per_route if isinstance(per_route, dict) else {route: per_route for route in routes}
    order = sorted(((n + 0.5) / counts[route], index, n) for index, route in enumerate(routes) for n in range(counts[route]))
    plan = [(routes[index], PATHS[routes[index]](n)) for _at, index, n in order]
    cursor = iter(range(len(plan)))
    lock = threading.Lock()
    gap = spread_s / len(plan) if spread_s else 0.0
    started = time.monotonic()
    failures: list[str] = []

    def client() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            if gap:
                delay = started + index * gap - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            status, body = get(port, plan[index][1])
            if status != 200:
                failures.append(f"GET {plan[index][1]} -> {status}: {body[:200]!r}")

    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result(timeout=120)
    assert not failures, failures[:5]
    return dict(counts)


def run_release(launcher: Path, workdir: Path, release: str, version: str, db: Path, routes: tuple[str, ...],
                per_route: int | dict[str, int], spread_s: float | None = None, **env: str) -> Deployment:
    app = deploy(launcher, workdir, release, {**store_env(db, SERVICE, version), **env})
    deployment = Deployment(release, version, app.app_dir, started_at=time.time())
    try:
        app.start()
        try:
            deployment.requests = drive(app.port, routes, per_route, spread_s)
        except (OSError, AssertionError) as err:  # the app's side of it: its log
            raise AssertionError(f"traffic to release {release} failed ({err!r}); the app's log:\n{app.log()[-4000:]}") from err
        app.stop()
    finally:
        app.kill()
    deployment.stopped_at = time.time()
    return deployment


def copy_store(source: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{source}{suffix}").exists():
            shutil.copy2(f"{source}{suffix}", f"{target}{suffix}")


def diff_json(db: Path, baseline: str, candidate: str, route: str | None = None) -> dict:
    return cli_json("diff", "--db", str(db), "--baseline", baseline, "--candidate", candidate,
                    *(["--route", route] if route else []))


def brief(findings: list[dict]) -> str:
    """Findings as one line each, for assertion messages."""
    return "\n".join(
        f"  {f['route']:<22} {f['function']:<28} {f['kind']:<15} impact {f['impact_ms_per_request']:+.3f} ms/req "
        f"p={f['p_value']:.1e} rel={f['relative_change']} code_changed={f['code_changed']} {f['exception_types'] or ''}"
        for f in findings
    ) or "  (none)"


def line_of(path: Path, text: str) -> int:
    """The 1-based line of ``path`` holding ``text`` (exactly one such line)."""
    lines = [n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    assert len(lines) == 1, f"{text!r} is on lines {lines} of {path}"
    return lines[0]


# -------------------------------------------------------------------------- v1 then v2, one store
@dataclass
class ReleasedShop:
    db: Path
    v1: Deployment
    v2: Deployment


@pytest.fixture(scope="module")
def released_shop(instrument_launcher, tmp_path_factory) -> ReleasedShop:
    """Release 1.0, then release 2.0, of the shop into one store."""
    base = tmp_path_factory.mktemp("released_shop")
    db = base / "funcsight.db"
    v1 = run_release(instrument_launcher, base / "v1", "v1", "1.0", db, SHOP_ROUTES, REQUESTS_PER_ROUTE)
    v2 = run_release(instrument_launcher, base / "v2", "v2", "2.0", db, SHOP_ROUTES, REQUESTS_PER_ROUTE)
    return ReleasedShop(db, v1, v2)


def test_diff_names_the_planted_function_first_for_each_route(released_shop):
    result = diff_json(released_shop.db, "1.0", "2.0")
    assert (result["baseline"], result["candidate"]) == ("1.0", "2.0")
    for key in ("regressions", "improvements", "new_errors", "new_functions", "removed_functions"):
        assert isinstance(result[key], list), key
    regressions = result["regressions"]
    everything = brief(regressions)
    shares = [f["share"] for f in regressions]
    assert shares == sorted(shares, reverse=True), "regressions are not sorted by share of their route's change:\n" + everything
    verdicts = {v["route"]: v["verdict"] for v in result["routes"]}
    assert {r: verdicts[r] for r in PLANTED} == {ORDERS: "slower", REPORT: "slower", CHECKOUT: "errors", SEARCH: "slower"}, result["routes"]

    for route, (function, kind, code_changed, _planted_ms) in PLANTED.items():
        if route == CHECKOUT:
            continue  # test_diff_ranks_the_new_exception_type_first (a known ranking bug)
        on_route = [f for f in regressions if f["route"] == route]
        assert on_route, f"no regression for {route}:\n{everything}"
        first = on_route[0]
        assert (first["function"], first["kind"]) == (function, kind), f"{route}: wrong function or kind first:\n{brief(on_route)}"
        assert first["code_changed"] is code_changed, f"{route}: code_changed of {function}:\n{brief(on_route)}"
        for figures in ("baseline", "candidate"):
            for name in ("calls_per_request", "p50_ms", "p95_ms", "self_ms_per_request", "error_rate", "error_types"):
                assert name in first[figures], (figures, name, first)
        assert first["p_value"] < result["method"]["alpha"], first
        assert first["path"][-1] == function and first["file"].endswith("logic.py") and first["line"] > 0, first
        if kind != "new_error_type":
            assert first["share"] > 0.5, f"{route}: the planted part explains too little of the route's change:\n{brief(on_route)}"

        # The same verdict for the route alone.
        only = diff_json(released_shop.db, "1.0", "2.0", route)
        assert {f["route"] for f in only["regressions"]} == {route}, brief(only["regressions"])
        assert (only["regressions"][0]["function"], only["regressions"][0]["kind"]) == (function, kind), brief(only["regressions"])

    # N+1 and retries: the caller's finding names the callee and its multiplied calls per call; the
    # callee that merely ran more often is not a finding of its own.
    for route, (callee, before, after) in FAN_OUT.items():
        caller = [f for f in regressions if f["route"] == route][0]
        assert [(c["function"], c["calls_per_call_before"], c["calls_per_call_after"]) for c in caller["callees"]] == [
            (callee, before, after)], caller
        assert caller["impact_ms_per_request"] > 0.7 * PLANTED[route][3], caller
        assert callee not in [f["function"] for f in regressions if f["route"] == route], brief(regressions)

    # The slower function: its own time per call grew; its callers, whose inclusive time grew only
    # because of it, rank below it or are absent.
    slower = [f for f in regressions if f["route"] == REPORT][0]
    assert slower["candidate"]["self_ms_per_call"] > slower["baseline"]["self_ms_per_call"] + 0.7 * PLANTED[REPORT][3], slower
    assert slower["impact_ms_per_request"] > 0.7 * PLANTED[REPORT][3], slower
    report_findings = [f for f in regressions if f["route"] == REPORT]
    for caller in (L + "build_report", VIEWS + "report_view"):
        assert caller not in [f["function"] for f in report_findings[:1]], brief(report_findings)
        for f in report_findings:
            if f["function"] == caller:
                assert f["impact_ms_per_request"] < slower["impact_ms_per_request"], brief(report_findings)

    # The new exception type, named, although apply_coupon catches it; also listed in new_errors.
    errors = [f for f in regressions if f["route"] == CHECKOUT and f["function"] == L + "validate_coupon"]
    assert [f["kind"] for f in errors] == ["new_error_type"], everything
    error = errors[0]
    assert error["exception_types"] == [COUPON_EXPIRED] and error["code_changed"] is True, error
    assert error["candidate"]["error_types"] == {COUPON_EXPIRED: REQUESTS_PER_ROUTE}, error
    assert error["baseline"]["error_types"] == {} and error["candidate"]["error_rate"] == 1.0, error
    assert any(f["function"] == L + "validate_coupon" and f["exception_types"] == [COUPON_EXPIRED]
               for f in result["new_errors"]), brief(result["new_errors"])


def test_diff_ranks_the_new_exception_type_first(released_shop):
    """On /checkout the release changed one thing: ``validate_coupon`` raises CouponExpired, which
    ``apply_coupon`` catches. That finding must come first for the route. Intermittent here (in
    about 1 run in 3 on Python 3.11, rarely on 3.12): the sensor bills its own cost of sampling the
    exception's stack to ``apply_coupon``'s self time (+60..90 µs per request on 3.11), which then
    passes the 1 % minimum effect as a ``latency`` regression and, since error findings carry only
    their function's self-time change as impact, outranks the new exception type."""
    result = diff_json(released_shop.db, "1.0", "2.0", CHECKOUT)
    assert result["regressions"], result
    first = result["regressions"][0]
    assert (first["function"], first["kind"]) == (L + "validate_coupon", "new_error_type"), brief(result["regressions"])
    assert first["exception_types"] == [COUPON_EXPIRED], first


def test_diff_reports_nothing_on_untouched_routes(released_shop):
    """/catalog and /profile run the same code in both releases (``shop.db.fetch_prices`` too,
    whose calls per request changed on /orders only): no regression, no improvement."""
    result = diff_json(released_shop.db, "1.0", "2.0")
    for route in CONTROL_ROUTES:
        found = [f for f in result["regressions"] + result["improvements"] if f["route"] == route]
        assert not found, f"false alarm on control {route}:\n{brief(found)}"
        only = diff_json(released_shop.db, "1.0", "2.0", route)
        assert only["regressions"] == [] and only["improvements"] == [], brief(only["regressions"] + only["improvements"])


def test_code_hashes_tell_changed_functions_from_changed_behaviour(released_shop):
    from funcsight.sources.store import StoreSource

    source = StoreSource(str(released_shop.db))
    try:
        before, after = source.code_hashes("1.0"), source.code_hashes("2.0")
    finally:
        source.close()
    changed = {L + name for name in ("order_total", "render_summary", "validate_coupon", "apply_coupon", "search")}
    unchanged = {L + name for name in ("build_report", "checkout", "list_products", "format_label", "load_profile",
                                       "mask_email", "order_skus")} | {DB + "fetch_prices", DB + "query_index"}
    for name in changed:
        assert before[name] != after[name], name
    for name in unchanged:
        assert before[name] == after[name], name


@pytest.mark.parametrize("route", [ORDERS, REPORT, SEARCH])
def test_explain_parts_add_up_to_the_route_change(released_shop, route):
    _function, _kind, _code_changed, planted_ms = PLANTED[route]
    function = LARGEST_PART[route]
    result = cli_json("explain", "--db", str(released_shop.db), "--route", route, "--baseline", "1.0", "--candidate", "2.0")
    assert (result["route"], result["baseline"], result["candidate"]) == (route, "1.0", "2.0")
    parts = result["parts"]
    table = "\n".join(f"  {p['delta_ms']:+.4f} {p['function']}" for p in parts) + f"\n  {result['unexplained_ms']:+.4f} (outside)"
    assert abs(result["candidate_mean_ms"] - result["baseline_mean_ms"] - result["change_ms"]) <= 0.01, result
    assert abs(sum(p["delta_ms"] for p in parts) + result["unexplained_ms"] - result["change_ms"]) <= 0.01, (
        f"parts do not add up to {result['change_ms']}:\n{table}")
    largest = max(parts, key=lambda p: abs(p["delta_ms"]))
    assert largest["function"] == function and parts[0] == largest, f"{route}: largest part is not {function}:\n{table}"
    assert largest["delta_ms"] > 0.7 * planted_ms, table
    # What ran outside sensed code (server, framework) did not change: the remainder is small beside
    # the release's change. (Beside the planted part rather than the route's total change, which a
    # stall of the busy machine in one run can shrink or grow by milliseconds.)
    assert abs(result["unexplained_ms"]) < 0.25 * largest["delta_ms"], f"too much unexplained:\n{table}"

    # The decomposition along the tree adds up to the same change, and names the planted part.
    def total(node: dict) -> float:
        return node["own_ms"] + sum(c["ms_per_request"] for c in node["calls"]) + sum(total(k) for k in node["children"])

    tree = result["tree"]
    assert abs(total(tree) + tree["drift_ms"] - result["change_ms"]) <= 0.01, tree
    assert abs(tree["subtree_ms"] - result["change_ms"]) <= 0.01, tree
    assert result["verdict"]["verdict"] == "slower", result["verdict"]
    assert (result["findings"][0]["function"], result["findings"][0]["kind"]) == PLANTED[route][:2], result["findings"]


def test_versions_lists_both_releases_with_their_traffic(released_shop):
    versions = cli_json("versions", "--db", str(released_shop.db))
    assert [v["version"] for v in versions] == ["1.0", "2.0"], versions
    for info, deployment in zip(versions, (released_shop.v1, released_shop.v2)):
        assert info["requests"] == sum(deployment.requests.values()), info
        assert info["source"] == "service.version" and info["processes"] == 1, info
        assert deployment.started_at <= info["first_seen"] <= info["last_seen"] <= deployment.stopped_at, (
            f"seen {info['first_seen']:.3f}..{info['last_seen']:.3f}, "
            f"ran {deployment.started_at:.3f}..{deployment.stopped_at:.3f}: {info}")
        assert info["calls"] > info["requests"], info
    assert versions[0]["last_seen"] <= versions[1]["first_seen"], versions


@pytest.mark.parametrize("args", [("--baseline", "1.0", "--candidate", "9.9"), ("--baseline", "0.9", "--candidate", "2.0")])
def test_diff_with_an_unknown_version_is_one_clear_line(released_shop, args):
    result = run_cli("diff", "--db", str(released_shop.db), *args, "--format", "json")
    assert result.returncode == 2, result
    assert result.stdout == ""
    unknown = args[1] if args[1] not in ("1.0", "2.0") else args[3]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("funcsight: error:"), result.stderr
    assert f"unknown version '{unknown}'" in lines[0] and "1.0" in lines[0] and "2.0" in lines[0], lines[0]


# ---------------------------------------------------------------------------------- forensics
def test_errors_name_the_raise_site_with_trace_ids_and_no_message_by_default(released_shop):
    records = cli_json("errors", "--db", str(released_shop.db), "--function", L + "validate_coupon")
    assert len(records) == 1, records
    record = records[0]
    assert (record["function"], record["route"], record["version"], record["exception_type"]) == (
        L + "validate_coupon", CHECKOUT, "2.0", COUPON_EXPIRED), record
    assert record["count"] == released_shop.v2.requests[CHECKOUT], record
    v2 = released_shop.v2
    assert v2.started_at <= record["first_seen"] <= record["last_seen"] <= v2.stopped_at, record
    assert record["message"] is None, "exception messages must not be kept unless the user opts in"
    assert re.fullmatch(r"[0-9a-f]{32}", record["trace_id"] or "") and int(record["trace_id"], 16), record
    assert re.fullmatch(r"[0-9a-f]{16}", record["span_id"] or "") and int(record["span_id"], 16), record
    # ... and they are those of a recorded occurrence: a function span of the raising function.
    with closing(sqlite3.connect(f"file:{released_shop.db}?mode=ro", uri=True)) as conn:
        spans = conn.execute("SELECT name, exception_type FROM spans WHERE trace_id = ? AND span_id = ?",
                             (record["trace_id"], record["span_id"])).fetchall()
    assert spans == [(L + "validate_coupon", COUPON_EXPIRED)], spans

    logic_py = v2.app_dir / "shop" / "logic.py"
    stack = record["stack"]
    assert stack, record
    raise_frame = stack[-1]
    assert raise_frame["function"] == "validate_coupon", stack
    assert Path(raise_frame["file"]) == logic_py, stack
    assert raise_frame["line"] == line_of(logic_py, "raise CouponExpired("), stack
    # The caller that caught it is on the stack too, at its call site.
    callers = [frame for frame in stack if frame["function"] == "apply_coupon"]
    assert callers and callers[0]["line"] == line_of(logic_py, "rate = validate_coupon("), stack

    # Nothing raised in release 1.0, and the error is listed for the route too.
    assert cli_json("errors", "--db", str(released_shop.db), "--version", "1.0") == []
    by_route = cli_json("errors", "--db", str(released_shop.db), "--route", CHECKOUT)
    assert [(r["function"], r["exception_type"]) for r in by_route] == [(L + "validate_coupon", COUPON_EXPIRED)], by_route


@pytest.mark.parametrize("redact", [False, True], ids=["captured", "redacted"])
def test_errors_keep_messages_only_on_opt_in_after_redaction(instrument_launcher, tmp_path, redact):
    db = tmp_path / "funcsight.db"
    env = {"FUNCSIGHT_CAPTURE_MESSAGES": "true"}
    if redact:
        env["FUNCSIGHT_REDACT"] = "shop.privacy:scrub"
    app = deploy(instrument_launcher, tmp_path / "v2", "v2", {**store_env(db, SERVICE, "2.0"), **env})
    try:
        app.start()
        for _ in range(10):
            status, body = get(app.port, "/checkout/7")  # user7, coupon SAVE2: the message names them
            assert status == 200, body
        app.stop()
    finally:
        app.kill()
    records = cli_json("errors", "--db", str(db), "--function", L + "validate_coupon")
    assert [(r["exception_type"], r["count"]) for r in records] == [(COUPON_EXPIRED, 10)], records
    expected = "coupon SAVE2 of <email> expired on 2024-12-31" if redact else "coupon SAVE2 of user7@example.com expired on 2024-12-31"
    assert records[0]["message"] == expected, records[0]


# ------------------------------------------------------------------------- no change, no verdict
STEADY_PER_ROUTE = 80
STEADY_SPREAD_S = 6.0


@pytest.fixture(scope="module")
def same_code_twice(instrument_launcher, tmp_path_factory):
    """Release 1.0 run twice, as versions 1.0 and 1.0b (identical code), with the same paced
    traffic; ``steady`` is a copy of the store after the first run alone (one version)."""
    base = tmp_path_factory.mktemp("same_code")
    steady, db = base / "steady.db", base / "funcsight.db"
    env = {"FUNCSIGHT_EXPORT_INTERVAL": "0.3"}
    run_release(instrument_launcher, base / "a", "v1", "1.0", steady, SHOP_ROUTES, STEADY_PER_ROUTE, STEADY_SPREAD_S, **env)
    copy_store(steady, db)
    run_release(instrument_launcher, base / "b", "v1", "1.0b", db, SHOP_ROUTES, STEADY_PER_ROUTE, STEADY_SPREAD_S, **env)
    return steady, db


def test_same_code_twice_diff_reports_nothing(same_code_twice):
    _steady, db = same_code_twice
    assert [v["version"] for v in cli_json("versions", "--db", str(db))] == ["1.0", "1.0b"]
    result = diff_json(db, "1.0", "1.0b")
    assert result["regressions"] == [], "regressions between identical releases:\n" + brief(result["regressions"])
    assert result["improvements"] == [], "improvements between identical releases:\n" + brief(result["improvements"])
    assert result["new_errors"] == [] and result["new_functions"] == [] and result["removed_functions"] == [], result
    assert {v["verdict"] for v in result["routes"]} == {"unchanged"}, result["routes"]


def test_steady_run_has_no_anomalies(same_code_twice):
    """One version, same code and traffic rate for its whole run: nothing to report. Intermittent
    here (about 1 run in 15: a few-microsecond drift of a tiny function, or a millisecond stall of
    the busy machine in part of the run, is reported); not strict."""
    steady, _db = same_code_twice
    assert [v["version"] for v in cli_json("versions", "--db", str(steady))] == ["1.0"]
    found = cli_json("anomalies", "--db", str(steady))
    assert found == [], json.dumps(found, indent=1)


# ------------------------------------------------------------------------------------ anomalies
DRIFT_PER_ROUTE = 100
DRIFT_SPREAD_S = 10.0
INITIAL_UNITS = 40  # shop/inventory.py
WRITE_OUT_MS = 15.0  # shop/ledger.py
# The slowdown is judged on per-bin means (about 20 time bins over the run). With the app's default
# buffer of 40 events, a bin held 3-8 calls of record_event, so one call stalled ~60 ms by a busy
# machine moved its bin's mean by 20 ms and Welch's test on the bins lost significance (p 1e-13 ->
# 8e-3, measured on a run's own bins). The buffer is made larger for this run and the route driven
# harder, so every bin holds ~25 calls: the same stall moves a bin by ~2 ms against a 15 ms change.
BUFFER_LIMIT = 300  # SHOP_BUFFER_LIMIT: events recorded fast before every event pays a write-out
DRIFT_EVENTS = 500  # /events requests: BUFFER_LIMIT fast, then 200 slow (200 x 15 ms write-outs)


@pytest.fixture(scope="module")
def drifting_run(instrument_launcher, tmp_path_factory):
    """One version whose behaviour changes during the run because of its own state: the audit
    buffer fills up after BUFFER_LIMIT events (then every event pays a write-out), and the limited
    item sells out after INITIAL_UNITS reservations (then ``reserve`` raises OutOfStock)."""
    base = tmp_path_factory.mktemp("drift")
    db = base / "funcsight.db"
    counts = {EVENTS: DRIFT_EVENTS, RESERVE: DRIFT_PER_ROUTE, CATALOG: DRIFT_PER_ROUTE, PROFILE: DRIFT_PER_ROUTE}
    deployment = run_release(instrument_launcher, base / "v1", "v1", "1.0", db, (EVENTS, RESERVE, CATALOG, PROFILE),
                             counts, DRIFT_SPREAD_S, FUNCSIGHT_EXPORT_INTERVAL="0.3", SHOP_BUFFER_LIMIT=str(BUFFER_LIMIT))
    return db, deployment


def anomaly_listing(found: list[dict]) -> str:
    return "\n".join(
        f"  {a['route']:<20} {a['function']:<28} {a['kind']:<15} {a['before']:.4g} -> {a['after']:.4g} "
        f"p={a['p_value']:.1e} bins {a['bins_before']}+{a['bins_after']} {a['exception_type'] or ''}"
        for a in found
    ) or "  (none)"


def test_anomalies_find_the_slowdown_and_the_new_exception_type(drifting_run):
    db, deployment = drifting_run
    found = cli_json("anomalies", "--db", str(db))
    listing = anomaly_listing(found)

    slow = [a for a in found if (a["function"], a["kind"]) == ("shop.ledger.record_event", "latency")]
    assert len(slow) == 1, listing
    slow = slow[0]
    assert slow["route"] == EVENTS and slow["version"] == "1.0", slow
    # ms per call: 0.5 ms of its own before the buffer is full, + a 15 ms write-out per event after.
    assert slow["after"] > slow["before"] + 0.5 * WRITE_OUT_MS and slow["after"] > 2 * slow["before"], slow
    assert slow["bins_before"] >= 3 and slow["bins_after"] >= 2, slow
    assert deployment.started_at < slow["change_at"] < deployment.stopped_at, slow

    new_type = [a for a in found if a["kind"] == "new_error_type"]
    assert [(a["function"], a["route"], a["exception_type"]) for a in new_type] == [
        ("shop.inventory.reserve", RESERVE, "shop.inventory.OutOfStock")], listing
    assert new_type[0]["before"] == 0.0 and new_type[0]["after"] > 0.3, new_type
    # Every reservation after the last unit raised, and only those.
    sold_out = cli_json("errors", "--db", str(db), "--function", "shop.inventory.reserve")
    assert [(r["exception_type"], r["count"]) for r in sold_out] == [
        ("shop.inventory.OutOfStock", DRIFT_PER_ROUTE - INITIAL_UNITS)], sold_out


def test_anomalies_report_nothing_on_unchanged_functions(drifting_run):
    """/catalog and /profile served the same code at the same rate throughout the run, and on the
    affected routes only the changed functions and their callers (whose durations contain the
    change) may be named, never an unchanged sibling such as ``shop.ledger.describe``.
    Intermittent here: a drift of a few microseconds per call of a tiny function (mask_email,
    format_label, describe) is reported in about half the runs on a busy machine; not strict."""
    db, _deployment = drifting_run
    found = cli_json("anomalies", "--db", str(db))
    listing = anomaly_listing(found)
    assert not [a for a in found if a["route"] in CONTROL_ROUTES], "anomaly on a control route:\n" + listing
    allowed = {"shop.ledger.record_event", VIEWS + "events_view", "shop.inventory.reserve", VIEWS + "reserve_view"}
    assert {a["function"] for a in found} <= allowed, "anomaly on an unchanged function:\n" + listing


# ------------------------------------------------ the method itself: library-level reproductions
class _Version:
    def __init__(self, version: str):
        self.version = version


class _DiffSource:
    """Just the aggregate questions ``compare.diff`` asks, answered from given aggregates."""

    def __init__(self, aggregates: dict, route_aggregates: dict):
        self.aggregates, self.route_aggs = aggregates, route_aggregates

    def versions(self):
        return [_Version(v) for v in sorted({key[1] for key in self.route_aggs})]

    def routes(self):
        return {key[0] for key in self.route_aggs}

    def function_aggregates(self, route=None, version=None):
        return self.aggregates

    def route_aggregates(self, route=None, version=None):
        return self.route_aggs

    def code_hashes(self, version):
        return {}

    def code_locations(self, version=None):
        return {}

    def path_aggregates(self, route=None, version=None):
        """Every function a leaf called by the route's entry: one node each."""
        from funcsight.sources.base import PathAggregate

        return {(r, v, (name,)): PathAggregate((name,), agg.calls, agg.errors, agg.total_ns, agg.self_ns)
                for (name, _kind, r, v), agg in self.aggregates.items()}

    def route_window_series(self, route=None, version=None):
        return getattr(self, "route_windows", [])

    def path_series(self, route=None, version=None):
        return getattr(self, "path_windows", [])

    def series(self, version=None, since=None):
        return []


class _SeriesSource:
    """Just the time-series questions ``anomalies.anomalies`` asks."""

    def __init__(self, rows: list, route_rows: list):
        self.rows, self.route_rows = sorted(rows), route_rows

    def series(self, version=None, since=None):
        return self.rows

    def route_series(self, version=None, since=None):
        return self.route_rows

    def error_series(self, version=None, since=None):
        return []

    def route_aggregates(self, route=None, version=None):
        """Each route's requests, and as its latency the sum of its (leaf) functions' time."""
        from funcsight.sources.base import RouteAggregate

        routes = {}
        for _start, _end, route_name, ver, count in self.route_rows:
            routes.setdefault((route_name, ver), RouteAggregate()).requests += count
        for _start, _end, _name, _kind, route_name, ver, _calls, _errors, total_ns in self.rows:
            routes.setdefault((route_name, ver), RouteAggregate()).total_ns += total_ns
        return routes


def _null_diff(rng, functions: int = 30, calls: int = 150) -> bool:
    """One diff of two versions whose leaf functions draw their durations from the SAME
    distribution (log-normal around 1 ms): True when anything is reported."""
    from funcsight.analysis.compare import diff
    from funcsight.sources.base import Aggregate, RouteAggregate
    from funcsight.histogram import bucket_of

    aggregates, routes, route_windows, path_windows = {}, {}, [], []
    windows = 10
    for version in ("a", "b"):
        route = RouteAggregate()
        for w in range(windows):  # every request calls every function once; 1 ms outside sensed code
            requests = calls // windows
            start = (0 if version == "a" else 100) + w
            window_total = requests * 1_000_000
            for n in range(functions):
                agg = aggregates.setdefault((f"app.f{n}", "function", "/r", version), Aggregate())
                total = 0
                for _ in range(requests):
                    duration = int(1e6 * rng.lognormvariate(0.0, 1.0))
                    total += duration
                    agg.hist[bucket_of(duration)] = agg.hist.get(bucket_of(duration), 0) + 1
                agg.calls += requests
                agg.total_ns += total
                agg.self_ns += total
                window_total += total
                path_windows.append((start, start + 1, "/r", version, (f"app.f{n}",), requests, 0, total, total))
            route.requests += requests
            route.total_ns += window_total
            route_windows.append((start, start + 1, "/r", version, requests, 0, window_total))
        routes[("/r", version)] = route
    source = _DiffSource(aggregates, routes)
    source.route_windows, source.path_windows = route_windows, path_windows
    result = diff(source, "a", "b")
    return bool(result.regressions or result.improvements)


def test_diff_false_alarm_rate_without_change_is_about_alpha():
    """Nothing changed between the versions: at ALPHA = 1 % per direction, about 2 in 100 diffs may
    report something. Seeded, so the count is the same on every run (currently 6 of 60)."""
    import random

    rng = random.Random(20250601)
    trials = 60
    alarms = sum(_null_diff(rng) for _ in range(trials))
    assert alarms <= 3, f"{alarms} of {trials} diffs without any change reported a regression or improvement"


def _null_series(rng, functions: int = 30, bins: int = 20, calls_per_bin: int = 10) -> bool:
    """One anomalies run over a steady version: every function's per-call durations come from the
    same distribution in every window. True when anything is reported."""
    from funcsight.analysis.anomalies import anomalies

    rows, route_rows = [], []
    for b in range(bins):
        start = 1000.0 + 0.5 * b
        route_rows.append((start, start + 0.5, "/r", "1", calls_per_bin))
        for n in range(functions):
            total = sum(int(1e6 * rng.lognormvariate(0.0, 1.0)) for _ in range(calls_per_bin))
            rows.append((start, start + 0.5, f"app.f{n}", "function", "/r", "1", calls_per_bin, 0, total))
    return bool(anomalies(_SeriesSource(rows, route_rows), now=2000.0))


def test_anomalies_false_alarm_rate_on_a_steady_run_is_about_alpha():
    """Steady behaviour: at ALPHA = 1 %, about 1 in 100 runs may report something. Seeded
    (currently 35 of 100)."""
    import random

    rng = random.Random(20250602)
    trials = 100
    alarms = sum(_null_series(rng) for _ in range(trials))
    assert alarms <= 4, f"{alarms} of {trials} steady runs reported an anomaly"


def test_anomalies_ignore_a_microsecond_drift_on_a_millisecond_route():
    """A route of 5 ms per request; one of its functions goes from 3 to 4 µs per call mid-run
    (0.02 % of the route's latency; what a busy machine's cache pressure does to a tiny function,
    seen on /profile's mask_email and /catalog's format_label). ``diff`` would not report such a
    change (its minimum effect is 1 % of the route's latency); ``anomalies`` should not either."""
    from funcsight.analysis.anomalies import anomalies

    rows, route_rows = [], []
    for b in range(20):
        start, jitter = 1000.0 + 0.5 * b, (b % 3 - 1)
        route_rows.append((start, start + 0.5, "/r", "1", 10))
        rows.append((start, start + 0.5, "app.query", "function", "/r", "1", 10, 0, 10 * (5_000_000 + 50_000 * jitter)))
        tiny = 3_000 if b < 10 else 4_000
        rows.append((start, start + 0.5, "app.tiny", "function", "/r", "1", 10, 0, 10 * (tiny + 50 * jitter)))
    found = anomalies(_SeriesSource(rows, route_rows), now=2000.0)
    assert found == [], [(a.function, a.kind, a.before, a.after, a.p_value) for a in found]
