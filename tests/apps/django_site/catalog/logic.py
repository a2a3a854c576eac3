"""Business logic called by the views."""


class OutOfStock(Exception):
    pass


PRICES = {n: 5.0 + n for n in range(100)}


def lookup(item_id):
    return PRICES[item_id % 100]


def with_tax(price):
    return round(price * 1.2, 2)


def normalize(text):
    return text.strip().lower()


def reserve(item_id):
    if item_id % 2:
        raise OutOfStock(item_id)
    return True
