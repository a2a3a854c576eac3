"""Order totals: one price lookup for the whole order."""
from diag import pricing

ORDER_SIZE = 6


def order_skus(user):
    return [1 + (user * 13 + n * 7) % 200 for n in range(ORDER_SIZE)]


def order_total(user):
    skus = order_skus(user)
    prices = pricing.lookup(skus)  # PLANT:n_plus_one
    return round(sum(prices[sku] for sku in skus), 2)
