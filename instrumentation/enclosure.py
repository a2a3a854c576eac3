"""Calls that run around a request's span on the same thread: the Python sensor's enclosures.

A framework's code encloses the span that makes a request: ``Flask.__call__`` and ``wsgi_app``
are running when the OpenTelemetry instrumentation starts the span, URL matching runs in them
before it starts, teardown after it ends. Those calls finish with no open request table, but with
a sensed call still running below them on the thread. Instead of the background table they go to
a table the thread holds; the rollup processor decides where a held table goes:

* a request that starts while its enclosing calls run takes the held table as its own
  (:meth:`Enclosures.take_enclosed`): what they did so far was for that request;
* a request that ends while enclosing calls run hands its table back to be held
  (:meth:`Enclosures.hold`): the rest of the enclosing calls, and those calls themselves when they
  return, land in the request's table;
* what no request claimed is background, folded when the window closes
  (:meth:`Enclosures.take_all_held`).

Once the thread's outermost sensed call has returned (recorded into the held table), the held
table is released when the next outermost call starts, or at once when the stack empties by a
suspension (an asyncio task step ended): another request's or task's calls never join it.
Calls after the stack emptied (a server iterating the response after the framework returned) are
background. The C sensor's twin of this is ``csensor/core.h`` (held_table, release_held) and the
Core methods of the same names.
"""

from __future__ import annotations

# Held and released tables between two windows: past it, enclosed calls go to background (a pool
# of threads running enclosing loops that never meet a request), counted in ``fallbacks``.
MAX_HELD = 256


class Enclosures:
    def __init__(self, new_table):
        self._new_table = new_table
        self.holding: set = set()
        self.released: list = []
        self.epoch = 1  # a thread's (table, epoch) is stale once take_all_held() moved it on
        self.fallbacks = 0
        # Nothing is held until a request starts or ends inside sensed calls: a process whose spans
        # enclose all its sensed code, or that has no requests, never pays for enclosures.
        self.active = False

    def held_of(self, tls):
        """The thread's held table, or None."""
        held = tls.__dict__.get("held")
        if held is not None and held[1] == self.epoch:
            return held[0]
        return None

    def new_held(self, tls, background):
        """A fresh held table for the thread (``background`` when MAX_HELD are out)."""
        if len(self.holding) + len(self.released) >= MAX_HELD:
            self.fallbacks += 1
            return background
        table = self._new_table()
        self.holding.add(table)
        tls.held = (table, self.epoch)
        return table

    def release(self, tls) -> None:
        """The thread's stack emptied."""
        table = self.held_of(tls)
        tls.held = None
        if table is not None:
            self.released.append(table)
            self.holding.discard(table)

    def take_enclosed(self, tls):
        """None, or (the thread's held table, no longer held, or None; the released tables or
        None): the rollup processor, when a request starts."""
        if getattr(tls, "stack", None):
            self.active = True
        elif tls.__dict__.get("held") is not None:
            self.release(tls)  # left by an outermost call that returned: not this request's
        held = self.held_of(tls)
        tls.held = None
        if held is not None:
            self.holding.discard(held)
        if held is None and not self.released:
            return None
        released, self.released = (self.released, []) if self.released else (None, self.released)
        return held, released

    def hold(self, tls, stack, table) -> bool:
        """Hold ``table`` (a request that just ended) for the calls of the enclosing calls still
        running on this thread; False on an empty stack."""
        if not stack:
            return False
        self.active = True
        self.release(tls)
        self.holding.add(table)
        table.span_budget = 0  # its spans were queued with the request
        tls.held = (table, self.epoch)
        return True

    def take_all_held(self) -> list:
        """Every held and released table (the export thread, closing a window); every thread's
        held table goes stale."""
        holding, self.holding = self.holding, set()
        released, self.released = self.released, []
        self.epoch += 1
        return released + list(holding)
