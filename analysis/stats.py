"""The statistical tests behind ``diff`` and ``anomalies`` (stdlib only; no SciPy needed).

* Durations: Mann-Whitney U on the recorded duration histograms (every call, bucketed), with the
  tie correction the buckets need. Rank-based, so a few huge outliers cannot fake a shift.
* Counts per request: the conditional binomial test for two Poisson rates (calls in B given all
  calls, against the share of requests in B).
* Error rates: the two-proportion z-test.
* Time series: Welch's t-test on per-bin values before/after a CUSUM changepoint.
"""

from __future__ import annotations

import math


def normal_sf(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_greater(baseline: dict[int, int], candidate: dict[int, int]) -> float:
    """One-sided p-value that candidate durations are stochastically larger than baseline's."""
    n_a = sum(baseline.values())
    n_b = sum(candidate.values())
    if n_a == 0 or n_b == 0:
        return 1.0
    u_b = 0.0
    below_a = 0
    tie_term = 0.0
    for bucket in sorted(set(baseline) | set(candidate)):
        a = baseline.get(bucket, 0)
        b = candidate.get(bucket, 0)
        u_b += b * (below_a + a / 2.0)
        below_a += a
        t = a + b
        tie_term += t**3 - t
    n = n_a + n_b
    mean = n_a * n_b / 2.0
    variance = n_a * n_b / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        return 1.0
    z = (u_b - mean - 0.5) / math.sqrt(variance)  # continuity correction
    return normal_sf(z)


def mann_whitney_exact_greater(baseline: list[float], candidate: list[float]) -> float:
    """One-sided exact p-value that candidate values are stochastically larger than baseline's, for
    small samples without ties (per-window figures); the normal approximation otherwise."""
    n_a, n_b = len(baseline), len(candidate)
    if n_a == 0 or n_b == 0:
        return 1.0
    if len(set(baseline) | set(candidate)) < n_a + n_b or n_a * n_b > 2500:
        hist_a: dict = {}
        hist_b: dict = {}
        for v in baseline:
            hist_a[v] = hist_a.get(v, 0) + 1
        for v in candidate:
            hist_b[v] = hist_b.get(v, 0) + 1
        return mann_whitney_greater(hist_a, hist_b)
    u = sum(1 for b in candidate for a in baseline if b > a)  # pairs where candidate is larger
    # counts[i][j][k]: arrangements of i baseline and j candidate values with U = k (U counts
    # (candidate, baseline) pairs with the candidate larger)
    prev = [[1]]  # i = 0: one arrangement per j with U 0
    prev = [[1] for _ in range(n_b + 1)]
    for i in range(1, n_a + 1):
        row = [[1]]  # j = 0
        for j in range(1, n_b + 1):
            # last element is a candidate (larger than all i baseline values): U grows by i; or a baseline value
            with_b = [0] * i + row[j - 1]
            with_a = prev[j]
            size = max(len(with_b), len(with_a))
            row.append([(with_b[k] if k < len(with_b) else 0) + (with_a[k] if k < len(with_a) else 0) for k in range(size)])
        prev = row
    dist = prev[n_b]
    total = sum(dist)
    return sum(dist[u:]) / total


def rate_increase_p(count_a: int, exposure_a: float, count_b: int, exposure_b: float) -> float:
    """One-sided p-value that B's rate (count per exposure) is higher than A's.

    Conditional on the total, B's count is Binomial(total, share of exposure in B) when the rates
    are equal; the normal approximation is used for large totals, the exact tail for small ones."""
    total = count_a + count_b
    if total == 0 or exposure_a <= 0 or exposure_b <= 0:
        return 1.0
    share = exposure_b / (exposure_a + exposure_b)
    if total <= 200:
        return sum(math.comb(total, k) * share**k * (1 - share) ** (total - k) for k in range(count_b, total + 1))
    mean = total * share
    sd = math.sqrt(total * share * (1 - share))
    return normal_sf((count_b - 0.5 - mean) / sd) if sd > 0 else 1.0


def proportion_increase_p(events_a: int, trials_a: int, events_b: int, trials_b: int) -> float:
    """One-sided two-proportion z-test that B's proportion is higher than A's."""
    if trials_a == 0 or trials_b == 0:
        return 1.0
    pooled = (events_a + events_b) / (trials_a + trials_b)
    if pooled in (0.0, 1.0):
        return 1.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    return normal_sf((events_b / trials_b - events_a / trials_a) / se)


def welch_greater(before: list[float], after: list[float]) -> float:
    """One-sided Welch t-test p-value that ``after`` has a higher mean than ``before``."""
    n_a, n_b = len(before), len(after)
    if n_a < 2 or n_b < 2:
        return 1.0
    mean_a, mean_b = sum(before) / n_a, sum(after) / n_b
    var_a = sum((x - mean_a) ** 2 for x in before) / (n_a - 1)
    var_b = sum((x - mean_b) ** 2 for x in after) / (n_b - 1)
    se2 = var_a / n_a + var_b / n_b
    if se2 == 0:
        return 0.0 if mean_b > mean_a else 1.0
    t = (mean_b - mean_a) / math.sqrt(se2)
    df = se2**2 / ((var_a / n_a) ** 2 / (n_a - 1) + (var_b / n_b) ** 2 / (n_b - 1))
    return student_t_sf(t, df)


def student_t_sf(t: float, df: float) -> float:
    """P(T >= t) for Student's t with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * regularized_beta(x, df / 2.0, 0.5)
    return tail if t > 0 else 1.0 - tail


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) by Lentz's continued fraction."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1) / (a + b + 2):
        return 1.0 - regularized_beta(1 - x, b, a)
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            numerator = 1.0
        elif i % 2 == 0:
            numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            numerator = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + numerator / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-12:
            break
    return math.exp(log_front) * (f - 1.0) / a


def cusum_changepoint(values: list[float]) -> int:
    """Index of the last point before the largest shift in mean (the CUSUM extreme)."""
    mean = sum(values) / len(values)
    running, best, best_index = 0.0, -1.0, 0
    for index, value in enumerate(values[:-1]):
        running += value - mean
        if abs(running) > best:
            best, best_index = abs(running), index
    return best_index


def holm(p_values: dict[str, float], alpha: float) -> set[str]:
    """The hypotheses Holm's step-down procedure rejects at family-wise error ``alpha``: the k-th
    smallest p (from 0) against ``alpha / (m - k)``, stopping at the first that fails."""
    rejected: set[str] = set()
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    for k, (name, p) in enumerate(ordered):
        if p >= alpha / (len(ordered) - k):
            break
        rejected.add(name)
    return rejected


def hodges_lehmann_shift(before: list[float], after: list[float]) -> float:
    """The median of all pairwise differences ``after_j - before_i``: the shift that goes with the
    Mann-Whitney test (one busy window moves it by at most one rank)."""
    differences = sorted(y - x for x in before for y in after)
    n = len(differences)
    if not n:
        return 0.0
    return differences[n // 2] if n % 2 else (differences[n // 2 - 1] + differences[n // 2]) / 2
