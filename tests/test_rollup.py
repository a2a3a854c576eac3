"""The rollup processor and export pipeline with a real SDK TracerProvider and the real sensor core
(driven through its enter/leave hooks, as rewritten code drives it)."""

from __future__ import annotations

import threading
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from funcsight.config import Config
from funcsight.exporters.pipeline import ExportPipeline
from funcsight.exporters.spans import FunctionSpanEmitter
from funcsight.instrumentation._pysensor import PLAIN, PythonSensor
from funcsight.histogram import bucket_of
from funcsight.instrumentation.registry import FUNCTION, FunctionInfo, FunctionRegistry
from funcsight.instrumentation.selection import CodeSelector
from funcsight.names import BACKGROUND_ROUTE, UNMATCHED_ROUTE
from funcsight.processors.rollup import RollupSpanProcessor
from funcsight.processors.windows import WindowAggregator, make_windows


def _implementations():
    from funcsight.instrumentation import csensor
    from funcsight.processors import rollup

    params = [pytest.param("python", id="python")]
    if csensor.available() and rollup._crollup is not None and rollup.SDK_FIELDS_READABLE:
        params.append(pytest.param("c", id="c"))
    return params


@pytest.fixture(autouse=True, params=_implementations())
def implementation(request, monkeypatch):
    """Every test runs with the C sensor core, C rollup processor and C window aggregator, and with
    their Python twins."""
    monkeypatch.setattr(World, "implementation", request.param)
    return request.param


class World:
    implementation = "python"

    def __init__(self, spans_per_trace=5, slow_ms=1.0):
        from funcsight.instrumentation.csensor import CSensor

        self.registry = FunctionRegistry()
        sensor_type = CSensor if self.implementation == "c" else PythonSensor
        self.sensor = sensor_type(self.registry, CodeSelector(Config()), int(slow_ms * 1e6))
        self.sink = self.sensor.sink
        self.windows = make_windows(max_series=100, max_routes=10, implementation=self.implementation)
        assert (type(self.windows) is WindowAggregator) == (self.implementation == "python")
        self.processor = RollupSpanProcessor(self.windows, self.registry, self.sensor, spans_per_trace, self.implementation)
        assert self.processor.implementation == self.implementation
        self.exported = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(self.processor)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exported))
        self.tracer = self.provider.get_tracer("test")
        self.windows_seen = []
        self.spans = FunctionSpanEmitter(self.provider.get_tracer("funcsight"), self.registry)
        self.pipeline = ExportPipeline(3600, self.processor.drain, [self.windows_seen.append, self.spans.consume])

    def fid(self, name):
        return self.sensor.adopt_info(FunctionInfo(name=name, kind=FUNCTION, file="app.py", line=1), PLAIN)

    def call(self, fid, seconds=0.0, exc=None):
        token = self.sensor.enter(fid)
        if seconds:
            time.sleep(seconds)
        self.sensor.leave(token, exc)

    def window(self):
        self.pipeline.flush()
        return self.windows_seen[-1]


