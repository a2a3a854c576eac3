"""``bench/accuracy.py`` on a fast subset, for real: the diagnosis shop (``bench/apps/diagshop``) run
twice under ``opentelemetry-instrument`` per scenario, traffic over 127.0.0.1, then ``diff``.

The same goals as the benchmark: the top finding for the affected route names the planted function
with the right kind, nothing is named on the untouched routes, and the same code run twice - once
with a CPU-burning process beside the second run - yields no verdict and no finding at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import accuracy  # noqa: E402

FAST = ("n_plus_one", "retries", "new_exception", "thread_pool", "same_code_busy")


@pytest.mark.parametrize("name", FAST)
def test_diff_names_the_planted_function_and_nothing_else(name):
    scenario = accuracy.BY_NAME[name]
    outcome = accuracy.run_scenario(scenario, seed=7000, per_route=48, spread_s=5.0)
    assert outcome.false_findings == [], f"{name}: findings on untouched routes or in same-code runs: {outcome.false_findings}"
    if scenario.route is not None:
        assert outcome.right, f"{name}: top finding on {scenario.route} is {outcome.top!r}, planted {scenario.function} {scenario.kind}"
