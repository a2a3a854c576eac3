"""The Flask flavour (``gunicorn forkapp.wsgi:app``), with an outbound-calls route.

``/fanout/<int:n>`` calls a downstream HTTP server (``DOWNSTREAM_URL``) once with requests (GET) and
once with httpx (POST), and runs one sqlite3 query; with the standard requests, httpx and sqlite3
instrumentations these are CLIENT spans inside the request.
"""
import os
import sqlite3

import httpx
import requests
from flask import Flask, jsonify

from forkapp import logic, startup  # noqa: F401  (startup runs at import)

app = Flask("forkapp")


@app.route("/work/<int:n>")
def work(n):
    return jsonify({"pid": os.getpid(), "value": logic.handle(n)})


def fetch_quote(n):
    response = requests.get(f"{os.environ['DOWNSTREAM_URL']}/quote/{n}", timeout=10)
    response.raise_for_status()
    return response.json()["quote"]


def post_audit(n):
    with httpx.Client(timeout=10) as client:
        response = client.post(f"{os.environ['DOWNSTREAM_URL']}/audit", json={"n": n})
    response.raise_for_status()
    return response.json()["ok"]


def count_rows(n):
    # The instrumentation traces cursor.execute (Connection.execute bypasses its proxy).
    conn = sqlite3.connect(":memory:")
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT ? + 1", (n,))
        return cursor.fetchone()[0]
    finally:
        conn.close()


@app.route("/fanout/<int:n>")
def fanout(n):
    return jsonify({"quote": fetch_quote(n), "audited": post_audit(n), "rows": count_rows(n), "pid": os.getpid()})
