"""A shared visit counter guarded by a lock; persisting it costs a round trip."""
import threading
import time

_lock = threading.Lock()
_state = {"visits": 0}


def persist(value):
    time.sleep(0.0015)


def bump():
    with _lock:
        _state["visits"] += 1
        value = _state["visits"]
    persist(value)  # PLANT:lock_contention
    return value
