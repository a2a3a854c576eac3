"""Privacy and security, with the real app under the real launcher:

* no argument values, local variables, request bodies or environment values are ever captured: an
  app whose functions take a secret (from the environment and from the request body) and raise
  with it in the message is run with the store and OTLP on (every call a function span); the
  secrets are then searched for in every byte of the store files and everything rotel received;
* exception messages only with FUNCSIGHT_CAPTURE_MESSAGES=true, through FUNCSIGHT_REDACT when set;
  stacks carry function names, files and lines only;
* the store file (and its WAL and shared-memory files) is created 0600, whatever the umask;
* no network activity except the configured exporter: connects traced with strace (every
  process, C code included), and with an audit hook (Python's socket module, no tool needed).

(The MCP HTTP transport's loopback binding and token: tests/test_mcp_server.py.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from faultkit import FAULT_APP, RotelAt, copy_app, drive, funcsight_lines, otlp_env, request, stop_timed, wait_until
from helpers import START_TIMEOUT_S, cli_json, free_port, wait_for_port

SECRET_ENV = "S3CRET-ENV-7f3a9c"  # an environment value the app reads and passes around
SECRET_BODY = "S3CRET-BODY-41d2e8"  # a request body the app reads, passes around and raises with
SECRETS = (SECRET_ENV, SECRET_BODY)
LOGIC = "faultapp.logic."


def secret_requests(port: int, n: int = 20) -> None:
    for _ in range(n):
        status, body = request(port, "/secret", method="POST", body=f"user=ada&token={SECRET_BODY}".encode())
        assert status == 200, body
        assert json.loads(body)["rejected"] is True


def store_bytes(db: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in db.parent.glob(db.name + "*")}


def assert_absent(what: str, blobs: dict[str, bytes]) -> None:
    for name, data in blobs.items():
        for secret in SECRETS:
            for encoding in ("utf-8", "utf-16-le"):
                assert secret.encode(encoding) not in data, f"{secret!r} ({encoding}) found in {what} {name}"


def start_rotel(tmp_path: Path) -> RotelAt:
    workdir = tmp_path / "rotel"
    workdir.mkdir()
    rotel = RotelAt(workdir)
    reason = rotel.start()
    if reason is not None:
        pytest.skip(reason)
    return rotel


def test_no_values_locals_bodies_or_environment_are_captured(start_app, tmp_path):
    rotel = start_rotel(tmp_path)
    try:
        db = tmp_path / "store" / "funcsight.db"
        db.parent.mkdir()
        env = otlp_env(f"http://127.0.0.1:{rotel.grpc_port}", FUNCSIGHT_DB=str(db), FAULT_APP_SECRET=SECRET_ENV,
                       FUNCSIGHT_SLOW_CALL_MS="0", FUNCSIGHT_SPANS_PER_TRACE="1000")  # every call a function span
        app = start_app(FAULT_APP, env)
        secret_requests(app.port)
        stop_timed(app)

        def arrived(points, spans):
            names = {s.name for s in spans if s.scope == "funcsight"}
            return {LOGIC + "checksum", LOGIC + "validate"} <= names

        assert rotel.wait_for(arrived, 10), "the function spans did not arrive (the control of this test)"
    finally:
        rotel.stop()

    # Positive control: what must be there is there: names, the exception's type.
    rows = {(r["function"], r["route"]): r for r in cli_json("functions", "--db", str(db))}
    assert rows[(LOGIC + "checksum", "/secret")]["calls"] == 20
    assert rows[(LOGIC + "validate", "/secret")]["errors_by_type"] == {"faultapp.logic.Rejected": 20}
    assert "faultapp.logic.Rejected" in rotel.all_output()
    # The secrets are nowhere: not in the store files, not in what the backend received.
    assert_absent("the store file", store_bytes(db))
    assert_absent("rotel's output", {"output": rotel.all_output().encode()})
    assert_absent("the app's log", {"log": app.log_path.read_bytes()})


def error_records(db: Path) -> list[dict]:
    return [r for r in cli_json("errors", "--db", str(db)) if r["function"] == LOGIC + "validate"]


@pytest.mark.parametrize("mode", ["default", "opt-in", "opt-in-redacted"])
def test_exception_messages_only_on_opt_in_and_through_the_redaction_hook(start_app, tmp_path, mode):
    db = tmp_path / "funcsight.db"
    extra = {}
    if mode != "default":
        extra["FUNCSIGHT_CAPTURE_MESSAGES"] = "true"
    if mode == "opt-in-redacted":
        extra["FUNCSIGHT_REDACT"] = "faultapp.privacy:scrub"
    app = start_app(FAULT_APP, otlp_env(None, FUNCSIGHT_DB=str(db), FAULT_APP_SECRET=SECRET_ENV, **extra))
    secret_requests(app.port, 5)
    stop_timed(app)
    assert funcsight_lines(app.log_path.read_text(errors="replace")) == []

    records = error_records(db)
    assert len(records) == 1 and records[0]["count"] == 5, records
    record = records[0]
    # Stacks: function names, files and lines, nothing else.
    assert record["stack"], record
    for frame in record["stack"]:
        assert set(frame) == {"function", "file", "line"}, frame
        assert isinstance(frame["function"], str) and isinstance(frame["file"], str) and isinstance(frame["line"], int), frame
    assert record["stack"][-1]["function"].endswith("validate"), record["stack"]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        for (stack,) in conn.execute("SELECT stack FROM error_samples"):
            for frame in json.loads(stack):
                assert len(frame) == 3 and [type(v) for v in frame] == [str, str, int], frame

    message = record["message"]
    if mode == "default":
        assert message is None
        assert_absent("the store file", store_bytes(db))
    elif mode == "opt-in":
        assert message == f"bad credentials user=ada&token={SECRET_BODY}"  # what the user asked to keep
    else:
        assert message == "bad credentials user=ada&token=[redacted]"
        assert_absent("the store file", store_bytes(db))


def test_store_files_are_owner_only_whatever_the_umask(instrument_launcher, tmp_path):
    app_dir = copy_app(tmp_path)
    db = tmp_path / "shared" / "funcsight.db"
    db.parent.mkdir()
    db.parent.chmod(0o777)
    port = free_port()
    env = otlp_env(None, FUNCSIGHT_DB=str(db))
    env["PYTHONPATH"] = str(app_dir)
    with open(tmp_path / "app.log", "wb") as log:
        process = subprocess.Popen([str(instrument_launcher), sys.executable, "serve.py", str(port)], cwd=app_dir, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: os.umask(0))
    try:
        assert wait_for_port(port, START_TIMEOUT_S, alive=lambda: process.poll() is None)
        drive(port, count=20)
        # While the app runs, SQLite's write-ahead log and shared-memory file exist beside it.
        assert wait_until(lambda: len(list(db.parent.glob("funcsight.db*"))) == 3, 10), list(db.parent.iterdir())
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in db.parent.glob("funcsight.db*")}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    assert modes == {"funcsight.db": 0o600, "funcsight.db-wal": 0o600, "funcsight.db-shm": 0o600}, {k: oct(v) for k, v in modes.items()}
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


# ------------------------------------------------------------------------------------- network
_CONNECT = re.compile(r"^(?P<pid>\d+)\s+(?P<call>connect|sendto|sendmsg)\((?P<args>.*)$")
_INET = re.compile(r"sa_family=AF_INET6?, sin6?_port=htons\((?P<port>\d+)\).*?(?:inet_addr\(\"(?P<v4>[^\"]+)\"\)|inet_pton\(AF_INET6, \"(?P<v6>[^\"]+)\")")
_UNIX = re.compile(r"sa_family=AF_UNIX, sun_path=\"(?P<path>[^\"]*)\"")


def test_no_network_activity_but_the_configured_exporter_strace(instrument_launcher, tmp_path):
    """Every connect() and datagram of the app's process tree, C code included (gRPC's core):
    the only destination is the OTLP endpoint; no name lookup, nothing else."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace): the audit-hook test below still runs")
    probe = subprocess.run([strace, "-f", "-e", "trace=connect", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.strip()[:200]}")
    rotel = start_rotel(tmp_path)
    app_dir = copy_app(tmp_path)
    port = free_port()
    trace_file = tmp_path / "connect.trace"
    env = otlp_env(f"http://127.0.0.1:{rotel.grpc_port}", FUNCSIGHT_DB=str(tmp_path / "f.db"), FAULT_APP_SECRET=SECRET_ENV)
    env["PYTHONPATH"] = str(app_dir)
    try:
        with open(tmp_path / "app.log", "wb") as log:
            process = subprocess.Popen(
                [strace, "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-e", "signal=none", "-o", str(trace_file),
                 str(instrument_launcher), sys.executable, "serve.py", str(port)],
                cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            assert wait_for_port(port, 2 * START_TIMEOUT_S, alive=lambda: process.poll() is None), (tmp_path / "app.log").read_text()
            drive(port, count=30)
            secret_requests(port, 5)
            assert wait_until(lambda: "funcsight" in rotel.output(), 15), "nothing reached the configured exporter"
        finally:
            # SIGTERM to the app (strace's child), not to strace: strace then ends with it.
            for child in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split():
                os.kill(int(child), signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
    finally:
        rotel.stop()
    destinations, unix, other = set(), set(), []
    for line in trace_file.read_text().splitlines():
        match = _CONNECT.match(line)
        if not match:
            continue
        args = match.group("args")
        inet, local = _INET.search(args), _UNIX.search(args)
        if inet:
            address = inet.group("v4") or inet.group("v6")
            destinations.add((address.removeprefix("::ffff:"), int(inet.group("port"))))  # IPv4-mapped (gRPC)
        elif local:
            unix.add(local.group("path"))
        elif "sa_family=AF_NETLINK" in args or ("NULL" in args and match.group("call") != "connect"):
            continue  # the kernel's own routing socket; datagrams on connected sockets
        else:
            other.append(line)
    print(f"\nconnects: {sorted(destinations)}; unix sockets: {sorted(unix)}", flush=True)
    # The test client connects to the app; the app itself only to the OTLP endpoint.
    assert destinations <= {("127.0.0.1", rotel.grpc_port)}, destinations
    assert ("127.0.0.1", rotel.grpc_port) in destinations
    assert not any(port == 53 for _, port in destinations)
    assert not other, other
    assert unix <= {"/var/run/nscd/socket"}, unix  # glibc's name-service cache probe, local only


def test_no_network_activity_but_the_configured_exporter_audit_hook(tmp_path):
    """The same with Python's audit hooks (``netguard.py``): every connect and name lookup that
    goes through the socket module, from interpreter start (OTLP over HTTP here)."""
    rotel = start_rotel(tmp_path)
    app_dir = copy_app(tmp_path)
    port = free_port()
    report = tmp_path / "network.jsonl"
    env = otlp_env(f"http://127.0.0.1:{rotel.http_port}", FUNCSIGHT_DB=str(tmp_path / "f.db"),
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    env["PYTHONPATH"] = str(app_dir)
    try:
        with open(tmp_path / "app.log", "wb") as log:
            process = subprocess.Popen([sys.executable, "netguard.py", str(report), "serve.py", str(port)], cwd=app_dir, env=env,
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            assert wait_for_port(port, START_TIMEOUT_S, alive=lambda: process.poll() is None), (tmp_path / "app.log").read_text()
            drive(port, count=30)
            assert wait_until(lambda: "funcsight" in rotel.output(), 15), "nothing reached the configured exporter"
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    finally:
        rotel.stop()
    events = [json.loads(line) for line in report.read_text().splitlines()]
    connects = {e["address"] for e in events if e["event"] == "socket.connect"}
    lookups = [e for e in events if e["event"] in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr")]
    binds = {e["address"] for e in events if e["event"] == "socket.bind"}
    print(f"\nconnects {sorted(connects)}; lookups {[e['args'] for e in lookups]}; binds {sorted(binds)}", flush=True)
    assert connects == {repr(("127.0.0.1", rotel.http_port))}, connects
    for lookup in lookups:  # the exporter resolves its own endpoint's literal address, nothing else
        assert "'127.0.0.1'" in lookup["args"], lookup
    # The app's own listening socket, and probes of the loopback (urllib3 binds ('::1', 0) to
    # learn whether IPv6 works): nothing that can reach another machine.
    assert all(address.startswith(("('127.0.0.1',", "('::1',")) for address in binds), binds
    assert not [e for e in events if e["event"] in ("socket.sendto", "socket.sendmsg")]
