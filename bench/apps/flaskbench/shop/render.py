"""Shaping the response: money formatting, line summaries, a checksum."""

from __future__ import annotations

import hashlib
import json


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def line_summary(line) -> dict:
    return {"sku": line.sku, "name": line.name, "qty": line.qty, "total": line.total(), "category": line.category}


def lines_block(cart) -> list[dict]:
    block = []
    for line in cart.lines():
        block.append(line_summary(line))
    return block


def checksum(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def response(order_id: int, lines: list[dict], amounts: dict[str, int], risk: float) -> dict:
    payload = {
        "order": order_id,
        "lines": lines,
        "subtotal": money(amounts["subtotal"]),
        "total": money(amounts["subtotal"] - amounts["discount"] + amounts["tax"] + amounts["shipping"]),
        "risk": risk,
    }
    payload["checksum"] = checksum(payload)
    return payload