def run_threads(serve, routes) -> None:
    """``serve(route)`` on a thread of its own per route, all joined."""
    threads = [threading.Thread(target=serve, args=(route,)) for route in routes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_calls_are_attributed_to_the_route_set_late_on_the_root_span():
    world = World()
    handler, helper = world.fid("app.handler"), world.fid("app.helper")
    for _ in range(3):
        with world.tracer.start_as_current_span("GET", kind=SpanKind.SERVER) as root:
            token = world.sensor.enter(handler)
            world.call(helper)
            world.call(helper)
            world.sensor.leave(token)
            root.set_attribute("http.route", "/items/<id>")  # frameworks know the route late
    world.call(helper)  # outside any request
    window = world.window()
    assert window.functions[(handler, "/items/<id>")][0] == 3
    assert window.functions[(helper, "/items/<id>")][0] == 6
    assert window.functions[(helper, BACKGROUND_ROUTE)][0] == 1
    assert window.routes["/items/<id>"][0] == 3


def test_nested_server_span_does_not_open_a_second_request_and_no_route_is_unmatched():
    world = World()
    fid = world.fid("app.f")
    with world.tracer.start_as_current_span("outer", kind=SpanKind.SERVER):
        with world.tracer.start_as_current_span("inner", kind=SpanKind.SERVER):
            world.call(fid)
    window = world.window()
    assert window.routes == {UNMATCHED_ROUTE: [1, 0, window.routes[UNMATCHED_ROUTE][2], window.routes[UNMATCHED_ROUTE][3]]}
    assert window.functions[(fid, UNMATCHED_ROUTE)][0] == 1


def test_client_spans_inside_a_request_are_rolled_up_beside_functions():
    world = World()
    with world.tracer.start_as_current_span("GET /a", kind=SpanKind.SERVER, attributes={"http.route": "/a"}):
        for _ in range(4):
            with world.tracer.start_as_current_span("SELECT shop", kind=SpanKind.CLIENT):
                pass
        with world.tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as failing:
            failing.set_status(StatusCode.ERROR)
    window = world.window()
    select = world.registry.lookup("SELECT shop", "span")
    get = world.registry.lookup("GET", "span")
    assert window.functions[(select, "/a")][0] == 4
    assert window.functions[(get, "/a")][:2] == [1, 1]


def test_slow_and_failing_calls_become_function_spans_children_of_the_root():
    world = World(spans_per_trace=2, slow_ms=5)
    fast, slow, bad = world.fid("app.fast"), world.fid("app.slow"), world.fid("app.bad")
    with world.tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER, attributes={"http.route": "/x"}) as root:
        world.call(fast)
        world.call(slow, seconds=0.01)
        world.call(bad, exc=KeyError("k"))
        world.call(slow, seconds=0.01)  # over the per-trace cap of 2
    world.window()
    function_spans = [s for s in world.exported.get_finished_spans() if s.instrumentation_scope.name == "funcsight"]
    assert [s.name for s in function_spans] == ["app.slow", "app.bad"]
    for span in function_spans:
        assert span.parent.span_id == root.get_span_context().span_id
        assert span.context.trace_id == root.get_span_context().trace_id
        assert span.attributes["code.function.name"] == span.name
    assert function_spans[0].end_time - function_spans[0].start_time >= 10_000_000
    assert function_spans[1].attributes["exception.type"] == "KeyError"
    assert function_spans[1].status.status_code is StatusCode.ERROR


def test_unsampled_traces_emit_no_function_spans():
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    world = World(slow_ms=0)
    world.provider = TracerProvider(sampler=ALWAYS_OFF)
    world.provider.add_span_processor(world.processor)
    tracer = world.provider.get_tracer("test")
    fid = world.fid("app.f")
    with tracer.start_as_current_span("GET", kind=SpanKind.SERVER, attributes={"http.route": "/u"}):
        world.call(fid, exc=ValueError())
    assert world.processor.pending_spans == type(world.processor.pending_spans)()


def test_threads_with_concurrent_requests_never_mix_routes():
    world = World()
    fids = {route: world.fid(f"app.handler_{i}") for i, route in enumerate(["/a", "/b", "/c", "/d"])}
    barrier = threading.Barrier(4)

    def serve(route):
        barrier.wait()
        for _ in range(200):
            with world.tracer.start_as_current_span("req", kind=SpanKind.SERVER) as span:
                world.call(fids[route])
                span.set_attribute("http.route", route)

    run_threads(serve, fids)
    window = world.window()
    for route, fid in fids.items():
        assert window.functions[(fid, route)][0] == 200
        for other in fids:
            if other != route:
                assert (fid, other) not in window.functions


def test_series_and_route_caps_count_the_overflow():
    world = World()
    world.windows.max_series = 3
    world.windows.max_routes = 2
    fids = [world.fid(f"app.f{i}") for i in range(5)]
    for route in ("/1", "/2", "/3"):
        with world.tracer.start_as_current_span("r", kind=SpanKind.SERVER, attributes={"http.route": route}):
            for fid in fids:
                world.call(fid)
    window = world.window()
    assert len(window.routes) == 3  # two routes and "(overflow)"
    assert window.overflow_routes == 1
    assert window.overflow_series > 0
    assert sum(stats[0] for stats in window.functions.values()) == 15  # no call lost


def test_spans_the_processor_cannot_read_are_left_alone_and_counted_never_raised():
    from opentelemetry.sdk.trace import ReadableSpan

    world = World()
    fid = world.fid("app.f")
    odd = [object(), None, ReadableSpan("no context"), ReadableSpan("short context", context=(1,))]
    for span in odd:
        world.processor.on_start(span)
        world.processor.on_end(span)
    # on_start fails for the two non-spans; on_end for all four (the ReadableSpans are INTERNAL:
    # on_start decides from the kind alone).
    assert world.processor.failures == 6
    with world.tracer.start_as_current_span("GET", kind=SpanKind.SERVER, attributes={"http.route": "/ok"}):
        world.call(fid)
    window = world.window()
    assert window.routes["/ok"][0] == 1
    assert window.functions[(fid, "/ok")][0] == 1
    assert world.processor.failures == 6


