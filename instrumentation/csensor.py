"""The C sensor: :class:`PythonSensor`'s classification with the hot path of ``_csensor.c``.

Classification (which code is sensed, function identity, the registry) is the Python twin's, run
once per code object: the C core calls :meth:`CSensor.classify` and stores the answer in the code
object itself (its PEP 523 ``co_extra`` slot). Every event is handled in C without calling any
Python function. On 3.12+ the core classifies a code object when a function of it is created (a
CPython function watcher) and sensed code alone gets the PY_START/RETURN/YIELD/RESUME events, as
local events: switched on globally, they would make all other code pay too (see ``_switch_on``).

Calls go to C call tables (:class:`_csensor.CallTable`, same Python-visible format as
:class:`calls.CallTable`): the C sensor makes its own sink (:class:`CSink`), whose table type is
the C table and whose ``background`` is a property over the core's own pointer, so a call outside
a request costs one pointer read.

The extension is optional (see ``setup.py``); :data:`UNAVAILABLE` says why it cannot be used.
"""

from __future__ import annotations

import gc
import sys
import sysconfig
import weakref
from types import FunctionType

from funcsight.instrumentation._pysensor import PythonSensor, Sink, kind_of
from funcsight.instrumentation.calls import current_request, stack_sample
from funcsight.instrumentation.registry import FunctionInfo, FunctionRegistry, function_info
from funcsight.instrumentation.selection import CodeSelector

UNAVAILABLE: str | None = None
if sysconfig.get_config_var("Py_GIL_DISABLED"):
    _csensor = None
    UNAVAILABLE = "the C sensor needs the GIL (free-threaded build)"
else:
    try:
        from funcsight.instrumentation import _csensor
    except ImportError as err:  # not built: no compiler at install time, or another platform
        _csensor = None
        UNAVAILABLE = f"the C extension is not built ({err})"


def available() -> bool:
    return _csensor is not None


CallTable = _csensor.CallTable if _csensor is not None else None
PathRegistry = _csensor.PathRegistry if _csensor is not None else None


