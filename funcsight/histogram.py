"""The one duration histogram scheme: half-octave buckets, their bounds, merging, quantiles, and the
conversion to and from the ``le``-labelled counters funcsight exports.

Durations are binned exactly into half-octave buckets: bucket ``2n`` holds ``[2**(n-1), 1.5*2**(n-1))``
ns and bucket ``2n+1`` holds ``[1.5*2**(n-1), 2**n)`` (``n`` = bit length of the duration). Two
shifts compute it. Its C twin is ``funcsight/histogram.h`` (the C sensor and the C rollup include
it); the pure-Python sensor inlines it on its hot path as ``2n``, plus one when the duration reaches
:data:`UPPER_HALF` ``[n]`` (a comparison is cheaper there than shifts: shifts of Python ints are not
specialised). ``tests/test_histogram.py`` checks they all agree.

Exported, the distribution is a counter per bound ``le`` (cumulative over ``le``, Prometheus'
histogram layout) at powers of two nanoseconds (1.024 us ... 17.2 s: 25 bounds and ``+Inf``), which
the half-octave buckets nest into exactly. Read back, calls of an exported bucket are spread evenly
over it, as ``histogram_quantile`` assumes, so the CLI shows the percentiles a dashboard shows.
Octaves, not the powers of four used before: a percentile read from Prometheus was up to 4x off
(p95 15.1 ms for the store's 7.3 ms, same run); an octave halves that, for 12 more series per
function x route (26 bucket series; half-octaves would be 50).

Standard library only: the sensor, the exporters and the sources all import it.
"""

from __future__ import annotations

import math


def bucket_of(duration_ns: int) -> int:
    """The half-octave bucket of a non-negative duration (callers clamp: ``max(0, end - start)``)."""
    n = duration_ns.bit_length()
    if n < 2:
        return n << 1
    return (n << 1) | ((duration_ns >> (n - 2)) & 1)


# By bit length n: where the upper half of its octave starts (1.5 * 2**(n-1)); never, below n = 2.
UPPER_HALF = [1 << 64, 1 << 64] + [3 << (n - 2) for n in range(2, 65)]


def bucket_bounds(bucket: int) -> tuple[float, float]:
    """``[lower, upper)`` in ns of a bucket index."""
    n, half = bucket >> 1, bucket & 1
    if n == 0:
        return 0.0, 1.0
    base = float(1 << (n - 1))
    return (base * 1.5, base * 2.0) if half else (base, base * 1.5 if n > 1 else base * 2.0)


def merge(into: dict[int, int], other: dict) -> dict[int, int]:
    """Add ``other``'s counts into ``into``; keys may be strings (as read from JSON)."""
    for bucket, count in other.items():
        bucket = int(bucket)
        into[bucket] = into.get(bucket, 0) + count
    return into


def quantile_ns(hist: dict[int, int], q: float) -> float:
    """The ``q`` quantile, calls taken as spread evenly within their bucket (linear interpolation):
    never further from the truth than the bucket is wide (at most 50 %, typically under 25 %)."""
    total = sum(hist.values())
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for bucket in sorted(hist):
        count = hist[bucket]
        if seen + count >= rank:
            lower, upper = bucket_bounds(bucket)
            fraction = (rank - seen) / count if count else 0.0
            return lower + (upper - lower) * fraction
        seen += count
    return bucket_bounds(max(hist))[1]


# ----------------------------------------------------------------- exported ``le`` bounds
LE_EXPONENTS = tuple(range(10, 35))  # bucket upper bounds 2**k ns
LE_LABELS = tuple(repr((1 << k) / 1e9) for k in LE_EXPONENTS) + ("+Inf",)


def cumulative_le_counts(hist: dict[int, int]) -> list[int]:
    """Counts of calls at or below each ``LE_LABELS`` bound, from the half-octave buckets."""
    per_bound = [0] * (len(LE_EXPONENTS) + 1)
    for bucket, count in hist.items():
        bit_length = bucket >> 1  # every duration in the bucket is below 2**bit_length ns
        for index, exponent in enumerate(LE_EXPONENTS):
            if bit_length <= exponent:
                per_bound[index] += count
                break
        else:
            per_bound[-1] += count
    running = 0
    for index, count in enumerate(per_bound):
        running += count
        per_bound[index] = running
    return per_bound


def le_ns(le: str) -> float:
    """An ``le`` label in nanoseconds (``inf`` for ``+Inf``)."""
    return math.inf if le.lstrip("+").lower() == "inf" else round(float(le) * 1e9, 3)


def fine_bucket_of_bound(le: str) -> int:
    """The half-octave bucket just below a finite ``le`` bound (``2**k`` ns -> ``2k + 1``)."""
    return bucket_of(max(math.ceil(le_ns(le)) - 1, 0))


def spread(lower: float, upper: float, count: float, into: dict[int, float]) -> None:
    """Add ``count`` calls known to lie in ``(lower, upper]`` ns to the half-octave buckets, evenly
    over the interval (each fine bucket gets its share of the width): the assumption of
    ``histogram_quantile``'s linear interpolation."""
    first, last = bucket_of(int(lower)), bucket_of(max(int(math.ceil(upper)) - 1, 0))
    shares = {}
    for index in range(first, last + 1):
        if index in (1, 3):  # never produced by bucket_of
            continue
        low, high = bucket_bounds(index)
        overlap = min(high, upper) - max(low, lower)
        if overlap > 0:
            shares[index] = overlap
    width = sum(shares.values())
    if width <= 0:
        into[last] = into.get(last, 0.0) + count
        return
    for index, overlap in shares.items():
        into[index] = into.get(index, 0.0) + count * overlap / width


def buckets_to_hist(cumulative: dict[str, float]) -> dict[int, float]:
    """Cumulative ``le`` counts (``le -> calls at or below``) back to ``{half-octave bucket: calls}``.
    Calls of a bucket ``(previous le, le]`` are spread evenly over it (see :func:`spread`); calls
    above the largest finite ``le`` go to the half-octave bucket just above it. Counts may be
    fractional; their sum is the ``+Inf`` count."""
    bounds = sorted((le_ns(le), value) for le, value in cumulative.items())
    hist: dict[int, float] = {}
    lower, below = 0.0, 0.0
    for upper, value in bounds:
        count = max(0.0, round(value) - below)
        if count:
            if math.isinf(upper):
                top = bucket_of(int(lower))
                hist[top] = hist.get(top, 0.0) + count
            else:
                spread(lower, upper, count, hist)
        below = max(below, round(value))
        if not math.isinf(upper):
            lower = upper
    return hist
