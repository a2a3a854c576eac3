"""Talking to a Prometheus-compatible server: the address (with its options and basic auth), the
HTTP API calls (``urllib`` only, a timeout on every request, every failure one
:class:`~funcsight.sources.base.SourceError` line), and the PromQL vocabulary: funcsight's metric
and label names as the OpenTelemetry Prometheus exporter renders them, string quoting, selectors.
"""

from __future__ import annotations

import base64
import json
import math
import re
import socket
import urllib.error
import urllib.parse
import urllib.request

from funcsight import names
from funcsight.durations import parse_duration
from funcsight.sources.base import SourceError

# Prometheus names of funcsight's metrics (the OpenTelemetry exporter's rendering of names.*).
FUNCTION_CALLS = "funcsight_function_calls_total"
FUNCTION_ERRORS = "funcsight_function_errors_total"
FUNCTION_DURATION = "funcsight_function_duration_seconds_total"
FUNCTION_SELF_TIME = "funcsight_function_self_time_seconds_total"
FUNCTION_BUCKETS = "funcsight_function_duration_buckets_total"
ROUTE_REQUESTS = "funcsight_route_requests_total"
ROUTE_ERRORS = "funcsight_route_errors_total"
ROUTE_DURATION = "funcsight_route_duration_seconds_total"
ROUTE_BUCKETS = "funcsight_route_duration_buckets_total"
EDGE_CALLS = "funcsight_edge_calls_total"
EDGE_DURATION = "funcsight_edge_duration_seconds_total"
EDGE_SELF_TIME = "funcsight_edge_self_time_seconds_total"


def label_name(attribute: str) -> str:
    """An OpenTelemetry attribute as the Prometheus exporter names its label."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", attribute)


FUNCTION = label_name(names.CODE_FUNCTION_NAME)  # code_function_name
KIND = label_name(names.FUNCTION_KIND)  # funcsight_function_kind
ROUTE = label_name(names.HTTP_ROUTE)  # http_route
VERSION = label_name(names.SERVICE_VERSION)  # service_version
EXCEPTION = label_name(names.EXCEPTION_TYPE)  # exception_type
CALLER = label_name(names.CALLER)  # funcsight_caller
LE = names.BUCKET_LE
TARGET = ("job", "instance")  # what tells processes (scrape targets) apart
PRESENCE = f'{{__name__=~"{ROUTE_REQUESTS}|{FUNCTION_CALLS}"}}'

DEFAULT_TIMEOUT_S = 30.0
OPTIONS = ("range", "step", "timeout")


def quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(metric: str, **labels: str | None) -> str:
    matchers = [f"{label_name(k)}={quote(v)}" for k, v in labels.items() if v is not None]
    return metric + ("{" + ",".join(matchers) + "}" if matchers else "")


def address_duration(options: dict[str, str], name: str) -> float | None:
    """An option of the address (``?range=7d``) in seconds; None when absent."""
    if name not in options:
        return None
    try:
        return parse_duration(options[name])
    except ValueError as err:
        raise SourceError(f"{name} in the Prometheus address: {err}") from None


class PrometheusClient:
    """The HTTP API of one server, asked as of one moment (``now``, epoch seconds)."""

    def __init__(self, address: str, now: float, timeout_s: float | None = None):
        parsed = urllib.parse.urlsplit(address)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise SourceError(f"{address!r} is not a Prometheus address: use prometheus+http://HOST:PORT")
        self.options = dict(urllib.parse.parse_qsl(parsed.query))
        unknown = sorted(set(self.options) - set(OPTIONS))
        if unknown:
            raise SourceError(f"unknown option(s) {', '.join(unknown)} in the Prometheus address; known: {', '.join(OPTIONS)}")
        try:
            port = parsed.port
        except ValueError:
            raise SourceError(f"{address!r} has no valid port: use prometheus+http://HOST:PORT") from None
        netloc = parsed.hostname if ":" not in parsed.hostname else f"[{parsed.hostname}]"
        if port:
            netloc += f":{port}"
        self.base_url = urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path.rstrip("/"), "", ""))
        self._auth = None
        if parsed.username is not None:
            credentials = f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password or '')}"
            self._auth = "Basic " + base64.b64encode(credentials.encode()).decode()
        self.timeout_s = timeout_s or address_duration(self.options, "timeout") or DEFAULT_TIMEOUT_S
        self.now = now

    def api(self, path: str, params: dict) -> object:
        """One API call: POST (form) for queries, which can be long; GET for everything else."""
        url = f"{self.base_url}/api/v1/{path}"
        encoded = urllib.parse.urlencode(params, doseq=True)
        headers = {"Accept": "application/json", "User-Agent": "funcsight"}
        if path in ("query", "query_range"):
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            request = urllib.request.Request(url, data=encoded.encode(), method="POST", headers=headers)
        else:
            request = urllib.request.Request(url + ("?" + encoded if encoded else ""), method="GET", headers=headers)
        if self._auth:
            request.add_header("Authorization", self._auth)
        where = f"prometheus at {self.base_url}"
        too_slow = f"{where} did not answer within {self.timeout_s:g} s (add ?timeout=SECONDS to the address to wait longer)"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            detail = _error_text(err.read())
            if detail is None:  # not the API's JSON error: probably not a Prometheus API at all
                raise SourceError(f"{where} answered HTTP {err.code} ({err.reason}) to /api/v1/{path}; "
                                  "is this a Prometheus-compatible server (and the path prefix right)?") from None
            raise SourceError(f"{where} answered {err.code} to {path}: {detail}") from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise SourceError(too_slow) from None
            raise SourceError(f"{where} cannot be reached ({reason}); is it running, and is the address right?") from None
        except (socket.timeout, TimeoutError):
            raise SourceError(too_slow) from None
        except OSError as err:
            raise SourceError(f"{where} cannot be reached ({err}); is it running, and is the address right?") from None
        try:
            document = json.loads(raw)
        except ValueError:
            raise SourceError(f"{where} did not answer {path} with JSON; is this a Prometheus server?") from None
        if not isinstance(document, dict) or document.get("status") != "success":
            detail = document.get("error") if isinstance(document, dict) else None
            raise SourceError(f"{where} refused {path}: {detail or 'no success status'}")
        return document.get("data")

    def instant(self, query: str) -> list[dict]:
        data = self.api("query", {"query": query, "time": f"{self.now:.3f}"})
        if not isinstance(data, dict) or data.get("resultType") not in ("vector", "matrix"):
            raise SourceError(f"prometheus at {self.base_url} gave an unexpected answer to {query!r}")
        return data.get("result") or []

    def range(self, query: str, start: float, end: float, step: float) -> list[dict]:
        """``query_range`` at steps ending exactly at ``end`` (the grid is laid back from it, so
        the newest samples are never after the last step)."""
        start = end - math.ceil(round((end - start) / step, 6)) * step
        data = self.api("query_range", {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise SourceError(f"prometheus at {self.base_url} gave an unexpected answer to {query!r}")
        return data.get("result") or []


def _error_text(raw: bytes) -> str | None:
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    if isinstance(document, dict) and document.get("error"):
        return str(document["error"]).splitlines()[0][:300]
    return None
