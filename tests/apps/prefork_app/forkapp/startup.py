"""Work done once per process that imports the app: at import time, outside any request.

With ``gunicorn --preload`` only the master imports the app (the workers are forked from it); without
it every worker imports it. Either way these calls happen once per importing process.
``FORKAPP_IMPORT_SECONDS`` makes the import take that much longer (a slow-loading app).
"""
import os
import time

TABLE = {}


def load_table():
    return {n: n * n for n in range(16)}


def warm():
    TABLE.update(load_table())
    return len(TABLE)


warm()
time.sleep(float(os.environ.get("FORKAPP_IMPORT_SECONDS", "0")))
