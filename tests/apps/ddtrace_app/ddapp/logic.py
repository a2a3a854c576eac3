"""The per-request work: ``handle`` runs exactly once per request, ``square`` twice."""
import time


def square(x):
    return x * x


def handle(n):
    total = square(n) + square(n + 1)
    time.sleep(0.004)  # long enough that concurrent requests spread over the workers
    return total
