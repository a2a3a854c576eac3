"""Untouched in every scenario: catalog labels (CPU) and profiles (the shared store)."""
import time

from diag import storage


def format_label(sku, price):
    return f"#{sku:04d} {price:8.2f}"


def list_products(page):
    skus = [1 + (page * 8 + n) % 200 for n in range(8)]
    rows = storage.fetch([f"price:{sku}" for sku in skus])
    return [format_label(sku, rows[f"price:{sku}"]) for sku in skus]


def checksum(text):
    total = 0
    for ch in text:
        total = (total * 31 + ord(ch)) % 1000003
    return total


def load_profile(user):
    rows = storage.fetch([f"user:{user}"])
    time.sleep(0.001)
    return {"user": user, "score": rows[f"user:{user}"], "check": checksum("profile" * 200)}
