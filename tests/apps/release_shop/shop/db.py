"""A stand-in for the shop's database: every query costs a real round trip (time spent outside
Python, like waiting on a socket), so it is the query function's own time. Unchanged between
releases. Round trips are a few milliseconds, as on a real network: long enough that a busy
machine's scheduling delays are small beside them."""
import time

ROUND_TRIP_S = 0.003
PER_ROW_S = 0.00005

PRICES = {sku: 5.0 + (sku * 7) % 40 for sku in range(1, 201)}
COUPONS = {f"SAVE{n}": {"rate": 0.05 * (n + 1), "expires": "2024-12-31"} for n in range(5)}
USERS = {user: {"name": f"user{user}", "email": f"user{user}@example.com"} for user in range(1000)}


def fetch_prices(skus):
    """One query for any number of skus: a round trip plus a little per row."""
    time.sleep(ROUND_TRIP_S + PER_ROW_S * len(skus))
    return {sku: PRICES[sku] for sku in skus}


def fetch_report_rows(day):
    time.sleep(ROUND_TRIP_S)
    return [(day * 31 + n) % 97 for n in range(24)]


def fetch_cart(user):
    time.sleep(ROUND_TRIP_S)
    return [(1 + (user + n) % 200, 1 + n % 3) for n in range(3)]


def fetch_coupon(code):
    time.sleep(ROUND_TRIP_S)
    return COUPONS[code]


def query_index(term):
    """A search-index query: 4 ms per round trip. The index reports the generation it serves."""
    time.sleep(0.004)
    return {"generation": 2, "items": [f"{term}-{n}" for n in range(5)]}


def fetch_user(user):
    time.sleep(ROUND_TRIP_S)
    return USERS[user % 1000]


def fetch_stock(sku):
    time.sleep(ROUND_TRIP_S)
    return sku
