"""Launcher: serves the fault app on 127.0.0.1:PORT with werkzeug's threaded server.

``/quit`` ends the server and the script returns normally (the interpreter's normal exit). SIGTERM
is left to funcsight (it turns it into a normal exit); SIGINT ends ``serve_forever`` with
KeyboardInterrupt, which werkzeug catches, so the script returns normally then too.
"""
import sys
import threading

from werkzeug.serving import make_server

from faultapp.views import app


def main(port):
    server = make_server("127.0.0.1", port, app, threaded=True)

    @app.route("/quit")
    def quit_server():
        threading.Thread(target=server.shutdown, daemon=True).start()
        return "bye\n"

    server.serve_forever()
    print("fault app: served until", "shutdown", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
