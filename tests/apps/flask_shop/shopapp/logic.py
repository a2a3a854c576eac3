"""The shop's business logic: every kind of function the tests count."""
import time


class OutOfStock(Exception):
    pass


class Catalog:
    PRICES = {n: 10.0 + n for n in range(1000)}

    def lookup(self, item_id):
        """A method on a class."""
        return self.PRICES[item_id % 1000]


CATALOG = Catalog()


def normalize(value):
    """A helper called three times per item request."""
    return value.strip().lower()


def price_with_tax(price):
    def round_cents(amount):
        """A nested closure."""
        return round(amount, 2)

    return round_cents(price * 1.2)


def iter_tags(item_id):
    """A generator consumed by the request."""
    yield "item"
    yield f"n{item_id}"
    yield "even" if item_id % 2 == 0 else "odd"


def parse_qty(text):
    """Raises ValueError for non-numbers; callers catch it."""
    return int(text)


def check_level(item_id):
    raise OutOfStock(item_id)


def reserve(item_id):
    """Lets the OutOfStock raised by check_level propagate."""
    check_level(item_id)
    return True


def step_a(n):
    time.sleep(0.005)
    return n + 1


def step_b(n):
    time.sleep(0.003)
    return n * 3


def slow_step():
    """Slow enough (20 ms) to become a function span when FUNCSIGHT_SLOW_CALL_MS=5."""
    time.sleep(0.02)
    return "slow"
