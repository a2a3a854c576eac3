"""Bad input, fuzzed with hypothesis (property tests):

* every ``FUNCSIGHT_*`` variable: ``Config.from_env`` never raises; a bad value gives one warning
  naming the variable and the documented default; ``strict`` (the CLI) raises ConfigError only;
* every ``FUNCSIGHT_*`` and the relevant ``OTEL_*`` variables, given to a tiny app started under
  the real ``opentelemetry-instrument``: the app still prints its result and exits 0, and funcsight
  never prints a traceback (a bounded number of examples: each is a real process);
* every CLI flag: ``funcsight.cli.main.main(argv)`` returns 0 or 2 (``--help``/``--version``:
  argparse's exit 0), never raises, and a 2 is one ``funcsight: error:`` line;
* store files with random bytes, truncated or overwritten pages, and wrong schemas: the CLI
  answers or exits 2 with one clear line; the store writer never raises.

Strategies never name a host other than 127.0.0.1 / localhost, and paths stay in scratch
directories: the fuzzing itself must not touch the network or the filesystem elsewhere.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from faultkit import copy_app, run_script  # noqa: E402
from funcsight.cli.main import main as cli_main  # noqa: E402
from funcsight.config import Config, ConfigError  # noqa: E402
from helpers import clean_env  # noqa: E402
from test_store_cli import make_window, make_writer, write_store  # noqa: E402

# Each example of the launcher test is a real process (1-4 s): 10 of them in CI.
# The in-process properties run a few hundred examples. In CI every property runs a fixed
# (derandomized) set, so a run never fails on a new random example; FUNCSIGHT_FUZZ_EXAMPLES=N
# explores with fresh random examples instead (N for the launcher test).
_EXPLORE = int(os.environ.get("FUNCSIGHT_FUZZ_EXAMPLES", "0"))


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck),
                    derandomize=not _EXPLORE, database=None)


SUBPROCESS_SETTINGS = fuzz_settings(_EXPLORE or 10)
FAST_SETTINGS = fuzz_settings(300)

NUMERIC = {
    "FUNCSIGHT_EXPORT_INTERVAL": ("export_interval_s", float, 0.05, 3600),
    "FUNCSIGHT_SLOW_CALL_MS": ("slow_call_ms", float, 0, 3_600_000),
    "FUNCSIGHT_SPANS_PER_TRACE": ("spans_per_trace", int, 0, 10_000),
    "FUNCSIGHT_MAX_SERIES": ("max_series", int, 1, 10_000_000),
    "FUNCSIGHT_MAX_FUNCTIONS": ("max_functions", int, 1, 10_000_000),
    "FUNCSIGHT_MAX_ROUTES": ("max_routes", int, 1, 1_000_000),
}
CHOICES = {
    "FUNCSIGHT_STORE": ("store", ("auto", "on", "off")),
    "FUNCSIGHT_IMPLEMENTATION": ("implementation", ("auto", "c", "python")),
}


# ------------------------------------------------------------------------------------ strategies
def tricky_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Text a user (or a broken deployment template) might put in a variable."""
    samples = st.sampled_from([
        "", " ", "0", "-1", "1", "1e3", "1e309", "-0", "nan", "NaN", "inf", "-inf", "0x10", "1_000", "10s", "½",
        "true", "FALSE", "yes", "off", "on", "auto", "c", "python", "C ", " python", "none", "${FUNCSIGHT_DB}",
        "\t\n", "é", "日本", "\u202e", "'", '"', ";", ",", ",,", "*", "a,b", "9" * 5000,
    ])
    return st.one_of(samples, st.text(max_size=max_size), st.integers(-10**12, 10**12).map(str),
                     st.floats(allow_nan=True, allow_infinity=True).map(repr))


def no_nul(text: str) -> str:
    return text.replace("\x00", "")


def env_text() -> st.SearchStrategy[str]:
    """What the environment can hold: no NUL, no lone surrogates (os.environ encodes values)."""
    return tricky_text().map(no_nul).filter(lambda t: t.encode("utf-8", "surrogateescape") is not None and _encodable(t))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def loopback_endpoint() -> st.SearchStrategy[str]:
    """Endpoints that are wrong in every way but never name another host."""
    port = st.one_of(st.sampled_from(["1", "0", "99999", "-5", "", "notaport", "4317"]), st.integers(1, 65535).map(str))
    good = st.builds(lambda scheme, p, path: f"{scheme}127.0.0.1:{p}{path}",
                     st.sampled_from(["http://", "https://", "", "grpc://", "ftp://"]), port,
                     st.sampled_from(["", "/", "/v1/traces", "/%zz", "?x=y", "#f"]))
    odd = st.sampled_from(["://", "http://", "http://[::1", "http://[::1]:1", "localhost:1", "http://localhost:1",
                           "unix:///nonexistent/sock", "http://127.0.0.1:1,http://127.0.0.1:2", " http://127.0.0.1:1 "])
    return st.one_of(good, odd)


