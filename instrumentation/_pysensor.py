"""The pure-Python sensor: the fallback when the C extension is not built, and its reference twin.

Two front ends feed one core:

* Python 3.12+: ``sys.monitoring`` callbacks (PY_START/RETURN/UNWIND, and PY_YIELD/RESUME/THROW
  so generator and coroutine stacks stay balanced). Code outside the selection gets ``DISABLE`` on
  its first event and costs nothing after.
* Python 3.11: functions rewritten at import time (:mod:`funcsight.instrumentation.rewrite`) call
  :meth:`PythonSensor.enter` / ``leave`` / ``suspend`` / ``resume``.

Per thread, a stack of in-flight invocations ``[fid, start, child_ns, segment_start, active_ns,
parked_key, node, code]``, ``node`` being its place in the call tree (:mod:`funcsight.instrumentation.paths`:
under the node of the invocation below it) and ``code`` its code object, by which an exit finds its
entry without a look-up (``sys.monitoring`` only: the 3.11 hooks make 7-item entries, and the
rewriter may add the awaiter's entry as an 8th). A generator or coroutine that suspends is taken off the stack and parked; it goes
back on when resumed, so one invocation is first entry to final exit. Self time is duration minus
the time credited by sensed direct callees: a plain call credits its duration, a generator its
active segments (its consumer runs between them), a coroutine its whole duration (its awaiter waits).

Cost (``bench/micro.py --instructions``, 3.12): about 15,000 instructions per sensed call, about
12 times cProfile's and 18 times the C sensor's (``bench/README.md``); use the C sensor. Of that, the
two Python-level callbacks and their clock reads are about 2,500, and every int above 256 that the
bookkeeping makes (a duration, each counter incremented) about 170 to allocate and free, which is
why the callbacks avoid making any they do not need. That is also why this file is longer than
the others (~600 lines): the exit without an exception counts the call written out in
``on_return`` instead of calling ``finish()`` (a Python-level call is ~1,500 instructions), so the
counting appears twice, kept side by side and checked against each other by the twin tests.
"""

from __future__ import annotations

import dis
import sys
import threading
import weakref
from time import perf_counter_ns
from types import CodeType

from funcsight.histogram import UPPER_HALF
from funcsight.instrumentation.calls import CallTable, Sink, current_request, stack_sample
from funcsight.instrumentation.enclosure import Enclosures
from funcsight.instrumentation.paths import ROOT, PathRegistry
from funcsight.instrumentation.registry import (
    CO_ASYNC_GENERATOR,
    CO_COROUTINE,
    CO_GENERATOR,
    CO_ITERABLE_COROUTINE,
    COROUTINE,
    GENERATOR,
    PLAIN,
    FunctionInfo,
    FunctionRegistry,
    function_info,
)
from funcsight.instrumentation.selection import MAIN_MODULE_NAMES, CodeSelector, main_module_name

# Exits that are control flow, not errors: a generator's close, the end of an iteration (an
# iterator's __next__ passing its source's StopIteration on).
CONTROL_FLOW = (GeneratorExit, StopIteration, StopAsyncIteration)
_TOOL_NAME = "funcsight"
# 2 is PROFILER_ID (cProfile needs it) and 0/1/5 are claimed by debuggers, coverage and optimizers.
_TOOL_IDS = (4, 3)


def kind_of(code: CodeType) -> int:
    if code.co_flags & (CO_COROUTINE | CO_ITERABLE_COROUTINE):
        return COROUTINE
    if code.co_flags & (CO_GENERATOR | CO_ASYNC_GENERATOR):
        return GENERATOR
    return PLAIN


_RESUME = dis.opmap["RESUME"]


def start_offset(code: CodeType) -> int:
    """Offset of the RESUME that fires PY_START: after the cell and generator set-up opcodes."""
    raw = code.co_code
    for offset in range(0, len(raw), 2):
        if raw[offset] == _RESUME:
            return offset
    return 0


