"""Stock checks: awaited async helpers, CPU only (no I/O, no sleeps)."""

from __future__ import annotations

import zlib


async def stock_level(sku: str) -> int:
    return zlib.crc32(sku.encode()) % 40


async def reserve(skus: list[str]) -> dict[str, bool]:
    reserved = {}
    for sku in skus:
        reserved[sku] = await stock_level(sku) > 2
    return reserved
