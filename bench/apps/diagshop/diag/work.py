"""Work fanned out to a thread pool: the request waits for every chunk."""
import time
from concurrent.futures import ThreadPoolExecutor

_pool = ThreadPoolExecutor(max_workers=4)


def chunk(n):
    time.sleep(0.002)
    return n * n


def crunch(n):
    futures = [_pool.submit(chunk, n + i) for i in range(4)]  # PLANT:thread_pool
    total = 0
    for future in futures:
        total += future.result()
    return total
