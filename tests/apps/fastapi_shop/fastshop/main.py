"""FastAPI handlers: registered by decorators, each one a sensed coroutine (one is a plain def,
which FastAPI runs in its thread pool)."""
import asyncio

from fastapi import FastAPI

from fastshop import background, logic  # noqa: F401  (background runs at import)

app = FastAPI()


@app.get("/items/{item_id}")
async def get_item(item_id: int):
    price = await logic.fetch_item(item_id)
    total = logic.price_with_tax(price)
    words = [logic.normalize(" A "), logic.normalize(" B "), logic.normalize(" C ")]
    tags = list(logic.iter_tags(item_id))
    try:
        qty = logic.parse_qty("many")
    except ValueError:
        qty = 1
    return {"item": item_id, "total": total, "words": words, "tags": tags, "qty": qty}


@app.get("/stock/{item_id}")
async def stock(item_id: int):
    try:
        await logic.reserve(item_id)
        status = "reserved"
    except logic.OutOfStock:
        status = "out_of_stock"
    return {"item": item_id, "status": status}


@app.get("/a/{n}")
async def route_a(n: int):
    value = logic.step_a(n)
    await asyncio.sleep(0.01)
    value = logic.step_a(value)
    await asyncio.sleep(0.01)
    return {"a": await logic.fetch_item(value)}


@app.get("/b/{name}")
async def route_b(name: str):
    value = 0
    for _ in range(3):
        value = logic.step_b(value + len(name))
        await asyncio.sleep(0.01)
    return {"b": value}


@app.get("/sync/{n}")
def sync_route(n: int):
    return {"sum": logic.sync_work(n), "price": logic.CATALOG.lookup(n)}