class PythonSensor:
    implementation = "python"

    def __init__(self, registry: FunctionRegistry, selector: CodeSelector, slow_ns: int = 50_000_000,
                 sample_error=stack_sample, paths=None):
        self.registry = registry
        self.selector = selector
        self._verdicts = selector.verdicts  # module -> file -> sensed or not (see classify)
        self.paths = paths if paths is not None else self._make_paths()
        self.sink = self._make_sink(int(slow_ns), sample_error)
        self.kinds: list[int] = []  # by function id
        self._ids: dict[int, int] = {}  # id(code) -> function id, sensed code only
        self._codes: list[CodeType] = []  # keeps sensed code alive so its id() is never reused
        # Code past FUNCSIGHT_MAX_FUNCTIONS (counted under an overflow function) is held weakly
        # instead, forgotten when it dies: functions made at run time must not pile up here.
        self._overflow_codes: dict[int, weakref.ref] = {}
        self._tls = threading.local()
        self._parked: dict[int, tuple] = {}  # id(frame) -> (entry, frame, table)
        self._start_offsets: dict[int, int] = {}  # id(code) -> offset of its PY_START (RESUME)
        self._deferred: list[tuple] = []  # exits met at the recursion limit, recorded at the next exit
        self._tool_id: int | None = None
        self.internal_errors = 0
        self._build()

    def _make_sink(self, slow_ns: int, sample_error) -> Sink:
        return Sink(CallTable, slow_ns, sample_error)

    def _make_paths(self):
        return PathRegistry()

    # ----------------------------------------------------------------- classification (cold path)
    def classify(self, code: CodeType, module: str) -> int:
        """The function id of ``code``, or -1 when it is not sensed. Called once per code object:
        for every function a process creates once the sensor is on (the C sensor's function
        watcher), so a module already decided against is answered first, with two look-ups."""
        by_file = self._verdicts.get(module)
        if by_file is not None and by_file.get(code.co_filename) is False and module not in MAIN_MODULE_NAMES:
            return -1
        selector = self.selector
        if module in MAIN_MODULE_NAMES:
            module = main_module_name()
        if not selector.module_is_sensed(module, code.co_filename) or not selector.is_function(code):
            return -1
        fid = self.adopt(code, module)
        if fid >= 0:
            self._sensed(code)
        return fid

    def _sensed(self, code: CodeType) -> None:
        """``code`` was classified as sensed (the C sensor switches its local events on here)."""

    def adopt(self, code: CodeType, module: str) -> int:
        fid = self.adopt_info(function_info(code, module), kind_of(code))
        if fid >= 0:
            key = id(code)
            if self.registry.is_overflow(fid):
                self._overflow_codes[key] = weakref.ref(code, lambda _ref, key=key: self._forget(key))
            else:
                self._codes.append(code)
            self._ids[key] = fid
            self._start_offsets[key] = start_offset(code)
        return fid

    def _forget(self, key: int) -> None:
        """Overflow code died (before its id() can be reused): drop what was kept by its id."""
        self._ids.pop(key, None)
        self._start_offsets.pop(key, None)
        self._overflow_codes.pop(key, None)

    def adopt_info(self, info: FunctionInfo, kind: int) -> int:
        """Register a function (also used by the 3.11 import-time rewriter); past the cap, the id
        of the overflow function for its kind (the registry counts it as dropped)."""
        fid = self.registry.register(info, kind)
        if fid >= 0:
            self.paths.ensure(fid)
            while len(self.kinds) <= fid:
                self.kinds.append(PLAIN)
            self.kinds[fid] = kind
        return fid

    # ---------------------------------------------------------------------------------- hot path
    def _build(self) -> None:
        """Bind the hot-path functions as closures: locals are the cheapest lookups Python has."""
        ids_get = self._ids.get
        kinds = self.kinds
        # .stack, and .base once set_base_node() set it: read as tls.__dict__.get("base", ROOT),
        # since getattr() with a default raises and clears an AttributeError inside on every
        # outermost call of a thread without one (about 4,000 instructions).
        tls = self._tls
        parked = self._parked
        parked_pop = parked.pop
        sink = self.sink
        get_request = current_request.get
        clock = perf_counter_ns
        getframe = sys._getframe
        deferred = self._deferred
        start_offsets = self._start_offsets
        last_edge = self.paths.last  # by fid: (parent node, node) of its last call; grown in place
        child = self.paths.child
        upper_half = UPPER_HALF
        enclosures = self._enclosures = Enclosures(sink.new_table)
        new_held = enclosures.new_held
        release = enclosures.release

        def outside_table(nested):
            """Where a call that finished outside an open request goes (see enclosure.py): the
            thread's held table when a sensed call encloses it or one was held, else background."""
            if not enclosures.active:
                return sink.background
            held = tls.__dict__.get("held")
            if held is not None and held[1] == enclosures.epoch:
                return held[0]
            return new_held(tls, sink.background) if nested else sink.background

        def stack_of():
            try:
                return tls.stack
            except AttributeError:
                tls.stack = stack = []
                return stack

        def finish(entry, caller, now, exc, table=None):
            """Record a final exit into ``table`` (else the request's, else background) and credit
            the caller's entry; all or nothing: its only Python-level call, the error's stack
            sample, comes before the first change, so at the recursion limit it either records the
            call whole or raises having changed nothing (see deferred). on_return is this function
            written out for ``exc=None``: keep the two alike."""
            fid = entry[0]
            start = entry[1]
            duration = now - start
            if entry[5] is None:  # never suspended
                credit = self_ns = duration
                if entry[2]:
                    self_ns = duration - entry[2]
            elif kinds[fid] == COROUTINE:
                self_ns = duration - entry[2]
                credit = duration - entry[4]  # active segments were credited as they ended
            else:
                credit = now - entry[3]
                self_ns = entry[4] + credit - entry[2]
            if self_ns < 0:
                self_ns = 0
            if table is None:
                table = get_request()
                if table is None or not table.open:
                    table = outside_table(caller is not None)
            elif not table.open:  # a request that ended before a deferred exit
                table = sink.background
            if exc is not None:
                errors = table.errors
                key = (fid, type(exc))
                sample = None
                if key not in errors:
                    try:
                        sample = sink.sample_error(exc)
                    except RecursionError:  # at the limit: changed nothing yet, deferred (see above)
                        raise
                    except Exception:  # a failing sampler (or redaction hook): the call still counts
                        self.internal_errors += 1
            # No call from here on between reading a counter and writing it back (a thread switch
            # is checked after calls), so two threads sharing a table never lose one.
            node = entry[6]
            paths = table.paths
            if node in paths:
                at = paths[node]
                stats = at[4]
            else:
                stats_of = table.stats
                if fid in stats_of:
                    stats = stats_of[fid]
                else:
                    stats = stats_of[fid] = [0, 0, 0, 0, {}]
                at = paths[node] = [0, 0, 0, 0, stats]
            at[0] += 1
            at[2] += duration
            at[3] += self_ns
            stats[0] += 1
            stats[2] += duration
            stats[3] += self_ns
            # funcsight.histogram.bucket_of, inlined (see there): a Python-level call here could
            # fail at the recursion limit after the table changed.
            n = duration.bit_length()
            bucket = n + n
            if duration >= upper_half[n]:
                bucket += 1
            hist = stats[4]
            if bucket in hist:
                hist[bucket] += 1
            else:
                hist[bucket] = 1
            if exc is not None:
                stats[1] += 1
                at[1] += 1
                path_errors = table.path_errors
                path_key = (node, key[1])
                if path_key in path_errors:
                    path_errors[path_key] += 1
                else:
                    path_errors[path_key] = 1
                if key in errors:
                    errors[key] += 1
                else:
                    errors[key] = 1
                    table.samples[key] = sample
            if table.span_budget > 0 and (exc is not None or duration >= sink.slow_ns):
                table.span_budget -= 1
                table.spans.append((fid, start, now, None if exc is None else type(exc)))
            if caller is not None:
                caller[2] += credit
                if exc is not None:
                    caller[2] += clock() - now  # an error's stack sample is the sensor's time, not the caller's

        def finish_deferred():
            # Taken off the list before finishing, so two threads never record one exit twice.
            while True:
                try:
                    item = deferred.pop(0)
                except IndexError:
                    return
                try:
                    finish(*item)
                except RecursionError:  # still too deep here (finish changed nothing): later
                    deferred.insert(0, item)
                    raise

        # enter() and leave() are called by 3.11 rewritten code, so like the callbacks below they
        # make no Python-level call before the stack is right: at the recursion limit leave() is
        # entered (enter() was, at the same depth) but finish() may not be; its exit is deferred.
        def enter(fid):
            now = clock()
            try:
                stack = tls.stack
            except AttributeError:
                stack = tls.stack = []
            if stack:
                parent = stack[-1][6]
            else:  # an outermost call: the one before it returned, its held table is released
                tls_dict = tls.__dict__
                parent = tls_dict.get("base", ROOT)
                if enclosures.active and tls_dict.get("held") is not None:
                    try:
                        release(tls)
                    except RecursionError:  # at the limit: at the next outermost call
                        pass
            edge = last_edge[fid]
            if edge[0] == parent:
                node = edge[1]
            else:  # a new edge: the one Python-level call, before anything changed
                try:
                    node = child(parent, fid)
                except RecursionError:  # at the application's limit: counted at the parent's node
                    node = parent
            entry = [fid, now, 0, now, 0, None, node]
            stack.append(entry)
            return entry

        def leave(entry, exc=None):
            """Final exit of an invocation started by :func:`enter` (3.11 rewritten code)."""
            try:
                now = clock()
                stack = getattr(tls, "stack", None)
                if not stack:
                    return
                if stack[-1] is entry:
                    stack.pop()
                else:  # leave() of frames above was skipped: drop them with this one
                    for depth in range(len(stack) - 1, -1, -1):
                        if stack[depth] is entry:
                            del stack[depth:]
                            break
                caller = stack[-1] if stack else None
                if isinstance(exc, CONTROL_FLOW):
                    exc = None
                try:
                    if deferred:
                        finish_deferred()
                    finish(entry, caller, now, exc)
                except RecursionError:
                    deferred.append((entry, caller, now, exc, get_request() or sink.background))
            except Exception:  # never into the application
                self.internal_errors += 1

        def suspend(entry):
            """The invocation yields (3.11 rewritten generators)."""
            stack = stack_of()
            if stack and stack[-1] is entry:
                now = clock()
                stack.pop()
                segment = now - entry[3]
                entry[4] += segment
                entry[3] = now
                entry[5] = True
                if stack:
                    stack[-1][2] += segment
                elif tls.__dict__.get("held") is not None:  # the stack emptied: release
                    try:
                        release(tls)
                    except RecursionError:  # at the limit: the next exit that empties it
                        pass

        def resume(entry, value=None):
            entry[3] = clock()
            stack = stack_of()
            if not stack and tls.__dict__.get("held") is not None:
                release(tls)  # as an outermost call starts (enclosure.py)
            stack.append(entry)
            return value

        def on_start(code, offset):
            # No Python-level call below once the function is known: at the recursion limit a
            # nested call would raise inside this callback, after the frame exists but before its
            # entry is pushed, and that frame's PY_UNWIND would then pop its caller's entry.
            fid = ids_get(id(code))
            if fid is None:
                try:
                    fid = self.classify(code, getframe(1).f_globals.get("__name__") or "")
                except RecursionError:
                    # The application's own limit, met while classifying its first call: the frame
                    # fails as it would a frame or two deeper, unrecorded, and the code stays enabled.
                    raise
                except Exception:
                    self.internal_errors += 1
                    fid = -1
                if fid < 0:
                    return DISABLE
            now = clock()
            try:
                stack = tls.stack
            except AttributeError:
                stack = tls.stack = []
            # node_of inlined: no Python-level call here (see above) unless the edge is new, or an
            # outermost call starts with a held table to release (see enclosure.py).
            if stack:
                parent = stack[-1][6]
            else:
                tls_dict = tls.__dict__
                parent = tls_dict.get("base", ROOT)
                if enclosures.active and tls_dict.get("held") is not None:
                    try:
                        release(tls)
                    except RecursionError:
                        pass
            edge = last_edge[fid]
            if edge[0] == parent:
                node = edge[1]
            else:
                try:
                    node = child(parent, fid)
                except RecursionError:
                    node = parent
            stack.append([fid, now, 0, now, 0, None, node, code])

        # The two final exits, PY_RETURN and PY_UNWIND. At the recursion limit the callback itself
        # still runs but any Python-level call inside it raises RecursionError. PY_RETURN makes no
        # such call (unless exits were deferred): it is finish() written out for an exit without an
        # exception, which also saves the Python-level call (about 700 instructions). PY_UNWIND
        # pops the entry and, when finish() cannot be entered, keeps it with C operations only
        # (finish() changes nothing before it can complete); a later exit records it.
        def on_return(code, offset, retval):
            now = clock()
            try:
                stack = tls.stack
                entry = stack[-1]
            except (AttributeError, IndexError):
                stack = entry = None
            # The innermost entry is this code's (its last item, see on_start), else the code is
            # not sensed or the stack lost its balance: the function id decides, as it did before.
            if entry is None or entry[-1] is not code:
                fid = ids_get(id(code))
                if fid is None:
                    return DISABLE
                if entry is None or entry[0] != fid:
                    return
            stack.pop()
            fid = entry[0]
            if deferred:  # exits met at the limit go first, in order
                caller = stack[-1] if stack else None
                try:
                    finish_deferred()
                    finish(entry, caller, now, None)
                except RecursionError:
                    deferred.append((entry, caller, now, None, get_request() or sink.background))
                return
            # finish(entry, stack[-1] or None, now, None), written out. Every int above 256 that is
            # made costs an allocation and a free (about 170 instructions), so a leaf's self time is
            # its duration, not a subtraction.
            start = entry[1]
            duration = now - start
            if entry[5] is None:  # never suspended
                credit = self_ns = duration
                if entry[2]:
                    self_ns = duration - entry[2]
                    if self_ns < 0:
                        self_ns = 0
            else:
                if kinds[fid] == COROUTINE:
                    self_ns = duration - entry[2]
                    credit = duration - entry[4]
                else:
                    credit = now - entry[3]
                    self_ns = entry[4] + credit - entry[2]
                if self_ns < 0:
                    self_ns = 0
            table = get_request()  # no Python-level call from here on (see finish()) but the rare one below
            if table is None or not table.open:
                table = sink.background
                if enclosures.active:  # enclosure.py
                    held = tls.__dict__.get("held")
                    if held is not None and held[1] == enclosures.epoch:
                        table = held[0]
                    elif stack:
                        try:
                            table = new_held(tls, table)
                        except RecursionError:  # at the limit: nothing changed yet
                            pass
            node = entry[6]
            paths = table.paths
            if node in paths:
                at = paths[node]
                stats = at[4]
            else:
                stats_of = table.stats
                if fid in stats_of:
                    stats = stats_of[fid]
                else:
                    stats = stats_of[fid] = [0, 0, 0, 0, {}]
                at = paths[node] = [0, 0, 0, 0, stats]
            at[0] += 1
            at[2] += duration
            at[3] += self_ns
            stats[0] += 1
            stats[2] += duration
            stats[3] += self_ns
            n = duration.bit_length()
            bucket = n + n
            if duration >= upper_half[n]:
                bucket += 1
            hist = stats[4]
            if bucket in hist:
                hist[bucket] += 1
            else:
                hist[bucket] = 1
            if duration >= sink.slow_ns and table.span_budget > 0:
                table.span_budget -= 1
                table.spans.append((fid, start, now, None))
            if stack:
                stack[-1][2] += credit

        def on_unwind(code, offset, exc):
            # PY_UNWIND cannot be disabled; returning DISABLE here would raise in the app.
            fid = ids_get(id(code))
            if fid is None:
                return
            if type(exc) is RecursionError and offset == start_offsets.get(id(code)):
                return  # the frame failed in its PY_START callback, at the limit: nothing was pushed
            if isinstance(exc, CONTROL_FLOW):
                exc = None
            now = clock()
            stack = getattr(tls, "stack", None)
            if stack and stack[-1][0] == fid:
                entry = stack.pop()
                caller = stack[-1] if stack else None
                try:
                    if deferred:
                        finish_deferred()
                    finish(entry, caller, now, exc)
                except RecursionError:
                    deferred.append((entry, caller, now, exc, get_request() or sink.background))

        def on_yield(code, offset, retval):
            now = clock()
            try:
                stack = tls.stack
                entry = stack[-1]
            except (AttributeError, IndexError):
                stack = entry = None
            if entry is None or entry[-1] is not code:  # as in on_return
                fid = ids_get(id(code))
                if fid is None:
                    return DISABLE
                if entry is None or entry[0] != fid:
                    return
            stack.pop()
            segment = now - entry[3]
            entry[4] += segment
            entry[3] = now
            if stack:
                stack[-1][2] += segment
            elif tls.__dict__.get("held") is not None:
                try:
                    release(tls)
                except RecursionError:
                    pass
            frame = getframe(1)
            entry[5] = key = id(frame)
            table = get_request()
            parked[key] = (entry, frame, table if table is not None and table.open else None)

        def on_resume(code, offset):
            # A parked frame is a sensed one (parked holds it, so its id is not reused meanwhile).
            item = parked_pop(id(getframe(1)), None)
            if item is None:
                if ids_get(id(code)) is None:
                    return DISABLE
                return
            entry = item[0]
            entry[3] = clock()
            try:
                stack = tls.stack
            except AttributeError:
                stack = tls.stack = []
            if not stack and tls.__dict__.get("held") is not None:
                try:
                    release(tls)  # a task resumes on an emptied stack: as an outermost call starts
                except RecursionError:
                    pass
            stack.append(entry)

        def on_throw(code, offset, exc):
            if ids_get(id(code)) is not None:
                item = parked.pop(id(getframe(1)), None)
                if item is not None:
                    entry = item[0]
                    entry[3] = clock()
                    stack = stack_of()
                    if not stack and tls.__dict__.get("held") is not None:
                        try:
                            release(tls)
                        except RecursionError:
                            pass
                    stack.append(entry)

        def sweep_parked():
            """Finish generators that were dropped while suspended: 3.13 emits no event when a
            suspended generator is closed. A frame only this table still holds is dead."""
            for key, item in list(parked.items()):
                if sys.getrefcount(item[1]) <= 2 and parked.pop(key, None) is not None:
                    entry = item[0]
                    finish(entry, None, entry[3], None, item[2])
            if deferred:
                finish_deferred()

        def current_node():
            """The path node of the innermost sensed call in flight on this thread (else the node
            its outermost calls hang under: 0, the request's root, unless set_base_node moved it)."""
            stack = getattr(tls, "stack", None)
            return stack[-1][6] if stack else tls.__dict__.get("base", ROOT)

        def set_base_node(node):
            """Hang this thread's outermost calls under ``node`` (a thread pool's task runs under
            the call that submitted it); returns the previous base node."""
            previous = tls.__dict__.get("base", ROOT)
            tls.base = node if 0 <= node < len(self.paths) else ROOT
            return previous

        self.enter, self.leave, self.suspend, self.resume = enter, leave, suspend, resume
        self.sweep_parked = sweep_parked
        self.current_node = current_node
        self.set_base_node = set_base_node

        def take_enclosed():
            return enclosures.take_enclosed(tls)

        def hold(table):
            return enclosures.hold(tls, getattr(tls, "stack", None), table)

        self.take_enclosed, self.hold, self.take_all_held = take_enclosed, hold, enclosures.take_all_held
        self._callbacks = {
            "PY_START": on_start,
            "PY_RETURN": on_return,
            "PY_UNWIND": on_unwind,
            "PY_YIELD": on_yield,
            "PY_RESUME": on_resume,
            "PY_THROW": on_throw,
        }

    def expect_enclosures(self) -> None:
        """Hold enclosed calls from the start (enclosure.py): library code that may frame
        requests (a web framework) is sensed, so the first request's are not background."""
        self._enclosures.active = True

    # ------------------------------------------------------------------------------ switch on/off
    def start(self) -> None:
        monitoring = sys.monitoring
        for tool_id in _TOOL_IDS:
            if monitoring.get_tool(tool_id) is None:
                monitoring.use_tool_id(tool_id, _TOOL_NAME)
                self._tool_id = tool_id
                break
        else:
            raise RuntimeError("no free sys.monitoring tool id (3 and 4 are taken)")
        events = 0
        for name, callback in self._callbacks.items():
            event = getattr(monitoring.events, name)
            monitoring.register_callback(self._tool_id, event, callback)
            events |= event
        self._switch_on(events)

    def _switch_on(self, events: int) -> None:
        # Every event globally: unsensed code is classified on its first event and disabled.
        sys.monitoring.set_events(self._tool_id, events)

    def stop(self) -> None:
        if self._tool_id is None:
            return
        monitoring = sys.monitoring
        monitoring.set_events(self._tool_id, 0)
        for name in self._callbacks:
            monitoring.register_callback(self._tool_id, getattr(monitoring.events, name), None)
        monitoring.free_tool_id(self._tool_id)
        self._tool_id = None


DISABLE = getattr(getattr(sys, "monitoring", None), "DISABLE", None)