def exporter_names() -> st.SearchStrategy[str]:
    name = st.sampled_from(["otlp", "console", "none", "otlp_proto_http", "otlp_proto_grpc", "nonexistent", "OTLP", " otlp ", ""])
    return st.lists(name, max_size=3).map(",".join)


def funcsight_env(tmp_dir: str) -> st.SearchStrategy[dict[str, str]]:
    """Values for every FUNCSIGHT_* variable (each maybe absent); paths stay below ``tmp_dir``."""
    db = st.one_of(
        st.sampled_from(["", " ", ".", "..", "/", "/dev/null", "/proc/funcsight.db", "no/such/dir/f.db", "f.db", "dir.db/"]),
        st.text(alphabet=st.characters(blacklist_characters="\x00/", blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30),
    ).map(lambda name: name if name.startswith(("/dev", "/proc")) or name in ("/",) else os.path.join(tmp_dir, name))
    globs = st.lists(st.sampled_from(["*", "tiny", "ti*", "[", "**", "", "funcsight", "os.*", "a b"]), max_size=3).map(",".join)
    redact = st.sampled_from(["", "json:dumps", "nonexistent_module_xyz:scrub", "tiny:square", "a:b:c", "bad", ":", "os.path:basename"])
    values = {
        "FUNCSIGHT_INCLUDE": st.one_of(globs, env_text()),
        "FUNCSIGHT_EXCLUDE": st.one_of(globs, env_text()),
        "FUNCSIGHT_APP_DIR": st.one_of(st.sampled_from(["", "/", ".", "/nonexistent", tmp_dir]), env_text().map(lambda t: os.path.join(tmp_dir, t))),
        "FUNCSIGHT_DB": db,
        "FUNCSIGHT_STORE": env_text(),
        "FUNCSIGHT_EXPORT_INTERVAL": env_text(),
        "FUNCSIGHT_SLOW_CALL_MS": env_text(),
        "FUNCSIGHT_SPANS_PER_TRACE": env_text(),
        "FUNCSIGHT_MAX_SERIES": env_text(),
        "FUNCSIGHT_MAX_FUNCTIONS": env_text(),
        "FUNCSIGHT_MAX_ROUTES": env_text(),
        "FUNCSIGHT_IMPLEMENTATION": env_text(),
        "FUNCSIGHT_CAPTURE_MESSAGES": env_text(),
        "FUNCSIGHT_REDACT": st.one_of(redact, env_text()),
    }
    return st.fixed_dictionaries({}, optional=values)


def otel_env() -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({}, optional={
        "OTEL_EXPORTER_OTLP_ENDPOINT": loopback_endpoint(),
        "OTEL_METRICS_EXPORTER": st.one_of(exporter_names(), env_text()),
        "OTEL_TRACES_EXPORTER": st.one_of(exporter_names(), env_text()),
        "OTEL_EXPORTER_OTLP_PROTOCOL": st.one_of(st.sampled_from(["grpc", "http/protobuf", "http/json", "HTTP/PROTOBUF", ""]), env_text()),
        "OTEL_SERVICE_NAME": env_text(),
        "OTEL_RESOURCE_ATTRIBUTES": st.one_of(
            st.lists(st.tuples(env_text(), env_text()), max_size=3).map(lambda kv: ",".join(f"{k}={v}" for k, v in kv)),
            st.sampled_from(["service.version=", "=x", "a=%zz", "a=b=c", ",,,", "service.version=1.0,service.version=2.0"]),
            env_text(),
        ),
    })


# -------------------------------------------------------------------------------------- config
class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def funcsight_warnings():
    handler = Collect()
    logger = logging.getLogger("funcsight")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


SCRATCH = tempfile.mkdtemp(prefix="funcsight-fuzz-")


@FAST_SETTINGS
@given(env=funcsight_env(SCRATCH))
def test_config_from_env_never_raises_and_says_what_it_ignored(env):
    with funcsight_warnings() as warnings:
        config = Config.from_env(env)
    assert isinstance(config, Config)
    defaults = Config()
    for name, (attr, kind, low, high) in NUMERIC.items():
        value = getattr(config, attr)
        assert isinstance(value, kind) and low <= value <= high, (name, value)
        if value != getattr(defaults, attr):
            assert name in env, (name, value)
    for name, (attr, choices) in CHOICES.items():
        assert getattr(config, attr) in choices
    assert isinstance(config.capture_messages, bool)
    # A value that is not used is named in one warning line, and the default applies.
    ignored = [m for m in warnings if "using the default" in m]
    assert all("\n" not in m for m in ignored), ignored
    for name, raw in env.items():
        if raw.strip() == "":
            continue  # blank is unset
        named = [m for m in ignored if f"{name}=" in m]
        if name in NUMERIC:
            attr, kind, low, high = NUMERIC[name]
            try:
                parsed = kind(raw)
                usable = low <= parsed <= high
            except ValueError:
                usable = False
        elif name in CHOICES:
            attr, choices = CHOICES[name]
            parsed, usable = raw.strip().lower(), raw.strip().lower() in choices
        else:
            continue
        if usable:
            assert getattr(config, attr) == parsed and not named, (name, raw, getattr(config, attr), named)
        else:
            assert getattr(config, attr) == getattr(defaults, attr) and len(named) == 1, (name, raw, named)


@FAST_SETTINGS
@given(env=funcsight_env(SCRATCH))
def test_strict_config_raises_config_error_only(env):
    """The CLI reads the environment strictly: a bad value is a ConfigError (exit 2), nothing else."""
    try:
        Config.from_env(env, strict=True)
    except ConfigError as err:
        assert "FUNCSIGHT_" in str(err) and "\n" not in str(err)


# ----------------------------------------------------------------------- the app under the launcher
@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory) -> Path:
    return copy_app(tmp_path_factory.mktemp("tiny"))


