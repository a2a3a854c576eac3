"""The faces say the same thing: one renderer (funcsight.analysis.wording) for "before -> after"."""

from __future__ import annotations

import json

from funcsight.analysis import wording
from funcsight.analysis.compare import Figures, Finding


def _finding(change: str, **candidate) -> Finding:
    base = dict(calls=10, requests=10, calls_per_request=1.0, p50_ms=1.0, p95_ms=2.0, mean_ms=1.0, self_ms_per_call=0.25,
                self_ms_per_request=0.25, error_rate=0.0, error_types={})
    return Finding("shop.db.f", "function", "/r", change, Figures(**base), Figures(**{**base, **candidate}), 0.5, 1e-9, 1.0, None)


def test_before_after_per_kind_of_change():
    assert wording.before_after(_finding("calls", calls_per_request=3.0)) == ("1 calls/req", "3 calls/req")
    assert wording.before_after(_finding("latency", self_ms_per_call=0.75)) == ("0.250 ms self/call", "0.750 ms self/call")
    errors = _finding("new_error_type", error_rate=0.02, error_types={"shop.OutOfStock": 2})
    assert wording.before_after(errors) == ("0.0% -", "2.0% shop.OutOfStock")
    assert wording.change_text(errors, json.dumps) == '0.0% - -> 2.0% "shop.OutOfStock"'  # the MCP quotes app text
    assert wording.before_after(_finding("new_function", calls_per_request=2.0, self_ms_per_request=1.5)) == (
        "not called", "2 calls/req, 1.500 ms/req")
    assert [wording.code_changed(v) for v in (True, False, None)] == ["yes", "no", "unknown"]


def test_the_three_faces_use_it():
    """Neither the CLI, the report nor the MCP models keep a before/after of their own."""
    import inspect

    import funcsight.cli.main as cli
    import funcsight.mcp_server.models as models
    import funcsight.report.html as html

    for module in (cli, html, models):
        text = inspect.getsource(module)
        assert "def _before_after" not in text and "wording." in text, module.__name__


def test_a_slower_route_without_a_significant_part_is_never_zero_regressions_alone():
    line = wording.diff_headline("1", "2", 0, 0, 9, unattributed=[("/page", "slower"), ("/batch", "faster")])
    assert line == ("1 -> 2: 0 regressions, 0 improvements (9 changes tested); 1 route slower with no single part "
                    "significant on its own: /page; 1 route faster with no single part significant on its own: /batch")
    assert wording.diff_headline("1", "2", 0, 0, 9) == "1 -> 2: 0 regressions, 0 improvements (9 changes tested)"


def test_a_route_verdict_says_what_its_p_value_is_over():
    from funcsight.analysis.compare import RouteVerdict

    def verdict(windows: tuple[int, int], test: str) -> RouteVerdict:
        return RouteVerdict("/r", "slower", 200, 300, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 1e-9, 0.1, windows, test)

    few = wording.route_verdict_line(verdict((2, 2), "Mann-Whitney U on request durations (too few export windows to test across them)"))
    assert "p=1.0e-09 over 200+300 requests, too few windows (2+2)" in few
    many = wording.route_verdict_line(verdict((10, 12), "exact Mann-Whitney U on per-window mean time per request (baseline x drift)"))
    assert "p=1.0e-09 over 10+12 windows" in many
