"""The duration histogram's bucket scheme (placeholder: being written elsewhere; reconcile at merge).

``bucket_of`` is copied from ``instrumentation/calls.py``; its C twin is ``funcsight/histogram.h``.
"""

from __future__ import annotations


def bucket_of(duration_ns: int) -> int:
    n = duration_ns.bit_length()
    if n < 2:
        return n << 1
    return (n << 1) | ((duration_ns >> (n - 2)) & 1)
