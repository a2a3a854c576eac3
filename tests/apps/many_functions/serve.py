"""Launcher: serves ``manyapp`` on 127.0.0.1:PORT with Flask's threaded dev server."""
import sys

from manyapp import app

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True, use_reloader=False)
