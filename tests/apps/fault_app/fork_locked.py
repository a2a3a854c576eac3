"""A fork while another thread is inside funcsight (holding its function registry's lock): the
child must still be able to sense a function it never saw (which registers it), and end.

Prints one JSON line: the child's exit status, or "hung" if it did not end within 15 s.
"""
import json
import os
import threading
import time

from funcsight.agent import FuncsightInstrumentor


def main():
    running = FuncsightInstrumentor.running
    assert running is not None, "run this under opentelemetry-instrument with funcsight enabled"
    holding, release = threading.Event(), threading.Event()

    def hold():
        with running.registry._lock:  # what a thread registering a new function holds, briefly
            holding.set()
            release.wait(30)

    threading.Thread(target=hold, daemon=True).start()
    holding.wait(10)
    pid = os.fork()
    if pid == 0:
        import latecomer  # never imported before: its functions are registered now

        latecomer.fresh(2)
        os._exit(0)
    release.set()
    deadline = time.monotonic() + 15
    status = "hung"
    while time.monotonic() < deadline:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(code)
            break
        time.sleep(0.05)
    if status == "hung":
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    print(json.dumps({"child": status}), flush=True)


if __name__ == "__main__":
    main()