@SUBPROCESS_SETTINGS
@given(data=st.data())
def test_any_environment_leaves_the_app_running(instrument_launcher, tiny_app, data):
    scratch = tempfile.mkdtemp(dir=tiny_app.parent)
    env = {**data.draw(funcsight_env(scratch), label="funcsight"), **data.draw(otel_env(), label="otel")}
    # A short export timeout keeps an example with an unreachable endpoint short.
    full_env = clean_env(OTEL_LOGS_EXPORTER="none", OTEL_EXPORTER_OTLP_TIMEOUT="1", **env)
    began = time.monotonic()
    result = run_script(instrument_launcher, tiny_app, ["tiny.py"], full_env, timeout_s=40)
    took = time.monotonic() - began
    shown = "\n".join(f"  {k}={v!r}" for k, v in sorted(env.items()))
    assert result.returncode == 0, f"exit {result.returncode} with\n{shown}\nstderr:\n{result.stderr[-3000:]}"
    assert "tiny: result 28" in result.stdout, f"no result with\n{shown}\nstdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-2000:]}"
    funcsight_trace = [line for line in result.stderr.splitlines() if "funcsight" in line and "Traceback" in line]
    assert "Traceback" not in result.stderr, f"a traceback with\n{shown}\nstderr:\n{result.stderr[-4000:]}"
    assert not funcsight_trace
    assert took < 20, f"{took:.1f} s with\n{shown}"


# ---------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("cli")
    good = base / "good.db"
    write_store(good)
    (base / "random.db").write_bytes(os.urandom(8192))
    (base / "dir.db").mkdir()
    return {"good": str(good), "random": str(base / "random.db"), "dir": str(base / "dir.db"),
            "missing": str(base / "missing.db"), "base": str(base)}


COMMANDS = {
    "functions": ["--route", "--version", "--limit", "--format", "--db", "--source"],
    "routes": ["--route", "--version", "--format", "--db", "--source"],
    "versions": ["--format", "--db", "--source"],
    "diff": ["--baseline", "--candidate", "--route", "--format", "--db", "--source"],
    "explain": ["--route", "--baseline", "--candidate", "--limit", "--format", "--db", "--source"],
    "anomalies": ["--since", "--version", "--format", "--db", "--source"],
    "errors": ["--function", "--route", "--version", "--format", "--db", "--source"],
    "demo": ["--requests", "--concurrency"],  # values are always bad: the demo itself never runs
    "mcp": ["--transport"],  # likewise: the server never starts
}


