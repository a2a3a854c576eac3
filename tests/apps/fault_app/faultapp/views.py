"""Flask views; every view is itself a sensed function."""
import os

from flask import Flask, jsonify, request

from faultapp import logic

app = Flask("faultapp")


@app.route("/work/<int:n>")
def work(n):
    return jsonify({"pid": os.getpid(), "value": logic.handle(n)})


@app.route("/secret", methods=["POST"])
def secret():
    body = request.get_data()
    env_secret = os.environ.get("FAULT_APP_SECRET", "")
    value = logic.checksum(env_secret, body)
    try:
        logic.validate(body.decode("utf-8", "replace"))
    except logic.Rejected:
        rejected = True
    return jsonify({"value": value, "rejected": rejected})
