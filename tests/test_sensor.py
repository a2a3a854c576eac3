"""The sensor's semantics, checked on both implementations (pure Python and C) with the front end
funcsight uses on the running Python (``sys.monitoring`` on 3.12+, the import-time rewriter on
3.11): small modules are written to a scratch directory, imported while a sensor runs, exercised,
and the call tables are read back.

The C implementation is skipped when the extension is not built, unless ``FUNCSIGHT_REQUIRE_C=1``
(CI), where a missing extension fails every C test.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import importlib
import itertools
import json
import logging
import os
import random
import sys
import types
import threading
import time

import pytest

from funcsight.config import Config
from funcsight.instrumentation import calls, csensor, sensor as sensor_module
from funcsight.instrumentation._pysensor import COROUTINE, GENERATOR, PLAIN, PythonSensor
from funcsight.instrumentation.calls import enter_request, leave_request, line_of
from funcsight.instrumentation.registry import FUNCTION, FunctionInfo, FunctionRegistry
from funcsight.instrumentation.selection import CodeSelector
from funcsight.instrumentation.sensor import make_sensor
from helpers import outside_table

MS = 1_000_000
REQUIRE_C = os.environ.get("FUNCSIGHT_REQUIRE_C") == "1"
HAS_MONITORING = hasattr(sys, "monitoring")
_names = itertools.count()

SAMPLE = '''
import asyncio
import contextvars
import time


def leaf(x):
    return x + 1


def caller(n):
    total = 0
    for i in range(n):
        total += leaf(i)
    return total


def boom(kind="value"):
    if kind == "value":
        raise ValueError("boom")
    raise KeyError(kind)


def propagate():
    boom()


def catch():
    try:
        boom()
    except ValueError:
        return "caught"


def sleeper(seconds):
    time.sleep(seconds)


def outer_sleeps(seconds):
    sleeper(seconds)
    return 1


def recurse(n):
    return 0 if n == 0 else 1 + recurse(n - 1)


def gen(n, seconds=0.0):
    for i in range(n):
        if seconds:
            time.sleep(seconds)
        yield i


def consume(n, gen_seconds, consumer_seconds):
    for _ in gen(n, gen_seconds):
        time.sleep(consumer_seconds)


async def inner(seconds):
    await asyncio.sleep(seconds)
    return 1


async def awaiting(seconds):
    return await inner(seconds)


async def task(i):
    await asyncio.sleep(0)
    await inner(0)
    return leaf(i)


async def many(n):
    return await asyncio.gather(*(task(i) for i in range(n)))
'''


def _require(impl: str) -> None:
    if impl == "c" and not csensor.available():
        reason = f"C sensor not built: {csensor.UNAVAILABLE}"
        if REQUIRE_C:
            pytest.fail(f"FUNCSIGHT_REQUIRE_C=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(params=["python", "c"])
def impl(request) -> str:
    _require(request.param)
    return request.param


class Harness:
    """A sensor of one implementation, started, and a fresh copy of SAMPLE imported under it."""

    def __init__(self, impl: str, directory, slow_ms: float = 50.0, spans: int = 0):
        self.impl = impl
        self.name = f"fs_sample_{impl}_{next(_names)}"
        config = Config(include=("fs_sample_*",), implementation=impl, slow_call_ms=slow_ms, spans_per_trace=spans)
        self.registry = FunctionRegistry()
        self.selector = CodeSelector(config)
        self.sensor = make_sensor(config, self.registry, self.selector)
        self.sink = self.sensor.sink
        assert self.sink.slow_ns == int(slow_ms * MS)
        self.core = getattr(self.sensor, "core", self.sensor)  # the rewriter wraps the core on 3.11
        assert self.core.implementation == impl
        (directory / f"{self.name}.py").write_text(SAMPLE)
        importlib.invalidate_caches()
        self.sensor.start()
        self.running = True
        self.mod = importlib.import_module(self.name)

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.sensor.stop()
        sys.modules.pop(self.name, None)

    def fid(self, function: str) -> int:
        fid = self.registry.lookup(f"{self.name}.{function}")
        assert fid is not None, f"{function} was not registered"
        return fid

    def outside(self):
        """What was counted outside any request: the background table and the tables the
        threads held for enclosing calls (no rollup processor here to fold them)."""
        self._held = getattr(self, "_held", []) + self.sensor.take_all_held()
        return outside_table(self.sink.background, self._held)

    def stats(self, function: str, table=None) -> list:
        table = self.outside() if table is None else table
        return table.stats.get(self.fid(function), [0, 0, 0, 0, {}])

    def calls(self, function: str, table=None) -> int:
        return self.stats(function, table)[0]

    def errors(self, function: str, table=None) -> dict:
        table = self.outside() if table is None else table
        fid = self.fid(function)
        return {exc: n for (f, exc), n in table.errors.items() if f == fid}

    def depth(self) -> int:
        if self.impl == "c":
            return self.core.stack_depth()
        return len(getattr(self.core._tls, "stack", []))

    def parked(self) -> int:
        return self.core.parked if self.impl == "c" else len(self.core._parked)


@pytest.fixture
def make(impl, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    made: list[Harness] = []

    def factory(**kwargs) -> Harness:
        harness = Harness(impl, tmp_path, **kwargs)
        made.append(harness)
        return harness

    try:
        yield factory
    finally:
        for harness in made:
            harness.stop()


@pytest.fixture
def h(make) -> Harness:
    return make()


# --------------------------------------------------------------------------------- call tables
def test_c_call_table_has_the_python_format():
    _require("c")
    rng = random.Random(7)
    durations = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 1023, 1024, 1535, 1536, 10**9, 2**62, -1, -5]
    durations += [rng.randrange(0, 10**10) for _ in range(500)]
    py, c = calls.CallTable(3, 99, "root"), csensor.CallTable(3, 99, "root")
    for i, duration in enumerate(durations):
        fid = i % 7
        exc = (ValueError, KeyError, None)[i % 3]
        py.add_call(fid, duration, duration // 2, exc)
        c.add_call(fid, duration, duration // 2, exc)
    assert c.stats == py.stats
    assert c.errors == py.errors
    assert c.samples == py.samples == {}  # add_call() passes a type, never an exception
    assert list(c.stats) == list(py.stats)  # insertion order, like a dict
    for duration in durations:
        assert csensor._csensor.bucket_of(duration) == calls.bucket_of(duration)
    # attributes the rollup processor and the pipeline use
    assert (c.span_budget, c.trace_id, c.root, c.open, c.spans) == (3, 99, "root", True, [])
    c.open = False
    c.span_budget -= 1
    assert (c.open, c.span_budget) == (False, 2)
    fresh = csensor.CallTable()
    assert (fresh.span_budget, fresh.trace_id, fresh.root, fresh.stats, fresh.errors) == (0, 0, None, {}, {})
    with pytest.raises(ValueError):
        c.add_call(-1, 1, 1)


def test_the_sink_hands_out_tables_of_the_sensors_type(impl):
    core = sensor_module.make_core(impl, FunctionRegistry(), CodeSelector(Config(include=("nothing",))), slow_ns=123)
    sink = core.sink  # the sensor makes the sink it feeds, its table type chosen then
    table_type = csensor.CallTable if impl == "c" else calls.CallTable
    assert sink.table_type is table_type
    assert type(sink.background) is table_type
    assert type(sink.new_table(5, 1, None)) is table_type
    assert sink.slow_ns == 123
    before = sink.background
    old = sink.take_background()  # what closing a window does
    assert old is before and sink.background is not old and type(sink.background) is table_type
    sink.slow_ns = 7
    assert sink.slow_ns == 7
    assert core.internal_errors == 0


# ------------------------------------------------------------------------------ counts, errors
def test_the_c_stack_sampler_is_the_python_one():
    if csensor.CallTable is None:
        pytest.skip("the C extension is not built")
    from funcsight.instrumentation import _csensor

    def deep(n):
        if n == 0:
            {}["missing"]
        return deep(n - 1)

    for depth in (0, 3, 40):  # 40: past MAX_STACK_FRAMES, cut as the Python sampler cuts it
        try:
            deep(depth)
        except KeyError as exc:
            native, python = _csensor.stack_sample(exc), calls.stack_sample(exc)
        assert native == python and native[1] is None
        frames = native[0]
        assert len(frames) == calls.MAX_STACK_FRAMES  # pytest's own frames fill the rest
        if depth < 28:  # this frame, the depth + 1 calls of deep: all kept
            assert line_of(*frames[-1]) == deep.__code__.co_firstlineno + 2  # the raise
    no_traceback = ValueError("never raised")
    assert _csensor.stack_sample(no_traceback) == calls.stack_sample(no_traceback) == ((), None)


def test_calls_and_errors_are_exact(h):
    m = h.mod
    assert m.caller(50) == sum(range(1, 51))
    with pytest.raises(ValueError):
        m.propagate()
    assert m.catch() == "caught"
    with pytest.raises(KeyError):
        m.boom("key")
    h.stop()
    assert h.calls("leaf") == 50 and h.calls("caller") == 1
    assert h.stats("boom")[:2] == [3, 3]
    assert h.errors("boom") == {ValueError: 2, KeyError: 1}
    assert h.errors("propagate") == {ValueError: 1}
    assert h.errors("catch") == {}  # it caught the error
    samples = h.outside().samples  # the stack of the first exception per (function, type)
    frames, message = samples[(h.fid("boom"), ValueError)]
    assert message is None  # messages are opt-in
    assert all(isinstance(code, types.CodeType) and isinstance(offset, int) for code, offset in frames)
    lines = [(code.co_qualname, line_of(code, offset)) for code, offset in frames]
    assert lines[-1] == ("boom", m.boom.__code__.co_firstlineno + 2)  # the raise
    assert lines[-2] == ("propagate", m.propagate.__code__.co_firstlineno + 1)  # the first ValueError came through it
    assert lines[-3][0] == "test_calls_and_errors_are_exact"
    key_frames, _ = samples[(h.fid("boom"), KeyError)]
    assert (key_frames[-1][0].co_qualname, line_of(*key_frames[-1])) == ("boom", m.boom.__code__.co_firstlineno + 3)
    propagate_frames, _ = samples[(h.fid("propagate"), ValueError)]
    assert [code.co_qualname for code, _ in propagate_frames[-2:]] == ["propagate", "boom"]
    assert h.calls("catch") == 1 and h.stats("catch")[1] == 0
    leaf = h.stats("leaf")
    assert sum(leaf[4].values()) == 50
    assert 0 <= leaf[3] <= leaf[2]
    assert h.depth() == 0
    assert h.core.internal_errors == 0


EARLY = """
def early(x):
    return x + 1


