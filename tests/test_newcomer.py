"""The first hour of a new user (issue 16): a single-file app on 3.11, what is sensed and said at
start, FUNCSIGHT_INCLUDE patterns, versions of uncommitted code, the demo's store, data soon after
the first request, an editable install's checkout, and the README's settings under opentelemetry-distro. Real processes under the real launcher where
the behaviour is about processes."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from funcsight.config import Config
from funcsight.deployment import SOURCE_GIT, detect_version
from funcsight.instrumentation.selection import CodeSelector, _matches
from helpers import (
    START_TIMEOUT_S, clean_env, free_port, get, outside_table, run_cli, store_env, tail, wait_for_port,
)

CHECKOUT = Path(__file__).resolve().parent.parent

SINGLE_FILE_APP = '''
import sys
from flask import Flask

app = Flask(__name__)


def double(x):
    return x * 2


class Basket:
    def total(self, n):
        return sum(double(i) for i in range(n))


@app.route("/total/<int:n>")
def total(n):
    return {"total": Basket().total(n)}


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True, use_reloader=False)
'''


class Served:
    """A script run as ``opentelemetry-instrument <command>`` in ``workdir``, its output in a log."""

    def __init__(self, workdir: Path, command: list[str], env: dict[str, str], port: int):
        self.log_path = workdir / "app.log"
        self.port = port
        launcher = Path(sys.executable).parent / "opentelemetry-instrument"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([str(launcher), *command], cwd=workdir, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not wait_for_port(port, START_TIMEOUT_S, alive=lambda: self.process.poll() is None):
            self.kill()
            raise AssertionError(f"the app did not start:\n{self.log()}")

    def log(self) -> str:
        return tail(self.log_path)

    def serve_then_read(self, db: Path, paths: list[str]) -> dict[tuple[str, str], int]:
        """GET each path (all must answer 200), stop the app, and return the store's calls by
        (function, route)."""
        try:
            for path in paths:
                assert get(self.port, path)[0] == 200, path
        finally:
            self.stop()
        return {(r["function"], r["route"]): r["calls"] for r in functions_json(db)}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def write_single_file_app(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "serve.py").write_text(SINGLE_FILE_APP)


def functions_json(db: Path, *extra: str) -> list[dict]:
    done = run_cli("functions", "--db", str(db), "--format", "json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ------------------------------------------------------------------ item 2: 3.11, python serve.py
def test_single_file_flask_app_functions_are_sensed(tmp_path):
    """``opentelemetry-instrument python serve.py``: the script's own functions are sensed on 3.11
    (compiled by the interpreter after funcsight started) as on 3.12+, and so is Flask with
    ``+flask`` although the OTel Flask instrumentation imported it before funcsight started."""
    workdir = tmp_path / "app"
    write_single_file_app(workdir)
    db = tmp_path / "store.db"
    port = free_port()
    app = Served(workdir, [sys.executable, "serve.py", str(port)],
                 store_env(db, "single", "1", FUNCSIGHT_INCLUDE="+flask"), port)
    calls = app.serve_then_read(db, [f"/total/{n}" for n in (1, 2, 3)])
    route = "/total/<int:n>"
    assert calls.get(("serve.total", route)) == 3, (calls, app.log())
    assert calls.get(("serve.Basket.total", route)) == 3, calls
    assert calls.get(("serve.double", route)) == 6, calls  # 0+1+2 per request: 1+2+3
    assert calls.get(("flask.app.Flask.dispatch_request", route)) == 3, sorted(k for k in calls if k[0].startswith("flask"))
    assert "not sensed" not in app.log_path.read_text(), app.log()


def test_framework_code_around_the_request_span_belongs_to_the_request(tmp_path):
    """Sensing ``flask`` and ``werkzeug`` under gunicorn: ``Flask.__call__`` and ``wsgi_app`` enclose
    the instrumentation's server span, URL matching runs before it starts and teardown after it
    ends; all of it is the request's (enclosure.py), not background. What stays background is what
    runs when no sensed call encloses a request: start-up, and gunicorn iterating and closing the
    response after ``Flask.__call__`` returned."""
    gunicorn = Path(sys.executable).parent / "gunicorn"
    workdir = tmp_path / "app"
    write_single_file_app(workdir)
    db = tmp_path / "store.db"
    port = free_port()
    n = 40
    env = store_env(db, "single", "1", FUNCSIGHT_INCLUDE="+flask,+werkzeug", PYTHONPATH=str(workdir))
    app = Served(workdir, [str(gunicorn), "-w", "1", "--graceful-timeout", "5", "-b", f"127.0.0.1:{port}", "serve:app"], env, port)
    calls = app.serve_then_read(db, [f"/total/{i % 5}" for i in range(n)])
    route = "/total/<int:n>"
    for function in ("flask.app.Flask.__call__", "flask.app.Flask.wsgi_app", "flask.app.Flask.do_teardown_request",
                     "werkzeug.routing.map.MapAdapter.match", "flask.app.Flask.dispatch_request"):
        assert calls.get((function, route)) == n, (function, sorted(k for k in calls if k[0] == function), app.log())
        assert (function, "(background)") not in calls, function
    framework = {k: v for k, v in calls.items() if k[0].startswith(("flask.", "werkzeug."))}
    in_route = sum(v for (f, r), v in framework.items() if r == route)
    outside = {f: v for (f, r), v in framework.items() if r == "(background)"}
    per_request_outside = sum(v for f, v in outside.items() if v >= n)  # what recurs per request
    print(f"\nframework calls per request: {in_route / n:.1f} in the request, {per_request_outside / n:.1f} outside it "
          f"({', '.join(sorted(f for f, v in outside.items() if v >= n))})", flush=True)
    assert per_request_outside / (in_route + per_request_outside) < 0.05, outside


# --------------------------------------------------- item 3: start line, nothing-sensed warning, include
def test_start_line_once_per_service_and_first_window_soon(tmp_path):
    """gunicorn with 2 workers: one start-up line for the service, naming what is sensed and the
    store; with the default 10 s interval, the first request is in the store within ~1 s."""
    gunicorn = Path(sys.executable).parent / "gunicorn"
    if not gunicorn.exists():
        pytest.fail(f"gunicorn is not installed next to {sys.executable} (pip install -e '.[test]')")
    workdir = tmp_path / "app"
    write_single_file_app(workdir)
    db = tmp_path / "store.db"
    port = free_port()
    env = clean_env(FUNCSIGHT_DB=str(db), OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none",
                    OTEL_LOGS_EXPORTER="none", OTEL_SERVICE_NAME="single", PYTHONPATH=str(workdir))
    app = Served(workdir, [str(gunicorn), "-w", "2", "--graceful-timeout", "5", "-b", f"127.0.0.1:{port}", "serve:app"], env, port)
    try:
        started = time.monotonic()
        assert get(port, "/total/2")[0] == 200
        seen = None
        while time.monotonic() - started < 8:
            if db.exists():
                done = run_cli("routes", "--db", str(db), "--format", "json")
                if done.returncode == 0 and any(r["route"] == "/total/<int:n>" for r in json.loads(done.stdout)):
                    seen = time.monotonic() - started
                    break
            time.sleep(0.2)
        print(f"\nfirst request in the store after {seen} s (FUNCSIGHT_EXPORT_INTERVAL 10 s)", flush=True)
        assert seen is not None and seen < 5, app.log()
    finally:
        app.stop()
    lines = [line for line in app.log_path.read_text().splitlines() if line.startswith("funcsight: sensing")]
    assert len(lines) == 1, app.log()
    assert f"below {os.path.realpath(workdir)}" in lines[0] and f"store {db}" in lines[0], lines[0]


def test_warning_when_requests_ran_no_sensed_function(tmp_path):
    workdir = tmp_path / "app"
    write_single_file_app(workdir)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    db = tmp_path / "store.db"
    port = free_port()
    app = Served(workdir, [sys.executable, "serve.py", str(port)],
                 store_env(db, "single", "1", FUNCSIGHT_APP_DIR=str(empty)), port)
    try:
        assert get(port, "/total/2")[0] == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "no sensed function" not in app.log_path.read_text():
            time.sleep(0.2)
    finally:
        app.stop()
    text = app.log_path.read_text()
    warnings = [line for line in text.splitlines() if "no sensed function" in line]
    assert len(warnings) == 1 and "FUNCSIGHT_INCLUDE=+" in warnings[0], text


def test_include_plain_name_matches_package_and_submodules(tmp_path):
    assert _matches("httpbin", ("httpbin",)) and _matches("httpbin.core", ("httpbin",))
    assert not _matches("httpbinx", ("httpbin",)) and not _matches("other.httpbin", ("httpbin",))
    assert _matches("shop.views", ("shop.*",)) and not _matches("shop", ("shop.*",))
    site = "/usr/lib/python3/site-packages/wagtail/core.py"
    own = tmp_path / "mysite" / "views.py"
    own.parent.mkdir()
    own.write_text("def view(): pass\n")
    replacing = CodeSelector(Config(include=("wagtail",), app_dir=str(tmp_path)))
    adding = CodeSelector(Config.from_env({"FUNCSIGHT_INCLUDE": "+wagtail", "FUNCSIGHT_APP_DIR": str(tmp_path)}))
    assert replacing.module_is_sensed("wagtail.core", site) and not replacing.module_is_sensed("mysite.views", str(own))
    assert adding.module_is_sensed("wagtail.core", site) and adding.module_is_sensed("mysite.views", str(own))
    assert not adding.module_is_sensed("django.db", "/usr/lib/python3/site-packages/django/db.py")
    assert "below" in adding.describe() and "wagtail" in adding.describe()


def test_editable_checkout_does_not_hide_apps_inside_it():
    """Under ``pip install -e`` funcsight's folders are top-level folders of the checkout: an app in
    the checkout (here the suite's own sample app) is sensed, funcsight's own files are not."""
    app_dir = CHECKOUT / "tests" / "apps" / "flask_shop"
    selector = CodeSelector(Config(app_dir=str(app_dir)))
    assert selector.file_is_app(str(app_dir / "shopapp" / "views.py"))
    selector = CodeSelector(Config(app_dir=str(CHECKOUT)))
    import funcsight.instrumentation.selection as selection

    assert not selector.file_is_app(selection.__file__)
    assert not selector.file_is_app(str(Path(selection.__file__).parent.parent / "funcsight" / "config.py"))


# ------------------------------------------------------ item 6: the README's settings with the distro
def readme_store_alone_settings() -> dict[str, str]:
    """The variables the README tells a user with ``opentelemetry-distro`` to set for the store alone,
    read from the README itself so the advice and this test cannot drift apart."""
    text = " ".join((CHECKOUT / "README.md").read_text().split())
    after = text.split("for the store alone set", 1)[1]
    assignments = after.split("`", 2)[1].split()
    return dict(item.split("=", 1) for item in assignments)


@pytest.fixture(scope="module")
def distro_site(tmp_path_factory) -> Path:
    """``opentelemetry-distro`` (the release matching the installed instrumentation) in a folder put
    on the app's PYTHONPATH only: the rest of the suite keeps running without a distro. The OTLP
    exporter packages are hidden there (a dist-info of the same name with no entry points comes first
    on the path, and importlib.metadata takes the first distribution of a name): this is the install
    of a user who ran ``pip install funcsight opentelemetry-distro`` and nothing else."""
    import importlib.metadata as metadata

    site = tmp_path_factory.mktemp("distro-site")
    version = metadata.version("opentelemetry-instrumentation")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                           f"opentelemetry-distro=={version}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"pip could not install opentelemetry-distro=={version}:\n{done.stderr[-2000:]}"
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or ""
        if name.lower().replace("_", "-").startswith("opentelemetry-exporter-otlp"):
            shadow = site / f"{name.replace('-', '_')}-{dist.version}.dist-info"
            shadow.mkdir(exist_ok=True)
            (shadow / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {dist.version}\n")
    return site


def test_readme_settings_fill_the_store_under_opentelemetry_distro(tmp_path, distro_site):
    """With the distro installed and exactly the README's settings, the app's functions reach the
    store. Control: the same run without ``OTEL_LOGS_EXPORTER=none`` shows the distro is the one in
    effect (its configurator fails on the missing OTLP logs exporter) and that then nothing is sensed,
    which is why the README names all three variables."""
    settings = readme_store_alone_settings()
    assert settings == {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
                        "OTEL_LOGS_EXPORTER": "none"}, settings
    workdir = tmp_path / "app"
    write_single_file_app(workdir)

    def serve(db: Path, **env: str) -> tuple[str, list[dict]]:
        port = free_port()
        app = Served(workdir, [sys.executable, "serve.py", str(port)],
                     clean_env(FUNCSIGHT_DB=str(db), FUNCSIGHT_EXPORT_INTERVAL="0.5", OTEL_SERVICE_NAME="distro",
                               PYTHONPATH=str(distro_site), **env), port)
        try:
            for n in (1, 2, 3):
                assert get(port, f"/total/{n}")[0] == 200
        finally:
            app.stop()
        return app.log_path.read_text(), (functions_json(db) if db.exists() else [])

    log, rows = serve(tmp_path / "store.db", **settings)
    calls = {(r["function"], r["route"]): r["calls"] for r in rows}
    assert "Failed to auto initialize" not in log and "funcsight: sensing" in log, log[-3000:]
    assert calls.get(("serve.total", "/total/<int:n>")) == 3, (calls, log[-3000:])
    assert calls.get(("serve.double", "/total/<int:n>")) == 6, calls

    without_logs = {name: value for name, value in settings.items() if name != "OTEL_LOGS_EXPORTER"}
    log, rows = serve(tmp_path / "control.db", **without_logs)
    assert "Configuration of configurator failed" in log and "funcsight: sensing" not in log, log[-3000:]
    assert rows == [], rows


# --------------------------------------------------------------------------------- item 4: versions
def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args], check=True,
                   capture_output=True)


def test_uncommitted_edits_are_distinct_versions(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "app.py").write_text("def f():\n    return 1\n")
    (repo / "notes.txt").write_text("x")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "one")
    clean, source = detect_version(None, str(repo))
    assert source == SOURCE_GIT and len(clean) == 12
    (repo / "notes.txt").write_text("y")  # not Python: same version
    assert detect_version(None, str(repo))[0] == clean
    (repo / "app.py").write_text("def f():\n    return 2\n")
    first = detect_version(None, str(repo))[0]
    (repo / "app.py").write_text("def f():\n    return 3\n")
    second = detect_version(None, str(repo))[0]
    (repo / "new.py").write_text("x = 1\n")  # untracked counts
    third = detect_version(None, str(repo))[0]
    assert first.startswith(clean + "-dirty-") and len({clean, first, second, third}) == 4, (clean, first, second, third)


def test_fingerprint_of_installed_package_follows_its_version(tmp_path, monkeypatch):
    """Outside git, FUNCSIGHT_INCLUDE=pkg: the version covers the package's distribution version,
    never the hash of empty input."""
    site = tmp_path / "site"
    (site / "fakepkg").mkdir(parents=True)
    (site / "fakepkg" / "__init__.py").write_text("def f(): pass\n")
    info = site / "fakepkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("fakepkg\n")
    monkeypatch.syspath_prepend(str(site))
    sensed = CodeSelector(Config(include=("fakepkg",), app_dir=str(tmp_path / "nowhere")))
    one = detect_version(None, str(tmp_path / "nowhere"), sensed)[0]
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.1\n")
    two = detect_version(None, str(tmp_path / "nowhere"), sensed)[0]
    empty = "code-" + hashlib.sha1().hexdigest()[:12]
    assert one != two and empty not in (one, two), (one, two)


# ------------------------------------------------------------------------------------ item 5: demo
def test_demo_never_touches_a_store_it_did_not_make(tmp_path):
    user_store = tmp_path / "funcsight.db"
    conn = sqlite3.connect(user_store)
    conn.execute("CREATE TABLE processes (instance_id TEXT)")
    conn.execute("INSERT INTO processes VALUES ('a-real-service')")
    conn.commit()
    conn.close()
    before = user_store.read_bytes()
    done = run_cli("demo", "--db", str(user_store), "--requests", "5")
    assert done.returncode == 2 and "not made by the demo" in done.stderr, (done.returncode, done.stderr)
    assert user_store.read_bytes() == before

    from funcsight.demo.run import _demo_store

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        (tmp_path / "funcsight-demo.db").write_bytes(before)  # not the demo's either
        assert _demo_store(None) == str(tmp_path / "funcsight-demo-2.db")
    finally:
        os.chdir(cwd)


EARLY = '''
def early(x):
    return x + 1


def make_closure(k):
    def closure(x):
        return x * k
    return closure


made_before = make_closure(5)


class Box:
    def method(self):
        return early(1)
'''


@pytest.mark.parametrize("impl", ["c", "python"])
def test_module_imported_before_the_start_is_sensed(impl, tmp_path, monkeypatch):
    """Also on 3.11 (rewritten after the fact): functions of a module imported before the sensor
    started, a closure made before it, methods, and closures made after it."""
    import importlib

    from funcsight.instrumentation import csensor
    from funcsight.instrumentation.calls import stack_sample
    from funcsight.instrumentation.registry import FunctionRegistry
    from funcsight.instrumentation.sensor import make_sensor

    if impl == "c" and not csensor.available():
        pytest.skip(csensor.UNAVAILABLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"fs_newcomer_early_{impl}"
    (tmp_path / f"{name}.py").write_text(EARLY)
    importlib.invalidate_caches()
    module = importlib.import_module(name)  # before any sensor runs
    config = Config(include=(name,), implementation=impl)
    registry = FunctionRegistry()
    sensor = make_sensor(config, registry, CodeSelector(config), stack_sample)
    sink = sensor.sink
    sensor.start()
    try:
        for i in range(3):
            module.early(i)
            module.make_closure(i)(i)
            module.made_before(i)
            module.Box().method()
    finally:
        sensor.stop()
        sys.modules.pop(name, None)
    expected = {"early": 6, "make_closure": 3, "make_closure.<locals>.closure": 6, "Box.method": 3}
    outside = outside_table(sink.background, sensor.take_all_held())  # nested calls are held (an include pattern)
    got = {f: outside.stats[registry.lookup(f"{name}.{f}")][0] for f in expected if registry.lookup(f"{name}.{f}") is not None}
    assert got == expected
