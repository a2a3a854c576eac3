"""Two task kinds. ``resize`` calls scale twice and checksum once; ``notify`` calls render once
and checksum twice: the shared helper must stay separated by task."""
import os
import time
import uuid

from jobs import logic
from jobs.worker import DATA, app


def _done(kind):
    time.sleep(0.005)  # a little work, so a prefork pool spreads the tasks over its children
    # Written last: once the test has seen every marker, every task body has returned.
    open(os.path.join(DATA, "done", f"{kind}-{uuid.uuid4().hex}"), "w").close()


@app.task(name="jobs.resize")
def resize(n):
    width = logic.scale(n, 2)
    height = logic.scale(n, 3)
    digest = logic.checksum(f"{width}x{height}")
    _done("resize")
    return digest


@app.task(name="jobs.notify")
def notify(user):
    message = logic.render(user)
    digest = logic.checksum(message) + logic.checksum(user)
    _done("notify")
    return digest
