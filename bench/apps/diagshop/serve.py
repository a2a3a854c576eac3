"""Launcher of the diagnosis benchmark's shop: ``python serve.py PORT`` serves it on 127.0.0.1 with
the threaded dev server (``bench/accuracy.py`` runs it under ``opentelemetry-instrument``)."""
import sys

from diag.views import app

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True, use_reloader=False)
