"""Buckets, percentiles, configuration, function identity: the small pure parts."""

from __future__ import annotations

import random

import pytest

from funcsight.config import Config, ConfigError
from funcsight.instrumentation.registry import FunctionRegistry, code_hash, function_info
from funcsight.histogram import LE_EXPONENTS, bucket_bounds, bucket_of, cumulative_le_counts, quantile_ns


@pytest.mark.parametrize("value", [0, 1, 2, 3, 5, 7, 8, 1000, 1499, 1500, 123_456_789, 2**40 + 12345])
def test_every_duration_falls_inside_its_bucket(value):
    lower, upper = bucket_bounds(bucket_of(value))
    assert lower <= value < upper


def test_percentiles_from_buckets_are_within_a_bucket_of_the_exact_value():
    rng = random.Random(7)
    durations = [int(rng.lognormvariate(11, 1.2)) for _ in range(20_000)]
    hist: dict[int, int] = {}
    for d in durations:
        hist[bucket_of(d)] = hist.get(bucket_of(d), 0) + 1
    ordered = sorted(durations)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[int(q * len(ordered)) - 1]
        estimate = quantile_ns(hist, q)
        assert abs(estimate - exact) / exact < 0.25, (q, exact, estimate)


def test_prometheus_buckets_are_cumulative_and_exact():
    durations = [500, 1024, 1025, 5_000, 70_000, 2**33, 2**40]
    hist: dict[int, int] = {}
    for d in durations:
        hist[bucket_of(d)] = hist.get(bucket_of(d), 0) + 1
    counts = cumulative_le_counts(hist)
    for exponent, count in zip(LE_EXPONENTS, counts):
        assert count == sum(1 for d in durations if d < 2**exponent), exponent
    assert counts[-1] == len(durations)


def test_environment_is_read_and_keywords_win():
    env = {"FUNCSIGHT_INCLUDE": "shop.*, billing", "FUNCSIGHT_EXPORT_INTERVAL": "2.5", "FUNCSIGHT_DB": "/tmp/x.db"}
    config = Config.from_env(env, export_interval_s=7.0)
    assert config.include == ("shop.*", "billing")
    assert config.export_interval_s == 7.0
    assert config.db_path == "/tmp/x.db" and config.db_path_explicit


@pytest.mark.parametrize(
    "name,value",
    [("FUNCSIGHT_EXPORT_INTERVAL", "soon"), ("FUNCSIGHT_EXPORT_INTERVAL", "-1"), ("FUNCSIGHT_STORE", "maybe"),
     ("FUNCSIGHT_MAX_SERIES", "0"), ("FUNCSIGHT_IMPLEMENTATION", "rust")],
)
def test_bad_environment_values_warn_once_and_keep_the_default(name, value, caplog):
    config = Config.from_env({name: value})
    assert config == Config()
    assert [r.getMessage() for r in caplog.records if name in r.getMessage()]
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value}, strict=True)


def test_identity_is_module_and_qualname_and_survives_body_changes():
    namespace_a: dict = {}
    namespace_b: dict = {}
    exec("class Cart:\n    def total(self):\n        return 1\n", namespace_a)
    exec("\n\nclass Cart:\n    def total(self):\n        return 1 + 1\n", namespace_b)
    a = function_info(namespace_a["Cart"].total.__code__, "shop.models")
    b = function_info(namespace_b["Cart"].total.__code__, "shop.models")
    assert a.name == b.name == "shop.models.Cart.total"
    assert a.line != b.line and a.code_hash != b.code_hash
    registry = FunctionRegistry()
    assert registry.register(a) == registry.register(b)
    assert code_hash(namespace_a["Cart"].total.__code__) == a.code_hash


def test_registry_cap_counts_what_it_drops():
    registry = FunctionRegistry(max_functions=2)
    ids = [registry.register(function_info(compile(f"def f{i}(): pass", "m", "exec").co_consts[0], "m")) for i in range(4)]
    # Past the cap, code is counted under the one "(overflow)" function (made on first need).
    assert ids == [0, 1, 2, 2]
    assert registry.is_overflow(2) and not registry.is_overflow(1)
    assert registry.functions[2].name == "(overflow)"
    assert registry.dropped == 2
