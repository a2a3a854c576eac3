"""One duration grammar for every face and source: the CLI's ``--since``, the MCP ``since``
argument and the Prometheus address' ``range`` / ``step`` / ``timeout``."""

from __future__ import annotations

import pytest

from funcsight.durations import DurationError, parse_duration


@pytest.mark.parametrize("text,seconds", [
    ("1h30m", 5400.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("7d", 604800.0), ("500ms", 0.5),
    ("2", 2.0), ("1.5", 1.5), (" 10m ", 600.0), ("1d12h", 129600.0), ("2w", 1209600.0), ("1y", 31536000.0),
    ("1.5h", 5400.0), ("1H30M", 5400.0), ("1m30s500ms", 90.5),
])
def test_accepted(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text,why", [
    ("", "is not a duration"), ("soon", "is not a duration"), ("5x", "is not a duration"), ("s", "is not a duration"),
    ("1h 30m", "is not a duration"), ("-1s", "is not a duration"), ("1e309d", "is not a duration"), ("h1", "is not a duration"),
    ("0", "must be a positive duration"), ("0s", "must be a positive duration"), ("-5", "must be a positive duration"),
    ("nan", "must be a positive duration"), ("inf", "must be a positive duration"), ("1e309", "must be a positive duration"),
])
def test_refused_with_one_line_saying_why(text, why):
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert why in message and "\n" not in message and isinstance(caught.value, ValueError)


def test_the_cli_the_mcp_tools_and_prometheus_share_it(tmp_path):
    """``--since 1h30m`` (refused before), ``since="1h30m"`` and ``?range=1h30m`` all mean 5400 s."""
    from funcsight.cli.main import build_parser
    from funcsight.sources.prometheus import PrometheusSource

    args = build_parser().parse_args(["anomalies", "--since", "1h30m"])
    assert args.since == 5400.0
    source = PrometheusSource("http://127.0.0.1:9/prefix?range=1h30m&step=90s&timeout=500ms", now=0.0)
    assert (source.range_s, source.step_s, source.timeout_s) == (5400.0, 90.0, 0.5)
    from funcsight.sources import SourceError

    with pytest.raises(SourceError, match="range in the Prometheus address: '0s' must be a positive duration"):
        PrometheusSource("http://127.0.0.1:9?range=0s")