def make_closure(k):
    def closure(x):
        return x * k
    return closure
"""


@pytest.mark.skipif(not hasattr(sys, "monitoring"), reason="3.11 rewrites modules imported after the start")
def test_functions_made_before_and_after_the_start_are_sensed(impl, tmp_path, monkeypatch):
    """On 3.12+ the C sensor switches events on per sensed code object: for functions that exist
    when it starts (a walk of the heap) and for every function created later (a function watcher),
    including closures made at run time and code made by exec()."""
    _require(impl)
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"fs_sample_early_{impl}_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(EARLY)
    importlib.invalidate_caches()
    module = importlib.import_module(name)  # imported before any sensor runs
    config = Config(include=("fs_sample_*",), implementation=impl)
    registry = FunctionRegistry()
    sensor = make_sensor(config, registry, CodeSelector(config))
    sink = sensor.sink
    sensor.start()
    try:
        namespace = {"__name__": name}
        exec("def made_by_exec(x):\n    return -x\n", namespace)
        for i in range(3):
            module.early(i)
            module.make_closure(i)(i)
            namespace["made_by_exec"](i)
    finally:
        sensor.stop()
        sys.modules.pop(name, None)
    outside = outside_table(sink.background, sensor.take_all_held())
    for function, expected in (("early", 3), ("make_closure", 3), ("make_closure.<locals>.closure", 3), ("made_by_exec", 3)):
        fid = registry.lookup(f"{name}.{function}")
        assert fid is not None, function
        assert outside.stats[fid][0] == expected, function


@pytest.mark.skipif(not hasattr(sys, "monitoring"), reason="sys.monitoring is 3.12+")
@pytest.mark.parametrize("impl", ["c"])  # the Python sensor switches its events on globally
def test_the_c_sensor_gives_events_to_sensed_code_only_and_takes_them_back(make, impl):
    _require(impl)
    h = make()
    monitoring = sys.monitoring
    events = monitoring.events
    tool = h.core._tool_id
    local = events.PY_START | events.PY_RETURN | events.PY_YIELD | events.PY_RESUME
    assert monitoring.get_events(tool) == events.PY_UNWIND | events.PY_THROW
    assert h.mod.leaf(1) is not None
    assert monitoring.get_local_events(tool, h.mod.leaf.__code__) == local
    assert monitoring.get_local_events(tool, json.JSONEncoder.encode.__code__) == 0
    assert h.calls("leaf") == 1
    h.stop()
    assert monitoring.get_local_events(tool, h.mod.leaf.__code__) == 0
    assert monitoring.get_tool(tool) is None


def test_exceptions_through_unsensed_code_are_untouched(h):
    def unsensed(i):  # this test module is not sensed: PY_UNWIND here must stay harmless
        raise LookupError(i)

    for i in range(200):
        with pytest.raises(LookupError):
            unsensed(i)
        with pytest.raises(ValueError):
            h.mod.boom()
    h.stop()
    assert h.errors("boom") == {ValueError: 200}


def test_self_time_excludes_sensed_callees(h):
    h.mod.outer_sleeps(0.03)
    h.stop()
    outer, sleeper = h.stats("outer_sleeps"), h.stats("sleeper")
    assert sleeper[2] >= 30 * MS and sleeper[3] >= 30 * MS
    assert outer[2] >= sleeper[2]
    assert outer[3] < 20 * MS  # its callee's 30 ms are not its own
    assert outer[3] + sleeper[2] <= outer[2] + 1


def test_deep_recursion(h):
    depth = sys.getrecursionlimit() - 100
    assert h.mod.recurse(depth) == depth
    h.stop()
    stats = h.stats("recurse")
    assert stats[0] == depth + 1
    assert 0 < stats[3] <= stats[2]
    assert h.depth() == 0


def test_threads_count_exactly(h):
    barrier = threading.Barrier(8)

    def work():
        barrier.wait()
        for _ in range(20):
            h.mod.caller(50)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    h.stop()
    assert h.calls("caller") == 8 * 20
    assert h.calls("leaf") == 8 * 20 * 50
    assert h.core.internal_errors == 0


# ------------------------------------------------------------------- generators and coroutines
def test_a_generator_is_one_call_credited_with_its_active_time(h):
    # two active segments of 40 ms; the consumer sleeps 20 ms after each item. The bounds leave
    # room for a loaded machine and still tell "own time" from "own time plus the other's".
    h.mod.consume(2, 0.04, 0.02)
    h.stop()
    gen, consume = h.stats("gen"), h.stats("consume")
    assert gen[0] == 1 and consume[0] == 1
    assert gen[2] >= 2 * 40 * MS + 2 * 20 * MS  # first entry to final exit
    assert 2 * 40 * MS <= gen[3] < 2 * 40 * MS + 30 * MS  # only its active segments
    assert 2 * 20 * MS <= consume[3] < 2 * 20 * MS + 45 * MS  # the generator's segments are not its own
    assert h.depth() == 0 and h.parked() == 0


def test_generators_closed_or_dropped_early_are_finished(h):
    g = h.mod.gen(5)
    assert next(g) == 0
    g.close()
    del g
    g2 = h.mod.gen(5)
    next(g2)
    del g2
    gc.collect()
    h.core.sweep_parked()  # 3.13 sends no event for these: the sweep finishes them
    h.stop()
    assert h.stats("gen")[:2] == [2, 0]  # GeneratorExit is a close, not an error
    assert h.errors("gen") == {}
    assert h.depth() == 0 and h.parked() == 0


def test_a_suspended_generator_survives_the_sweep(h):
    g = h.mod.gen(3)
    next(g)
    h.core.sweep_parked()  # the export thread does this every interval
    assert h.calls("gen") == 0  # still running
    time.sleep(0.02)
    assert list(g) == [1, 2]
    h.stop()
    assert h.calls("gen") == 1
    assert h.stats("gen")[2] >= 20 * MS  # from first entry to final exit
    assert h.depth() == 0 and h.parked() == 0


def test_exhausted_generators_balance_the_stack(h):
    for _ in range(100):
        assert list(h.mod.gen(3)) == [0, 1, 2]
    h.stop()
    assert h.calls("gen") == 100
    assert h.depth() == 0 and h.parked() == 0


def test_an_awaited_coroutine_is_credited_to_its_awaiter(h):
    assert asyncio.run(h.mod.awaiting(0.03)) == 1
    h.stop()
    awaiting, inner = h.stats("awaiting"), h.stats("inner")
    assert awaiting[0] == 1 and inner[0] == 1
    assert inner[2] >= 30 * MS and inner[3] >= 30 * MS
    assert awaiting[3] < 20 * MS  # it waited for inner
    assert h.depth() == 0 and h.parked() == 0


def test_thousands_of_tasks_count_exactly(h):
    assert asyncio.run(h.mod.many(2000)) == list(range(1, 2001))
    h.stop()
    assert h.calls("task") == 2000
    assert h.calls("inner") == 2000
    assert h.calls("leaf") == 2000
    assert h.calls("many") == 1
    assert h.depth() == 0 and h.parked() == 0
    assert h.core.internal_errors == 0


def test_cancelled_tasks_are_finished_without_errors(h):
    async def main():
        task = asyncio.ensure_future(h.mod.inner(10))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    h.core.sweep_parked()
    h.stop()
    assert h.calls("inner") == 1
    assert h.errors("inner") == {asyncio.CancelledError: 1}
    assert h.depth() == 0 and h.parked() == 0


# ------------------------------------------------------------------------- requests and spans
def test_calls_go_to_the_open_request_table_else_background(make):
    h = make(slow_ms=10, spans=2)
    table = h.sink.new_table(2, 42, "root")
    token = enter_request(table)
    try:
        h.mod.caller(3)
        h.mod.sleeper(0.015)  # slow: kept as a span
        h.mod.catch()  # boom raised: kept as a span (budget 2 is now spent)
        h.mod.sleeper(0.015)  # slow, but no budget left
    finally:
        leave_request(token)
    h.mod.caller(1)  # outside the request
    closed = h.sink.new_table(5, 43, "root2")
    closed.open = False
    token = enter_request(closed)
    try:
        h.mod.leaf(1)  # a closed table: background
    finally:
        leave_request(token)
    h.stop()
    assert h.calls("leaf", table) == 3 and h.calls("caller", table) == 1
    assert h.calls("sleeper", table) == 2 and h.calls("catch", table) == 1
    assert h.calls("leaf") == 2 and h.calls("caller") == 1 and h.calls("sleeper") == 0
    assert closed.stats == {}
    spans = table.spans
    assert table.span_budget == 0 and len(spans) == 2
    (fid1, start1, end1, exc1), (fid2, start2, end2, exc2) = spans
    assert (fid1, exc1) == (h.fid("sleeper"), None) and end1 - start1 >= 15 * MS
    assert (fid2, exc2) == (h.fid("boom"), ValueError) and end2 >= start2
    # span timestamps are on time.perf_counter_ns()'s clock
    assert abs(end2 - time.perf_counter_ns()) < 5_000 * MS

def test_the_request_follows_context_switches_and_sets_between_calls(make):
    """The C sensor keeps a per-thread copy of the request variable; every way the value can change
    between two calls on one thread must reach the right table: entering and leaving other
    contexts (as asyncio task steps do), a set in the same context, a table created in a context
    that had none, and a thread that ran a request before."""
    h = make()
    first, second, third = h.sink.new_table(), h.sink.new_table(), h.sink.new_table()
    other = contextvars.copy_context()
    other.run(enter_request, second)  # `other` holds `second`; this context still holds nothing
    for _ in range(3):
        h.mod.leaf(1)  # background
        other.run(h.mod.leaf, 2)  # second
        h.mod.leaf(4)  # background again: back in this context
    token = enter_request(first)
    try:
        h.mod.leaf(8)  # first
        other.run(h.mod.leaf, 16)  # second
        h.mod.leaf(32)  # first
        inner = enter_request(third)  # a set in the same context, no switch
        h.mod.leaf(64)  # third
        leave_request(inner)
        h.mod.leaf(128)  # first
    finally:
        leave_request(token)
    done = threading.Thread(target=lambda: (enter_request(first), h.mod.leaf(256)))
    done.start()
    done.join()
    h.mod.leaf(512)  # background
    h.stop()

    def units(table=None) -> int:
        return h.calls("leaf", table)

    assert units() == 3 * 2 + 1  # leaf(1), leaf(4) three times, leaf(512)
    assert units(second) == 3 + 1  # leaf(2) three times, leaf(16)
    assert units(first) == 4  # leaf(8), leaf(32), leaf(128), and the thread's leaf(256)
    assert units(third) == 1  # leaf(64)
    assert units() + units(first) + units(second) + units(third) == 16  # every call, once



def test_a_generator_dropped_while_parked_goes_to_the_table_it_was_parked_in(h):
    if not HAS_MONITORING:
        pytest.skip("parking by frame is the sys.monitoring front end's (3.11 finishes at close)")
    table = h.sink.new_table()
    token = enter_request(table)
    try:
        g = h.mod.gen(5)
        next(g)
    finally:
        leave_request(token)
    assert h.parked() == 1
    frame = g.gi_frame
    del g  # 3.12 finishes it at close; 3.13 leaves it parked until the sweep
    gc.collect()
    del frame
    h.core.sweep_parked()
    h.stop()
    # 3.12 reports the close (PY_THROW + PY_UNWIND): the call ends where it is closed, outside any
    # request; 3.13 reports nothing and the sweep files it where it was parked.
    if sys.version_info >= (3, 13):
        assert h.calls("gen", table) == 1 and h.calls("gen") == 0
    else:
        assert h.calls("gen", table) == 0 and h.calls("gen") == 1
    assert h.parked() == 0


# ------------------------------------------------------------------------ robustness, threads
def test_a_failing_classifier_never_reaches_the_application(h, monkeypatch):
    if not HAS_MONITORING:
        pytest.skip("3.11 classifies at import time, in the rewriter")

    def broken(*args):
        raise RuntimeError("selector bug")

    monkeypatch.setattr(h.selector, "module_is_sensed", broken)
    namespace = {"__name__": h.name + "_exec"}
    exec(compile(SAMPLE, f"{h.name}_exec.py", "exec"), namespace)
    assert namespace["caller"](5) == 15
    with pytest.raises(ValueError):
        namespace["boom"]()
    h.stop()
    assert h.core.internal_errors > 0


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # other tests' threads may be alive
def test_fork_children_keep_counting(h):
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    h.mod.caller(2)
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            h.mod.caller(3)
            code = 0 if h.calls("leaf") == 5 and h.depth() == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    h.stop()
    assert os.WEXITSTATUS(status) == 0
    assert h.calls("leaf") == 2


def test_the_c_clock_is_perf_counter_ns():
    _require("c")
    c = csensor._csensor
    for clock in ("monotonic", c.clock()):
        previous = c.use_clock(clock)
        try:
            best = None
            for _ in range(200):
                before = time.perf_counter_ns()
                now = c.now_ns()
                after = time.perf_counter_ns()
                if best is None or after - before < best[0]:
                    best = (after - before, now - (before + after) // 2)
            assert abs(best[1]) < 50_000, f"{clock}: {best[1]} ns off perf_counter_ns"
        finally:
            c.use_clock(previous)


def test_sensing_on_the_monotonic_clock(impl, make):
    if impl != "c":
        pytest.skip("the C sensor's clock")
    c = csensor._csensor
    previous = c.use_clock("monotonic")
    try:
        h = make()
        h.mod.outer_sleeps(0.02)
        h.stop()
        assert h.stats("sleeper")[2] >= 20 * MS
        assert h.stats("outer_sleeps")[3] < 15 * MS
    finally:
        c.use_clock(previous)


# -------------------------------------------------------------- the 3.11 hooks, called directly
def test_enter_leave_suspend_resume(impl):
    registry = FunctionRegistry()
    core = sensor_module.make_core(impl, registry, CodeSelector(Config(include=("nothing",))))
    sink = core.sink
    plain = core.adopt_info(FunctionInfo("x.plain", FUNCTION), PLAIN)
    generator = core.adopt_info(FunctionInfo("x.generator", FUNCTION, is_generator=True), GENERATOR)
    coroutine = core.adopt_info(FunctionInfo("x.coroutine", FUNCTION, is_generator=True), COROUTINE)
    assert core.kinds[generator] == GENERATOR

    outer = core.enter(plain)
    inner = core.enter(plain)
    time.sleep(0.01)
    core.leave(inner)
    core.leave(outer, ValueError("x"))

    g = core.enter(generator)
    time.sleep(0.01)
    core.suspend(g)
    time.sleep(0.02)  # the consumer runs
    assert core.resume(g, "sent") == "sent"
    time.sleep(0.01)
    core.leave(g, GeneratorExit())  # closed: not an error

    co = core.enter(coroutine)
    core.suspend(co)
    time.sleep(0.01)
    core.resume(co)
    core.leave(co)

    # a leave() whose inner leave() was skipped drops the inner frame with it (never counted)
    a = core.enter(plain)
    core.enter(plain)
    core.leave(a)

    outside = outside_table(sink.background, core.take_all_held())  # plain's nested calls were held
    stats = outside.stats
    assert stats[plain][:2] == [3, 1]
    assert outside.errors == {(plain, ValueError): 1}
    gen_stats = stats[generator]
    assert gen_stats[:2] == [1, 0]
    assert gen_stats[2] >= 40 * MS and 20 * MS <= gen_stats[3] < 38 * MS  # not the consumer's 20 ms
    co_stats = stats[coroutine]
    assert co_stats[0] == 1 and co_stats[3] >= 10 * MS  # a coroutine's whole duration is its own
    assert core.internal_errors == 0


# ------------------------------------------------------------------- which implementation runs
@pytest.mark.parametrize("choice", ["python", "c", "auto"])
def test_make_sensor_honours_funcsight_implementation(choice, monkeypatch):
    monkeypatch.setattr(sensor_module, "_fallback_reported", False)
    config = Config.from_env({"FUNCSIGHT_IMPLEMENTATION": choice})
    assert config.implementation == choice
    made = make_sensor(config, FunctionRegistry(), CodeSelector(config))
    expected = "python" if choice == "python" or not csensor.available() else "c"
    assert getattr(made, "core", made).implementation == expected
    assert made.implementation == (expected if HAS_MONITORING else f"{expected}-rewrite")
    if REQUIRE_C and choice != "python":
        assert expected == "c"


@pytest.mark.parametrize("choice, level", [("c", logging.WARNING), ("auto", logging.INFO)])
def test_without_the_extension_python_is_used_and_said_once(choice, level, monkeypatch, caplog):
    monkeypatch.setattr(csensor, "_csensor", None)
    monkeypatch.setattr(csensor, "UNAVAILABLE", "the C extension is not built (test)")
    monkeypatch.setattr(sensor_module, "_fallback_reported", False)
    config = Config(implementation=choice)
    with caplog.at_level(logging.INFO, logger="funcsight"):
        for _ in range(3):
            made = make_sensor(config, FunctionRegistry(), CodeSelector(config))
            assert getattr(made, "core", made).implementation == "python"
    records = [r for r in caplog.records if r.name == "funcsight"]
    assert len(records) == 1
    assert records[0].levelno == level and "not built (test)" in records[0].getMessage()


def test_python_is_used_when_asked_without_a_word(monkeypatch, caplog):
    monkeypatch.setattr(sensor_module, "_fallback_reported", False)
    config = Config(implementation="python")
    with caplog.at_level(logging.INFO, logger="funcsight"):
        made = make_sensor(config, FunctionRegistry(), CodeSelector(config))
    assert isinstance(getattr(made, "core", made), PythonSensor)
    assert not [r for r in caplog.records if r.name == "funcsight"]


def test_the_c_extension_is_built_when_required():
    from funcsight.processors import rollup

    if not REQUIRE_C:
        pytest.skip("FUNCSIGHT_REQUIRE_C is not set")
    assert csensor.available(), csensor.UNAVAILABLE
    assert rollup._crollup is not None  # the rollup processor's C path, the second extension
    assert rollup.SDK_FIELDS_READABLE  # else that path stays off: this SDK keeps span fields elsewhere
