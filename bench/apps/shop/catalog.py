"""Product catalogue: an in-memory table and small lookup helpers."""

from __future__ import annotations

CATEGORIES = ("books", "garden", "kitchen", "toys", "tools")


def _build_products() -> dict[str, tuple[str, int, int, str]]:
    products = {}
    for index in range(64):
        sku = f"SKU-{index:03d}"
        products[sku] = (f"Product {index}", 199 + (index * 137) % 4800, 50 + (index * 61) % 2400, CATEGORIES[index % 5])
    return products


PRODUCTS = _build_products()


def skus_for_order(order_id: int, count: int) -> list[str]:
    return [f"SKU-{(order_id * 7 + i * 13) % 64:03d}" for i in range(count)]


def product(sku: str) -> tuple[str, int, int, str]:
    return PRODUCTS[sku.strip().upper()]
