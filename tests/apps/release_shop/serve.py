"""Launcher: serves the release shop on 127.0.0.1:PORT with the threaded dev server.

The code that changes between releases (``shop/logic.py``) is not in this directory: a deploy
copies ``releases/<release>/`` over the app (see ``tests/test_change_intelligence.py``), the way
a real deployment replaces the code, and the package is then imported from here as usual.
SIGTERM is left to funcsight (it turns it into a normal exit).
"""
import sys

from shop.views import app

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True, use_reloader=False)
