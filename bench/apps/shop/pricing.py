"""Pricing rules: subtotal, loyalty discount, regional tax (awaited together in the FastAPI app), a small risk score."""

from __future__ import annotations

TAX_RATES = {"eu": 0.21, "us": 0.0725, "uk": 0.20, "ch": 0.081}
TIERS = ((5000, 0.10), (2000, 0.05), (500, 0.02))


def subtotal(cart) -> int:
    cents = 0
    for line in cart.lines():
        cents += line.total()
    return cents


def loyalty_tier(customer_id: int) -> int:
    points = (customer_id * 2654435761) % 7000
    return points


def discount(amount: int, customer_id: int) -> int:
    points = loyalty_tier(customer_id)
    for threshold, rate in TIERS:
        if points >= threshold:
            return int(amount * rate)
    return 0


def tax_rate(region: str) -> float:
    return TAX_RATES.get(region, 0.15)


def tax(amount: int, region: str) -> int:
    return round(amount * tax_rate(region))


def risk_score(customer_id: int, amount: int) -> float:
    """Business logic with a loop: the CPU work of a typical scoring rule."""
    score = 0.0
    seed = customer_id ^ amount
    for step in range(120):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        score += (seed % 1000) / 1000.0 * (1.0 if step % 3 else -0.5)
    return round(score / 120, 4)


async def adjustments(amount: int, customer) -> dict[str, int]:
    return {"discount": discount(amount, customer.id), "tax": tax(amount, customer.region)}
