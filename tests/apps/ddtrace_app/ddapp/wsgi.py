"""The view, and what ddtrace did to it (``gunicorn ddapp.wsgi:app``).

ddtrace's Flask integration hands every view to its Code Origin for Spans, which replaces the view's
code with a forwarding stub (``ddtrace.internal.wrapping``: a code object with the view's own name
whose constants hold the wrapper and a copy of the view) until the view's first call in the process.
The view reports whether that happened here, so a test can tell a run where the stub was there from
one where ddtrace never started.
"""
import os
import sys
from types import FunctionType

from flask import Flask, jsonify

from ddapp import logic

app = Flask("ddapp")


@app.route("/work/<int:n>")
def work(n):
    return jsonify({
        "pid": os.getpid(),
        "value": logic.handle(n),
        "ddtrace": "ddtrace" in sys.modules,
        "stub_at_start": STUB_AT_START,
    })


# A loop, not any(<genexpr>): a generator expression is a function of the app, sensed at import.
STUB_AT_START = False
for _const in work.__code__.co_consts:
    STUB_AT_START = STUB_AT_START or type(_const) is FunctionType
