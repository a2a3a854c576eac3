/* funcsight/histogram.h: the duration histogram's bucket scheme, for the C extensions.
 *
 * Half-octave buckets: a duration of d ns lands in bucket 2 * bit_length(d), plus 1 when the bit
 * below its top bit is set (so [2^(n-1), 1.5 * 2^(n-1)) and [1.5 * 2^(n-1), 2^n) are two buckets);
 * 0 -> 0, 1 -> 2, 2 -> 4, 3 -> 5, 4 -> 6, 6 -> 7, ... up to 2^63 - 1 -> 127. N_BUCKETS covers
 * every index an int64_t can produce.
 *
 * The Python twin is funcsight/histogram.py's bucket_of(duration_ns) (the same function as
 * instrumentation/calls.py's bucket_of); tests/test_histogram.py checks that the three agree
 * (Python, _csensor.bucket_of, _crollup.bucket_of). Change them together, and never silently:
 * the store and the metrics keep bucket indexes.
 *
 * Negative d gives what Python's bit_length and flooring shift give (bit_length of |d|), so C and
 * Python agree on every int64_t; durations are never negative where callers clamp them (the
 * rollup computes max(0, end - start)). Used by instrumentation/_csensor.c (its call tables) and
 * processors/_crollup.c (route histograms). GCC/Clang (__builtin_clzll), like both extensions.
 */
#ifndef FUNCSIGHT_HISTOGRAM_H
#define FUNCSIGHT_HISTOGRAM_H

#include <stdint.h>

#define N_BUCKETS 130

static inline int
fs_bucket_of(int64_t d)
{
    uint64_t mag = d < 0 ? (uint64_t)0 - (uint64_t)d : (uint64_t)d;
    int n = mag ? 64 - __builtin_clzll(mag) : 0;
    if (n < 2)
        return n << 1;
    return (n << 1) | (int)((d >> (n - 2)) & 1);
}

#endif /* FUNCSIGHT_HISTOGRAM_H */
