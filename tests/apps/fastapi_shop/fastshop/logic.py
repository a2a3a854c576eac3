"""The shop's business logic: sync and async functions the tests count."""
import asyncio


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


async def fetch_item(item_id):
    """An async helper awaited by the handlers; it really suspends."""
    await asyncio.sleep(0.001)
    return CATALOG.lookup(item_id)


async def reserve(item_id):
    """Awaited; lets the OutOfStock raised by check_level propagate."""
    await asyncio.sleep(0)
    check_level(item_id)
    return True


def step_a(n):
    return n + 1


def step_b(n):
    return n * 3


def sync_work(n):
    return sum(range(n))
