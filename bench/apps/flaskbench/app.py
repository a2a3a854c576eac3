"""Flask benchmark app: one route whose request calls 45 of the app's own functions.

Served by ``bench/macro.py`` as ``gunicorn -w 1 app:app`` (or ``python serve.py PORT`` on werkzeug)
from a scratch copy of this directory, so these modules are "the application's own code".

Sensed calls per GET /order/<id> (FUNCTIONS_PER_REQUEST): order 1, parse_order 1, skus_for_order 1,
Cart.__init__ 1, Cart.add 4, catalog.product 4, LineItem.__init__ 4, subtotal 1, Cart.lines 3 (a
generator, consumed three times), LineItem.total 8, discount 1, loyalty_tier 1, tax 1, tax_rate 1,
quote 1, Cart.weight 1, zone_rate 1, risk_score 1, lines_block 1, line_summary 4, response 1,
money 2, checksum 1 = 45.
"""

from __future__ import annotations

import os

from flask import Flask

from shop.benchmeta import describe
from shop import pricing, render, shipping
from shop.cart import Cart
from shop.catalog import skus_for_order

if os.environ.get("BENCH_OTEL_SDK"):
    # "OTel alone" means an SDK behind the API, as a distro or the app's own setup installs; every
    # OTel column gets one (funcsight builds the same itself when it finds none).
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())

FUNCTIONS_PER_REQUEST = 45
REGIONS = ("eu", "us", "uk", "ch")

app = Flask(__name__)


def parse_order(order_id: int) -> tuple[int, str, tuple[int, ...]]:
    customer_id = (order_id * 31) % 10007
    return customer_id, REGIONS[order_id % 4], (1 + order_id % 3, 2, 1, 1 + order_id % 2)


@app.route("/order/<int:order_id>")
def order(order_id: int):
    customer_id, region, quantities = parse_order(order_id)
    cart = Cart(customer_id)
    for sku, qty in zip(skus_for_order(order_id, 4), quantities):
        cart.add(sku, qty)
    amount = pricing.subtotal(cart)
    amounts = {
        "subtotal": amount,
        "discount": pricing.discount(amount, customer_id),
        "tax": pricing.tax(amount, region),
        "shipping": shipping.quote(cart, region),
    }
    risk = pricing.risk_score(customer_id, amount)
    return render.response(order_id, render.lines_block(cart), amounts, risk)


@app.route("/_bench/meta")
def meta():
    """What is really running in this process: the benchmark prints it next to the figures."""
    return describe(type(app).__name__ != "Flask", FUNCTIONS_PER_REQUEST, "/order/<int:order_id>")
