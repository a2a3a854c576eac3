"""``python netguard.py REPORT SCRIPT ARGS...``: run SCRIPT as ``opentelemetry-instrument`` would
(auto-instrumentation initialized first), with an audit hook recording every network operation
the process attempts: connects, name lookups and datagrams, one JSON line each in REPORT.

The hook is installed before anything else runs, so it sees OpenTelemetry's and funcsight's own
start-up too. (It sees what goes through Python's socket module: use an OTLP exporter over
HTTP, not gRPC, whose C core opens its own sockets.)
"""
import json
import os
import runpy
import sys

_report = open(sys.argv[1], "a", buffering=1)
_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
           "socket.sendto", "socket.sendmsg", "socket.bind"}


def _hook(event, args):
    if event in _EVENTS:
        try:
            if event in ("socket.connect", "socket.sendto", "socket.bind"):
                sock, address = args[0], args[1] if event != "socket.sendto" else args[-1]
                detail = {"family": int(sock.family), "address": repr(address)}
            else:
                detail = {"args": repr(args)[:300]}
            _report.write(json.dumps({"pid": os.getpid(), "event": event, **detail}) + "\n")
        except Exception as err:  # never into the application
            _report.write(json.dumps({"event": event, "unrecorded": repr(err)}) + "\n")


sys.addaudithook(_hook)

from opentelemetry.instrumentation.auto_instrumentation import initialize  # noqa: E402

initialize()
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
