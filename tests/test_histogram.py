"""One bucket scheme, three implementations: ``funcsight.histogram.bucket_of`` (Python) and
``funcsight/histogram.h`` as compiled into the C sensor and into the C rollup processor.

A C module is skipped only when it is not built and ``FUNCSIGHT_REQUIRE_C`` is unset.
"""

from __future__ import annotations

import importlib
import os
import random

import pytest

from funcsight.histogram import UPPER_HALF, bucket_of

REQUIRE_C = os.environ.get("FUNCSIGHT_REQUIRE_C") == "1"
N_BUCKETS = 130  # funcsight/histogram.h


def _durations() -> list[int]:
    values = [0, 1, 2, 3]
    for k in range(1, 63):
        values += [(1 << k) - 1, 1 << k, (1 << k) + 1]
    values.append((1 << 63) - 1)  # the largest int64_t
    rng = random.Random(20240611)
    values += [rng.getrandbits(rng.randrange(1, 63)) for _ in range(3000)]
    values += [rng.randrange(0, 10**10) for _ in range(1000)]
    return values


DURATIONS = _durations()


@pytest.fixture(params=["funcsight.instrumentation._csensor", "funcsight.processors._crollup"])
def c_bucket_of(request):
    try:
        module = importlib.import_module(request.param)
    except ImportError as exc:
        if REQUIRE_C:
            pytest.fail(f"FUNCSIGHT_REQUIRE_C=1 but {request.param} is not built: {exc}")
        pytest.skip(f"{request.param} not built: {exc}")
    return module.bucket_of


def test_c_extensions_bucket_like_python(c_bucket_of):
    mismatches = [(d, bucket_of(d), c_bucket_of(d)) for d in DURATIONS if c_bucket_of(d) != bucket_of(d)]
    assert mismatches == []


def test_negative_durations_agree_too(c_bucket_of):
    # Callers clamp durations (max(0, end - start)); the bucket function itself follows Python's
    # bit_length and flooring shift, so the implementations agree on every int64 anyway.
    for d in [-1, -2, -3, -5, -1000, -(1 << 40) - 7, -(1 << 63)]:
        assert c_bucket_of(d) == bucket_of(d)


def test_python_twin_is_the_one_calls_uses():
    from funcsight.instrumentation import calls

    assert all(calls.bucket_of(d) == bucket_of(d) for d in DURATIONS)


def test_the_python_sensors_inlined_form_agrees():
    # _pysensor.on_return: 2n, plus one from the upper half of the octave on (n = bit length)
    def inlined(d: int) -> int:
        n = d.bit_length()
        bucket = n + n
        if d >= UPPER_HALF[n]:
            bucket += 1
        return bucket

    durations = DURATIONS + [(1 << 64) - 1, 1 << 63]
    assert [inlined(d) for d in durations] == [bucket_of(d) for d in durations]


def test_buckets_are_half_octaves_within_n_buckets():
    assert [bucket_of(d) for d in (0, 1, 2, 3, 4, 5, 6, 7, 8, 12)] == [0, 2, 4, 5, 6, 6, 7, 7, 8, 9]
    assert max(bucket_of(d) for d in DURATIONS) < N_BUCKETS
    for k in range(2, 63):  # [2**k, 1.5 * 2**k) and [1.5 * 2**k, 2**(k+1)): two buckets per octave
        low, mid = 1 << k, 3 << (k - 1)
        assert bucket_of(low) == bucket_of(mid - 1) == 2 * (k + 1)
        assert bucket_of(mid) == bucket_of(2 * low - 1) == 2 * (k + 1) + 1
