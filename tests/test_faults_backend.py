"""The OTLP backend fails while a real app runs: down from the start, killed mid-run, stalled
(accepts and never answers), and back again. The backend is the real ``rotel`` collector on
loopback; the app is ``tests/apps/fault_app`` under the real ``opentelemetry-instrument``, with the
embedded store on as well (so what funcsight recorded locally can be counted exactly).

For every fault: the app serves every request (all 200), its median latency stays within noise of
a run with no backend configured (below 2x + 5 ms: the machine is shared), its RSS stays flat,
export resumes when the backend returns (rotel prints funcsight's metrics again, with cumulative
totals that include the outage), spans that could not be delivered are counted as
``funcsight.dropped{reason="span_export_failed"}`` (visible at the backend once it is back), and a
stopping app never waits more than a few seconds for a backend that is gone.
"""

from __future__ import annotations

import signal
import time

import pytest

from faultkit import (
    FAULT_APP,
    BlackHole,
    RotelAt,
    RssSampler,
    Traffic,
    drive,
    free_port,
    latency_within_noise,
    latest,
    otlp_env,
    requests_seen,
    stop_timed,
    wait_until,
    work_calls,
)
from helpers import AppProcess, calls_map, cli_json, diff_maps

# A stopping app waits at most funcsight.agent.providers.EXIT_BUDGET_S (3 s) for the backend, plus the app's own exit.
EXIT_LIMIT_S = 8.0
# RSS growth allowed over an outage (the SDK's span queue holds up to 2048 spans; no other growth).
RSS_GROWTH_LIMIT_KB = 40 * 1024
RESUME_TIMEOUT_S = 20.0  # the SDK retries a failed export with backoff (1, 2, 4, 8 s)
# The SDK retries each export for OTEL_EXPORTER_OTLP_TIMEOUT (default 10 s) and queues spans
# meanwhile (up to 2048), so a short outage loses nothing; a 1 s timeout makes the test's outages
# long enough that batches are given up (and must be counted).
SHORT_EXPORT_TIMEOUT = {"OTEL_EXPORTER_OTLP_TIMEOUT": "1"}


@pytest.fixture(scope="module")
def baseline(instrument_launcher, tmp_path_factory) -> Traffic:
    """Latency of the same app with funcsight on and no backend configured (store only)."""
    workdir = tmp_path_factory.mktemp("baseline")
    app = AppProcess(instrument_launcher, FAULT_APP, workdir, otlp_env(None, FUNCSIGHT_DB=str(workdir / "b.db"))).start()
    try:
        drive(app.port, count=50)  # warm-up
        traffic = drive(app.port, seconds=2.0)
    finally:
        app.kill()
    assert traffic.ok == traffic.sent > 50, traffic.statuses[:5]
    return traffic


def check_served(traffic: Traffic, baseline: Traffic, what: str) -> None:
    assert traffic.sent > 20, f"{what}: only {traffic.sent} requests were sent"
    failed = [status for status in traffic.statuses if status != 200]
    assert not failed, f"{what}: {len(failed)} of {traffic.sent} requests failed: {failed[:5]}"
    within, text = latency_within_noise(traffic, baseline)
    print(f"\n{what}: {traffic.sent} requests, all 200; {text}", flush=True)
    assert within, f"{what}: latency beyond noise: {text}"


def check_rss(sampler: RssSampler, since: float, base_kb: int, what: str) -> None:
    peak = sampler.peak_since(since)
    print(f"{what}: RSS {base_kb} kB before, peak {peak} kB (+{peak - base_kb} kB)", flush=True)
    assert peak - base_kb < RSS_GROWTH_LIMIT_KB, f"{what}: RSS grew from {base_kb} kB to {peak} kB"


def check_store(db, sent: int) -> None:
    """Everything reached the local store, exactly, whatever the backend did."""
    expected = work_calls(sent)
    actual = {key: value for key, value in calls_map(cli_json("functions", "--db", str(db))).items() if key in expected}
    assert actual == expected, "store differs:\n" + diff_maps(expected, actual)


def dropped_spans(points) -> int:
    return int(latest(points, "funcsight.dropped", "reason").get(("span_export_failed",), 0))


def server_spans(spans) -> int:
    return sum(1 for span in spans if span.kind == "SPAN_KIND_SERVER")


def start_rotel(rotel: RotelAt) -> None:
    reason = rotel.start()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def rotel_at(tmp_path):
    made: list[RotelAt] = []

    def make(grpc_port: int | None = None) -> RotelAt:
        workdir = tmp_path / f"rotel{len(made)}"
        workdir.mkdir()
        receiver = RotelAt(workdir, grpc_port)
        made.append(receiver)
        return receiver

    try:
        yield make
    finally:
        for receiver in made:
            receiver.stop()


