"""funcsight beside Datadog's ddtrace: ``opentelemetry-instrument ddtrace-run gunicorn`` (and the
other nesting order) serving a Flask app with two workers, the real ddtrace package from PyPI.

ddtrace replaces each Flask view's code with a forwarding stub until the view's first call in the
process (its Code Origin for Spans, ``ddtrace.internal.wrapping``): the stub carries the view's own
name and file and calls the real body through ddtrace's trampoline. Sensed as a function, it made
the first request of every worker count the view twice (500 requests, 2 workers: 502 calls; the
call tree folded the second call into the first as recursion, so tree and function table
disagreed). funcsight does not sense such stubs (``selection.forwards_to_itself``); these runs
check the view, its callees, the tree and every worker's share against the requests sent.

ddtrace is not in the ``test`` extra: installed, its pytest plugin loads with every test session
and puts its import hook first in ``sys.meta_path`` of the test process (pyproject's addopts turns
that plugin off). Without ddtrace these tests skip. It runs with tracing on (as deployed) and its
agent URL on a closed loopback port, telemetry and remote configuration off: nothing leaves the host.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import CodeType, FunctionType

import pytest

from helpers import assert_functions_are_sums_of_nodes, free_port, get_ok, route_requests, tree_nodes
from test_frameworks import (
    EXIT_FLUSH_ONLY,
    Launched,
    calls_per_process,
    drive,
    env_for,
    exact,
    gunicorn_options,
    processes,
    report,
)

APP = "ddtrace_app"
ROUTE = "/work/<int:n>"
VIEW, HANDLE, SQUARE = "ddapp.wsgi.work", "ddapp.logic.handle", "ddapp.logic.square"
WORKERS = 2


def ddtrace_run() -> Path:
    if importlib.util.find_spec("ddtrace") is None:  # found, not imported: see the module docstring
        if os.environ.get("FUNCSIGHT_TEST_DDTRACE"):  # .ci/run installs it for this file: a skip would hide it
            pytest.fail("FUNCSIGHT_TEST_DDTRACE is set but ddtrace is not installed")
        pytest.skip("ddtrace is not installed (pip install ddtrace); it is not part of the test extra")
    launcher = Path(sys.executable).parent / "ddtrace-run"
    if not launcher.is_file():
        pytest.skip(f"ddtrace is installed but ddtrace-run is not next to {sys.executable}")
    return launcher


def ddtrace_env(db: Path, service: str) -> dict[str, str]:
    return env_for(
        db, service, EXIT_FLUSH_ONLY,
        DD_TRACE_ENABLED="true",  # with tracing off ddtrace patches nothing and no stub appears
        DD_TRACE_AGENT_URL=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        DD_INSTRUMENTATION_TELEMETRY_ENABLED="false",
        DD_REMOTE_CONFIGURATION_ENABLED="false",
        DD_SERVICE=service,
    )


@pytest.mark.parametrize(
    "order, preload",
    [
        pytest.param("otel-outside", False, id="otel-instrument-ddtrace-run"),
        pytest.param("otel-outside", True, id="otel-instrument-ddtrace-run-preload"),
        pytest.param("ddtrace-outside", False, id="ddtrace-run-otel-instrument"),
    ],
)
def test_views_counted_once_under_ddtrace(instrument_launcher, tmp_path, order, preload):
    ddtrace_launcher = ddtrace_run()
    db = tmp_path / "funcsight.db"
    gunicorn = [str(Path(sys.executable).parent / "gunicorn"), *gunicorn_options(graceful_timeout=10),
                "-w", str(WORKERS), "-b", "127.0.0.1:{port}", *(["--preload"] if preload else []), "ddapp.wsgi:app"]
    if order == "otel-outside":
        launcher, command = instrument_launcher, [str(ddtrace_launcher), *gunicorn]
    else:
        launcher, command = ddtrace_launcher, [str(instrument_launcher), *gunicorn]
    workdir = tmp_path / "run"
    workdir.mkdir()
    app = Launched(launcher, APP, workdir, ddtrace_env(db, f"dd-{order}"), command)
    try:
        app.start()
        first = get_ok(app.port, "/work/0")
        sent, served = drive(app.port, 100 * WORKERS, WORKERS, first=1)
        app.stop()
    finally:
        app.kill()
    sent += 1
    served[first["pid"]] += 1
    assert len(served) == WORKERS, f"not every worker served a request: {served}"

    if order == "otel-outside":
        # ddtrace ran in the app and put its stub on the view: the case these counts are about.
        assert first["ddtrace"] and first["stub_at_start"], first
    else:
        # opentelemetry-instrument puts its own sitecustomize first on PYTHONPATH, which shadows
        # ddtrace-run's: ddtrace never starts in the app (said in the README's limits).
        assert not first["ddtrace"] and not first["stub_at_start"], first

    recorded = calls_per_process(db, VIEW, ROUTE)
    report(f"{order}{' --preload' if preload else ''}", sent, served, recorded, app.pid)
    exact(db, {(VIEW, ROUTE): sent, (HANDLE, ROUTE): sent, (SQUARE, ROUTE): 2 * sent})
    assert route_requests(db) == {ROUTE: sent}
    # Every worker: exactly the views it served (the stub made it one more, on its first request).
    assert recorded == dict(served), f"per-worker counts differ: recorded {recorded}, served {dict(served)}"
    assert {pid for pid, _ in processes(db)} >= set(served)
    # The view at the top of its tree, not folded into itself as recursion.
    assert {path: node["calls_per_request"] for path, node in tree_nodes(db, ROUTE).items()} == {
        (VIEW,): 1.0, (VIEW, HANDLE): 1.0, (VIEW, HANDLE, SQUARE): 2.0}
    assert_functions_are_sums_of_nodes(db)


def test_no_compiled_function_is_taken_for_a_stub():
    """What the compiler makes never has a function among its constants: no function of any module
    loaded in this process (the standard library, pytest, OpenTelemetry, funcsight), nor any code
    nested in one, is taken for a stub."""
    from funcsight.instrumentation.selection import forwards_to_itself

    codes = []
    for module in list(sys.modules.values()):
        for value in list(getattr(module, "__dict__", {}).values()):
            members = list(vars(value).values()) if isinstance(value, type) else [value]
            codes += [m.__code__ for m in members if type(m) is FunctionType]
    seen: set[int] = set()
    while codes:
        code = codes.pop()
        if id(code) in seen:
            continue
        seen.add(id(code))
        assert not forwards_to_itself(code), f"{code.co_qualname} ({code.co_filename}) taken for a stub"
        codes += [const for const in code.co_consts if type(const) is CodeType]
    print(f"{len(seen)} code objects looked at")
    assert len(seen) > 5_000, f"only {len(seen)} code objects looked at"
