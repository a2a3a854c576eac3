"""A cart of line items: a class with methods and a generator."""

from __future__ import annotations

from operator import attrgetter

from shop import catalog

_BY_SKU = attrgetter("sku")


class LineItem:
    __slots__ = ("sku", "name", "qty", "unit_cents", "weight_g", "category")

    def __init__(self, sku: str, qty: int, record: tuple[str, int, int, str]):
        self.sku = sku
        self.name, self.unit_cents, self.weight_g, self.category = record
        self.qty = qty

    def total(self) -> int:
        return self.qty * self.unit_cents


class Cart:
    def __init__(self, customer_id: int):
        self.customer_id = customer_id
        self._lines: list[LineItem] = []

    def add(self, sku: str, qty: int) -> LineItem:
        line = LineItem(sku, qty, catalog.product(sku))
        self._lines.append(line)
        return line

    def lines(self):
        """Line items in a stable order (a generator, consumed to the end by its callers)."""
        for line in sorted(self._lines, key=_BY_SKU):
            yield line

    def weight(self) -> int:
        grams = 0
        for line in self.lines():
            grams += line.weight_g * line.qty
        return grams

