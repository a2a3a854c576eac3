"""Launcher: serves the Flask shop on 127.0.0.1:PORT with the threaded dev server.

The application code lives in the ``shopapp`` package (like ``gunicorn shopapp.views:app``); this
script only imports and serves it. SIGTERM is left to funcsight (it turns it into a normal exit).
"""
import sys

from shopapp.views import app

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True, use_reloader=False)
