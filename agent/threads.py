"""Work a request hands to a thread pool belongs to that request.

``ThreadPoolExecutor.submit`` runs the function in a worker thread without the submitter's context
variables, so the request's call table (and the OpenTelemetry context) would not be found there and
the calls would count as background work. While funcsight runs, ``submit`` is wrapped: the function
runs in a copy of the submitter's context, and its calls hang in the call tree under the sensed
call that submitted it. ``loop.run_in_executor`` goes through ``submit`` and is covered too;
``asyncio.to_thread`` copies the context itself. Calls the pool runs after the request ended
(fire-and-forget work) find its table closed and count under ``(background)``.

Installed by the agent, removed on uninstrument. Costs one context copy per submitted task.
"""

from __future__ import annotations

import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor

_original_submit = None


def install(sensor) -> None:
    """Wrap ``ThreadPoolExecutor.submit`` for ``sensor`` (once; a second call replaces the sensor)."""
    global _original_submit
    if _original_submit is None:
        _original_submit = ThreadPoolExecutor.submit
    original = _original_submit
    current_node, set_base_node = sensor.current_node, sensor.set_base_node

    @functools.wraps(original)
    def submit(self, fn, /, *args, **kwargs):
        try:
            context, node = contextvars.copy_context(), current_node()
        except Exception:  # never into the application
            return original(self, fn, *args, **kwargs)
        return original(self, _in_request, context, node, set_base_node, fn, *args, **kwargs)

    ThreadPoolExecutor.submit = submit


def _in_request(context, node, set_base_node, fn, /, *args, **kwargs):
    return context.run(_under, node, set_base_node, fn, args, kwargs)


def _under(node, set_base_node, fn, args, kwargs):
    try:
        previous = set_base_node(node)
    except Exception:
        return fn(*args, **kwargs)
    try:
        return fn(*args, **kwargs)
    finally:
        try:
            set_base_node(previous)
        except Exception:
            pass


def uninstall() -> None:
    global _original_submit
    if _original_submit is not None:
        ThreadPoolExecutor.submit = _original_submit
        _original_submit = None
