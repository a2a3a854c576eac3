"""Shipping quote: weight-based with a regional rate."""

from __future__ import annotations

ZONE_RATES = {"eu": 1.0, "us": 1.6, "uk": 1.2, "ch": 1.4}


def zone_rate(region: str) -> float:
    return ZONE_RATES.get(region, 2.0)


def quote(cart, region: str) -> int:
    grams = cart.weight()
    base = 490 if grams < 2000 else 890 + (grams - 2000) // 500 * 120
    return int(base * zone_rate(region))
