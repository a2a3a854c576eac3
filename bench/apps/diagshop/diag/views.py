"""Flask views; the same in every release (a scenario's release 2 changes one marked line elsewhere)."""
import json

from flask import Flask, jsonify

from diag import catalog, coupons, counter, orders, pages, search, work

app = Flask("diagshop")


@app.route("/orders/<int:user>")
def orders_view(user):
    return jsonify({"user": user, "total": orders.order_total(user)})


@app.route("/page/<int:page>")
def page_view(page):
    rows = pages.page_rows(page)
    body = "".join(pages.ROW.substitute(row) for row in rows)
    data = json.dumps({"rows": rows, "html": body}, sort_keys=True, indent=1)  # PLANT:library_slowdown
    return {"size": len(data), "check": len(json.loads(data)["rows"])}


@app.route("/search/<term>")
def search_view(term):
    return jsonify({"term": term, "hits": search.find(term)})


@app.route("/checkout/<int:user>")
def checkout_view(user):
    return jsonify({"user": user, "total": coupons.apply(user, 100.0)})


@app.route("/counter/<int:n>")
def counter_view(n):
    return jsonify({"visits": counter.bump()})


@app.route("/batch/<int:n>")
def batch_view(n):
    return jsonify({"sum": work.crunch(n)})


@app.route("/catalog/<int:page>")
def catalog_view(page):
    return jsonify(catalog.list_products(page))


@app.route("/profile/<int:user>")
def profile_view(user):
    return jsonify(catalog.load_profile(user))
