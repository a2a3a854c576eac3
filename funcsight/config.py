"""Configuration: keyword argument > environment variable > default, read once when instrumenting.

A bad environment value never stops the application: it is reported in one warning line that names
the variable and what was used instead, and the default applies.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

_log = logging.getLogger("funcsight")

FUNCSIGHT_INCLUDE = "FUNCSIGHT_INCLUDE"
"""Comma-separated module patterns to sense, replacing the default (the application's own
directory): a glob (``shop.*``) or a plain name, which matches that module and all its submodules
(``billing``). A pattern written with a leading ``+`` is sensed in addition to the application's
directory instead (an installed framework or app next to the project's own code).
Examples: ``FUNCSIGHT_INCLUDE="shop.*,billing"``; ``FUNCSIGHT_INCLUDE="+wagtail"``."""

FUNCSIGHT_EXCLUDE = "FUNCSIGHT_EXCLUDE"
"""Comma-separated module globs never to sense. Example: ``FUNCSIGHT_EXCLUDE="shop.migrations.*"``."""

FUNCSIGHT_APP_DIR = "FUNCSIGHT_APP_DIR"
"""The application's directory; modules whose files live below it are sensed by default.
Default: the main script's directory, else the working directory."""

FUNCSIGHT_DB = "FUNCSIGHT_DB"
"""Path of the embedded SQLite store. Default ``./funcsight.db``. Setting it turns the store on."""

FUNCSIGHT_STORE = "FUNCSIGHT_STORE"
"""``auto`` (default: the store is on unless an OTLP endpoint or another metrics exporter is
configured), ``on`` or ``off``."""

FUNCSIGHT_EXPORT_INTERVAL = "FUNCSIGHT_EXPORT_INTERVAL"
"""Seconds between two windows written to the store and handed to OpenTelemetry. Default 10. With
an interval of at most a minute, a process's first window goes out about 1 s after its first
request, so a just-started app shows data at once."""

FUNCSIGHT_SLOW_CALL_MS = "FUNCSIGHT_SLOW_CALL_MS"
"""A sensed call that takes at least this long (ms) in a sampled trace becomes a function span.
Default 50. Calls that raise always qualify."""

FUNCSIGHT_SPANS_PER_TRACE = "FUNCSIGHT_SPANS_PER_TRACE"
"""The most function spans emitted for one trace. Default 20; 0 turns function spans off."""

FUNCSIGHT_MAX_SERIES = "FUNCSIGHT_MAX_SERIES"
"""Cap on distinct function x route series held in memory per window. Default 20000; beyond it
calls are counted under the route ``(overflow)``."""

FUNCSIGHT_MAX_FUNCTIONS = "FUNCSIGHT_MAX_FUNCTIONS"
"""Cap on distinct sensed functions. Default 20000; the calls of code beyond it are counted per route
under the function ``(overflow)`` (``(overflow generators)``, ``(overflow coroutines)``), and the
code objects in ``funcsight.dropped{reason=function_cap}``."""

FUNCSIGHT_MAX_ROUTES = "FUNCSIGHT_MAX_ROUTES"
"""Cap on distinct routes. Default 500; beyond it requests count under ``(overflow)``."""

FUNCSIGHT_MAX_PATHS = "FUNCSIGHT_MAX_PATHS"
"""Cap on call-tree nodes (a function at a path) per route per window. Default 1000; beyond it a
new node's calls are folded into an ``(other paths)`` node under its deepest kept caller and
counted as dropped (``funcsight.dropped{reason=path_cap}``). Function figures stay exact."""

FUNCSIGHT_MAX_PATH_DEPTH = "FUNCSIGHT_MAX_PATH_DEPTH"
"""Depth of the call tree kept. Default 64; calls deeper are counted at one ``(other paths)``
node under the deepest kept one (recursion never deepens the tree: a function already on the
path is counted at that ancestor's node)."""

FUNCSIGHT_IMPLEMENTATION = "FUNCSIGHT_IMPLEMENTATION"
"""``auto`` (default: the C sensor when built, else pure Python), ``c`` or ``python``."""

FUNCSIGHT_CAPTURE_MESSAGES = "FUNCSIGHT_CAPTURE_MESSAGES"
"""``true`` to keep exception messages in error forensics (they may hold personal data). Default
``false``: only exception types, function names, files and lines are kept."""

FUNCSIGHT_REDACT = "FUNCSIGHT_REDACT"
"""``module:function`` called with each captured exception message; what it returns is kept.
Example: ``FUNCSIGHT_REDACT="myapp.privacy:scrub"``. Only used with FUNCSIGHT_CAPTURE_MESSAGES."""

ENV_VARS = (
    FUNCSIGHT_INCLUDE,
    FUNCSIGHT_EXCLUDE,
    FUNCSIGHT_APP_DIR,
    FUNCSIGHT_DB,
    FUNCSIGHT_STORE,
    FUNCSIGHT_EXPORT_INTERVAL,
    FUNCSIGHT_SLOW_CALL_MS,
    FUNCSIGHT_SPANS_PER_TRACE,
    FUNCSIGHT_MAX_SERIES,
    FUNCSIGHT_MAX_FUNCTIONS,
    FUNCSIGHT_MAX_ROUTES,
    FUNCSIGHT_IMPLEMENTATION,
    FUNCSIGHT_CAPTURE_MESSAGES,
    FUNCSIGHT_REDACT,
)


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names it and says what to do."""


def split_globs(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _number(name: str, raw: str, kind: type, minimum: float, maximum: float):
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw!r} is out of range [{minimum}, {maximum}]")
    return value


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class Config:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    app_dir: str | None = None
    db_path: str = "funcsight.db"
    store: str = "auto"
    export_interval_s: float = 10.0
    slow_call_ms: float = 50.0
    spans_per_trace: int = 20
    max_series: int = 20_000
    max_functions: int = 20_000
    max_routes: int = 500
    max_paths: int = 1_000
    max_path_depth: int = 64
    implementation: str = "auto"
    capture_messages: bool = False
    redact: str | None = None
    db_path_explicit: bool = field(default=False, compare=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, strict: bool = False, **overrides) -> Config:
        """Read the environment; keyword overrides win. With ``strict`` a bad value raises
        :class:`ConfigError` (the CLI); otherwise it is logged once and the default is kept."""
        env = os.environ if environ is None else environ
        values: dict = {}
        parsers = {
            FUNCSIGHT_INCLUDE: ("include", split_globs),
            FUNCSIGHT_EXCLUDE: ("exclude", split_globs),
            FUNCSIGHT_APP_DIR: ("app_dir", lambda raw: raw or None),
            FUNCSIGHT_DB: ("db_path", _db_path),
            FUNCSIGHT_STORE: ("store", lambda raw: _choice(FUNCSIGHT_STORE, raw, ("auto", "on", "off"))),
            FUNCSIGHT_EXPORT_INTERVAL: (
                "export_interval_s",
                lambda raw: _number(FUNCSIGHT_EXPORT_INTERVAL, raw, float, 0.05, 3600),
            ),
            FUNCSIGHT_SLOW_CALL_MS: (
                "slow_call_ms",
                lambda raw: _number(FUNCSIGHT_SLOW_CALL_MS, raw, float, 0, 3_600_000),
            ),
            FUNCSIGHT_SPANS_PER_TRACE: (
                "spans_per_trace",
                lambda raw: _number(FUNCSIGHT_SPANS_PER_TRACE, raw, int, 0, 10_000),
            ),
            FUNCSIGHT_MAX_SERIES: (
                "max_series",
                lambda raw: _number(FUNCSIGHT_MAX_SERIES, raw, int, 1, 10_000_000),
            ),
            FUNCSIGHT_MAX_FUNCTIONS: (
                "max_functions",
                lambda raw: _number(FUNCSIGHT_MAX_FUNCTIONS, raw, int, 1, 10_000_000),
            ),
            FUNCSIGHT_MAX_ROUTES: (
                "max_routes",
                lambda raw: _number(FUNCSIGHT_MAX_ROUTES, raw, int, 1, 1_000_000),
            ),
            FUNCSIGHT_MAX_PATHS: (
                "max_paths",
                lambda raw: _number(FUNCSIGHT_MAX_PATHS, raw, int, 1, 1_000_000),
            ),
            FUNCSIGHT_MAX_PATH_DEPTH: (
                "max_path_depth",
                lambda raw: _number(FUNCSIGHT_MAX_PATH_DEPTH, raw, int, 1, 1_000),
            ),
            FUNCSIGHT_IMPLEMENTATION: (
                "implementation",
                lambda raw: _choice(FUNCSIGHT_IMPLEMENTATION, raw, ("auto", "c", "python")),
            ),
            FUNCSIGHT_CAPTURE_MESSAGES: ("capture_messages", lambda raw: _boolean(FUNCSIGHT_CAPTURE_MESSAGES, raw)),
            FUNCSIGHT_REDACT: ("redact", lambda raw: _callable_path(FUNCSIGHT_REDACT, raw)),
        }
        for name, (attr, parse) in parsers.items():
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[attr] = parse(raw)
            except ConfigError as err:
                if strict:
                    raise
                _log.warning("funcsight: %s; using the default %r", err, getattr(cls, attr))
        if "db_path" in values:
            values["db_path_explicit"] = True
        values.update({key: value for key, value in overrides.items() if value is not None})
        if "db_path" in overrides and overrides["db_path"] is not None:
            values["db_path_explicit"] = True
        return cls(**values)


def _boolean(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} must be true or false")


def _callable_path(name: str, raw: str) -> str:
    module, _, attribute = raw.strip().partition(":")
    if not module or not attribute or not all(part.isidentifier() for part in module.split(".") + attribute.split(".")):
        raise ConfigError(f"{name}={raw!r} must look like package.module:function")
    return raw.strip()


def _db_path(raw: str) -> str:
    if "\x00" in raw:
        raise ConfigError(f"{FUNCSIGHT_DB} holds a NUL byte")
    return raw
