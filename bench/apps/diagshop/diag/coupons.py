"""Coupons: validation raises CouponExpired for an expired coupon, and apply catches it."""
import time

TODAY = "2024-06-01"


class CouponExpired(Exception):
    pass


class CouponUnknown(Exception):
    pass


def validate(code):
    time.sleep(0.001)
    if code.endswith("9"):
        raise CouponUnknown(code)
    expires = "2025-01-01"  # PLANT:new_exception
    if expires < TODAY:
        raise CouponExpired(code)
    return 0.1


def apply(user, amount):
    try:
        rate = validate(f"SAVE{user % 10}")
    except (CouponExpired, CouponUnknown):
        rate = 0.0
    return round(amount * (1 - rate), 2)
