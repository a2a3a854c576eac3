"""Percentiles from the sensor's half-octave duration buckets (see ``instrumentation/calls.py``).

Within a bucket, calls are taken as spread evenly (linear interpolation), so an estimate is never
further from the truth than the bucket is wide (at most 50 %, typically well under 25 %).
"""

from __future__ import annotations

from funcsight.instrumentation.calls import bucket_bounds


def merge(into: dict[int, int], other: dict) -> dict[int, int]:
    for bucket, count in other.items():
        bucket = int(bucket)
        into[bucket] = into.get(bucket, 0) + count
    return into


def quantile_ns(hist: dict[int, int], q: float) -> float:
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
