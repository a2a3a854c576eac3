"""Customers: a small class and an async loader (the app awaits it as it would a database)."""

from __future__ import annotations

REGIONS = ("eu", "us", "uk", "ch")


class Customer:
    __slots__ = ("id", "region", "quantities")

    def __init__(self, customer_id: int, region: str, quantities: tuple[int, ...]):
        self.id = customer_id
        self.region = region
        self.quantities = quantities


async def load_customer(order_id: int) -> Customer:
    return Customer((order_id * 31) % 10007, REGIONS[order_id % 4], (1 + order_id % 3, 2, 1 + order_id % 2))
