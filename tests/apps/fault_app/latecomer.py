"""Imported for the first time in a forked child (see fork_locked.py)."""


def fresh(n):
    return n + 1
