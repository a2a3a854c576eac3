"""Flask views; the same in every release (what changes is ``shop.logic``)."""
from flask import Flask, jsonify

from shop import inventory, ledger, logic

app = Flask("shop")


@app.route("/orders/<int:user>")
def orders_view(user):
    return jsonify({"user": user, "total": logic.order_total(user)})


@app.route("/report/<int:day>")
def report_view(day):
    return jsonify(logic.build_report(day))


@app.route("/checkout/<int:user>")
def checkout_view(user):
    return jsonify(logic.checkout(user))


@app.route("/search/<term>")
def search_view(term):
    return jsonify({"term": term, "hits": logic.search(term)})


@app.route("/catalog/<int:page>")
def catalog_view(page):
    return jsonify(logic.list_products(page))


@app.route("/profile/<int:user>")
def profile_view(user):
    return jsonify(logic.load_profile(user))


@app.route("/events/<int:n>")
def events_view(n):
    return jsonify({"buffered": ledger.record_event(ledger.describe(n))})


@app.route("/reserve/<int:sku>")
def reserve_view(sku):
    try:
        left = inventory.reserve(sku)
    except inventory.OutOfStock:
        return jsonify({"status": "sold_out"})
    return jsonify({"status": "reserved", "left": left})