def flag_value(flag: str, files: dict[str, str]) -> st.SearchStrategy[str]:
    if flag == "--db":
        # Control characters included: an error line escapes them, so it stays one line.
        return st.one_of(st.sampled_from([files["good"], files["random"], files["dir"], files["missing"], ""]),
                         st.text(alphabet=st.characters(blacklist_characters="\x00/", blacklist_categories=("Cs",)), max_size=20)
                         .map(lambda name: os.path.join(files["base"], name)))
    if flag == "--source":
        return st.sampled_from(["", "nope", "prometheus+ftp://127.0.0.1:1", "prometheus+http://127.0.0.1:1", "prometheus+http://", "store"])
    if flag == "--format":
        return st.one_of(st.sampled_from(["table", "json"]), env_text())
    if flag in ("--requests", "--concurrency"):  # always rejected: the demo never runs
        return st.sampled_from(["0", "-1", "x", "", "1.5", "-9" * 20])
    if flag == "--limit":
        return st.one_of(st.sampled_from(["0", "-1", "x", "", "1.5", "9" * 40]), st.integers(1, 10**6).map(str))
    if flag == "--transport":
        return st.sampled_from(["carrier-pigeon", "", "HTTP "])
    if flag == "--since":
        return st.one_of(st.sampled_from(["1s", "10m", "2h", "1d", "0", "-1s", "nan", "inf", "1e309d", "s", "", "5x"]), env_text())
    if flag in ("--route", "--baseline", "--candidate", "--version", "--function"):
        return st.one_of(st.sampled_from(["/index", "1.0", "shop.views.index", "", "(overflow)"]), env_text())
    return env_text()


@st.composite
def argv(draw, files: dict[str, str]) -> list[str]:
    command = draw(st.sampled_from(sorted(COMMANDS) + ["", "nonsense", "--version", "-V", "--help"]))
    args = [command] if command else []
    flags = COMMANDS.get(command, [])
    for flag in draw(st.lists(st.sampled_from(flags), max_size=5)) if flags else []:
        args += [flag, draw(flag_value(flag, files))]
    if command in ("demo", "mcp") and not any(a in ("--requests", "--concurrency", "--transport") for a in args):
        args += ["--requests" if command == "demo" else "--transport", "0" if command == "demo" else "carrier-pigeon"]
    if draw(st.booleans()):
        args.append(draw(st.sampled_from(["--frobnicate", "-x", "extra", "--", "--help", "--format"])))
    if command in ("demo", "mcp") and "--help" not in args:  # keep every value bad (see COMMANDS)
        args = [a for a in args if a not in ("--", "extra")]
    return args


