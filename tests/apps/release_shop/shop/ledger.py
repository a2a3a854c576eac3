"""A write-behind audit buffer: events are kept in memory and written out when the buffer is full.

The trimming after a write-out has a bug: it drops only the oldest event instead of everything it
wrote, so once the buffer has filled up it stays full and every later event pays a write-out. The
shop is fast until BUFFER_LIMIT events have been recorded, then ``record_event`` is slow for good.
"""
import os
import threading
import time

BUFFER_LIMIT = int(os.environ.get("SHOP_BUFFER_LIMIT", "40"))  # a test may need more fast events first
WRITE_OUT_S = 0.015  # writing the buffer to storage

_buffer = []
_lock = threading.Lock()


def record_event(event):
    with _lock:
        _buffer.append(event)
        if len(_buffer) > BUFFER_LIMIT:
            time.sleep(WRITE_OUT_S)
            del _buffer[0]  # bug: should be `_buffer.clear()`
        time.sleep(0.0005)
        return len(_buffer)


def describe(event):
    return f"event {event}"
