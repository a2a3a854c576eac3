"""The route verdicts' statistics (``analysis/stats.py``, used by ``analysis/compare.py``): Holm's
step-down within a family, and the size of a change taken across windows (Hodges-Lehmann), which
one cold or busy window cannot move."""

from __future__ import annotations

from funcsight.analysis.stats import hodges_lehmann_shift, holm


def test_holm_rejects_step_down_and_stops_at_the_first_that_fails():
    # alpha 0.01 over 4: the smallest against 0.0025, then 0.00333, 0.005, 0.01
    assert holm({"a": 0.001, "b": 0.003, "c": 0.011, "d": 0.002}, 0.01) == {"a", "d", "b"}
    assert holm({"a": 0.007, "b": 0.001}, 0.01) == {"a", "b"}  # Bonferroni (0.005 each) would keep only b
    assert holm({"a": 0.006, "b": 0.0051}, 0.01) == set()  # the smallest fails 0.005: nothing
    assert holm({}, 0.01) == set()


def test_one_cold_window_does_not_move_the_size_of_a_change():
    before = [4.0, 4.1, 3.9, 4.0, 121.0]  # the first request of a process compiling its templates
    after = [4.8, 4.9, 4.7, 4.8, 23.0]
    assert abs(hodges_lehmann_shift(before, after) - 0.8) < 0.11
    assert sum(after) / 5 < sum(before) / 5  # while the plain means say the opposite