def run_main(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli_main(args)
        except SystemExit as exit_:  # argparse's own --help / --version
            status = exit_.code if isinstance(exit_.code, int) else 2
            assert status == 0, (args, status, err.getvalue())
    return status, out.getvalue(), err.getvalue()


@fuzz_settings(250)
@given(data=st.data())
def test_every_cli_flag_fuzzed_returns_0_or_2(cli_files, data):
    args = data.draw(argv(cli_files), label="argv")
    status, out, err = run_main(args)
    assert status in (0, 2), (args, status, err)
    assert "Traceback" not in err and "Traceback" not in out, (args, err)
    if status == 2 and err.startswith("funcsight: error:"):
        assert err.rstrip("\n").count("\n") == 0, (args, err)
    elif status == 2:
        assert err == "" and out.startswith("usage:"), (args, out, err)  # no command: the help


# ------------------------------------------------------------------------------------ bad stores
def valid_store_bytes() -> bytes:
    path = Path(tempfile.mkdtemp(prefix="funcsight-store-")) / "s.db"
    writer, fid = make_writer(path)
    for raising in range(3):
        assert writer.write_window(make_window(fid, requests=5, raising=raising))
    writer.close()
    return path.read_bytes()


VALID_STORE = valid_store_bytes()
PAGE = 4096


@st.composite
def damage(draw) -> tuple:
    """How to damage the valid store: a small description (hypothesis shows it on failure)."""
    size = len(VALID_STORE)
    how = draw(st.sampled_from(["truncate", "overwrite", "zero-page", "header", "random"]))
    if how == "truncate":
        return how, draw(st.integers(0, size - 1))
    if how == "overwrite":
        return how, tuple(draw(st.lists(st.tuples(st.integers(0, size - 1), st.binary(min_size=1, max_size=64)), min_size=1, max_size=8)))
    if how == "zero-page":
        return how, draw(st.integers(0, size // PAGE - 1))
    if how == "header":
        return how, (draw(st.integers(0, 99)), draw(st.integers(0, 255)))
    return how, draw(st.binary(min_size=0, max_size=256)) * draw(st.integers(1, 40))


def damaged(description: tuple) -> bytes:
    how, what = description
    data = bytearray(VALID_STORE)
    if how == "truncate":
        return bytes(data[:what])
    if how == "overwrite":
        for at, chunk in what:
            data[at: at + len(chunk)] = chunk
    elif how == "zero-page":
        data[what * PAGE: (what + 1) * PAGE] = bytes(PAGE)
    elif how == "header":
        data[what[0]] = what[1]
    else:
        return what
    return bytes(data)


@fuzz_settings(200)
@given(description=damage(), command=st.sampled_from(["functions", "routes", "versions", "errors", "anomalies"]))
def test_damaged_store_files_give_an_answer_or_one_clear_error(tmp_path_factory, description, command):
    how, data = description[0], damaged(description)
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "damaged.db"
    path.write_bytes(data)
    status, out, err = run_main([command, "--db", str(path), "--format", "json"])
    assert status in (0, 2), (how, status, err)
    assert "Traceback" not in err, (how, err)
    if status == 2:
        assert err.startswith("funcsight: error:") and err.rstrip("\n").count("\n") == 0, (how, err)
        assert str(path) in err, (how, err)
    assert path.read_bytes() == data, "reading a store modified it"


@fuzz_settings(60)
@given(description=damage())
def test_store_writer_never_raises_on_a_damaged_file(tmp_path_factory, description):
    data = damaged(description)
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "damaged.db"
    path.write_bytes(data)
    with funcsight_warnings() as warnings:
        writer, fid = make_writer(path)
        results = [writer.write_window(make_window(fid, requests=2)) for _ in range(3)]
        writer.close()
    assert all(isinstance(r, bool) for r in results)
    assert len(set(warnings) - {m for m in warnings if "writable again" in m}) <= 1, warnings


SCHEMA_DAMAGE = {
    "dropped function_stats": "DROP TABLE function_stats",
    "dropped route_stats": "DROP TABLE route_stats",
    "dropped processes": "DROP TABLE processes",
    "renamed a column": "ALTER TABLE function_stats RENAME COLUMN calls TO n",
    "dropped windows": "DROP TABLE windows",
    "older user_version": "PRAGMA user_version=0",
    "wrong application_id": "PRAGMA application_id=1234",
    "text in a number column": "UPDATE function_stats SET calls = 'many'",
    "bad histogram JSON": "UPDATE function_stats SET hist = '{not json'",
    "histogram not a map": "UPDATE route_stats SET hist = '[1, 2]'",
    "text in a route count": "UPDATE route_stats SET requests = 'lots'",
    "text in an error count": "UPDATE function_errors SET count = 'some'",
    "text in a window start": "UPDATE windows SET start = 'monday'",
}


@pytest.mark.parametrize(
    "damage, command",
    [
        pytest.param(damage, command, id=f"{command}-{damage}")
        for damage in sorted(SCHEMA_DAMAGE)
        for command in ("functions", "routes", "versions", "errors", "anomalies")
    ],
)
def test_wrong_schema_gives_one_clear_error(tmp_path, damage, command):
    path = tmp_path / "wrong.db"
    path.write_bytes(VALID_STORE)
    conn = sqlite3.connect(path)
    conn.execute(SCHEMA_DAMAGE[damage])
    conn.commit()
    conn.close()
    status, out, err = run_main([command, "--db", str(path), "--format", "json"])
    assert status in (0, 2), (status, err)
    assert "Traceback" not in err
    if damage.startswith(("text in a", "bad histogram", "histogram not")) and command in ("functions", "routes") \
            and damage != "text in a window start":
        # Both read every stats row and its histogram: a value funcsight did not write is damage.
        assert status == 2 and "did not write" in err, (status, err)
    if status == 2:
        assert err.startswith("funcsight: error:") and err.rstrip("\n").count("\n") == 0, err
        assert str(path) in err, err
    else:
        assert err == "", err


def test_the_installed_command_on_a_truncated_store_is_one_line(tmp_path):
    """The same through the installed ``funcsight`` command, as a user runs it."""
    path = tmp_path / "truncated.db"
    path.write_bytes(VALID_STORE[: len(VALID_STORE) // 2 + 17])
    result = subprocess.run([str(Path(sys.executable).parent / "funcsight"), "functions", "--db", str(path)],
                            capture_output=True, text=True, timeout=30, env=clean_env())
    assert result.returncode in (0, 2), result
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 2:
        assert len(result.stderr.splitlines()) == 1 and str(path) in result.stderr, result.stderr


def test_control_characters_in_a_path_are_escaped_in_the_error_line(tmp_path):
    """A path holding a newline and an escape sequence: the error names it, on one line, with both
    escaped, so it can neither split the line nor drive the terminal."""
    path = tmp_path / "new\nline\x1b[2Jclear" / "store.db"
    status, out, err = run_main(["functions", "--db", str(path)])
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("funcsight: error: no store at ")
    assert "\x1b" not in err and "new\\nline\\x1b[2Jclear" in err, err