def test_backend_down_from_start_then_back(start_app, rotel_at, baseline, tmp_path):
    rotel = rotel_at(free_port())  # not started: nothing listens on its port yet
    db = tmp_path / "fault.db"
    app = start_app(FAULT_APP, otlp_env(f"http://127.0.0.1:{rotel.grpc_port}", FUNCSIGHT_DB=str(db), **SHORT_EXPORT_TIMEOUT))
    with RssSampler(app.process.pid) as rss:
        traffic = drive(app.port, count=50)
        outage_began, base_kb = time.monotonic(), rss.mark()
        down = drive(app.port, seconds=4.0, first=traffic.sent)
        traffic.add(down)
        check_served(down, baseline, "backend down from the start")
        check_rss(rss, outage_began, base_kb, "backend down from the start")

        start_rotel(rotel)  # the backend comes up
        traffic.add(drive(app.port, seconds=1.5, first=traffic.sent))
        sent = traffic.sent
        resumed = wait_until(lambda: requests_seen(rotel.parsed_all()[0]) >= sent, RESUME_TIMEOUT_S)
        assert resumed, f"export did not resume within {RESUME_TIMEOUT_S} s:\n{app.log()[-3000:]}"

    status, took = stop_timed(app)
    assert status in (0, 143, -signal.SIGTERM) and took < EXIT_LIMIT_S, (status, took)
    assert traffic.ok == sent

    points, spans = rotel.parsed_all()
    # Metrics are cumulative: the totals that arrive include every request of the outage.
    assert requests_seen(points) == sent
    # Every server span was either delivered or counted as dropped (the backend was down).
    dropped = dropped_spans(points)
    print(f"spans delivered {server_spans(spans)}, counted as dropped {dropped}, requests {sent}", flush=True)
    assert dropped > 0, "spans lost during the outage were not counted"
    # A batch whose export timed out on the client may still have reached the backend: it is then
    # both delivered and counted as dropped (seen once in CI: 984 delivered, 1187 dropped, 1775
    # sent). No span may be lost without being counted.
    assert server_spans(spans) <= sent <= server_spans(spans) + dropped
    check_store(db, sent)


def test_backend_killed_mid_run_and_back(start_app, rotel_at, baseline, tmp_path):
    rotel = rotel_at()
    start_rotel(rotel)
    db = tmp_path / "fault.db"
    app = start_app(FAULT_APP, otlp_env(f"http://127.0.0.1:{rotel.grpc_port}", FUNCSIGHT_DB=str(db), **SHORT_EXPORT_TIMEOUT))
    with RssSampler(app.process.pid) as rss:
        traffic = drive(app.port, seconds=1.5)
        assert wait_until(lambda: requests_seen(rotel.parsed()[0]) == traffic.sent, 10), "nothing arrived before the kill"

        rotel.kill()  # SIGKILL mid-run
        outage_began, base_kb = time.monotonic(), rss.mark()
        down = drive(app.port, seconds=4.0, first=traffic.sent)
        traffic.add(down)
        check_served(down, baseline, "backend killed")
        check_rss(rss, outage_began, base_kb, "backend killed")

        start_rotel(rotel)  # back on the same port
        back = drive(app.port, seconds=1.5, first=traffic.sent)
        traffic.add(back)
        check_served(back, baseline, "backend back")
        sent = traffic.sent
        # The new instance's own output: funcsight's totals again, including the outage.
        resumed = wait_until(lambda: requests_seen(rotel.parsed()[0]) >= sent, RESUME_TIMEOUT_S)
        assert resumed, f"export did not resume within {RESUME_TIMEOUT_S} s:\n{app.log()[-3000:]}"

    status, took = stop_timed(app)
    assert took < EXIT_LIMIT_S, took
    assert requests_seen(rotel.parsed()[0]) == sent
    assert dropped_spans(rotel.parsed()[0]) > 0, "spans lost while the backend was dead were not counted"
    check_store(db, sent)


@pytest.mark.parametrize("stall", ["black-hole", "sigstop-rotel"])
def test_backend_stalled(start_app, rotel_at, baseline, tmp_path, stall):
    """A backend that accepts connections and never answers: a TCP server that only reads, or a
    real rotel stopped with SIGSTOP (and continued later, when export must resume)."""
    db = tmp_path / "fault.db"
    hole = None
    if stall == "black-hole":
        hole = BlackHole().__enter__()
        endpoint = f"http://127.0.0.1:{hole.port}"
    else:
        rotel = rotel_at()
        start_rotel(rotel)
        endpoint = f"http://127.0.0.1:{rotel.grpc_port}"
    try:
        app = start_app(FAULT_APP, otlp_env(endpoint, FUNCSIGHT_DB=str(db)))
        with RssSampler(app.process.pid) as rss:
            traffic = drive(app.port, count=50)
            if hole is None:
                assert wait_until(lambda: requests_seen(rotel.parsed()[0]) == traffic.sent, 10)
                rotel.pause()
            stall_began, base_kb = time.monotonic(), rss.mark()
            stalled = drive(app.port, seconds=5.0, first=traffic.sent)
            traffic.add(stalled)
            check_served(stalled, baseline, f"backend stalled ({stall})")
            check_rss(rss, stall_began, base_kb, f"backend stalled ({stall})")
            if hole is None:
                rotel.resume()
                traffic.add(drive(app.port, seconds=1.0, first=traffic.sent))
                sent = traffic.sent
                resumed = wait_until(lambda: requests_seen(rotel.parsed()[0]) >= sent, RESUME_TIMEOUT_S)
                assert resumed, f"export did not resume after SIGCONT within {RESUME_TIMEOUT_S} s"
            else:
                assert hole.accepted, "the app never connected to the stalled backend"
        sent = traffic.sent
        status, took = stop_timed(app)
    finally:
        if hole is not None:
            hole.__exit__(None, None, None)
    print(f"stop with a stalled backend took {took:.2f} s", flush=True)
    assert took < EXIT_LIMIT_S, f"the app took {took:.1f} s to stop with a stalled backend"
    assert traffic.ok == sent
    check_store(db, sent)
    if hole is None:
        assert requests_seen(rotel.parsed()[0]) == sent
    else:
        log = app.log_path.read_text(errors="replace")
        assert "did not take the last export within" in log, log[-2000:]
        assert "Traceback" not in log, log[-3000:]
