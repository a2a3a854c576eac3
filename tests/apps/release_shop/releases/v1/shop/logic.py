"""The shop's business logic, release 1.0."""
import time

from shop import db

ORDER_SIZE = 6
PAGE_SIZE = 8


def order_skus(user):
    return [1 + (user * 13 + n * 7) % 200 for n in range(ORDER_SIZE)]


def order_total(user):
    skus = order_skus(user)
    prices = db.fetch_prices(skus)  # one query for the whole order
    return round(sum(prices[sku] for sku in skus), 2)


def build_report(day):
    rows = db.fetch_report_rows(day)
    return {"day": day, "summary": render_summary(rows)}


def render_summary(rows):
    """Lays the report out (its own time stands for a formatting library's work)."""
    time.sleep(0.002)
    return f"{len(rows)} rows, total {sum(rows)}"


def validate_coupon(code, email):
    coupon = db.fetch_coupon(code)
    return coupon["rate"]


def apply_coupon(user, amount):
    rate = validate_coupon(f"SAVE{user % 5}", db.USERS[user % 1000]["email"])
    return round(amount * (1 - rate), 2)


def checkout(user):
    cart = db.fetch_cart(user)
    amount = sum(db.PRICES[sku] * qty for sku, qty in cart)
    return {"user": user, "items": len(cart), "total": apply_coupon(user, amount)}


def search(term):
    hits = db.query_index(term)
    return hits["items"]


def format_label(sku, price):
    return f"#{sku:04d} {price:8.2f}"


def list_products(page):
    skus = [1 + (page * PAGE_SIZE + n) % 200 for n in range(PAGE_SIZE)]
    prices = db.fetch_prices(skus)
    return [format_label(sku, prices[sku]) for sku in skus]


def mask_email(email):
    name, _, domain = email.partition("@")
    return f"{name[0]}***@{domain}"


def load_profile(user):
    record = db.fetch_user(user)
    return {"name": record["name"], "email": mask_email(record["email"])}
