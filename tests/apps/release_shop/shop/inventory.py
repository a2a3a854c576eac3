"""Stock of a limited item, held in memory: each reservation takes one unit; once the units are
gone, ``reserve`` raises ``OutOfStock`` (a new exception type, appearing mid-run) and the view
answers "sold out"."""
import threading

from shop import db

INITIAL_UNITS = 40

_units = {"left": INITIAL_UNITS}
_lock = threading.Lock()


class OutOfStock(Exception):
    pass


def reserve(sku):
    db.fetch_stock(sku)
    with _lock:
        if _units["left"] <= 0:
            raise OutOfStock(sku)
        _units["left"] -= 1
        return _units["left"]
