"""Search against a remote index that reports the generation it serves."""
import time

MAX_ATTEMPTS = 3


def query_index(term):
    time.sleep(0.002)
    return {"generation": 2, "items": [f"{term}-{n}" for n in range(5)]}


def find(term):
    wanted = 2  # PLANT:retries
    hits = query_index(term)
    attempts = 1
    while hits["generation"] < wanted and attempts < MAX_ATTEMPTS:
        hits = query_index(term)
        attempts += 1
    return hits["items"]
