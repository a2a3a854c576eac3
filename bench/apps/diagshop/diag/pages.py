"""A page rendered mostly by library code (json and string templates; unsensed)."""
import json
import string

ROWS = 300
ROW = string.Template("<tr><td>$sku</td><td>$name</td><td>$price</td><td>$blurb</td></tr>")


def page_rows(page):
    return [{"sku": page * 1000 + n, "name": f"item {n}", "price": n * 1.5, "blurb": "lorem ipsum " * 8} for n in range(ROWS)]
