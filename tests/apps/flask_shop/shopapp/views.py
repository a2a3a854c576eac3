"""Flask views: each one is registered by a decorator and is itself a sensed function."""
from flask import Flask, jsonify

from shopapp import background, logic  # noqa: F401  (background runs at import)

app = Flask("shopapp")


@app.route("/items/<int:item_id>")
def get_item(item_id):
    price = logic.CATALOG.lookup(item_id)
    total = logic.price_with_tax(price)
    words = [logic.normalize(" A "), logic.normalize(" B "), logic.normalize(" C ")]
    tags = list(logic.iter_tags(item_id))
    try:
        qty = logic.parse_qty("many")
    except ValueError:
        qty = 1
    return jsonify({"item": item_id, "total": total, "words": words, "tags": tags, "qty": qty})


@app.route("/stock/<int:item_id>")
def stock(item_id):
    try:
        logic.reserve(item_id)
        status = "reserved"
    except logic.OutOfStock:
        status = "out_of_stock"
    return jsonify({"item": item_id, "status": status})


@app.route("/a/<int:n>")
def route_a(n):
    return jsonify({"a": logic.step_a(logic.step_a(n))})


@app.route("/b/<name>")
def route_b(name):
    value = 0
    for _ in range(3):
        value = logic.step_b(value + len(name))
    return jsonify({"b": value})


@app.route("/slow")
def slow():
    result = logic.slow_step()
    try:
        logic.parse_qty("x")
    except ValueError:
        pass
    return jsonify({"result": result})

