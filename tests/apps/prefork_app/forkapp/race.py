"""A process that forks while funcsight's export thread is inside a store write transaction.

Run under ``opentelemetry-instrument`` with ``FUNCSIGHT_DB`` set. The parent calls ``work`` once and
flushes on a thread whose write is held open for a moment (a slow disk, a busy store); the fork
happens in the middle of it, as a pre-fork server's fork can while its master writes. The child
calls ``work`` once, flushes and leaves with ``os._exit`` (so only that flush counts). Afterwards
the store should hold two calls of ``work``, one per process.
"""
import os
import threading
import time

from funcsight.agent import FuncsightInstrumentor


def work(n):
    return n + 1


def main():
    running = FuncsightInstrumentor.running
    writer = running.writer
    inside = threading.Event()
    insert = writer._insert_window

    def slow_insert(conn, window):  # inside BEGIN IMMEDIATE ... COMMIT
        inside.set()
        time.sleep(0.5)
        insert(conn, window)

    writer._insert_window = slow_insert
    work(1)
    flusher = threading.Thread(target=running.pipeline.flush)
    flusher.start()
    if not inside.wait(10):
        raise SystemExit("the parent's flush never reached the store: nothing was sensed")
    pid = os.fork()
    if pid == 0:
        writer._insert_window = insert
        work(2)
        started = time.monotonic()
        running.pipeline.flush()
        print(f"child flush took {time.monotonic() - started:.2f} s, windows still queued: {len(writer._pending)}", flush=True)
        os._exit(0)
    flusher.join()
    writer._insert_window = insert
    os.waitpid(pid, 0)