@pytest.mark.parametrize("shutdowns", [1, 3])
def test_pipeline_shutdown_flushes_once(shutdowns):
    world = World()
    fid = world.fid("app.f")
    world.call(fid)
    for _ in range(shutdowns):
        world.pipeline.shutdown()
    assert sum(w.functions.get((fid, BACKGROUND_ROUTE), [0])[0] for w in world.windows_seen) == 1


def _table_types():
    from funcsight.instrumentation import calls, csensor

    types = [pytest.param(calls.CallTable, id="python")]
    if csensor.available():
        types.append(pytest.param(csensor.CallTable, id="c"))
    return types


@pytest.mark.parametrize("table_type", _table_types())
def test_absorb_folds_a_request_into_a_window_table_within_its_room(table_type):
    """What a window does with each finished request: both table types fold alike, create at most
    ``room`` new entries, and send the calls of further new functions to the overflow table."""
    window_table, overflow = table_type(), table_type()
    first = table_type()
    for fid, duration in ((1, 100), (1, 300), (2, 5_000), (3, 7)):
        first.add_call(fid, duration, duration // 2)
    assert first.series == 3 and not first.has_errors
    assert window_table.absorb(first, 2, overflow) == (3, 1)  # fids 1, 2 fit; 3 overflows (created there)
    second = table_type()
    for fid, duration in ((1, 100), (3, 9), (4, 1 << 20)):
        second.add_call(fid, duration, duration, ValueError if fid == 4 else None)
    assert second.has_errors
    assert window_table.absorb(second, 0, overflow) == (1, 2)  # 3 and 4 overflow; only 4 is new there
    stats, spilled = window_table.stats, overflow.stats
    assert sorted(stats) == [1, 2] and sorted(spilled) == [3, 4]
    assert stats[1][:4] == [3, 0, 500, 300] and stats[1][4] == {bucket_of(100): 2, bucket_of(300): 1}
    assert stats[2][:4] == [1, 0, 5_000, 2_500]
    assert spilled[3][:4] == [2, 0, 16, 12] and sum(spilled[3][4].values()) == 2
    assert spilled[4][:2] == [1, 1] and spilled[4][4] == {bucket_of(1 << 20): 1}
    with pytest.raises(ValueError):
        window_table.absorb(window_table, 1, overflow)


def _window_aggregators():
    from funcsight.processors import windows

    params = [pytest.param("python", id="py-window")]
    if windows.c_windows_available():
        params.append(pytest.param("c", id="c-window"))
    return params


@pytest.mark.parametrize("table_type", _table_types())
@pytest.mark.parametrize("window_impl", _window_aggregators())
def test_window_aggregator_twins_fold_drain_and_cap_alike(window_impl, table_type):
    """The window aggregator's twins (windows.py and _crollup.c): same methods, same results."""
    windows = make_windows(max_series=3, max_routes=2, implementation=window_impl)
    assert (type(windows) is WindowAggregator) == (window_impl == "python")
    for route in ("/a", "/b", "/c"):  # "/c" is past the route cap: counted under "(overflow)"
        table = table_type()
        for fid in (1, 2):
            table.add_call(fid, 1_000, 400, KeyError if route == "/a" and fid == 2 else None)
        windows.add_request(route, table, 5_000, route == "/b")
    # Entries made in both tables: /a's 1 and 2, /b's 1 (the cap is reached), then /b's 2 and the
    # overflow route's 1 in the overflow table.
    assert windows.open_series == 5
    background = table_type()
    windows.add_background(table_type())  # empty: nothing
    background.add_call(7, 10, 10)
    windows.add_background(background)
    counts = windows.open_counts()
    assert counts == {"routes": 3, "series": windows.open_series, "requests": 3, "overflow_routes": 1,
                      "overflow_series": counts["overflow_series"], "overflow_paths": 0}
    window = windows.drain()
    assert window.routes["/a"][:3] == [1, 0, 5_000] and window.routes["/b"][:2] == [1, 1]
    assert window.routes["(overflow)"][0] == 1 and window.overflow_routes == 1
    assert window.overflow_series == counts["overflow_series"] > 0
    assert sum(stats[0] for stats in window.functions.values()) == 7  # no call lost
    assert window.errors == {(2, "/a", "KeyError"): 1}
    assert window.samples == {}  # add_call keeps no stack
    assert window.functions[(7, "(overflow)")][0] == 1  # background calls, past the series cap too
    assert window.start <= window.end
    empty = windows.drain()
    assert empty.is_empty() and empty.start == window.end
    windows.add_request("/a", table_type(), 1, False)
    windows.reset()
    assert windows.drain().is_empty() and windows.open_series == 0


def test_the_c_processor_folds_into_the_python_window_through_its_public_method():
    from funcsight.processors import rollup

    if rollup._crollup is None or not rollup.SDK_FIELDS_READABLE:
        pytest.skip("the C rollup processor is not built")
    world = World()
    world.windows = WindowAggregator(max_series=100, max_routes=10)
    world.processor = RollupSpanProcessor(world.windows, world.registry, world.sensor, 5, "c")
    provider = TracerProvider()
    provider.add_span_processor(world.processor)
    world.pipeline = ExportPipeline(3600, world.processor.drain, [world.windows_seen.append])
    fid = world.fid("app.f")
    with provider.get_tracer("test").start_as_current_span("GET", kind=SpanKind.SERVER, attributes={"http.route": "/p"}):
        world.call(fid)
    window = world.window()
    assert window.routes["/p"][0] == 1 and window.functions[(fid, "/p")][0] == 1


def test_a_window_carries_its_slow_calls_and_funcsights_own_counters():
    world = World(spans_per_trace=1, slow_ms=0)
    fid = world.fid("app.f")
    with world.tracer.start_as_current_span("GET", kind=SpanKind.SERVER, attributes={"http.route": "/s"}) as root:
        world.call(fid)
        world.call(fid)  # over the per-trace cap of 1
    world.processor.on_end(object())  # a span it cannot read: counted, never raised
    world.registry.max_functions = len(world.registry)
    world.fid("app.one_too_many")  # past FUNCSIGHT_MAX_FUNCTIONS
    window = world.window()
    [(context, calls)] = window.slow_calls
    assert context.span_id == root.get_span_context().span_id
    [(called, start, end, exc_type, span_id)] = calls
    assert called == fid and start <= end and exc_type is None and 0 < span_id < 1 << 64
    assert window.clock_offset_ns > 0
    counters = window.counters
    assert (counters.processor_failures, counters.registry_dropped, counters.sensor_errors) == (1, 1, 0)
    [emitted] = [s for s in world.exported.get_finished_spans() if s.instrumentation_scope.name == "funcsight"]
    assert emitted.context.span_id == span_id  # the store's row and the backend's span agree
    again = world.window()  # counters are per window
    assert (again.counters.processor_failures, again.counters.registry_dropped, again.slow_calls) == (0, 0, [])


def test_a_request_failed_when_its_status_is_5xx_or_it_raised_without_one():
    """HTTP semantic conventions: a 4xx (Django marks a 404's span ERROR) did not fail; a 5xx did;
    a task (no HTTP status) failed when its span is ERROR."""
    from opentelemetry.trace import Status

    world = World()
    cases = [  # (route, status code or None, span status ERROR, failed)
        ("/missing", 404, True, False),
        ("/teapot", 418, False, False),
        ("/broken", 503, False, True),
        ("/crashed", 500, True, True),
        ("task.send_mail", None, True, True),
        ("task.ok", None, False, False),
    ]
    for route, code, error, _failed in cases:
        kind = SpanKind.SERVER if code is not None else SpanKind.CONSUMER
        with world.tracer.start_as_current_span(route, kind=kind) as root:
            if code is not None:
                root.set_attribute("http.route", route)
                root.set_attribute("http.response.status_code", code)
            if error:
                root.set_status(Status(StatusCode.ERROR))
    window = world.window()
    assert {route: window.routes[route][1] for route, *_ in cases} == {route: int(failed) for route, *_, failed in cases}


# ------------------------------------------------------------------------------------ enclosures
def _serve_enclosed(world, fids, route="/x"):
    """A framework's request on one thread: its __call__ encloses the span (URL matching before it,
    teardown after it), as Flask's and werkzeug's code does around the instrumentation's span."""
    outer = world.sensor.enter(fids["call"])
    world.call(fids["match"])
    with world.tracer.start_as_current_span("GET", kind=SpanKind.SERVER, attributes={"http.route": route}):
        world.call(fids["view"])
    world.call(fids["teardown"])
    world.sensor.leave(outer)


def test_calls_that_enclose_a_request_on_its_thread_belong_to_it():
    world = World()
    world.sensor.expect_enclosures()  # make_sensor does so when library packages are sensed
    fids = {name: world.fid(f"fw.{name}") for name in ("call", "match", "view", "teardown", "idle")}
    for _ in range(3):
        _serve_enclosed(world, fids)
        outer = world.sensor.enter(fids["idle"])  # enclosing calls that meet no request: background
        world.call(fids["match"])
        world.sensor.leave(outer)
    window = world.window()
    assert window.routes["/x"][0] == 3
    for name in ("call", "match", "view", "teardown"):
        assert window.functions[(fids[name], "/x")][0] == 3, name
    assert window.functions[(fids["idle"], BACKGROUND_ROUTE)][0] == 3
    assert window.functions[(fids["match"], BACKGROUND_ROUTE)][0] == 3
    assert (fids["call"], BACKGROUND_ROUTE) not in window.functions
    assert (fids["teardown"], BACKGROUND_ROUTE) not in window.functions
    # The call tree hangs the view under the enclosing call, and the enclosing call under the route.
    assert world.sensor.take_all_held() == []  # the window took every held table
    assert world.processor._after == {}


def test_enclosing_calls_of_requests_on_many_threads_never_mix_routes():
    world = World()
    world.sensor.expect_enclosures()
    names = ("call", "match", "view", "teardown")
    fids = {route: {name: world.fid(f"fw{i}.{name}") for name in names} for i, route in enumerate(["/a", "/b", "/c"])}
    barrier = threading.Barrier(3)

    def serve(route):
        barrier.wait()
        for _ in range(100):
            _serve_enclosed(world, fids[route], route)

    run_threads(serve, fids)
    window = world.window()
    for route, by_name in fids.items():
        for name, fid in by_name.items():
            assert window.functions[(fid, route)][0] == 100, (route, name)
            assert [r for (f, r) in window.functions if f == fid] == [route], (route, name)


def test_a_consumer_loop_enclosing_several_requests_gives_each_its_own_calls():
    world = World()
    world.sensor.expect_enclosures()
    loop, poll, handle, ack = (world.fid(f"worker.{name}") for name in ("loop", "poll", "handle", "ack"))
    outer = world.sensor.enter(loop)
    for queue in ("orders", "mails"):
        world.call(poll)  # before the first task's span: that task's; between two: the one that ended
        with world.tracer.start_as_current_span("process", kind=SpanKind.CONSUMER, attributes={"http.route": queue}):
            world.call(handle)
        world.call(ack)  # after it: the task that just ended
    world.sensor.leave(outer)
    window = world.window()
    assert {route: stats[0] for route, stats in window.routes.items()} == {"orders": 1, "mails": 1}
    calls = {(fid, route): stats[0] for (fid, route), stats in window.functions.items()}
    assert calls == {(poll, "orders"): 2, (handle, "orders"): 1, (ack, "orders"): 1,
                     (handle, "mails"): 1, (ack, "mails"): 1, (loop, "mails"): 1}  # nothing in background


def test_a_held_table_still_open_when_the_window_closes_is_folded_and_later_calls_are_not_lost():
    world = World()
    world.sensor.expect_enclosures()
    fids = {name: world.fid(f"fw.{name}") for name in ("call", "view", "teardown")}
    outer = world.sensor.enter(fids["call"])
    with world.tracer.start_as_current_span("GET", kind=SpanKind.SERVER, attributes={"http.route": "/slow"}):
        world.call(fids["view"])
    world.call(fids["teardown"])
    first = world.window()  # the enclosing call is still running (a streamed response)
    world.call(fids["teardown"])
    world.sensor.leave(outer)
    second = world.window()
    assert first.routes["/slow"][0] == 1
    assert first.functions[(fids["view"], "/slow")][0] == 1
    assert first.functions[(fids["teardown"], "/slow")][0] == 1
    # after the window took the held table the thread starts a new one: background, counted
    assert second.functions[(fids["teardown"], BACKGROUND_ROUTE)][0] == 1
    assert second.functions[(fids["call"], BACKGROUND_ROUTE)][0] == 1


def test_enclosures_are_learned_from_the_first_request_that_starts_inside_sensed_calls():
    """Without library packages sensed nothing is held (no cost) until a request starts inside
    sensed calls; that request's earlier calls are background, the next ones' are theirs."""
    world = World()
    fids = {name: world.fid(f"app.{name}") for name in ("call", "match", "view", "teardown")}
    outer = world.sensor.enter(fids["call"])
    world.call(fids["match"])
    world.sensor.leave(outer)
    assert world.sensor.take_all_held() == []  # nothing held: no request was ever enclosed
    for _ in range(2):
        _serve_enclosed(world, fids)
    window = world.window()
    assert window.functions[(fids["match"], BACKGROUND_ROUTE)][0] == 2  # the idle one, the first request's
    assert window.functions[(fids["match"], "/x")][0] == 1
    for name in ("call", "view", "teardown"):
        assert window.functions[(fids[name], "/x")][0] == 2, name
