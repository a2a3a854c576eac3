"""FastAPI benchmark app: one async route whose request calls 42 of the app's own functions.

Served by ``bench/macro.py`` as ``uvicorn app:app`` (one worker) from a scratch copy of this
directory, so these modules are "the application's own code".

Sensed calls per GET /order/{order_id} (FUNCTIONS_PER_REQUEST): order 1, load_customer 1 (async),
Customer.__init__ 1, skus_for_order 1, Cart.__init__ 1, Cart.add 3, catalog.product 3,
LineItem.__init__ 3, reserve 1 (async), stock_level 3 (async), subtotal 1, Cart.lines 3 (a
generator, consumed three times), LineItem.total 3, adjustments 1 (async), discount 1,
loyalty_tier 1, tax 1, tax_rate 1, quote 1, Cart.weight 1, zone_rate 1, risk_score 1,
lines_block 1, line_summary 3, response 1, money 2, checksum 1 = 42.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from shop.benchmeta import describe
from shop import pricing, render, shipping
from shop.cart import Cart
from shop.catalog import skus_for_order
from shop.customers import load_customer
from shop.inventory import reserve

if os.environ.get("BENCH_OTEL_SDK"):
    # "OTel alone" means an SDK behind the API, as a distro or the app's own setup installs; every
    # OTel column gets one (funcsight builds the same itself when it finds none).
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())

FUNCTIONS_PER_REQUEST = 42

app = FastAPI()


@app.get("/order/{order_id}")
async def order(order_id: int):
    customer = await load_customer(order_id)
    skus = skus_for_order(order_id, 3)
    cart = Cart(customer.id)
    for sku, qty in zip(skus, customer.quantities):
        cart.add(sku, qty)
    stock = await reserve(skus)
    amount = pricing.subtotal(cart)
    amounts = await pricing.adjustments(amount, customer)
    amounts["subtotal"] = amount
    amounts["shipping"] = shipping.quote(cart, customer.region)
    risk = pricing.risk_score(customer.id, amount)
    payload = render.response(order_id, render.lines_block(cart), amounts, risk)
    payload["in_stock"] = all(stock.values())
    return payload


@app.get("/_bench/meta")
async def meta():
    """What is really running in this process: the benchmark prints it next to the figures."""
    return describe(type(app).__name__ != "FastAPI", FUNCTIONS_PER_REQUEST, "/order/{order_id}")
