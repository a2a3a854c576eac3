"""Prices through the shared store (the N+1 goes through here: pricing.lookup -> storage.fetch)."""
from diag import storage


def lookup(skus):
    rows = storage.fetch([f"price:{sku}" for sku in skus])
    return {sku: rows[f"price:{sku}"] for sku in skus}
