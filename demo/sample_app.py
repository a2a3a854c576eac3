"""The demo's sample application: a small Flask shop, as source files the demo writes to disk.

It is real application code (its own directory, imported as the package ``shop``), so funcsight
senses it exactly as it would a user's app. Release 1.1 differs from 1.0 in two planted ways that
the deployment comparison should name: prices are fetched once per item (``shop.db.fetch_price``
N times instead of ``fetch_prices`` once: an N+1 pattern) and ``shop.inventory.reserve`` calls a new,
slow ``shop.db.audit``.
"""

from __future__ import annotations

FILES_V1: dict[str, str] = {
    "shop/__init__.py": '"""A small shop used by `funcsight demo`."""\n',
    "shop/db.py": '''"""A stand-in database: every query costs a little time, like a real round trip."""
import time

PRICES = {sku: 5.0 + (sku * 7) % 40 for sku in range(1, 41)}
STOCK = {sku: 0 if sku % 9 == 0 else 3 for sku in range(1, 41)}


def fetch_prices(skus):
    time.sleep(0.0004)
    return {sku: PRICES[sku] for sku in skus}


def fetch_price(sku):
    time.sleep(0.0003)
    return PRICES[sku]


def fetch_stock(sku):
    time.sleep(0.0001)
    return STOCK[sku]


def audit(sku):
    time.sleep(0.0008)
''',
    "shop/catalog.py": '''from shop import db


class Product:
    def __init__(self, sku, price):
        self.sku = sku
        self.price = price

    def label(self):
        return f"#{self.sku} ({self.price:.2f})"


def list_products(page):
    skus = list(range(1 + page * 8, 9 + page * 8))
    prices = db.fetch_prices(skus)
    return [Product(sku, prices[sku]) for sku in skus]
''',
    "shop/pricing.py": '''from shop import db


def load_prices(skus):
    return db.fetch_prices(skus)


def load_price(sku):
    return db.fetch_price(sku)


def apply_discount(amount, user):
    rate = 0.1 if user % 3 == 0 else 0.0
    return round(amount * (1 - rate), 2)


def price_items(items):
    prices = load_prices([sku for sku, _ in items])
    return sum(prices[sku] * qty for sku, qty in items)
''',
    "shop/inventory.py": '''from shop import db


class OutOfStock(Exception):
    pass


def reserve(sku, qty):
    if db.fetch_stock(sku) < qty:
        raise OutOfStock(sku)
    return True
''',
    "shop/cart.py": '''from shop import pricing


def load_items(user):
    return [(1 + (user + i) % 40, 1 + i % 3) for i in range(4 + user % 3)]


def total(user):
    items = load_items(user)
    return pricing.apply_discount(pricing.price_items(items), user)
''',
    "shop/checkout.py": '''from shop import cart, inventory


def place_order(user):
    items = cart.load_items(user)
    for sku, qty in items:
        inventory.reserve(sku, qty)
    return cart.total(user)


def checkout(user):
    try:
        return {"status": "ok", "total": place_order(user)}
    except inventory.OutOfStock as err:
        return {"status": "out_of_stock", "sku": err.args[0]}
''',
    "shop/app.py": '''from flask import Flask, jsonify

from shop import cart, catalog, checkout

app = Flask("shop")


@app.route("/products/<int:page>")
def products(page):
    return jsonify([p.label() for p in catalog.list_products(page % 5)])


@app.route("/cart/<int:user>")
def show_cart(user):
    return jsonify({"user": user, "total": cart.total(user)})


@app.route("/checkout/<int:user>", methods=["POST"])
def do_checkout(user):
    result = checkout.checkout(user)
    return jsonify(result), (200 if result["status"] == "ok" else 409)


@app.route("/health")
def health():
    return "ok"
''',
    "serve.py": '''"""Starts the shop on 127.0.0.1:PORT (threaded, like a small production server)."""
import sys

from shop.app import app

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True)
''',
}

# Release 1.1: an N+1 price lookup and a slower stock check.
FILES_V2: dict[str, str] = dict(FILES_V1)
FILES_V2["shop/pricing.py"] = FILES_V1["shop/pricing.py"].replace(
    """def price_items(items):
    prices = load_prices([sku for sku, _ in items])
    return sum(prices[sku] * qty for sku, qty in items)""",
    """def price_items(items):
    return sum(load_price(sku) * qty for sku, qty in items)""",
)
FILES_V2["shop/inventory.py"] = FILES_V1["shop/inventory.py"].replace(
    "    if db.fetch_stock(sku) < qty:",
    "    db.audit(sku)  # new in 1.1\n    if db.fetch_stock(sku) < qty:",
)

assert FILES_V2["shop/pricing.py"] != FILES_V1["shop/pricing.py"]
assert FILES_V2["shop/inventory.py"] != FILES_V1["shop/inventory.py"]
RELEASES = (("1.0", FILES_V1), ("1.1", FILES_V2))


def traffic(index: int) -> tuple[str, str]:
    """The ``index``-th request of the demo's traffic mix: (method, path)."""
    user = index % 23
    kind = index % 10
    if kind < 4:
        return "GET", f"/products/{index % 7}"
    if kind < 7:
        return "GET", f"/cart/{user}"
    if kind < 9:
        return "POST", f"/checkout/{user}"
    return "GET", "/health"
