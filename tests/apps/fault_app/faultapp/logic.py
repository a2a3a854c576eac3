"""Per-request work with exact, known call counts: ``handle`` once per request, ``square`` twice."""


class Rejected(Exception):
    pass


def square(x):
    return x * x


def handle(n):
    return square(n) + square(n + 1)


def checksum(secret, body):
    """Takes secret values as arguments and keeps them in locals: none of it may be recorded."""
    token = secret[::-1]
    payload = body.decode("utf-8", "replace")
    return (len(token) * 31 + len(payload)) % 9973


def validate(secret):
    """Raises with the secret in the exception's message (the view catches it)."""
    raise Rejected(f"bad credentials {secret}")
