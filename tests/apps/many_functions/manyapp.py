"""An app that makes functions at run time: ``/make/<int:n>`` writes a module of ``n`` new
functions into the app's directory, imports it (so the 3.11 rewriter senses it as well as
``sys.monitoring``) and calls each of them ``CALLS_EACH`` times; ``/fixed`` calls the app's own
helper. Both answer the calls they made, so a test knows what funcsight should have counted."""
import importlib
import itertools
import os
import threading

from flask import Flask

app = Flask(__name__)
HERE = os.path.dirname(os.path.abspath(__file__))
CALLS_EACH = 3
_batches = itertools.count()
_lock = threading.Lock()


def module_source(batch, n):
    return "".join(f"def made_{batch}_{i}(x):\n    return x + {i}\n\n\n" for i in range(n))


def call_all(module, names):
    total = 0
    for name in names:
        function = getattr(module, name)
        for _ in range(CALLS_EACH):
            total += function(1)
    return total


def helper(x):
    return x * 2


@app.route("/make/<int:n>")
def make(n):
    with _lock:
        batch = next(_batches)
    name = f"made_{batch}"
    with open(os.path.join(HERE, name + ".py"), "w") as handle:
        handle.write(module_source(batch, n))
    importlib.invalidate_caches()
    module = importlib.import_module(name)
    names = [f"made_{batch}_{i}" for i in range(n)]
    call_all(module, names)
    return {"batch": batch, "functions": n, "calls": n * CALLS_EACH}


@app.route("/fixed")
def fixed():
    return {"value": helper(21)}