class CSensor(PythonSensor):
    implementation = "c"

    def __init__(self, registry: FunctionRegistry, selector: CodeSelector, slow_ns: int = 50_000_000,
                 sample_error=stack_sample, paths=None):
        if _csensor is None:
            raise ImportError(UNAVAILABLE)
        # Before PythonSensor.__init__: it sets internal_errors (a property over the core here)
        # and makes the sink over this core.
        paths = paths if paths is not None else _csensor.PathRegistry()
        self._core = _csensor.Core(self.classify, current_request, int(slow_ns), paths)
        self._local_events = 0  # sys.monitoring events switched on per sensed code object
        self._instrumented: dict = {}  # id(code) -> weak reference, for code with those events on
        super().__init__(registry, selector, slow_ns, sample_error, paths)
        # The default sampler's C twin (csensor/samples.h) runs without a Python-level call.
        _csensor.set_stack_sampler(_csensor.stack_sample if sample_error is stack_sample else sample_error)

    def _make_sink(self, slow_ns: int, sample_error) -> Sink:
        return CSink(self._core, slow_ns, sample_error)

    # ------------------------------------------------------------ classification (Python, cold)
    def _sensed(self, code) -> None:
        if self._local_events:
            sys.monitoring.set_local_events(self._tool_id, code, self._local_events)
            # By identity: code objects compare equal by content (a WeakSet would merge two
            # modules' copies of one function and leave one instrumented after stop()).
            instrumented = self._instrumented
            instrumented[id(code)] = weakref.ref(code, lambda _ref, key=id(code): instrumented.pop(key, None))

    def adopt(self, code, module: str) -> int:
        # The C core keeps the id in the code object; nothing to remember here.
        return self.adopt_info(function_info(code, module), kind_of(code))

    def adopt_info(self, info: FunctionInfo, kind: int) -> int:
        fid = super().adopt_info(info, kind)
        if fid >= 0:
            self._core.set_kind(fid, kind)
        return fid

    # --------------------------------------------------------------------------- hot path (C)
    def _build(self) -> None:
        core = self._core
        self.enter, self.leave, self.suspend, self.resume = core.enter, core.leave, core.suspend, core.resume
        self.sweep_parked = core.sweep_parked
        self.current_node = core.current_node
        self.set_base_node = core.set_base_node
        self.take_enclosed, self.hold, self.take_all_held = core.take_enclosed, core.hold, core.take_all_held
        if _csensor.HAS_MONITORING:
            self._callbacks = {
                "PY_START": core.on_start,
                "PY_RETURN": core.on_return,
                "PY_UNWIND": core.on_unwind,
                "PY_YIELD": core.on_yield,
                "PY_RESUME": core.on_resume,
                "PY_THROW": core.on_throw,
            }
        else:
            self._callbacks = {}

    # ------------------------------------------------------------------------------ switch on/off
    def _switch_on(self, events: int) -> None:
        """Events that can be local go on per sensed code object, when a function of it is created
        (the core's function watcher, ``_csensor.c``) or, for functions that exist already, now.
        Switched on globally they would cost every unsensed function too, even disabled."""
        monitoring = sys.monitoring
        local = monitoring.events.PY_START | monitoring.events.PY_RETURN
        local |= monitoring.events.PY_YIELD | monitoring.events.PY_RESUME
        self._local_events = events & local
        self._instrumented = {}
        monitoring.set_events(self._tool_id, events & ~local)
        self._core.watch_functions(obj for obj in gc.get_objects() if type(obj) is FunctionType)

    def stop(self) -> None:
        if self._tool_id is not None and self._local_events:
            self._core.unwatch_functions()
            for ref in list(self._instrumented.values()):
                code = ref()
                if code is not None:
                    sys.monitoring.set_local_events(self._tool_id, code, 0)
            self._instrumented = {}
            self._local_events = 0
        super().stop()

    def rewrite_hooks(self) -> tuple:
        """The 3.11 rewriter's hook set (``rewrite._HOOK_NAMES`` order) with the C core's
        primitives: the twin's ``_make_hooks`` works on Python list entries, these on C tokens."""
        from funcsight.instrumentation import rewrite

        core = self._core
        await_, resume = core.await_, core.resume

        def aiter_(entry, iterable):
            return rewrite._AsyncIter(iterable, entry, await_, resume)

        def acm(entry, manager):
            return rewrite._AsyncContext(manager, entry, await_, resume)

        return core.enter, core.enter_co, core.leave, core.unwind, core.yield_, resume, await_, aiter_, acm

    @property
    def internal_errors(self) -> int:
        return self._core.internal_errors

    @internal_errors.setter
    def internal_errors(self, value: int) -> None:
        self._core.internal_errors = value

    @property
    def parked(self) -> int:
        """Suspended generators/coroutines waiting to resume (or to be swept)."""
        return self._core.parked

    def stack_depth(self) -> int:
        """In-flight sensed invocations on the calling thread."""
        return self._core.stack_depth()

    def expect_enclosures(self) -> None:
        self._core.enclosing = 1


# ------------------------------------------------------------------------------------------ sink
class CSink(Sink):
    """The C sensor's sink: C call tables, and ``background`` and ``slow_ns`` kept in the core
    (the hot path reads them there, without a Python attribute lookup)."""

    def __init__(self, core, slow_ns: int, sample_error=stack_sample):
        self._core = core
        super().__init__(_csensor.CallTable, slow_ns, sample_error)

    @property
    def background(self):
        return self._core.background

    @background.setter
    def background(self, table) -> None:
        self._core.background = table

    @property
    def slow_ns(self) -> int:
        return self._core.slow_ns

    @slow_ns.setter
    def slow_ns(self, value: int) -> None:
        self._core.slow_ns = int(value)


__all__ = ["CSensor", "CSink", "CallTable", "PathRegistry", "UNAVAILABLE", "available"]
